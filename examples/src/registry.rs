//! The registry file: the services, their endpoints and how to balance and check them, and
//! optionally Envoy listeners and the TLS certificates served over SDS.
//!
//! The simplest registry lists services and their endpoints:
//!
//! ```yaml
//! services:
//!   - name: myservice                                   # gRPC clients dial xds:///myservice
//!     endpoints: ["127.0.0.1:50051", "127.0.0.1:50052"] # IP:PORT, IPv6 as "[::1]:50051"
//! ```
//!
//! Every other setting has a default; `examples/registry-full.yaml` shows them all, commented,
//! and `examples/README.md` describes the schema.
//!
//! # Validation
//!
//! Every mistake is reported where it is, as `LINE:COL: PATH: reason`: YAML syntax, unknown or
//! missing fields and wrong types (found by `serde_yaml_ng` while it deserializes, which knows
//! the position), and everything that needs more than one value to judge (found afterwards, in
//! plain Rust, on the parsed document): bad addresses and durations, duplicate names,
//! duplicate endpoints, routes to unknown services, weighted splits whose weights sum to 0,
//! references to unknown secrets, certificate files that cannot be read. A check of the second
//! kind names the offending value by its path (`listeners[0].routes[1].service`); the position
//! of that path is then found by deserializing the text once more with a seed that walks the
//! path and fails on purpose at its end, so that `serde_yaml_ng` reports where that node is.
//! Validation therefore never has to carry positions around, and every error has one.
//!
//! Certificate and key files are read while the registry is validated (relative paths are
//! relative to the registry file's folder), so a missing file is an error of the registry, at
//! the line that names it, and [`crate::reload`] knows which files to watch.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// The default cluster connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The default time between two health checks of an endpoint.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(2);
/// The default time a health check may take before it counts as failed.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
/// The default number of consecutive failed checks that mark an endpoint unhealthy.
pub const DEFAULT_UNHEALTHY_THRESHOLD: u32 = 2;
/// The default number of consecutive successful checks that mark an endpoint healthy again.
pub const DEFAULT_HEALTHY_THRESHOLD: u32 = 2;
/// The locality zone of endpoints that do not name one.
pub const DEFAULT_ZONE: &str = "default";
/// The listen address of an Envoy listener that does not name one.
pub const DEFAULT_LISTENER_ADDRESS: IpAddr = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);

/// A parsed and validated registry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Registry {
    /// The services, with unique non-empty names, in file order.
    pub services: Vec<Service>,
    /// Envoy listeners, in file order (none unless the file has `listeners:`).
    pub listeners: Vec<Listener>,
    /// Secrets served over SDS, in file order (none unless the file has `secrets:`).
    pub secrets: Vec<Secret>,
}

/// One service: the gRPC target `xds:///NAME`, its endpoints and how to reach them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// The service name, also the Listener, RouteConfiguration, Cluster and
    /// ClusterLoadAssignment name.
    pub name: String,
    /// The endpoints, with unique addresses, in file order.
    pub endpoints: Vec<Endpoint>,
    /// How clients pick an endpoint.
    pub lb_policy: LbPolicy,
    /// How long a client may take to connect to an endpoint.
    pub connect_timeout: Duration,
    /// The HTTP version Envoy speaks to the endpoints (proxyless gRPC clients ignore it).
    pub protocol: Protocol,
    /// How the sidecar checks the endpoints.
    pub health_check: HealthCheck,
}

impl Service {
    /// A service with the given endpoints (weight 1, default locality) and default settings.
    pub fn new(name: impl Into<String>, addresses: impl IntoIterator<Item = SocketAddr>) -> Self {
        Self {
            name: name.into(),
            endpoints: addresses.into_iter().map(Endpoint::new).collect(),
            lb_policy: LbPolicy::default(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            protocol: Protocol::default(),
            health_check: HealthCheck::default(),
        }
    }

    /// The endpoint addresses, in file order.
    pub fn addresses(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.endpoints.iter().map(|e| e.address)
    }
}

/// One endpoint of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Where it listens.
    pub address: SocketAddr,
    /// Its load-balancing weight within its locality, at least 1.
    pub weight: u32,
    /// Where it runs; endpoints are grouped by locality.
    pub locality: Locality,
    /// Free-form metadata, published under the `envoy.lb` filter metadata key (what Envoy's
    /// subset load balancer matches on).
    pub metadata: BTreeMap<String, serde_json::Value>,
}

impl Endpoint {
    /// An endpoint of weight 1 in the default locality, without metadata.
    pub fn new(address: SocketAddr) -> Self {
        Self { address, weight: 1, locality: Locality::default(), metadata: BTreeMap::new() }
    }
}

/// Where an endpoint runs (Envoy's `core.v3.Locality`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Locality {
    /// The region, e.g. `eu-west-1`.
    pub region: String,
    /// The zone, e.g. `eu-west-1a`.
    pub zone: String,
    /// The sub-zone, e.g. a rack.
    pub sub_zone: String,
}

/// The default locality: zone [`DEFAULT_ZONE`].
impl Default for Locality {
    fn default() -> Self {
        Self { region: String::new(), zone: DEFAULT_ZONE.to_string(), sub_zone: String::new() }
    }
}

impl fmt::Display for Locality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<&str> = [&self.region, &self.zone, &self.sub_zone]
            .into_iter()
            .map(String::as_str)
            .filter(|s| !s.is_empty())
            .collect();
        f.write_str(&parts.join("/"))
    }
}

/// How clients pick an endpoint: the Cluster's load-balancing policy.
///
/// Envoy implements every policy; proxyless gRPC clients NACK a Cluster whose `lb_policy` they
/// do not implement (XDS-PROTOCOL.md rule 24). So `least_request`, `random` and `maglev` are sent
/// as the Cluster's `load_balancing_policy`, a list of preferences from which each client takes
/// the first it implements (gRFC A52; [`crate::resources::lb_config`]):
///
/// | policy | Envoy | proxyless gRPC |
/// |---|---|---|
/// | `round_robin` | yes | every client |
/// | `ring_hash` | yes | gRFC A42: grpc C-core (Python, C++...), Java, Go, grpc-js |
/// | `least_request` | yes | gRFC A48 where implemented (recent grpc-java, grpc-go); round robin elsewhere (grpc-js) |
/// | `random` | yes | round robin |
/// | `maglev` | yes | ring hash where implemented, else round robin |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LbPolicy {
    /// `ROUND_ROBIN` (weighted by endpoint and locality weights).
    #[default]
    RoundRobin,
    /// `LEAST_REQUEST`.
    LeastRequest,
    /// `RANDOM` (Envoy only).
    Random,
    /// `RING_HASH` (consistent hashing).
    RingHash,
    /// `MAGLEV` (Envoy only).
    Maglev,
}

impl LbPolicy {
    /// The name used in the registry file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RoundRobin => "round_robin",
            Self::LeastRequest => "least_request",
            Self::Random => "random",
            Self::RingHash => "ring_hash",
            Self::Maglev => "maglev",
        }
    }

    /// Whether no proxyless gRPC client implements this policy (they use a fallback instead).
    pub fn unknown_to_grpc(self) -> bool {
        matches!(self, Self::Random | Self::Maglev)
    }
}

/// The HTTP version Envoy uses towards a service's endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Protocol {
    /// HTTP/2 (needed for gRPC backends): the default, since registry services are gRPC services.
    #[default]
    Http2,
    /// HTTP/1.1.
    Http1,
    /// The version the downstream request came with.
    Auto,
}

/// How the sidecar checks a service's endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// What a check does.
    pub kind: HealthCheckKind,
    /// Time between the starts of two checks of one endpoint.
    pub interval: Duration,
    /// How long a check may take; never more than `interval`.
    pub timeout: Duration,
    /// Consecutive successes that make an unhealthy endpoint healthy.
    pub healthy_threshold: u32,
    /// Consecutive failures that make a healthy endpoint unhealthy.
    pub unhealthy_threshold: u32,
}

/// The default: TCP connect every 2 s, 1 s timeout, 2 failures down, 2 successes up.
impl Default for HealthCheck {
    fn default() -> Self {
        Self {
            kind: HealthCheckKind::Tcp,
            interval: DEFAULT_HEALTH_INTERVAL,
            timeout: DEFAULT_HEALTH_TIMEOUT,
            healthy_threshold: DEFAULT_HEALTHY_THRESHOLD,
            unhealthy_threshold: DEFAULT_UNHEALTHY_THRESHOLD,
        }
    }
}

impl HealthCheck {
    /// Whether endpoints are checked at all.
    pub fn enabled(&self) -> bool {
        self.kind != HealthCheckKind::None
    }
}

/// What one health check does.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HealthCheckKind {
    /// No checking: endpoints are always published healthy.
    None,
    /// A TCP connection is opened and closed.
    Tcp,
    /// `grpc.health.v1.Health/Check` is called; only `SERVING` counts as healthy.
    Grpc {
        /// The `service` field of the request; empty asks about the whole server.
        service_name: String,
    },
}

impl fmt::Display for HealthCheckKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("none"),
            Self::Tcp => f.write_str("tcp"),
            Self::Grpc { service_name } if service_name.is_empty() => f.write_str("grpc"),
            Self::Grpc { service_name } => write!(f, "grpc({service_name})"),
        }
    }
}

/// An Envoy listener: a port, and routes from requests to services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// The Listener and RouteConfiguration name.
    pub name: String,
    /// The address Envoy binds.
    pub address: IpAddr,
    /// The port Envoy binds.
    pub port: u16,
    /// The `:authority` values the routes answer (`*` by default).
    pub domains: Vec<String>,
    /// The routes, first match wins.
    pub routes: Vec<Route>,
    /// TLS termination with certificates from SDS, if any.
    pub tls: Option<ListenerTls>,
}

/// One route of a listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The path prefix to match (`/` matches everything).
    pub prefix: String,
    /// Headers that must also match.
    pub headers: Vec<HeaderMatch>,
    /// Where matching requests go.
    pub target: RouteTarget,
}

/// A header condition of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderMatch {
    /// The header name.
    pub name: String,
    /// The exact value required; `None` only requires the header to be present.
    pub exact: Option<String>,
}

/// Where a route sends requests.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RouteTarget {
    /// One service.
    Service(String),
    /// Several services, in proportion to their weights (which sum to more than 0).
    Split(Vec<WeightedService>),
}

/// One branch of a weighted split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightedService {
    /// The service.
    pub service: String,
    /// Its share of the requests.
    pub weight: u32,
}

/// TLS termination on a listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTls {
    /// The secret (a `tls_certificate`) presented to clients.
    pub certificate: String,
    /// The secret (a `validation_context`) client certificates must chain to; when set,
    /// clients must present one.
    pub client_ca: Option<String>,
}

/// A secret served over SDS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secret {
    /// The Secret name.
    pub name: String,
    /// The node ids (exact, or prefixes ending in `*`) that may receive it; `None`: every node.
    pub nodes: Option<Vec<String>>,
    /// What it holds.
    pub kind: SecretKind,
}

/// What a secret holds.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SecretKind {
    /// A certificate chain and its private key.
    TlsCertificate {
        /// The certificate chain (PEM).
        certificate_chain: PemFile,
        /// The private key (PEM).
        private_key: PemFile,
    },
    /// Trusted CA certificates, to validate peers.
    ValidationContext {
        /// The CA bundle (PEM).
        trusted_ca: PemFile,
    },
}

/// A PEM file, as read when the registry was loaded.
#[derive(Clone, PartialEq, Eq)]
pub struct PemFile {
    /// The file, resolved against the registry file's folder.
    pub path: PathBuf,
    /// Its content.
    pub pem: String,
}

/// Shows the path only: the content may be a private key.
impl fmt::Debug for PemFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PemFile").field("path", &self.path).field("bytes", &self.pem.len()).finish()
    }
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
    /// What is wrong, for a person; starts with the path of the offending value
    /// (`services[0].endpoints[1]: ...`) when there is one.
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

/// A file the registry refers to (a certificate, a key), as seen when it was last read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferencedFile {
    /// The file, resolved against the registry file's folder.
    pub path: PathBuf,
    /// A hash of its content, or `None` when it could not be read.
    pub content_hash: Option<String>,
}

/// The result of parsing registry text, with the files it refers to (even when invalid, so
/// that a missing certificate that appears later is noticed).
#[derive(Debug)]
pub struct Parsed {
    /// The files the registry refers to, in file order.
    pub files: Vec<ReferencedFile>,
    /// The registry, or why it is rejected.
    pub result: Result<Registry, ParseError>,
}

impl Registry {
    /// Reads and validates a registry file; files it names are relative to its folder.
    pub fn load(path: &Path) -> Result<Self, RegistryError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| RegistryError::Read { path: path.to_owned(), source })?;
        Self::parse_in(&text, base_dir(path)).map_err(|error| RegistryError::Invalid { path: path.to_owned(), error })
    }

    /// Parses and validates registry text (YAML); files it names are relative to the current
    /// directory.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        Self::parse_in(text, Path::new("."))
    }

    /// Parses and validates registry text; files it names are relative to `base`.
    pub fn parse_in(text: &str, base: &Path) -> Result<Self, ParseError> {
        Self::parse_tracked(text, base).result
    }

    /// Parses and validates registry text, and says which files it refers to.
    pub fn parse_tracked(text: &str, base: &Path) -> Parsed {
        if text.lines().all(|l| l.trim().is_empty() || l.trim_start().starts_with('#')) {
            let reason = "the registry is empty: expected a `services:` list".to_string();
            return Parsed { files: Vec::new(), result: Err(ParseError { location: None, reason }) };
        }
        let raw: RawFile = match serde_yaml_ng::from_str(text) {
            Ok(raw) => raw,
            Err(err) => return Parsed { files: Vec::new(), result: Err(yaml_error(err)) },
        };
        let mut validator = Validator { base, files: Vec::new() };
        let result = validator.registry(raw).map_err(|invalid| ParseError {
            location: locate(text, &invalid.path.0),
            reason: format!("{}: {}", invalid.path, invalid.reason),
        });
        Parsed { files: validator.files, result }
    }

    /// The number of endpoints over all services.
    pub fn endpoint_count(&self) -> usize {
        self.services.iter().map(|s| s.endpoints.len()).sum()
    }

    /// The service of that name.
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }

    /// Things that are valid but probably not what the author wants, one sentence each.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        for s in &self.services {
            if s.endpoints.is_empty() {
                warnings.push(format!(
                    "service {:?} has no endpoints: its clients' RPCs fail until some are added",
                    s.name
                ));
            }
            if s.lb_policy.unknown_to_grpc() {
                warnings.push(format!(
                    "service {:?} uses lb_policy {}: only Envoy implements it; proxyless gRPC clients use {} instead",
                    s.name,
                    s.lb_policy.as_str(),
                    if s.lb_policy == LbPolicy::Maglev { "ring_hash (or round_robin)" } else { "round_robin" }
                ));
            }
        }
        warnings
    }
}

/// The folder files named in a registry file are relative to.
pub fn base_dir(registry_file: &Path) -> &Path {
    match registry_file.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
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

// ---------------------------------------------------------------------------------------------
// The document as written. `deny_unknown_fields` turns a misspelt key into an error instead of
// a silently ignored setting. Values are kept as written; `Validator` judges them.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    services: Vec<RawService>,
    #[serde(default)]
    listeners: Vec<RawListener>,
    #[serde(default)]
    secrets: Vec<RawSecret>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: String,
    endpoints: Vec<RawEndpoint>,
    #[serde(default)]
    lb_policy: LbPolicy,
    connect_timeout: Option<String>,
    #[serde(default)]
    protocol: Protocol,
    health_check: Option<RawHealthCheck>,
}

/// An endpoint: `"IP:PORT"`, or a mapping with `address` and optional settings.
enum RawEndpoint {
    Address(String),
    Detailed(RawEndpointObject),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEndpointObject {
    address: String,
    weight: Option<u32>,
    zone: Option<String>,
    locality: Option<RawLocality>,
    #[serde(default)]
    metadata: BTreeMap<String, serde_json::Value>,
}

impl<'de> Deserialize<'de> for RawEndpoint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct EndpointVisitor;
        impl<'de> Visitor<'de> for EndpointVisitor {
            type Value = RawEndpoint;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "an endpoint: \"IP:PORT\", or a mapping with `address` (and `weight`, `locality`, `metadata`)",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawEndpoint, E> {
                Ok(RawEndpoint::Address(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawEndpoint, A::Error> {
                RawEndpointObject::deserialize(de::value::MapAccessDeserializer::new(map)).map(RawEndpoint::Detailed)
            }
        }
        d.deserialize_any(EndpointVisitor)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLocality {
    #[serde(default)]
    region: String,
    #[serde(default)]
    zone: String,
    #[serde(default)]
    sub_zone: String,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum RawHealthKind {
    None,
    Tcp,
    Grpc,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealthCheck {
    kind: Option<RawHealthKind>,
    service_name: Option<String>,
    interval: Option<String>,
    timeout: Option<String>,
    healthy_threshold: Option<u32>,
    unhealthy_threshold: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListener {
    name: String,
    address: Option<String>,
    port: u16,
    domains: Option<Vec<String>>,
    routes: Vec<RawRoute>,
    tls: Option<RawListenerTls>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    prefix: Option<String>,
    #[serde(default)]
    headers: Vec<RawHeader>,
    service: Option<String>,
    split: Option<Vec<RawSplit>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeader {
    name: String,
    exact: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSplit {
    service: String,
    weight: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListenerTls {
    certificate: String,
    client_ca: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecret {
    name: String,
    #[serde(default)]
    nodes: Option<Vec<String>>,
    tls_certificate: Option<RawTlsCertificate>,
    validation_context: Option<RawValidationContext>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTlsCertificate {
    certificate_chain: String,
    private_key: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawValidationContext {
    trusted_ca: String,
}

// ---------------------------------------------------------------------------------------------
// Validation of the parsed document.

/// One step of a path into the document.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(&'static str),
    Index(usize),
}

/// Where a value is in the document, e.g. `services[0].endpoints[2]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct YamlPath(Vec<Seg>);

impl YamlPath {
    fn key(&self, key: &'static str) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Key(key));
        p
    }

    fn index(&self, i: usize) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Index(i));
        p
    }
}

/// Formats like `serde_yaml_ng` paths: `services[0].name`.
impl fmt::Display for YamlPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str(".");
        }
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => f.write_str(k)?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// A value the validator rejects, and where it is.
struct Invalid {
    path: YamlPath,
    reason: String,
}

fn invalid<T>(path: YamlPath, reason: impl Into<String>) -> Result<T, Invalid> {
    Err(Invalid { path, reason: reason.into() })
}

struct Validator<'a> {
    base: &'a Path,
    files: Vec<ReferencedFile>,
}

impl Validator<'_> {
    fn registry(&mut self, raw: RawFile) -> Result<Registry, Invalid> {
        let root = YamlPath::default();
        // Services, Envoy listeners share one name space: each is a Listener and a RouteConfiguration.
        let mut names: HashMap<String, String> = HashMap::new();
        let mut services = Vec::with_capacity(raw.services.len());
        for (i, s) in raw.services.into_iter().enumerate() {
            let path = root.key("services").index(i);
            let name = resource_name(&path.key("name"), &s.name, "service")?;
            if let Some(first) = names.get(&name) {
                return invalid(
                    path.key("name"),
                    format!("duplicate service name {name:?}: it is already used by {first}"),
                );
            }
            names.insert(name.clone(), format!("services[{i}]"));
            services.push(service(&path, name, s)?);
        }
        let service_names: HashSet<&str> = services.iter().map(|s| s.name.as_str()).collect();

        let mut secrets: Vec<Secret> = Vec::with_capacity(raw.secrets.len());
        for (i, s) in raw.secrets.into_iter().enumerate() {
            let path = root.key("secrets").index(i);
            let name = resource_name(&path.key("name"), &s.name, "secret")?;
            if let Some(first) = secrets.iter().position(|x| x.name == name) {
                return invalid(
                    path.key("name"),
                    format!("duplicate secret name {name:?}: it is already used by secrets[{first}]"),
                );
            }
            let kind = match (s.tls_certificate, s.validation_context) {
                (Some(cert), None) => SecretKind::TlsCertificate {
                    certificate_chain: self
                        .pem(&path.key("tls_certificate").key("certificate_chain"), &cert.certificate_chain)?,
                    private_key: self.pem(&path.key("tls_certificate").key("private_key"), &cert.private_key)?,
                },
                (None, Some(ca)) => SecretKind::ValidationContext {
                    trusted_ca: self.pem(&path.key("validation_context").key("trusted_ca"), &ca.trusted_ca)?,
                },
                _ => return invalid(path, "a secret needs exactly one of `tls_certificate` and `validation_context`"),
            };
            if let Some(nodes) = &s.nodes {
                if let Some(i) = nodes.iter().position(|n| n.is_empty() || n.chars().any(char::is_whitespace)) {
                    return invalid(
                        path.key("nodes").index(i),
                        "a node id pattern is a node id, or a prefix ending in `*`, without spaces",
                    );
                }
            }
            secrets.push(Secret { name, nodes: s.nodes, kind });
        }

        let mut listeners: Vec<Listener> = Vec::with_capacity(raw.listeners.len());
        for (i, l) in raw.listeners.into_iter().enumerate() {
            let path = root.key("listeners").index(i);
            let name = resource_name(&path.key("name"), &l.name, "listener")?;
            if let Some(first) = names.get(&name) {
                return invalid(
                    path.key("name"),
                    format!(
                        "duplicate name {name:?}: it is already used by {first} (services and listeners \
                         each become a Listener and a RouteConfiguration of their name)"
                    ),
                );
            }
            names.insert(name.clone(), format!("listeners[{i}]"));
            let listener = listener(&path, name, l, &service_names, &secrets)?;
            if let Some(first) = listeners.iter().position(|x| {
                x.port == listener.port
                    && (x.address == listener.address
                        || x.address.is_unspecified()
                        || listener.address.is_unspecified())
            }) {
                return invalid(
                    path.key("port"),
                    format!(
                        "{}:{} overlaps listeners[{first}] ({}:{}): Envoy cannot bind both",
                        listener.address, listener.port, listeners[first].address, listeners[first].port
                    ),
                );
            }
            listeners.push(listener);
        }
        Ok(Registry { services, listeners, secrets })
    }

    /// Reads a PEM file named in the registry, relative to the registry's folder.
    fn pem(&mut self, path: &YamlPath, file: &str) -> Result<PemFile, Invalid> {
        if file.trim().is_empty() {
            return invalid(path.clone(), "the file name is empty");
        }
        let resolved = self.base.join(file);
        let read = std::fs::read(&resolved);
        self.files.push(ReferencedFile {
            path: resolved.clone(),
            content_hash: read.as_ref().ok().map(|bytes| xds_core::content_version(bytes)),
        });
        let bytes = match read {
            Ok(bytes) => bytes,
            Err(err) => return invalid(path.clone(), format!("cannot read {}: {err}", resolved.display())),
        };
        match String::from_utf8(bytes) {
            Ok(pem) if pem.contains("-----BEGIN ") => Ok(PemFile { path: resolved, pem }),
            _ => invalid(path.clone(), format!("{} is not a PEM file (no \"-----BEGIN\" line)", resolved.display())),
        }
    }
}

/// A resource name: non-empty, without whitespace or control characters.
fn resource_name(path: &YamlPath, name: &str, what: &str) -> Result<String, Invalid> {
    if name.is_empty() {
        return invalid(path.clone(), format!("the {what} name is empty"));
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return invalid(path.clone(), format!("{what} name {name:?} contains whitespace or control characters"));
    }
    Ok(name.to_string())
}

fn service(path: &YamlPath, name: String, raw: RawService) -> Result<Service, Invalid> {
    let mut endpoints: Vec<Endpoint> = Vec::with_capacity(raw.endpoints.len());
    for (i, e) in raw.endpoints.into_iter().enumerate() {
        let epath = path.key("endpoints").index(i);
        let endpoint = match e {
            RawEndpoint::Address(text) => Endpoint::new(endpoint_address(&epath, &text)?),
            RawEndpoint::Detailed(e) => {
                let address = endpoint_address(&epath.key("address"), &e.address)?;
                let weight = e.weight.unwrap_or(1);
                if weight == 0 {
                    return invalid(epath.key("weight"), "an endpoint weight must be at least 1");
                }
                let locality = match (e.zone, e.locality) {
                    (Some(_), Some(_)) => {
                        return invalid(epath.key("zone"), "give either `zone` or `locality`, not both")
                    }
                    (Some(zone), None) => Locality { zone, ..Locality::default() },
                    (None, Some(l)) => Locality { region: l.region, zone: l.zone, sub_zone: l.sub_zone },
                    (None, None) => Locality::default(),
                };
                Endpoint { address, weight, locality, metadata: e.metadata }
            }
        };
        if let Some(first) = endpoints.iter().position(|x| x.address == endpoint.address) {
            return invalid(
                epath,
                format!("duplicate endpoint \"{}\": already listed as endpoints[{first}]", endpoint.address),
            );
        }
        endpoints.push(endpoint);
    }
    // A locality's weight is the sum of its endpoints' weights: it must fit Envoy's uint32.
    let mut sums: BTreeMap<&Locality, u32> = BTreeMap::new();
    for (i, e) in endpoints.iter().enumerate() {
        let sum = sums.entry(&e.locality).or_default();
        *sum = match sum.checked_add(e.weight) {
            Some(s) => s,
            None => {
                return invalid(
                    path.key("endpoints").index(i),
                    format!("the weights of locality {} sum to more than {}", e.locality, u32::MAX),
                )
            }
        };
    }
    let connect_timeout = match &raw.connect_timeout {
        Some(text) => duration(&path.key("connect_timeout"), text)?,
        None => DEFAULT_CONNECT_TIMEOUT,
    };
    let health_check = match raw.health_check {
        Some(h) => health_check(&path.key("health_check"), h)?,
        None => HealthCheck::default(),
    };
    Ok(Service { name, endpoints, lb_policy: raw.lb_policy, connect_timeout, protocol: raw.protocol, health_check })
}

fn health_check(path: &YamlPath, raw: RawHealthCheck) -> Result<HealthCheck, Invalid> {
    let defaults = HealthCheck::default();
    let kind = match (raw.kind.unwrap_or(RawHealthKind::Tcp), raw.service_name) {
        (RawHealthKind::Grpc, name) => HealthCheckKind::Grpc { service_name: name.unwrap_or_default() },
        (_, Some(_)) => return invalid(path.key("service_name"), "`service_name` applies to `kind: grpc` only"),
        (RawHealthKind::Tcp, None) => HealthCheckKind::Tcp,
        (RawHealthKind::None, None) => HealthCheckKind::None,
    };
    let interval = match &raw.interval {
        Some(text) => duration(&path.key("interval"), text)?,
        None => defaults.interval,
    };
    let timeout = match &raw.timeout {
        Some(text) => duration(&path.key("timeout"), text)?,
        None => defaults.timeout.min(interval),
    };
    if timeout > interval {
        return invalid(
            path.key("timeout"),
            format!(
                "the timeout ({}) must not exceed the interval ({}): checks start every interval",
                format_duration(timeout),
                format_duration(interval)
            ),
        );
    }
    let threshold = |key: &'static str, value: Option<u32>, default: u32| match value {
        Some(0) => invalid(path.key(key), "a threshold must be at least 1"),
        Some(v) => Ok(v),
        None => Ok(default),
    };
    Ok(HealthCheck {
        kind,
        interval,
        timeout,
        healthy_threshold: threshold("healthy_threshold", raw.healthy_threshold, defaults.healthy_threshold)?,
        unhealthy_threshold: threshold("unhealthy_threshold", raw.unhealthy_threshold, defaults.unhealthy_threshold)?,
    })
}

fn listener(
    path: &YamlPath,
    name: String,
    raw: RawListener,
    services: &HashSet<&str>,
    secrets: &[Secret],
) -> Result<Listener, Invalid> {
    let address = match &raw.address {
        Some(text) => text.parse::<IpAddr>().or_else(|_| {
            invalid(
                path.key("address"),
                format!("invalid listen address {text:?}: expected an IP such as 0.0.0.0 or ::"),
            )
        })?,
        None => DEFAULT_LISTENER_ADDRESS,
    };
    if raw.port == 0 {
        return invalid(path.key("port"), "the port must be between 1 and 65535");
    }
    let domains = raw.domains.unwrap_or_else(|| vec!["*".to_string()]);
    if domains.is_empty() {
        return invalid(path.key("domains"), "`domains` is empty: no request would match (omit it for \"*\")");
    }
    for (i, d) in domains.iter().enumerate() {
        if d.trim().is_empty() || d.chars().any(char::is_whitespace) {
            return invalid(path.key("domains").index(i), format!("invalid domain {d:?}"));
        }
    }
    if raw.routes.is_empty() {
        return invalid(path.key("routes"), "a listener needs at least one route");
    }
    let known_service = |p: YamlPath, s: &str| -> Result<String, Invalid> {
        if services.contains(s) {
            Ok(s.to_string())
        } else {
            invalid(p, format!("route to unknown service {s:?}"))
        }
    };
    let mut routes = Vec::with_capacity(raw.routes.len());
    for (i, r) in raw.routes.into_iter().enumerate() {
        let rpath = path.key("routes").index(i);
        let prefix = r.prefix.unwrap_or_else(|| "/".to_string());
        if !prefix.starts_with('/') {
            return invalid(rpath.key("prefix"), format!("the path prefix {prefix:?} must start with '/'"));
        }
        let mut headers = Vec::with_capacity(r.headers.len());
        for (j, h) in r.headers.into_iter().enumerate() {
            if h.name.is_empty() || h.name.chars().any(|c| c.is_whitespace() || c.is_control() || c == ':') {
                return invalid(rpath.key("headers").index(j).key("name"), format!("invalid header name {:?}", h.name));
            }
            headers.push(HeaderMatch { name: h.name.to_ascii_lowercase(), exact: h.exact });
        }
        let target = match (r.service, r.split) {
            (Some(s), None) => RouteTarget::Service(known_service(rpath.key("service"), &s)?),
            (None, Some(split)) => {
                if split.is_empty() {
                    return invalid(rpath.key("split"), "a split needs at least one service");
                }
                let mut total: u32 = 0;
                let mut branches = Vec::with_capacity(split.len());
                for (j, b) in split.into_iter().enumerate() {
                    let bpath = rpath.key("split").index(j);
                    let service = known_service(bpath.key("service"), &b.service)?;
                    if branches.iter().any(|x: &WeightedService| x.service == service) {
                        return invalid(
                            bpath.key("service"),
                            format!("service {service:?} appears twice in the split"),
                        );
                    }
                    total = total.checked_add(b.weight).map_or_else(
                        || invalid(bpath.key("weight"), format!("the weights sum to more than {}", u32::MAX)),
                        Ok,
                    )?;
                    branches.push(WeightedService { service, weight: b.weight });
                }
                if total == 0 {
                    return invalid(
                        rpath.key("split"),
                        "the weights of the split sum to 0: no request could be routed",
                    );
                }
                RouteTarget::Split(branches)
            }
            _ => return invalid(rpath, "a route needs exactly one of `service` and `split`"),
        };
        routes.push(Route { prefix, headers, target });
    }
    let secret_of_kind = |p: YamlPath, name: &str, want_cert: bool| -> Result<String, Invalid> {
        match secrets.iter().find(|s| s.name == name) {
            None => invalid(p, format!("unknown secret {name:?}")),
            Some(s) => match (&s.kind, want_cert) {
                (SecretKind::TlsCertificate { .. }, true) | (SecretKind::ValidationContext { .. }, false) => {
                    Ok(name.to_string())
                }
                (_, true) => invalid(p, format!("secret {name:?} is not a `tls_certificate`")),
                (_, false) => invalid(p, format!("secret {name:?} is not a `validation_context`")),
            },
        }
    };
    let tls = match raw.tls {
        Some(t) => Some(ListenerTls {
            certificate: secret_of_kind(path.key("tls").key("certificate"), &t.certificate, true)?,
            client_ca: match t.client_ca {
                Some(ca) => Some(secret_of_kind(path.key("tls").key("client_ca"), &ca, false)?),
                None => None,
            },
        }),
        None => None,
    };
    Ok(Listener { name, address, port: raw.port, domains, routes, tls })
}

/// An endpoint address: `IP:PORT` that clients can connect to.
fn endpoint_address(path: &YamlPath, text: &str) -> Result<SocketAddr, Invalid> {
    let addr: SocketAddr = text.parse().or_else(|_| {
        invalid(
            path.clone(),
            format!(
                "invalid endpoint {text:?}: expected IP:PORT such as 127.0.0.1:50051 or \
                 [::1]:50051 (host names are not resolved)"
            ),
        )
    })?;
    if addr.port() == 0 {
        return invalid(path.clone(), format!("invalid endpoint {text:?}: port 0 cannot be dialed"));
    }
    if addr.ip().is_unspecified() || addr.ip().is_multicast() {
        return invalid(
            path.clone(),
            format!("invalid endpoint {text:?}: {} is not an address clients can connect to", addr.ip()),
        );
    }
    Ok(addr)
}

/// A duration written with its unit: `250ms`, `2s`, `1m`. Zero is rejected.
fn duration(path: &YamlPath, text: &str) -> Result<Duration, Invalid> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value = number.parse::<u64>().ok();
    let d = match (value, unit) {
        (Some(v), "ms") => Some(Duration::from_millis(v)),
        (Some(v), "s") => Some(Duration::from_secs(v)),
        (Some(v), "m") => v.checked_mul(60).map(Duration::from_secs),
        _ => None,
    };
    match d {
        Some(d) if !d.is_zero() => Ok(d),
        Some(_) => invalid(path.clone(), format!("the duration {text:?} must be more than 0")),
        None => invalid(
            path.clone(),
            format!("invalid duration {text:?}: expected a whole number and a unit, such as 250ms, 2s or 1m"),
        ),
    }
}

/// Writes a duration the way the registry file does: `250ms`, `2s`.
pub fn format_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 && d.as_secs() > 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

// ---------------------------------------------------------------------------------------------
// Finding the position of a path (see the module docs).

/// The text the locating seed fails with, to tell its error from a real one.
const LOCATE_SENTINEL: &str = "<the node being located>";

/// The 1-based line and column of the node at `path`, or of its nearest ancestor that exists.
fn locate(text: &str, path: &[Seg]) -> Option<(usize, usize)> {
    (0..=path.len()).rev().find_map(|len| locate_exact(text, &path[..len]))
}

fn locate_exact(text: &str, path: &[Seg]) -> Option<(usize, usize)> {
    match Locate(path).deserialize(serde_yaml_ng::Deserializer::from_str(text)) {
        Err(err) if err.to_string().contains(LOCATE_SENTINEL) => err.location().map(|l| (l.line(), l.column())),
        _ => None,
    }
}

/// Walks `path` through the document and fails at its end (see the module docs).
struct Locate<'p>(&'p [Seg]);

/// Accepts nothing: every `visit_*` fails with an error whose text contains the sentinel.
struct Fail;

impl Visitor<'_> for Fail {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(LOCATE_SENTINEL)
    }
}

impl<'de> DeserializeSeed<'de> for Locate<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        if self.0.is_empty() {
            d.deserialize_any(Fail)
        } else {
            d.deserialize_any(self)
        }
    }
}

impl<'de> Visitor<'de> for Locate<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML node")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((Seg::Key(want), rest)) = self.0.split_first() else {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            return Ok(());
        };
        while let Some(key) = map.next_key::<String>()? {
            if key == *want {
                return map.next_value_seed(Locate(rest));
            }
            map.next_value::<IgnoredAny>()?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((Seg::Index(want), rest)) = self.0.split_first() else {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            return Ok(());
        };
        for _ in 0..*want {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(());
            }
        }
        seq.next_element_seed(Locate(rest)).map(|_| ())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> ParseError {
        Registry::parse(text).expect_err("the registry should be rejected")
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("addr")
    }

    #[test]
    fn parses_the_documented_form() {
        let text = "services:\n  - name: myservice\n    endpoints: [\"127.0.0.1:50051\", \"[::1]:50052\"]\n";
        let registry = Registry::parse(text).expect("valid registry");
        assert_eq!(registry.services.len(), 1);
        let s = &registry.services[0];
        assert_eq!(s.name, "myservice");
        assert_eq!(s.addresses().collect::<Vec<_>>(), vec![addr("127.0.0.1:50051"), addr("[::1]:50052")]);
        assert_eq!(s.endpoints[0], Endpoint::new(addr("127.0.0.1:50051")));
        assert_eq!(s.lb_policy, LbPolicy::RoundRobin);
        assert_eq!(s.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(s.health_check, HealthCheck::default());
        assert_eq!(s.health_check.kind, HealthCheckKind::Tcp);
        assert_eq!(registry.endpoint_count(), 2);
        assert!(registry.listeners.is_empty() && registry.secrets.is_empty());
    }

    #[test]
    fn bundled_example_is_valid() {
        let text = include_str!("../registry.yaml");
        let registry = Registry::parse(text).expect("examples/registry.yaml is valid");
        assert_eq!(registry.services[0].name, "myservice");
        assert_eq!(registry.services[0].endpoints.len(), 2);
    }

    /// `examples/registry-full.yaml` documents every field: it must parse, and mean what its
    /// comments say.
    #[test]
    fn full_example_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("registry-full.yaml");
        let registry = Registry::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let payments = registry.service("payments").expect("payments");
        assert_eq!(payments.lb_policy, LbPolicy::LeastRequest);
        assert_eq!(payments.connect_timeout, Duration::from_millis(250));
        assert_eq!(payments.health_check.kind, HealthCheckKind::Grpc { service_name: "payments.v1.Payments".into() });
        assert_eq!(payments.health_check.interval, Duration::from_secs(5));
        let e = &payments.endpoints[1];
        assert_eq!(e.weight, 3);
        assert_eq!(e.locality.region, "eu-west-1");
        assert_eq!(e.locality.sub_zone, "rack-2");
        assert_eq!(e.metadata.get("version"), Some(&serde_json::json!("v2")));
        assert_eq!(payments.endpoints[2].locality.zone, "eu-west-1b");
        let legacy = registry.service("legacy").expect("legacy");
        assert_eq!(legacy.health_check.kind, HealthCheckKind::None);
        assert_eq!(legacy.protocol, Protocol::Http1);
        assert_eq!(registry.listeners.len(), 2);
        let ingress = &registry.listeners[0];
        assert_eq!((ingress.address, ingress.port), ("0.0.0.0".parse().expect("ip"), 10000));
        assert!(matches!(&ingress.routes[1].target, RouteTarget::Split(s) if s.len() == 2));
        assert_eq!(ingress.routes[0].headers[0], HeaderMatch { name: "x-canary".into(), exact: Some("true".into()) });
        let tls = registry.listeners[1].tls.as_ref().expect("tls");
        assert_eq!(tls.client_ca.as_deref(), Some("client-ca"));
        assert_eq!(registry.secrets.len(), 2);
        assert!(registry.warnings().is_empty(), "{:?}", registry.warnings());
    }

    #[test]
    fn block_style_and_empty_endpoint_list_are_accepted() {
        let text = "services:\n  - name: a\n    endpoints:\n      - 10.0.0.1:80\n  - name: b\n    endpoints: []\n";
        let registry = Registry::parse(text).expect("valid registry");
        assert_eq!(registry.services[1].endpoints, vec![]);
        assert_eq!(registry.warnings().len(), 1);
    }

    #[test]
    fn endpoints_may_be_objects_with_weight_locality_and_metadata() {
        let text = "services:\n  - name: a\n    lb_policy: ring_hash\n    connect_timeout: 250ms\n    endpoints:\n      - 10.0.0.1:80\n      - address: 10.0.0.2:80\n        weight: 5\n        zone: z2\n        metadata: {version: v2, canary: true, shard: 3}\n      - {address: \"[::1]:80\", locality: {region: r, zone: z, sub_zone: s}}\n";
        let r = Registry::parse(text).expect("valid");
        let s = &r.services[0];
        assert_eq!(s.lb_policy, LbPolicy::RingHash);
        assert_eq!(s.connect_timeout, Duration::from_millis(250));
        assert_eq!(s.endpoints[0].locality.zone, DEFAULT_ZONE);
        assert_eq!(s.endpoints[1].weight, 5);
        assert_eq!(s.endpoints[1].locality, Locality { region: "".into(), zone: "z2".into(), sub_zone: "".into() });
        assert_eq!(s.endpoints[1].metadata["canary"], serde_json::json!(true));
        assert_eq!(s.endpoints[1].metadata["shard"], serde_json::json!(3));
        assert_eq!(s.endpoints[2].locality.to_string(), "r/z/s");
    }

    #[test]
    fn every_lb_policy_is_accepted_and_grpc_incompatible_ones_warn() {
        for (name, policy) in [
            ("round_robin", LbPolicy::RoundRobin),
            ("least_request", LbPolicy::LeastRequest),
            ("random", LbPolicy::Random),
            ("ring_hash", LbPolicy::RingHash),
            ("maglev", LbPolicy::Maglev),
        ] {
            let r =
                Registry::parse(&format!("services:\n  - {{name: a, lb_policy: {name}, endpoints: [10.0.0.1:1]}}\n"))
                    .expect("valid");
            assert_eq!(r.services[0].lb_policy, policy);
            assert_eq!(policy.as_str(), name);
            assert_eq!(r.warnings().len(), usize::from(policy.unknown_to_grpc()), "{name}");
        }
        let e = err("services:\n  - name: a\n    lb_policy: fastest\n    endpoints: []\n");
        assert_eq!(e.location.map(|l| l.0), Some(3), "{e}");
        assert!(e.reason.contains("unknown variant `fastest`"), "{e}");
    }

    #[test]
    fn health_checks_are_configurable() {
        let r = Registry::parse(
            "services:\n  - name: a\n    endpoints: []\n    health_check: {kind: grpc, service_name: a.v1.A, interval: 500ms, timeout: 100ms, healthy_threshold: 1, unhealthy_threshold: 3}\n  - name: b\n    endpoints: []\n    health_check: {kind: none}\n  - name: c\n    endpoints: []\n    health_check: {interval: 1s}\n",
        )
        .expect("valid");
        let a = &r.services[0].health_check;
        assert_eq!(a.kind, HealthCheckKind::Grpc { service_name: "a.v1.A".into() });
        assert_eq!((a.interval, a.timeout), (Duration::from_millis(500), Duration::from_millis(100)));
        assert_eq!((a.healthy_threshold, a.unhealthy_threshold), (1, 3));
        assert!(!r.services[1].health_check.enabled());
        let c = &r.services[2].health_check;
        assert_eq!(
            (c.kind.clone(), c.interval, c.timeout),
            (HealthCheckKind::Tcp, Duration::from_secs(1), Duration::from_secs(1))
        );

        for (bad, needle) in [
            ("{kind: tcp, service_name: x}", "service_name"),
            ("{interval: 1s, timeout: 2s}", "must not exceed"),
            ("{interval: 0s}", "more than 0"),
            ("{interval: 2}", "invalid duration"),
            ("{unhealthy_threshold: 0}", "at least 1"),
            ("{kind: http}", "unknown variant `http`"),
        ] {
            let e = err(&format!("services:\n  - name: a\n    endpoints: []\n    health_check: {bad}\n"));
            assert_eq!(e.location.map(|l| l.0), Some(4), "{bad}: {e}");
            assert!(e.reason.contains(needle), "{bad}: {e}");
        }
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

        let e = err("services:\n  - name: a\n    endpoints:\n      - {address: 10.0.0.1:1, wieght: 2}\n");
        assert_eq!(e.location.map(|l| l.0), Some(4), "{e}");
        assert!(e.reason.contains("unknown field `wieght`"), "{e}");
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

        let e = err("services:\n  - name: a\n    endpoints:\n      - 10.0.0.1:80\n      - address: nowhere\n");
        assert_eq!(e.location, Some((5, 18)), "{e}");
        assert!(e.reason.starts_with("services[0].endpoints[1].address: invalid endpoint"), "{e}");

        let e = err("services:\n  - name: a\n    endpoints:\n      - {address: 10.0.0.1:80, weight: 0}\n");
        assert!(e.reason.contains("at least 1"), "{e}");
        assert_eq!(e.location.map(|l| l.0), Some(4), "{e}");
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

    const SERVICES: &str =
        "services:\n  - {name: a, endpoints: [10.0.0.1:1]}\n  - {name: b, endpoints: [10.0.0.2:1]}\n";

    #[test]
    fn listeners_route_by_prefix_header_and_split() {
        let text = format!(
            "{SERVICES}listeners:\n  - name: ingress\n    port: 8080\n    routes:\n      - prefix: /b/\n        headers: [{{name: X-Env, exact: staging}}, {{name: x-debug}}]\n        service: b\n      - split: [{{service: a, weight: 9}}, {{service: b, weight: 1}}]\n"
        );
        let r = Registry::parse(&text).expect("valid");
        let l = &r.listeners[0];
        assert_eq!((l.address, l.port, l.domains.clone()), (DEFAULT_LISTENER_ADDRESS, 8080, vec!["*".to_string()]));
        assert_eq!(l.routes[0].prefix, "/b/");
        assert_eq!(l.routes[0].headers[0], HeaderMatch { name: "x-env".into(), exact: Some("staging".into()) });
        assert_eq!(l.routes[0].headers[1].exact, None);
        assert_eq!(l.routes[0].target, RouteTarget::Service("b".into()));
        assert_eq!(l.routes[1].prefix, "/");
        assert_eq!(
            l.routes[1].target,
            RouteTarget::Split(vec![
                WeightedService { service: "a".into(), weight: 9 },
                WeightedService { service: "b".into(), weight: 1 }
            ])
        );
    }

    #[test]
    fn listener_mistakes_are_located() {
        let cases = [
            // A route to an unknown service, at the service name.
            ("  - name: l\n    port: 80\n    routes:\n      - service: nope\n", (8, 18), "route to unknown service \"nope\""),
            // A weighted split whose weights sum to 0, at the split.
            ("  - name: l\n    port: 80\n    routes:\n      - split: [{service: a, weight: 0}]\n", (8, 16), "sum to 0"),
            // An unknown service inside a split.
            ("  - name: l\n    port: 80\n    routes:\n      - split:\n          - {service: a, weight: 1}\n          - {service: c, weight: 1}\n", (10, 23), "unknown service \"c\""),
            // A listener named like a service.
            ("  - name: a\n    port: 80\n    routes: [{service: a}]\n", (5, 11), "duplicate name \"a\""),
            // Two listeners on one port.
            ("  - {name: l1, port: 80, routes: [{service: a}]}\n  - {name: l2, address: 127.0.0.1, port: 80, routes: [{service: a}]}\n", (6, 42), "overlaps listeners[0]"),
            // Both or neither of service and split.
            ("  - name: l\n    port: 80\n    routes: [{prefix: /}]\n", (7, 14), "exactly one of `service` and `split`"),
            ("  - name: l\n    port: 80\n    routes: []\n", (7, 13), "at least one route"),
            ("  - name: l\n    port: 0\n    routes: [{service: a}]\n", (6, 11), "between 1 and 65535"),
            ("  - name: l\n    address: example.org\n    port: 80\n    routes: [{service: a}]\n", (6, 14), "invalid listen address"),
            ("  - name: l\n    port: 80\n    routes: [{prefix: api, service: a}]\n", (7, 23), "must start with '/'"),
            ("  - name: l\n    port: 80\n    tls: {certificate: missing}\n    routes: [{service: a}]\n", (7, 24), "unknown secret \"missing\""),
        ];
        for (listeners, location, needle) in cases {
            let e = err(&format!("{SERVICES}listeners:\n{listeners}"));
            assert!(e.reason.contains(needle), "{listeners}: {e}");
            assert_eq!(e.location, Some(location), "{listeners}: {e}");
        }
    }

    #[test]
    fn secrets_are_read_from_files_relative_to_the_registry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        std::fs::write(dir.path().join("cert.pem"), pem).expect("write");
        std::fs::write(dir.path().join("key.pem"), "-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n")
            .expect("write");
        std::fs::write(dir.path().join("not-pem.txt"), "hello").expect("write");
        let text = format!(
            "{SERVICES}secrets:\n  - name: server\n    tls_certificate: {{certificate_chain: cert.pem, private_key: key.pem}}\n  - name: ca\n    validation_context: {{trusted_ca: cert.pem}}\nlisteners:\n  - name: l\n    port: 443\n    tls: {{certificate: server, client_ca: ca}}\n    routes: [{{service: a}}]\n"
        );
        let parsed = Registry::parse_tracked(&text, dir.path());
        let r = parsed.result.expect("valid");
        assert_eq!(parsed.files.len(), 3);
        assert!(parsed.files.iter().all(|f| f.content_hash.is_some()));
        match &r.secrets[0].kind {
            SecretKind::TlsCertificate { certificate_chain, private_key } => {
                assert_eq!(certificate_chain.pem, pem);
                assert_eq!(certificate_chain.path, dir.path().join("cert.pem"));
                assert!(!format!("{private_key:?}").contains("BEGIN"), "the key stays out of debug output");
            }
            other => panic!("unexpected {other:?}"),
        }

        // A missing file is reported at the line that names it, and still tracked.
        let missing = text.replace("key.pem", "gone.pem");
        let parsed = Registry::parse_tracked(&missing, dir.path());
        let e = parsed.result.expect_err("missing key");
        assert_eq!(e.location, Some((6, 65)), "{e}");
        assert!(e.reason.contains("secrets[0].tls_certificate.private_key: cannot read"), "{e}");
        assert!(e.reason.contains("gone.pem"), "{e}");
        assert_eq!(parsed.files.last().map(|f| f.content_hash.is_none()), Some(true));

        let e = Registry::parse_in(&text.replace("trusted_ca: cert.pem", "trusted_ca: not-pem.txt"), dir.path())
            .expect_err("not pem");
        assert!(e.reason.contains("is not a PEM file"), "{e}");
        let e = Registry::parse_in(&text.replace("client_ca: ca", "client_ca: server"), dir.path())
            .expect_err("wrong kind");
        assert!(e.reason.contains("is not a `validation_context`"), "{e}");
        let e = Registry::parse_in(&format!("{SERVICES}secrets:\n  - name: s\n"), dir.path()).expect_err("empty");
        assert!(e.reason.contains("exactly one of"), "{e}");
        assert_eq!(e.location, Some((5, 5)), "{e}");
    }

    #[test]
    fn durations_need_a_unit() {
        let p = YamlPath::default();
        assert_eq!(duration(&p, "250ms").ok(), Some(Duration::from_millis(250)));
        assert_eq!(duration(&p, "2s").ok(), Some(Duration::from_secs(2)));
        assert_eq!(duration(&p, "1m").ok(), Some(Duration::from_secs(60)));
        for bad in ["2", "s", "1.5s", "-1s", "0ms", "1h"] {
            assert!(duration(&p, bad).is_err(), "{bad}");
        }
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_duration(Duration::from_secs(2)), "2s");
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
