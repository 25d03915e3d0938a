//! The error type shared by sources and the protocol layers.

/// What can go wrong between a source and a stream.
///
/// The server turns each variant into one gRPC status at the edge; the text is meant for the
/// operator reading the client's logs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The type URL is empty or not served.
    #[error("unknown resource type {0:?}")]
    UnknownType(String),
    /// The node may not receive this configuration.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The request breaks the protocol (missing node, bad names, ...).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The source cannot serve now; the client should retry.
    #[error("source unavailable: {0}")]
    Unavailable(String),
}
