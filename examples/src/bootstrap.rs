//! The bootstraps that point a client at this server.
//!
//! - [`grpc_bootstrap`]: the JSON a proxyless gRPC client reads (gRFC A27), from the file named
//!   by `GRPC_XDS_BOOTSTRAP` or inline from `GRPC_XDS_BOOTSTRAP_CONFIG`; see XDS-PROTOCOL.md
//!   rule 27.
//! - [`envoy_bootstrap`]: Envoy's YAML bootstrap (`envoy -c FILE`), XDS-PROTOCOL.md rule 28:
//!   `dynamic_resources` with an ADS `ads_config` (gRPC or delta gRPC, transport API v3) and
//!   LDS and CDS over ADS; a static cluster for the control plane with HTTP/2 (xDS is gRPC)
//!   and optional TLS; and an admin listener on loopback. It is built as a JSON value and
//!   written as YAML, so it is always well-formed; every typed config carries its `@type`.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;

use serde_json::{json, Value};

/// The default `node.id` of the generated bootstrap.
pub const DEFAULT_NODE_ID: &str = "xds-sidecar-client";

/// The default `node.locality.zone` of the generated bootstrap.
pub const DEFAULT_ZONE: &str = "default";

/// The gRPC xDS bootstrap JSON: one insecure xDS v3 server at `server_uri` and the client's node.
pub fn grpc_bootstrap(server_uri: &str, node_id: &str, zone: &str) -> Value {
    json!({
        "xds_servers": [{
            "server_uri": server_uri,
            "channel_creds": [{ "type": "insecure" }],
            "server_features": ["xds_v3"],
        }],
        "node": {
            "id": node_id,
            "locality": { "zone": zone },
        },
    })
}

/// The default `node.id` of the Envoy bootstrap.
pub const DEFAULT_ENVOY_NODE_ID: &str = "xds-sidecar-envoy";

/// The default `node.cluster` of the Envoy bootstrap.
pub const DEFAULT_ENVOY_CLUSTER: &str = "xds-sidecar";

/// The default port of Envoy's admin listener (on 127.0.0.1).
pub const DEFAULT_ENVOY_ADMIN_PORT: u16 = 9901;

/// The name of the control-plane cluster in the Envoy bootstrap.
pub const XDS_CLUSTER: &str = "xds_cluster";

/// A `HOST:PORT` to reach the xDS server: an IP (`127.0.0.1:18000`, `[::1]:18000`) or a DNS
/// name (`xds.example.internal:18000`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// The IP address or DNS name, without brackets.
    pub host: String,
    /// The port.
    pub port: u16,
}

impl HostPort {
    /// The host as an IP address, when it is one.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

impl FromStr for HostPort {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (host, port) = text.rsplit_once(':').ok_or_else(|| format!("expected HOST:PORT, got {text:?}"))?;
        let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(v6) if v6.parse::<std::net::Ipv6Addr>().is_ok() => v6,
            Some(_) => return Err(format!("invalid IPv6 address in {text:?}")),
            None if host.contains(':') => return Err(format!("write an IPv6 address in brackets: [{host}]:{port}")),
            None => host,
        };
        let valid_name = !host.is_empty()
            && host.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == ':')
            && !host.starts_with('-');
        if !valid_name {
            return Err(format!("invalid host {host:?}"));
        }
        let port: u16 = port.parse().map_err(|_| format!("invalid port {port:?}"))?;
        if port == 0 {
            return Err("the port must be between 1 and 65535".to_string());
        }
        Ok(Self { host: host.to_string(), port })
    }
}

/// Formats as `HOST:PORT`, with brackets around IPv6.
impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// TLS from Envoy to the xDS server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvoyTls {
    /// CA bundle (PEM) the server's certificate must chain to.
    pub ca: PathBuf,
    /// Envoy's client certificate and key (PEM), for mutual TLS.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// The name to send as SNI and to require among the server certificate's DNS names; when
    /// `None`, the xDS host is used if it is a DNS name.
    pub server_name: Option<String>,
}

/// What [`envoy_bootstrap`] writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvoyBootstrapOptions {
    /// `node.id`: how the sidecar's logs name this Envoy.
    pub node_id: String,
    /// `node.cluster`: the service this Envoy belongs to (Envoy requires one for some features).
    pub cluster: String,
    /// Where the xDS server listens.
    pub xds_addr: HostPort,
    /// Incremental xDS (`DELTA_GRPC`) instead of state of the world (`GRPC`).
    pub delta: bool,
    /// TLS to the xDS server, if any.
    pub tls: Option<EnvoyTls>,
    /// The port of Envoy's admin listener, on 127.0.0.1.
    pub admin_port: u16,
}

/// Defaults: node `xds-sidecar-envoy` in cluster `xds-sidecar`, SotW ADS to 127.0.0.1:18000
/// without TLS, admin on 127.0.0.1:9901.
impl Default for EnvoyBootstrapOptions {
    fn default() -> Self {
        Self {
            node_id: DEFAULT_ENVOY_NODE_ID.to_string(),
            cluster: DEFAULT_ENVOY_CLUSTER.to_string(),
            xds_addr: HostPort { host: "127.0.0.1".to_string(), port: 18000 },
            delta: false,
            tls: None,
            admin_port: DEFAULT_ENVOY_ADMIN_PORT,
        }
    }
}

/// A file name for Envoy: absolute, so the bootstrap works from any working directory.
fn filename(path: &std::path::Path) -> Value {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    json!({ "filename": absolute.display().to_string() })
}

fn socket_address(host: &str, port: u16) -> Value {
    json!({ "socket_address": { "address": host, "port_value": port } })
}

/// Envoy's bootstrap as a JSON value (see [`envoy_bootstrap`] for the YAML).
pub fn envoy_bootstrap_value(opts: &EnvoyBootstrapOptions) -> Value {
    let ads = json!({ "resource_api_version": "V3", "ads": {} });
    let static_ip = opts.xds_addr.ip().is_some();
    let mut xds_cluster = json!({
        "name": XDS_CLUSTER,
        "type": if static_ip { "STATIC" } else { "STRICT_DNS" },
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": XDS_CLUSTER,
            "endpoints": [{
                "lb_endpoints": [{
                    "endpoint": { "address": socket_address(&opts.xds_addr.host, opts.xds_addr.port) },
                }],
            }],
        },
        // xDS is gRPC: the control-plane connection must be HTTP/2.
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": { "http2_protocol_options": {} },
            },
        },
    });
    if let Some(tls) = &opts.tls {
        let server_name = tls.server_name.clone().or_else(|| (!static_ip).then(|| opts.xds_addr.host.clone()));
        let mut validation = json!({ "trusted_ca": filename(&tls.ca) });
        if let Some(name) = &server_name {
            validation["match_typed_subject_alt_names"] = json!([{ "san_type": "DNS", "matcher": { "exact": name } }]);
        }
        let mut common = json!({ "alpn_protocols": ["h2"], "validation_context": validation });
        if let Some((cert, key)) = &tls.client_cert {
            common["tls_certificates"] = json!([{ "certificate_chain": filename(cert), "private_key": filename(key) }]);
        }
        let mut context = json!({
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "common_tls_context": common,
        });
        if let Some(name) = server_name {
            context["sni"] = json!(name);
        }
        xds_cluster["transport_socket"] = json!({ "name": "envoy.transport_sockets.tls", "typed_config": context });
    }
    json!({
        "node": { "id": opts.node_id, "cluster": opts.cluster },
        "dynamic_resources": {
            "ads_config": {
                "api_type": if opts.delta { "DELTA_GRPC" } else { "GRPC" },
                "transport_api_version": "V3",
                "grpc_services": [{ "envoy_grpc": { "cluster_name": XDS_CLUSTER } }],
                // The server remembers the node of a stream (XDS-PROTOCOL.md rule 6).
                "set_node_on_first_message_only": true,
            },
            "cds_config": ads,
            "lds_config": ads,
        },
        "static_resources": { "clusters": [xds_cluster] },
        "admin": { "address": socket_address("127.0.0.1", opts.admin_port) },
    })
}

/// Envoy's bootstrap YAML pointing Envoy at the sidecar (see the module docs).
pub fn envoy_bootstrap(opts: &EnvoyBootstrapOptions) -> String {
    let value = envoy_bootstrap_value(opts);
    // A JSON value has string keys only: writing it as YAML cannot fail.
    let yaml = serde_yaml_ng::to_string(&value).expect("a JSON value is valid YAML");
    format!(
        "# Envoy bootstrap written by `xds-sidecar bootstrap envoy`: run `envoy -c THIS_FILE`.\n\
         # Listeners, routes, clusters, endpoints and secrets come from the xDS server at {} (ADS, {}).\n{yaml}",
        opts.xds_addr,
        if opts.delta { "incremental" } else { "state of the world" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_has_the_shape_grpc_expects() {
        let b = grpc_bootstrap("127.0.0.1:18000", "client-1", "z1");
        assert_eq!(
            b,
            serde_json::from_str::<Value>(
                r#"{"xds_servers":[{"server_uri":"127.0.0.1:18000",
                    "channel_creds":[{"type":"insecure"}],"server_features":["xds_v3"]}],
                    "node":{"id":"client-1","locality":{"zone":"z1"}}}"#
            )
            .expect("valid json")
        );
    }

    fn parse_yaml(yaml: &str) -> Value {
        serde_yaml_ng::from_str(yaml).expect("valid YAML")
    }

    #[test]
    fn envoy_bootstrap_points_envoy_at_the_sidecar() {
        let yaml = envoy_bootstrap(&EnvoyBootstrapOptions::default());
        let b = parse_yaml(&yaml);
        assert_eq!(b, envoy_bootstrap_value(&EnvoyBootstrapOptions::default()), "the YAML is the value");
        assert_eq!(b["node"], json!({"id": DEFAULT_ENVOY_NODE_ID, "cluster": DEFAULT_ENVOY_CLUSTER}));
        let ads = &b["dynamic_resources"]["ads_config"];
        assert_eq!(ads["api_type"], "GRPC");
        assert_eq!(ads["transport_api_version"], "V3");
        assert_eq!(ads["grpc_services"][0]["envoy_grpc"]["cluster_name"], XDS_CLUSTER);
        for t in ["cds_config", "lds_config"] {
            assert_eq!(b["dynamic_resources"][t], json!({"resource_api_version": "V3", "ads": {}}), "{t}");
        }
        let cluster = &b["static_resources"]["clusters"][0];
        assert_eq!(cluster["name"], XDS_CLUSTER);
        assert_eq!(cluster["type"], "STATIC");
        assert_eq!(
            cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"],
            json!({"address": "127.0.0.1", "port_value": 18000})
        );
        let http =
            &cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
        assert_eq!(http["@type"], "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions");
        assert_eq!(http["explicit_http_config"], json!({"http2_protocol_options": {}}));
        assert!(cluster.get("transport_socket").is_none());
        assert_eq!(b["admin"]["address"]["socket_address"], json!({"address": "127.0.0.1", "port_value": 9901}));
    }

    #[test]
    fn envoy_bootstrap_delta_dns_and_tls() {
        let opts = EnvoyBootstrapOptions {
            node_id: "edge-1".into(),
            cluster: "edge".into(),
            xds_addr: "xds.example.internal:443".parse().expect("host port"),
            delta: true,
            tls: Some(EnvoyTls {
                ca: "/etc/xds/ca.pem".into(),
                client_cert: Some(("/etc/xds/envoy.pem".into(), "/etc/xds/envoy-key.pem".into())),
                server_name: None,
            }),
            admin_port: 19901,
        };
        let b = parse_yaml(&envoy_bootstrap(&opts));
        assert_eq!(b["dynamic_resources"]["ads_config"]["api_type"], "DELTA_GRPC");
        let cluster = &b["static_resources"]["clusters"][0];
        assert_eq!(cluster["type"], "STRICT_DNS");
        let ts = &cluster["transport_socket"];
        assert_eq!(ts["name"], "envoy.transport_sockets.tls");
        let tls = &ts["typed_config"];
        assert_eq!(tls["@type"], "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext");
        assert_eq!(tls["sni"], "xds.example.internal");
        let common = &tls["common_tls_context"];
        assert_eq!(common["alpn_protocols"], json!(["h2"]));
        assert_eq!(common["validation_context"]["trusted_ca"], json!({"filename": "/etc/xds/ca.pem"}));
        assert_eq!(
            common["validation_context"]["match_typed_subject_alt_names"],
            json!([{"san_type": "DNS", "matcher": {"exact": "xds.example.internal"}}])
        );
        assert_eq!(
            common["tls_certificates"],
            json!([{"certificate_chain": {"filename": "/etc/xds/envoy.pem"}, "private_key": {"filename": "/etc/xds/envoy-key.pem"}}])
        );
        assert_eq!(b["admin"]["address"]["socket_address"]["port_value"], 19901);

        // An IP server without a server name: no SNI, no SAN matcher; relative files made absolute.
        let opts = EnvoyBootstrapOptions {
            tls: Some(EnvoyTls { ca: "ca.pem".into(), client_cert: None, server_name: None }),
            ..EnvoyBootstrapOptions::default()
        };
        let b = envoy_bootstrap_value(&opts);
        let tls = &b["static_resources"]["clusters"][0]["transport_socket"]["typed_config"];
        assert!(tls.get("sni").is_none());
        assert!(tls["common_tls_context"].get("tls_certificates").is_none());
        let ca = tls["common_tls_context"]["validation_context"]["trusted_ca"]["filename"].as_str().expect("string");
        assert!(std::path::Path::new(ca).is_absolute(), "{ca}");
    }

    #[test]
    fn host_port_parses_ips_and_names() {
        let hp = |s: &str| s.parse::<HostPort>();
        assert_eq!(hp("127.0.0.1:18000"), Ok(HostPort { host: "127.0.0.1".into(), port: 18000 }));
        assert_eq!(
            hp("[::1]:18000").map(|h| (h.host.clone(), h.to_string())),
            Ok(("::1".into(), "[::1]:18000".into()))
        );
        assert_eq!(hp("xds.internal:443").map(|h| h.ip()), Ok(None));
        for bad in ["127.0.0.1", "::1:80", "host:0", "host:99999", ":80", "[nope]:80", "a b:80"] {
            assert!(hp(bad).is_err(), "{bad}");
        }
    }
}
