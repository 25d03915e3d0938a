//! The registry file: which services exist and where their endpoints listen.
//!
//! ```yaml
//! services:
//!   - name: myservice                                   # gRPC clients dial xds:///myservice
//!     endpoints: ["127.0.0.1:50051", "127.0.0.1:50052"] # IP:PORT, IPv6 as [::1]:50051
//! ```
//!
//! Every mistake is reported where it is, as `LINE:COL: reason`: YAML syntax, unknown or
//! missing fields, empty or duplicate service names, endpoints that are not `IP:PORT` socket
//! addresses and endpoints listed twice. Validation happens inside deserialization (a
//! `serde` visitor per scalar) precisely so that `serde_yaml_ng` attaches the position of the
//! offending value to the error; a check after parsing could only name the service.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// A parsed and validated registry: the services to publish, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registry {
    /// The services, with unique non-empty names.
    pub services: Vec<Service>,
}

/// One service: the gRPC target `xds:///NAME` and the addresses that serve it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// The service name, also the Listener, RouteConfiguration and Cluster name.
    pub name: String,
    /// The endpoints, unique within the service, in file order.
    pub endpoints: Vec<SocketAddr>,
}

/// Why a registry file was rejected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The file could not be read.
    #[error("{}: cannot read the registry file", path.display())]
    Read {
        /// The registry file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file was read but its content is invalid.
    #[error("{}", error.in_file(path))]
    Invalid {
        /// The registry file.
        path: PathBuf,
        /// What is wrong, and where.
        error: ParseError,
    },
}

/// An invalid registry document: the reason and, when known, where in the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line and column of the offending text, when known.
    pub location: Option<(usize, usize)>,
    /// What is wrong, for a person.
    pub reason: String,
}

impl ParseError {
    /// Formats as the conventional `FILE:LINE:COL: reason` (`FILE: reason` without a location).
    pub fn in_file(&self, path: &Path) -> String {
        match self.location {
            Some(_) => format!("{}:{self}", path.display()),
            None => format!("{}: {self}", path.display()),
        }
    }
}

/// Formats as `LINE:COL: reason`, or just `reason` when the position is unknown.
impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.location {
            Some((line, column)) => write!(f, "{line}:{column}: {}", self.reason),
            None => f.write_str(&self.reason),
        }
    }
}

impl std::error::Error for ParseError {}

impl RegistryError {
    /// The 1-based line of the error in the file, when known.
    pub fn line(&self) -> Option<usize> {
        match self {
            Self::Invalid { error, .. } => error.location.map(|(line, _)| line),
            Self::Read { .. } => None,
        }
    }
}

impl Registry {
    /// Reads and validates a registry file.
    pub fn load(path: &Path) -> Result<Self, RegistryError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| RegistryError::Read { path: path.to_owned(), source })?;
        Self::parse(&text).map_err(|error| RegistryError::Invalid { path: path.to_owned(), error })
    }

    /// Parses and validates registry text (YAML).
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        if text.lines().all(|l| l.trim().is_empty() || l.trim_start().starts_with('#')) {
            return Err(ParseError {
                location: None,
                reason: "the registry is empty: expected a `services:` list".into(),
            });
        }
        let file: RegistryFile = serde_yaml_ng::from_str(text).map_err(yaml_error)?;
        Ok(Registry { services: file.services.0 })
    }

    /// The number of endpoints over all services.
    pub fn endpoint_count(&self) -> usize {
        self.services.iter().map(|s| s.endpoints.len()).sum()
    }
}

/// Splits a `serde_yaml_ng` error into its position and its message, dropping the
/// "at line L column C" the library writes into the message (the position goes in front).
fn yaml_error(err: serde_yaml_ng::Error) -> ParseError {
    let text = err.to_string();
    match err.location() {
        Some(loc) => {
            let mark = format!(" at line {} column {}", loc.line(), loc.column());
            let reason = text.replacen(&mark, "", 1);
            ParseError { location: Some((loc.line(), loc.column())), reason }
        }
        None => ParseError { location: None, reason: text },
    }
}

/// The document as written. `deny_unknown_fields` turns a misspelt key into an error
/// instead of a silently ignored setting.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegistryFile {
    services: Services,
}

/// The `services` list; checks name uniqueness while it reads (see the module docs).
struct Services(Vec<Service>);

impl<'de> Deserialize<'de> for Services {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_seq(ServicesVisitor)
    }
}

struct ServicesVisitor;

impl<'de> Visitor<'de> for ServicesVisitor {
    type Value = Services;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of services, each with `name` and `endpoints`")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Services, A::Error> {
        let mut seen = HashMap::new();
        let mut services = Vec::new();
        while let Some(service) = seq.next_element_seed(ServiceSeed { seen: &seen })? {
            seen.insert(service.name.clone(), services.len());
            services.push(service);
        }
        Ok(Services(services))
    }
}

/// The keys a service may have: anything else is an "unknown field" error.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum ServiceField {
    Name,
    Endpoints,
}

/// Reads one service, knowing the names (and their indexes) of the services before it.
struct ServiceSeed<'a> {
    seen: &'a HashMap<String, usize>,
}

impl<'de> DeserializeSeed<'de> for ServiceSeed<'_> {
    type Value = Service;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Service, D::Error> {
        d.deserialize_struct("service", &["name", "endpoints"], self)
    }
}

impl<'de> Visitor<'de> for ServiceSeed<'_> {
    type Value = Service;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a service: a mapping with `name` and `endpoints`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Service, A::Error> {
        let mut name = None;
        let mut endpoints = None;
        while let Some(field) = map.next_key()? {
            match field {
                ServiceField::Name if name.is_some() => return Err(de::Error::duplicate_field("name")),
                ServiceField::Name => name = Some(map.next_value_seed(NameSeed(self.seen))?),
                ServiceField::Endpoints if endpoints.is_some() => return Err(de::Error::duplicate_field("endpoints")),
                ServiceField::Endpoints => endpoints = Some(map.next_value::<Endpoints>()?.0),
            }
        }
        Ok(Service {
            name: name.ok_or_else(|| de::Error::missing_field("name"))?,
            endpoints: endpoints.ok_or_else(|| de::Error::missing_field("endpoints"))?,
        })
    }
}

/// A service name: non-empty, without whitespace, not used by an earlier service.
struct NameSeed<'a>(&'a HashMap<String, usize>);

impl<'de> DeserializeSeed<'de> for NameSeed<'_> {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for NameSeed<'_> {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a service name (the NAME in the gRPC target xds:///NAME)")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<String, E> {
        if name.is_empty() {
            return Err(E::custom("the service name is empty"));
        }
        if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(E::custom(format!("service name {name:?} contains whitespace or control characters")));
        }
        if let Some(first) = self.0.get(name) {
            return Err(E::custom(format!("duplicate service name {name:?}: it is already used by services[{first}]")));
        }
        Ok(name.to_string())
    }
}

/// The `endpoints` list of one service; rejects an address listed twice.
struct Endpoints(Vec<SocketAddr>);

impl<'de> Deserialize<'de> for Endpoints {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_seq(EndpointsVisitor)
    }
}

struct EndpointsVisitor;

impl<'de> Visitor<'de> for EndpointsVisitor {
    type Value = Endpoints;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of endpoints such as [\"127.0.0.1:50051\"]")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Endpoints, A::Error> {
        let mut endpoints = Vec::new();
        while let Some(addr) = seq.next_element_seed(EndpointSeed(&endpoints))? {
            endpoints.push(addr);
        }
        Ok(Endpoints(endpoints))
    }
}

/// One endpoint: an `IP:PORT` socket address clients can connect to, not already listed.
struct EndpointSeed<'a>(&'a [SocketAddr]);

impl<'de> DeserializeSeed<'de> for EndpointSeed<'_> {
    type Value = SocketAddr;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<SocketAddr, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for EndpointSeed<'_> {
    type Value = SocketAddr;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an endpoint address IP:PORT, such as 127.0.0.1:50051 or [::1]:50051")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<SocketAddr, E> {
        let addr: SocketAddr = text.parse().map_err(|_| {
            E::custom(format!(
                "invalid endpoint {text:?}: expected IP:PORT such as 127.0.0.1:50051 or \
                 [::1]:50051 (host names are not resolved)"
            ))
        })?;
        if addr.port() == 0 {
            return Err(E::custom(format!("invalid endpoint {text:?}: port 0 cannot be dialed")));
        }
        if addr.ip().is_unspecified() || addr.ip().is_multicast() {
            return Err(E::custom(format!(
                "invalid endpoint {text:?}: {} is not an address clients can connect to",
                addr.ip()
            )));
        }
        if let Some(first) = self.0.iter().position(|a| *a == addr) {
            return Err(E::custom(format!("duplicate endpoint {text:?}: already listed as endpoints[{first}]")));
        }
        Ok(addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> ParseError {
        Registry::parse(text).expect_err("the registry should be rejected")
    }

    #[test]
    fn parses_the_documented_form() {
        let text = "services:\n  - name: myservice\n    endpoints: [\"127.0.0.1:50051\", \"[::1]:50052\"]\n";
        let registry = Registry::parse(text).expect("valid registry");
        assert_eq!(registry.services.len(), 1);
        assert_eq!(registry.services[0].name, "myservice");
        assert_eq!(
            registry.services[0].endpoints,
            vec!["127.0.0.1:50051".parse().expect("addr"), "[::1]:50052".parse().expect("addr")]
        );
        assert_eq!(registry.endpoint_count(), 2);
    }

    #[test]
    fn bundled_example_is_valid() {
        let text = include_str!("../registry.yaml");
        let registry = Registry::parse(text).expect("examples/registry.yaml is valid");
        assert_eq!(registry.services[0].name, "myservice");
        assert_eq!(registry.services[0].endpoints.len(), 2);
    }

    #[test]
    fn block_style_and_empty_endpoint_list_are_accepted() {
        let text = "services:\n  - name: a\n    endpoints:\n      - 10.0.0.1:80\n  - name: b\n    endpoints: []\n";
        let registry = Registry::parse(text).expect("valid registry");
        assert_eq!(registry.services[1].endpoints, vec![]);
    }

    #[test]
    fn unknown_field_is_reported_with_its_line() {
        let e = err("services:\n  - name: a\n    endpoints: []\n    weight: 3\n");
        assert_eq!(e.location.map(|l| l.0), Some(4), "{e}");
        assert!(e.reason.contains("unknown field `weight`"), "{e}");
        assert!(e.reason.contains("services[0]"), "the path is kept: {e}");

        let e = err("service:\n  - name: a\n");
        assert_eq!(e.location.map(|l| l.0), Some(1), "{e}");
        assert!(e.reason.contains("unknown field `service`"), "{e}");
    }

    #[test]
    fn duplicate_name_is_reported_at_the_second_definition() {
        let text = "services:\n  - name: a\n    endpoints: []\n  - name: b\n    endpoints: []\n  - name: a\n    endpoints: []\n";
        let e = err(text);
        assert_eq!(e.location, Some((6, 11)), "{e}");
        assert!(e.reason.contains("duplicate service name \"a\""), "{e}");
        assert!(e.reason.contains("services[0]"), "{e}");
    }

    #[test]
    fn bad_addresses_are_reported_with_their_position() {
        let e = err("services:\n  - name: a\n    endpoints: [\"127.0.0.1:1\", \"localhost:50051\"]\n");
        assert_eq!(e.location, Some((3, 32)), "{e}");
        assert!(e.reason.contains("invalid endpoint \"localhost:50051\""), "{e}");

        for bad in ["127.0.0.1", "127.0.0.1:0", "0.0.0.0:80", "::1:80", "127.0.0.1:99999"] {
            let e = err(&format!("services:\n  - name: a\n    endpoints:\n      - \"{bad}\"\n"));
            assert_eq!(e.location.map(|l| l.0), Some(4), "{bad}: {e}");
            assert!(e.reason.contains("invalid endpoint"), "{bad}: {e}");
        }

        let e = err("services:\n  - name: a\n    endpoints: [10.0.0.1:80, 10.0.0.2:80, 10.0.0.1:80]\n");
        assert!(e.reason.contains("duplicate endpoint \"10.0.0.1:80\""), "{e}");
        assert_eq!(e.location.map(|l| l.0), Some(3), "{e}");
    }

    #[test]
    fn empty_and_missing_names_are_rejected() {
        let e = err("services:\n  - name: \"\"\n    endpoints: []\n");
        assert_eq!(e.location.map(|l| l.0), Some(2), "{e}");
        assert!(e.reason.contains("empty"), "{e}");

        let e = err("services:\n  - endpoints: []\n");
        assert!(e.reason.contains("missing field `name`"), "{e}");

        let e = err("services:\n  - name: my service\n    endpoints: []\n");
        assert!(e.reason.contains("whitespace"), "{e}");
    }

    #[test]
    fn syntax_errors_and_empty_files_are_explained() {
        let e = err("services:\n  - name: a\n   endpoints: [\n");
        assert!(e.location.is_some(), "{e}");
        assert!(!e.reason.contains(" at line "), "location is not repeated: {e}");

        let e = err("# nothing here\n\n");
        assert!(e.reason.contains("empty"), "{e}");
    }

    #[test]
    fn load_names_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("reg.yaml");
        std::fs::write(&path, "services:\n  - name: a\n    endpoints: [nope]\n").expect("write");
        let e = Registry::load(&path).expect_err("invalid");
        assert_eq!(e.line(), Some(3));
        let shown = e.to_string();
        assert!(shown.starts_with(&format!("{}:3:", path.display())), "{shown}");

        let e = Registry::load(&dir.path().join("missing.yaml")).expect_err("missing file");
        assert!(matches!(e, RegistryError::Read { .. }), "{e}");
    }
}
