//! Errors of the server, and the one conversion of library errors into gRPC statuses.

use std::net::SocketAddr;

use tonic::Status;

/// What can stop the server from serving.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The TLS configuration was refused.
    #[error("invalid TLS configuration: {0}")]
    Tls(String),
}

/// The status a client sees for a library error.
pub(crate) fn status_of(err: xds_cache::Error) -> Status {
    use xds_cache::Error as E;
    match err {
        E::MissingNode | E::EmptyNodeId | E::MissingTypeUrl | E::WrongType { .. } => {
            Status::invalid_argument(err.to_string())
        }
        E::TooManyNames { .. } => Status::resource_exhausted(format!(
            "{err}: subscribe fewer names, or raise the server's limit (ServerBuilder::max_subscribed_names)"
        )),
        E::SubscriptionTooLarge { .. } => Status::resource_exhausted(format!(
            "{err}: subscribe fewer or shorter names, or raise the server's limit (ServerBuilder::max_receive_message_size)"
        )),
        E::Core(core) => status_of_core(core),
        other => Status::internal(other.to_string()),
    }
}

/// The status a client sees for a source error.
pub(crate) fn status_of_core(err: xds_core::Error) -> Status {
    use xds_core::Error as E;
    match &err {
        E::UnknownType(_) | E::InvalidRequest(_) => Status::invalid_argument(err.to_string()),
        E::PermissionDenied(_) => Status::permission_denied(err.to_string()),
        E::Unavailable(_) => Status::unavailable(err.to_string()),
        _ => Status::internal(err.to_string()),
    }
}
