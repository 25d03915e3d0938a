//! Nonce and ACK/NACK bookkeeping of one type on one stream, shared by the SotW and delta state
//! machines (rules 2, 3, 5 and 12 of XDS-PROTOCOL.md).

use std::sync::Arc;

use xds_core::google::rpc::Status as RpcStatus;

use crate::sotw::{Nack, RequestKind};

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
