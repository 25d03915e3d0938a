//! The server side of a load run: an [`XdsServer`] over a [`SnapshotCache`] holding a
//! [`Scenario`], in this process or in the `xds-load-server` binary.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use xds_cache::SnapshotCache;
use xds_core::SingleGroup;
use xds_server::{Callbacks, ResponseInfo, StreamInfo, XdsServer};

use crate::scenario::{Scenario, UpdateKind, GROUP};

/// Concurrent streams allowed per HTTP/2 connection (above the library's default, for the
/// many-streams-per-connection shapes).
pub const MAX_STREAMS_PER_CONNECTION: u32 = 20_000;

/// When the server handed the responses of the latest update to HTTP/2: the server's own part
/// of the update latency, apart from the clients' (the load generator decodes every resource
/// on the same cores, which the server does not).
#[derive(Debug, Default)]
pub struct SendClock {
    /// The endpoint set version before the latest update, and when the update was published:
    /// every stream held that version then, so a response of another one is the update's.
    update: RwLock<Option<(String, Instant)>>,
    /// Responses of that version handed to HTTP/2.
    sent: AtomicU64,
    /// Microseconds from the publication to the last of them.
    last_us: AtomicU64,
}

impl SendClock {
    fn start(&self, before: &str) {
        *self.update.write() = Some((before.to_string(), Instant::now()));
        self.sent.store(0, Ordering::SeqCst);
        self.last_us.store(0, Ordering::SeqCst);
    }

    /// Responses of the latest update handed to HTTP/2, and how long after the change the last
    /// one was.
    pub fn sent(&self) -> (u64, Duration) {
        (self.sent.load(Ordering::SeqCst), Duration::from_micros(self.last_us.load(Ordering::SeqCst)))
    }
}

struct Clocked(Arc<SendClock>);

impl Callbacks for Clocked {
    fn on_response(&self, _: &StreamInfo, r: &ResponseInfo<'_>) {
        if r.type_url != xds_core::type_url::ENDPOINT {
            return;
        }
        let update = self.0.update.read();
        if let Some((_, at)) = update.as_ref().filter(|(before, _)| before != r.version) {
            let us = u64::try_from(at.elapsed().as_micros()).unwrap_or(u64::MAX);
            self.0.sent.fetch_add(1, Ordering::Relaxed);
            self.0.last_us.fetch_max(us, Ordering::Relaxed);
        }
    }
}

/// A running server: its address, cache and scenario, stopped when dropped.
pub struct LoadServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The cache it serves; every client is in the group [`GROUP`].
    pub cache: Arc<SnapshotCache>,
    /// The served configuration; [`LoadServer::update`] advances it.
    pub scenario: Scenario,
    /// When the latest update's responses were handed to HTTP/2.
    pub clock: Arc<SendClock>,
    /// Set to stop serving.
    stop: watch::Sender<bool>,
    /// What serves, until stopped.
    running: Option<Running>,
}

/// The server's task on the caller's runtime, or its shards' threads.
enum Running {
    Task(JoinHandle<Result<(), xds_server::Error>>),
    Shards(Vec<std::thread::JoinHandle<()>>),
}

/// Completes once `stop` is set.
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

impl std::fmt::Debug for LoadServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadServer").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl LoadServer {
    /// Builds the scenario's snapshot and serves it on `addr` (port 0: any free port). With
    /// `metrics`, the server counts every request and response in a Prometheus registry, as an
    /// operator's deployment would (nothing reads it here: the cost is the counting).
    pub async fn start(addr: SocketAddr, scenario: Scenario, metrics: bool) -> std::io::Result<Self> {
        Self::start_sharded(addr, scenario, metrics, 1).await
    }

    /// As [`start`](Self::start); with `shards` of 2 or more, the server runs on that many
    /// single-threaded runtimes of its own, each listening on the address (`SO_REUSEPORT`: the
    /// kernel spreads the connections), so a connection and its streams stay on one thread.
    pub async fn start_sharded(
        addr: SocketAddr,
        scenario: Scenario,
        metrics: bool,
        shards: usize,
    ) -> std::io::Result<Self> {
        let cache = Arc::new(SnapshotCache::with_grouper(SingleGroup(GROUP.into())));
        cache.set_snapshot(GROUP, scenario.snapshot());
        let clock = Arc::new(SendClock::default());
        let server = || {
            let mut builder = XdsServer::builder()
                .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
                .drain_timeout(Duration::from_secs(2))
                .callbacks(Clocked(clock.clone()));
            if metrics {
                builder = builder.metrics(&mut prometheus_client::registry::Registry::default());
            }
            builder.build(cache.clone())
        };
        let (stop, stop_rx) = watch::channel(false);
        if shards < 2 {
            let listener = xds_server::bind(addr)?;
            let addr = listener.local_addr()?;
            let task = tokio::spawn(server().serve_with_listener(listener, stopped(stop_rx)));
            return Ok(Self { addr, cache, scenario, clock, stop, running: Some(Running::Task(task)) });
        }
        // Each shard's runtime takes over its listener.
        let first = xds_server::bind_reuse_port(addr)?.into_std()?;
        let addr = first.local_addr()?;
        let mut listeners = vec![first];
        for _ in 1..shards {
            listeners.push(xds_server::bind_reuse_port(addr)?.into_std()?);
        }
        let mut threads = Vec::new();
        for listener in listeners {
            let server = server();
            let stop = stop_rx.clone();
            threads.push(std::thread::spawn(move || {
                // A shard that fails says so; its listener closes and the kernel sends its
                // connections to the other shards.
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => return eprintln!("shard runtime: {e}"),
                };
                rt.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => return eprintln!("shard listener: {e}"),
                    };
                    if let Err(e) = server.serve_with_listener(listener, stopped(stop)).await {
                        eprintln!("shard: {e}");
                    }
                });
            }));
        }
        Ok(Self { addr, cache, scenario, clock, stop, running: Some(Running::Shards(threads)) })
    }

    /// Publishes the next update; returns its generation and, for [`UpdateKind::One`], the
    /// changed cluster.
    pub fn update(&mut self, kind: UpdateKind) -> (u32, Option<usize>) {
        let before =
            self.cache.snapshot(GROUP).and_then(|s| s.version(xds_core::type_url::ENDPOINT).map(str::to_string));
        self.clock.start(before.as_deref().unwrap_or_default());
        self.scenario.update(&self.cache, kind)
    }

    /// Stops serving and waits (at most 10 s) for the server to end.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        let limit = Duration::from_secs(10);
        match self.running.take() {
            Some(Running::Task(task)) => drop(tokio::time::timeout(limit, task).await),
            Some(Running::Shards(threads)) => {
                let join = tokio::task::spawn_blocking(move || threads.into_iter().for_each(|t| drop(t.join())));
                drop(tokio::time::timeout(limit, join).await);
            }
            None => {}
        }
    }
}

impl Drop for LoadServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_sharded_server_serves_on_one_port_and_stops() {
        let addr: SocketAddr = ([127, 0, 0, 1], 0).into();
        let server = LoadServer::start_sharded(addr, Scenario::new(2, 1), false, 2).await.expect("starts");
        assert_ne!(server.addr.port(), 0);
        assert!(matches!(&server.running, Some(Running::Shards(t)) if t.len() == 2));
        for _ in 0..8 {
            let connected = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(server.addr));
            assert!(matches!(connected.await, Ok(Ok(_))), "every shard's listener accepts");
        }
        let stopped = tokio::time::timeout(Duration::from_secs(15), server.stop());
        assert!(stopped.await.is_ok(), "the shards stop");
    }
}
