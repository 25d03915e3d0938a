//! Errors of the cache and the protocol state machines.

use crate::consistency::Missing;

/// What the cache or a stream's state machine rejects.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The first request of a stream carried no `node`.
    #[error("the first request of a stream must carry a node (Node.id identifies the client)")]
    MissingNode,
    /// The node has an empty `id`.
    #[error("node.id is empty: set a node id in the client's bootstrap")]
    EmptyNodeId,
    /// An ADS request without `type_url`.
    #[error("type_url is required on every request of an aggregated (ADS) stream")]
    MissingTypeUrl,
    /// A per-type stream received a request for another type.
    #[error("this stream serves {expected} but the request asks for {got}")]
    WrongType {
        /// The type of the stream.
        expected: String,
        /// The type in the request.
        got: String,
    },
    /// A request would make the stream subscribe more names of one type than its limit (see
    /// [`StreamSettings::max_names`](crate::StreamSettings::max_names)).
    #[error(
        "the stream would subscribe {names} names of {type_url}, more than the limit of {limit} per type and stream"
    )]
    TooManyNames {
        /// The type.
        type_url: String,
        /// The names the stream would subscribe (a SotW request: the names it lists).
        names: usize,
        /// The limit.
        limit: usize,
    },
    /// A delta request would make the stream subscribe more bytes of names of one type than its
    /// limit (see [`StreamSettings::max_name_bytes`](crate::StreamSettings::max_name_bytes)).
    #[error(
        "the stream would subscribe {bytes} bytes of names of {type_url}, more than the limit of {limit} per type and stream"
    )]
    SubscriptionTooLarge {
        /// The type.
        type_url: String,
        /// The bytes of names the stream would subscribe.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// A snapshot references resources it does not hold.
    #[error("inconsistent snapshot: {}", crate::consistency::describe(.0))]
    Inconsistent(Vec<Missing>),
    /// Error from the resource layer.
    #[error(transparent)]
    Core(#[from] xds_core::Error),
}
