//! The Client Status Discovery Service (CSDS, `envoy.service.status.v3`): what each connected
//! client holds, type by type, in the API that tools written for xDS control planes read.
//!
//! Each client's node gets a `ClientConfig` with one `GenericXdsConfig` per type per stream
//! (no resource names: the server keeps versions per type, not per resource, as Istio's CSDS
//! does): `version_info` is the version the client last ACKed, `last_updated` when, and
//! `config_status` says where it stands:
//!
//! | `config_status` | when |
//! |---|---|
//! | `SYNCED` | the client ACKed the last version sent |
//! | `STALE` | a version was sent and is neither ACKed nor NACKed yet |
//! | `ERROR` | the client NACKed the last version sent; `error_state` holds its error text |
//! | `NOT_SENT` | the client subscribed and nothing was sent yet |
//!
//! `node_matchers` select clients by `node_id` (exact, prefix, suffix, contains, with
//! `ignore_case`, or a whole-string `safe_regex`); a request with none gets every client.
//! Metadata matchers are refused with `INVALID_ARGUMENT`: the server keeps no node metadata.
//!
//! The service lists every node's id and versions, so it is not served on the xDS port: the
//! admin router ([`crate::admin::router`]) serves it beside `/clients`, and
//! [`ClientStatusService::into_server`] mounts it on any tonic server.

use std::borrow::Cow;
use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use xds_core::envoy::admin::v3::UpdateFailureState;
use xds_core::envoy::config::core::v3::Node;
use xds_core::envoy::r#type::matcher::v3::{string_matcher::MatchPattern, NodeMatcher, StringMatcher};
use xds_core::envoy::service::status::v3::client_config::GenericXdsConfig;
use xds_core::envoy::service::status::v3::client_status_discovery_service_server::{
    ClientStatusDiscoveryService, ClientStatusDiscoveryServiceServer,
};
use xds_core::envoy::service::status::v3::{ClientConfig, ClientStatusRequest, ClientStatusResponse, ConfigStatus};
use xds_core::google::protobuf::Timestamp;

use crate::status::{ClientRegistry, StreamStatus, TypeStatus};

/// CSDS over a server's [`ClientRegistry`] ([`XdsServer::clients`](crate::XdsServer::clients)).
#[derive(Debug, Clone)]
pub struct ClientStatusService {
    clients: Arc<ClientRegistry>,
}

impl ClientStatusService {
    /// The service for the clients of `clients`.
    pub fn new(clients: Arc<ClientRegistry>) -> Self {
        Self { clients }
    }

    /// The tonic service, to mount on a server (`tonic::transport::Server::add_service`).
    pub fn into_server(self) -> ClientStatusDiscoveryServiceServer<Self> {
        ClientStatusDiscoveryServiceServer::new(self)
    }

    /// The answer to one request: the clients its node matchers select, or `INVALID_ARGUMENT`
    /// for a matcher that cannot be applied.
    pub fn status(&self, request: &ClientStatusRequest) -> Result<ClientStatusResponse, Status> {
        let matchers = request.node_matchers.iter().map(IdMatcher::new).collect::<Result<Vec<_>, _>>()?;
        let config = self
            .clients
            .clients()
            .into_iter()
            .filter(|c| {
                !c.node_id.is_empty() && (matchers.is_empty() || matchers.iter().any(|m| m.matches(&c.node_id)))
            })
            .map(|client| {
                let cluster = client.streams.first().map(|s| s.node_cluster.clone()).unwrap_or_default();
                ClientConfig {
                    node: Some(Node { id: client.node_id, cluster, ..Default::default() }),
                    generic_xds_configs: client.streams.iter().flat_map(type_configs).collect(),
                    ..Default::default()
                }
            })
            .collect();
        Ok(ClientStatusResponse { config })
    }
}

/// One stream's types.
fn type_configs(stream: &StreamStatus) -> impl Iterator<Item = GenericXdsConfig> + '_ {
    stream.types.iter().map(|(type_url, t)| GenericXdsConfig {
        type_url: type_url.clone(),
        version_info: t.last_acked_version.clone().unwrap_or_default(),
        last_updated: t.last_acked_at.map(timestamp),
        config_status: config_status(t) as i32,
        error_state: t.last_nack.as_ref().map(|nack| UpdateFailureState {
            last_update_attempt: Some(timestamp(nack.at)),
            details: nack.error.clone(),
            version_info: nack.rejected_version.clone(),
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn config_status(t: &TypeStatus) -> ConfigStatus {
    match (&t.last_sent_version, &t.last_acked_version, &t.last_nack) {
        (_, _, Some(_)) => ConfigStatus::Error,
        (None, _, None) => ConfigStatus::NotSent,
        (Some(sent), Some(acked), None) if sent == acked => ConfigStatus::Synced,
        (Some(_), _, None) => ConfigStatus::Stale,
    }
}

/// Seconds since the Unix epoch as a protobuf timestamp.
fn timestamp(unix_seconds: f64) -> Timestamp {
    let whole = unix_seconds.floor();
    // Whole seconds and nanoseconds of a non-negative time well within i64 and i32.
    #[allow(clippy::cast_possible_truncation)]
    Timestamp { seconds: whole as i64, nanos: ((unix_seconds - whole) * 1e9) as i32 }
}

/// A `NodeMatcher`, on the node id.
enum IdMatcher {
    Any,
    Text { how: TextMatch, pattern: String, ignore_case: bool },
    Regex(regex::Regex),
}

/// How a [`IdMatcher::Text`] compares.
enum TextMatch {
    Exact,
    Prefix,
    Suffix,
    Contains,
}

impl IdMatcher {
    fn new(matcher: &NodeMatcher) -> Result<Self, Status> {
        if !matcher.node_metadatas.is_empty() {
            return Err(Status::invalid_argument(
                "node_metadatas matchers are not supported: the server keeps no node metadata; match on node_id",
            ));
        }
        let Some(StringMatcher { ignore_case, match_pattern: Some(pattern) }) = &matcher.node_id else {
            return Ok(Self::Any);
        };
        let text = |how, pattern: &str| Self::Text {
            how,
            pattern: if *ignore_case { pattern.to_lowercase() } else { pattern.to_string() },
            ignore_case: *ignore_case,
        };
        Ok(match pattern {
            MatchPattern::Exact(s) => text(TextMatch::Exact, s),
            MatchPattern::Prefix(s) => text(TextMatch::Prefix, s),
            MatchPattern::Suffix(s) => text(TextMatch::Suffix, s),
            MatchPattern::Contains(s) => text(TextMatch::Contains, s),
            // Envoy's regex matchers match the whole string.
            MatchPattern::SafeRegex(r) => Self::Regex(
                regex::Regex::new(&format!("^(?:{})$", r.regex))
                    .map_err(|e| Status::invalid_argument(format!("node_id regex {:?}: {e}", r.regex)))?,
            ),
            MatchPattern::Custom(_) => {
                return Err(Status::invalid_argument("custom string matchers are not supported in node_matchers"))
            }
        })
    }

    fn matches(&self, id: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Regex(r) => r.is_match(id),
            Self::Text { how, pattern, ignore_case } => {
                let id = if *ignore_case { Cow::Owned(id.to_lowercase()) } else { Cow::Borrowed(id) };
                match how {
                    TextMatch::Exact => *id == **pattern,
                    TextMatch::Prefix => id.starts_with(pattern.as_str()),
                    TextMatch::Suffix => id.ends_with(pattern.as_str()),
                    TextMatch::Contains => id.contains(pattern.as_str()),
                }
            }
        }
    }
}

type StatusStream = Pin<Box<dyn Stream<Item = Result<ClientStatusResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ClientStatusDiscoveryService for ClientStatusService {
    type StreamClientStatusStream = StatusStream;

    async fn stream_client_status(
        &self,
        request: Request<Streaming<ClientStatusRequest>>,
    ) -> Result<Response<StatusStream>, Status> {
        let service = self.clone();
        let answers = request.into_inner().map(move |r| r.and_then(|r| service.status(&r)));
        Ok(Response::new(Box::pin(answers)))
    }

    async fn fetch_client_status(
        &self,
        request: Request<ClientStatusRequest>,
    ) -> Result<Response<ClientStatusResponse>, Status> {
        self.status(request.get_ref()).map(Response::new)
    }
}

#[cfg(test)]
mod tests {
    use xds_core::envoy::r#type::matcher::v3::RegexMatcher;

    use super::*;
    use crate::status::NackStatus;

    fn by_id(pattern: MatchPattern, ignore_case: bool) -> NodeMatcher {
        NodeMatcher { node_id: Some(StringMatcher { ignore_case, match_pattern: Some(pattern) }), ..Default::default() }
    }

    fn matches(matcher: &NodeMatcher, id: &str) -> bool {
        IdMatcher::new(matcher).expect("valid").matches(id)
    }

    #[test]
    fn node_id_matchers_follow_envoys_string_matcher() {
        assert!(matches(&NodeMatcher::default(), "anything"));
        assert!(matches(&by_id(MatchPattern::Exact("gw-1".into()), false), "gw-1"));
        assert!(!matches(&by_id(MatchPattern::Exact("gw-1".into()), false), "GW-1"));
        assert!(matches(&by_id(MatchPattern::Exact("gw-1".into()), true), "GW-1"));
        assert!(matches(&by_id(MatchPattern::Prefix("GW-".into()), true), "gw-2"));
        assert!(matches(&by_id(MatchPattern::Suffix("-eu".into()), false), "gw-eu"));
        assert!(matches(&by_id(MatchPattern::Contains("front".into()), false), "a-frontend-b"));
        let regex = |r: &str| MatchPattern::SafeRegex(RegexMatcher { regex: r.into(), ..Default::default() });
        assert!(matches(&by_id(regex("gw-[0-9]+"), false), "gw-12"));
        assert!(!matches(&by_id(regex("gw-[0-9]+"), false), "xgw-12"), "a regex matches the whole id");
        assert!(IdMatcher::new(&by_id(regex("("), false)).is_err());
        let metadata = NodeMatcher { node_metadatas: vec![Default::default()], ..Default::default() };
        assert_eq!(IdMatcher::new(&metadata).err().map(|s| s.code()), Some(tonic::Code::InvalidArgument));
    }

    #[test]
    fn a_types_status_follows_what_was_sent_acked_and_nacked() {
        let t = |sent: Option<&str>, acked: Option<&str>, nack: bool| TypeStatus {
            last_sent_version: sent.map(Into::into),
            last_acked_version: acked.map(Into::into),
            last_nack: nack.then(|| NackStatus { rejected_version: "2".into(), error: "bad".into(), at: 1.5 }),
            ..Default::default()
        };
        assert_eq!(config_status(&t(None, None, false)), ConfigStatus::NotSent);
        assert_eq!(config_status(&t(Some("1"), None, false)), ConfigStatus::Stale);
        assert_eq!(config_status(&t(Some("1"), Some("1"), false)), ConfigStatus::Synced);
        assert_eq!(config_status(&t(Some("2"), Some("1"), false)), ConfigStatus::Stale);
        assert_eq!(config_status(&t(Some("2"), Some("1"), true)), ConfigStatus::Error);
        assert_eq!(timestamp(1.5), Timestamp { seconds: 1, nanos: 500_000_000 });
    }
}
