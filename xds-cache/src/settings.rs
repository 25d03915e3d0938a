//! What a stream's state machine shares with the server's other streams, and the limits it
//! keeps: the same for SotW and delta streams, and for every stream of a server.

use std::sync::Arc;

use xds_core::NameLists;

/// The most names of one type a stream may subscribe by default: far above what a proxy of the
/// largest meshes subscribes, low enough that one peer cannot grow a stream's state without
/// bound over many delta requests. See [`StreamSettings::max_names`].
pub const DEFAULT_MAX_NAMES: usize = 100_000;

/// The most bytes of names of one type a delta stream may subscribe by default, over all its
/// requests: 64 MiB, what one request may carry by default (a SotW stream's subscription is one
/// request's). See [`StreamSettings::max_name_bytes`].
pub const DEFAULT_MAX_NAME_BYTES: usize = 64 * 1024 * 1024;

/// Settings of a stream's state machine ([`SotwStream::with_settings`],
/// [`DeltaStream::with_settings`]).
///
/// [`SotwStream::with_settings`]: crate::SotwStream::with_settings
/// [`DeltaStream::with_settings`]: crate::DeltaStream::with_settings
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// Lists of subscribed names shared with the other streams given the same [`NameLists`]: a
    /// stream subscribing names another stream subscribed takes that stream's list instead of
    /// making its own. Behaviour is the same either way; `None`: each stream keeps its own.
    pub name_lists: Option<Arc<NameLists>>,
    /// The most names (and `xdstp://` collection globs) of one type a stream may subscribe
    /// ([`DEFAULT_MAX_NAMES`]): a SotW request listing more, or a delta request taking the
    /// subscription beyond it, is refused with [`Error::TooManyNames`](crate::Error::TooManyNames),
    /// which ends the stream.
    pub max_names: usize,
    /// The most bytes of those names a delta stream may subscribe over all its requests
    /// ([`DEFAULT_MAX_NAME_BYTES`]): beyond it a request is refused with
    /// [`Error::SubscriptionTooLarge`](crate::Error::SubscriptionTooLarge). Without it a peer
    /// could grow a stream's subscription without bound by a few long names per request. (A SotW
    /// stream's subscription is one request's, bounded by the request's size.)
    pub max_name_bytes: usize,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self { name_lists: None, max_names: DEFAULT_MAX_NAMES, max_name_bytes: DEFAULT_MAX_NAME_BYTES }
    }
}
