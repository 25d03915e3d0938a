//! Nonce and ACK/NACK bookkeeping of one type on one stream, shared by the SotW and delta state
//! machines (rules 2, 3, 5 and 12 of XDS-PROTOCOL.md).

use std::sync::{Arc, OnceLock};

use xds_core::google::rpc::Status as RpcStatus;

use crate::sotw::{Nack, RequestKind};

/// Nonces below this are made once per process and shared by every stream (see [`nonce`]).
const SHARED_NONCES: usize = 256;

static NONCES: [OnceLock<Arc<str>>; SHARED_NONCES] = [const { OnceLock::new() }; SHARED_NONCES];

/// The nonce numbered `n`. A nonce only has to be unique within its stream, and every stream
/// counts from 1: the first few hundred are the same strings on every stream, so they are made
/// once and shared (two allocations per response and a string per stream and type saved; a
/// stream's first responses are its initial state, sent to thousands of streams at once).
pub(crate) fn nonce(n: u64) -> Arc<str> {
    match usize::try_from(n).ok().and_then(|i| NONCES.get(i)) {
        Some(shared) => shared.get_or_init(|| n.to_string().into()).clone(),
        None => n.to_string().into(),
    }
}

/// What one type of one stream sent last and what the client said about it.
#[derive(Debug, Default)]
pub(crate) struct AckState {
    /// The latest nonce sent for this type.
    pub nonce: Option<Arc<str>>,
    /// The version of the latest response.
    pub sent_version: Option<Arc<str>>,
    /// The version the client last ACKed.
    pub acked_version: Option<Arc<str>>,
    /// The last NACK, until the next ACK.
    pub nack: Option<Nack>,
}

impl AckState {
    /// Classifies a request by its `response_nonce` and `error_detail`, and records an ACK (of
    /// `acked_version`, or of the version sent when `None`) or a NACK.
    ///
    /// No nonce (or none sent yet): a fresh request. A nonce other than the latest: stale. The
    /// latest nonce with `error_detail`: a NACK (never detected by comparing versions); without:
    /// an ACK.
    pub(crate) fn classify(
        &mut self,
        nonce: &str,
        error: Option<&RpcStatus>,
        acked_version: Option<&str>,
    ) -> RequestKind {
        let latest = match (&self.nonce, nonce) {
            (_, "") | (None, _) => return RequestKind::Initial,
            (Some(latest), nonce) if &**latest != nonce => return RequestKind::Stale,
            (Some(latest), _) => latest.clone(),
        };
        match error {
            Some(status) => {
                let rejected_version = self.sent_version.clone().unwrap_or_default();
                self.nack = Some(Nack { rejected_version, nonce: latest, detail: status.message.clone() });
                RequestKind::Nack { detail: status.message.clone() }
            }
            None => {
                self.acked_version = match acked_version {
                    // The usual ACK names the version sent: share it.
                    Some(v) if self.sent_version.as_deref() == Some(v) => self.sent_version.clone(),
                    Some(v) => Some(Arc::from(v)),
                    None => self.sent_version.clone(),
                };
                self.nack = None;
                RequestKind::Ack
            }
        }
    }

    /// Records a response.
    pub(crate) fn sent(&mut self, nonce: Arc<str>, version: Arc<str>) {
        self.nonce = Some(nonce);
        self.sent_version = Some(version);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_nonces_are_one_string_each_for_every_stream_and_later_ones_still_count() {
        assert_eq!(&*nonce(7), "7");
        assert!(Arc::ptr_eq(&nonce(7), &nonce(7)), "shared");
        assert_eq!(&*nonce(SHARED_NONCES as u64 - 1), (SHARED_NONCES - 1).to_string());
        assert_eq!(&*nonce(SHARED_NONCES as u64), SHARED_NONCES.to_string());
        assert_eq!(&*nonce(u64::MAX), u64::MAX.to_string());
    }
}
