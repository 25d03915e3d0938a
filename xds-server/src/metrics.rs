//! Prometheus metrics of the server (`prometheus-client`): connections open and refused, streams,
//! requests, ACKs, NACKs, responses and bytes per type, and the push latency.
//!
//! Register them on your registry with [`ServerBuilder::metrics`](crate::ServerBuilder::metrics)
//! and serve the registry (the admin router of [`crate::admin`] does).

use std::borrow::Cow;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use xds_core::type_url;

/// Labels: the variant of a stream.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct VariantLabel {
    pub variant: &'static str,
}

/// Labels: why the server closed a connection before serving it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RefusalLabel {
    pub reason: &'static str,
}

/// [`RefusalLabel`]: the listener already served `max_connections`.
pub(crate) const REFUSED_LIMIT: &str = "limit";
/// [`RefusalLabel`]: no request within the first-request timeout.
pub(crate) const REFUSED_NO_REQUEST: &str = "no_request";

/// Labels: the variant of a stream and the gRPC status code that ended it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct FailureLabel {
    pub variant: &'static str,
    pub code: &'static str,
}

/// The label value of a gRPC status code: its name in the gRPC specification, lower case.
pub(crate) fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code as C;
    match code {
        C::Ok => "ok",
        C::Cancelled => "cancelled",
        C::Unknown => "unknown",
        C::InvalidArgument => "invalid_argument",
        C::DeadlineExceeded => "deadline_exceeded",
        C::NotFound => "not_found",
        C::AlreadyExists => "already_exists",
        C::PermissionDenied => "permission_denied",
        C::ResourceExhausted => "resource_exhausted",
        C::FailedPrecondition => "failed_precondition",
        C::Aborted => "aborted",
        C::OutOfRange => "out_of_range",
        C::Unimplemented => "unimplemented",
        C::Internal => "internal",
        C::Unavailable => "unavailable",
        C::DataLoss => "data_loss",
        C::Unauthenticated => "unauthenticated",
    }
}

/// Labels: a resource type.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TypeLabel {
    pub r#type: Cow<'static, str>,
}

/// Labels: a resource type and what a request was.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabel {
    pub r#type: Cow<'static, str>,
    pub kind: &'static str,
}

fn push_latency_histogram() -> Histogram {
    Histogram::new([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
}

/// Every metric the server keeps.
#[derive(Debug)]
pub(crate) struct Metrics {
    pub connections_open: Gauge,
    pub connections_refused: Family<RefusalLabel, Counter>,
    pub streams_open: Family<VariantLabel, Gauge>,
    pub streams_total: Family<VariantLabel, Counter>,
    pub streams_failed: Family<FailureLabel, Counter>,
    pub requests: Family<RequestLabel, Counter>,
    pub responses: Family<TypeLabel, Counter>,
    pub response_bytes: Family<TypeLabel, Counter>,
    pub resources_sent: Family<TypeLabel, Counter>,
    pub push_latency: Family<TypeLabel, Histogram, fn() -> Histogram>,
}

impl Metrics {
    pub(crate) fn new(registry: &mut Registry) -> Self {
        let m = Self {
            connections_open: Gauge::default(),
            connections_refused: Family::default(),
            streams_open: Family::default(),
            streams_total: Family::default(),
            streams_failed: Family::default(),
            requests: Family::default(),
            responses: Family::default(),
            response_bytes: Family::default(),
            resources_sent: Family::default(),
            push_latency: Family::new_with_constructor(push_latency_histogram),
        };
        let r = registry.sub_registry_with_prefix("xds");
        r.register("connections_open", "Connections the server is serving", m.connections_open.clone());
        r.register(
            "connections_refused",
            "Connections closed before they were served, by reason (limit: max_connections reached; \
             no_request: no request within the first-request timeout)",
            m.connections_refused.clone(),
        );
        r.register("streams_open", "xDS streams currently connected", m.streams_open.clone());
        r.register("streams", "xDS streams opened", m.streams_total.clone());
        r.register(
            "streams_failed",
            "xDS streams the server ended with an error status, by gRPC code (invalid_argument: a \
             malformed request; resource_exhausted: a limit such as max_subscribed_names; \
             permission_denied: a node the client may not claim; unavailable: shutting down)",
            m.streams_failed.clone(),
        );
        r.register(
            "requests",
            "xDS requests received, by type and kind (initial, ack, nack, stale)",
            m.requests.clone(),
        );
        r.register("responses", "xDS responses sent, by type", m.responses.clone());
        r.register("response_bytes", "Bytes of xDS responses sent, by type", m.response_bytes.clone());
        r.register("resources_sent", "Resources sent in xDS responses, by type", m.resources_sent.clone());
        r.register(
            "push_latency_seconds",
            "Time from a stream learning of new resources to the response carrying them",
            m.push_latency.clone(),
        );
        m
    }

    pub(crate) fn type_label(t: &str) -> TypeLabel {
        TypeLabel { r#type: Self::type_name(t) }
    }

    /// The label value of a type: its short name, allocated only for a non-standard type (labels
    /// are built per request and response).
    pub(crate) fn type_name(t: &str) -> Cow<'static, str> {
        type_url::lookup(t).map_or_else(|| Cow::Owned(t.to_string()), |t| Cow::Borrowed(t.short_name))
    }
}
