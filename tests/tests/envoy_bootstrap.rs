//! The Envoy bootstrap `xds-sidecar bootstrap envoy` prints parses into Envoy's `Bootstrap`
//! message (proto3 JSON mapping, every `@type` resolved), so a typo can never ship.

use std::path::PathBuf;

use xds_core::envoy::config::bootstrap::v3::Bootstrap;
use xds_core::envoy::config::core::v3::api_config_source::ApiType;
use xds_core::prost::Message;
use xds_examples::bootstrap::{envoy_bootstrap, EnvoyBootstrapOptions, EnvoyTls};

fn parse(yaml: &str) -> Bootstrap {
    let value: serde_json::Value = serde_yaml_ng::from_str(yaml).expect("the bootstrap is YAML");
    let bytes = xds_core::json::from_json("envoy.config.bootstrap.v3.Bootstrap", &value.to_string())
        .unwrap_or_else(|e| panic!("not a valid Envoy Bootstrap: {e}\n{yaml}"));
    Bootstrap::decode(bytes.as_slice()).expect("decodes")
}

#[test]
fn sotw_bootstrap_is_a_valid_envoy_bootstrap() {
    let b = parse(&envoy_bootstrap(&EnvoyBootstrapOptions::default()));
    let ads = b.dynamic_resources.as_ref().and_then(|d| d.ads_config.as_ref()).expect("ads_config");
    assert_eq!(ads.api_type, ApiType::Grpc as i32);
    let xds = &b.static_resources.as_ref().expect("static resources").clusters[0];
    let options = &xds.typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
    assert_eq!(options.type_url, "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions");
    assert!(b.admin.is_some());
    assert!(!b.node.as_ref().expect("node").id.is_empty());
}

#[test]
fn delta_and_tls_bootstrap_is_a_valid_envoy_bootstrap() {
    let opts = EnvoyBootstrapOptions {
        delta: true,
        tls: Some(EnvoyTls {
            ca: PathBuf::from("/etc/xds/ca.pem"),
            client_cert: Some((PathBuf::from("/etc/xds/envoy.pem"), PathBuf::from("/etc/xds/envoy-key.pem"))),
            server_name: Some("xds.mesh.local".into()),
        }),
        ..Default::default()
    };
    let b = parse(&envoy_bootstrap(&opts));
    let ads = b.dynamic_resources.as_ref().and_then(|d| d.ads_config.as_ref()).expect("ads_config");
    assert_eq!(ads.api_type, ApiType::DeltaGrpc as i32);
    let xds = &b.static_resources.as_ref().expect("static resources").clusters[0];
    let socket = xds.transport_socket.as_ref().expect("TLS transport socket");
    assert_eq!(socket.name, "envoy.transport_sockets.tls");
}
