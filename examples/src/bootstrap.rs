//! The bootstrap a proxyless gRPC client reads to find this server (gRFC A27).
//!
//! The client reads it from the file named by `GRPC_XDS_BOOTSTRAP` or inline from
//! `GRPC_XDS_BOOTSTRAP_CONFIG`; see XDS-PROTOCOL.md rule 27.

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
}
