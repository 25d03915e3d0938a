//! The server side of a load run: an [`XdsServer`] over a [`SnapshotCache`] holding a
//! [`Scenario`], in this process or in the `xds-load-server` binary.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use xds_cache::SnapshotCache;
use xds_core::SingleGroup;
use xds_server::XdsServer;

use crate::scenario::{Scenario, UpdateKind, GROUP};

/// Concurrent streams allowed per HTTP/2 connection (above the library's default, for the
/// many-streams-per-connection shapes).
pub const MAX_STREAMS_PER_CONNECTION: u32 = 20_000;

/// A running server: its address, cache and scenario, stopped when dropped.
pub struct LoadServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The cache it serves; every client is in the group [`GROUP`].
    pub cache: Arc<SnapshotCache>,
    /// The served configuration; [`LoadServer::update`] advances it.
    pub scenario: Scenario,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<(), xds_server::Error>>>,
}

impl std::fmt::Debug for LoadServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadServer").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl LoadServer {
    /// Builds the scenario's snapshot and serves it on `addr` (port 0: any free port).
    pub async fn start(addr: SocketAddr, scenario: Scenario) -> std::io::Result<Self> {
        let cache = Arc::new(SnapshotCache::with_grouper(SingleGroup(GROUP.into())));
        cache.set_snapshot(GROUP, scenario.snapshot());
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel::<()>();
        let server = XdsServer::builder()
            .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
            .drain_timeout(Duration::from_secs(2))
            .build(cache.clone());
        let handle = tokio::spawn(server.serve_with_listener(listener, async move {
            let _ = rx.await;
        }));
        Ok(Self { addr, cache, scenario, shutdown: Some(tx), handle: Some(handle) })
    }

    /// Publishes the next update; returns its generation and, for [`UpdateKind::One`], the
    /// changed cluster.
    pub fn update(&mut self, kind: UpdateKind) -> (u32, Option<usize>) {
        self.scenario.update(&self.cache, kind)
    }

    /// Stops serving and waits (at most 10 s) for the server to end.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(handle) = self.handle.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), handle).await;
        }
    }
}

impl Drop for LoadServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
