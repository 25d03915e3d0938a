//! [`XdsServer`] and its builder: listen address, TLS, HTTP/2 settings, limits, callbacks and
//! graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::service::Routes;
use tracing::info;
use xds_core::ResourceSource;

use prometheus_client::registry::Registry;

use crate::auth::NodeAuthorizer;
use crate::callbacks::{Callbacks, NoCallbacks};
use crate::conn::HttpSettings;
use crate::metrics::Metrics;
use crate::service::{kind, XdsService};
use crate::status::ClientRegistry;
use crate::stream::{Shared, StreamConfig};
use crate::Error;

/// Default largest request accepted: 64 MiB. gRPC's usual 4 MiB is too small for reconnecting
/// delta clients, whose `initial_resource_versions` list every resource they hold (Envoy has
/// been seen sending 21 MB).
pub const DEFAULT_MAX_RECEIVE_MESSAGE_SIZE: usize = 64 * 1024 * 1024;
/// Listen backlog of [`XdsServer::serve`] and [`bind`]: room for thousands of clients
/// reconnecting at once (the kernel caps it at `net.core.somaxconn`).
pub const DEFAULT_LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` for serving xDS, with `SO_REUSEADDR` and a listen backlog of
/// [`DEFAULT_LISTEN_BACKLOG`]. A restart of the server or of a fleet makes every client
/// reconnect at once; with a small backlog (Tokio's `TcpListener::bind` uses 1,024) the kernel
/// drops or cookie-answers the excess handshakes, and some of those connections are reset.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    listen(socket_for(addr)?, addr)
}

/// As [`bind`], with `SO_REUSEPORT` too: several listeners can listen on one port, and the
/// kernel spreads the incoming connections between them. For an application that runs one
/// [`XdsServer`] per single-threaded runtime (a shard per thread, all built on the same source,
/// each serving its own listener): a connection and its streams then stay on one thread. Bind the
/// first listener to the address wanted, the others to the first one's `local_addr`.
#[cfg(all(
    unix,
    not(target_os = "solaris"),
    not(target_os = "illumos"),
    not(target_os = "cygwin"),
    not(target_os = "nuttx")
))]
pub fn bind_reuse_port(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket_for(addr)?;
    socket.set_reuseport(true)?;
    listen(socket, addr)
}

/// A socket for `addr`'s family, with `SO_REUSEADDR` (a restarted server binds at once).
fn socket_for(addr: SocketAddr) -> std::io::Result<TcpSocket> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    Ok(socket)
}

fn listen(socket: TcpSocket, addr: SocketAddr) -> std::io::Result<TcpListener> {
    socket.bind(addr)?;
    socket.listen(DEFAULT_LISTEN_BACKLOG)
}

/// Default HTTP/2 keepalive ping interval: 30 s.
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// Default time to wait for a keepalive ping's answer: 10 s.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default limit of concurrent streams per HTTP/2 connection: 1024.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 1024;
/// Default time a new connection has to send its first request: 20 s.
pub const DEFAULT_FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// Default interval of TTL heartbeats: 5 s. It must be shorter than the shortest resource TTL
/// served.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// Default time streams get to end after shutdown starts: 5 s.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// TLS for the xDS port (rustls).
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// PEM certificate chain of the server.
    pub cert_pem: Vec<u8>,
    /// PEM private key of the server.
    pub key_pem: Vec<u8>,
    /// PEM CA bundle that client certificates must chain to; `None` disables client
    /// certificates.
    pub client_ca_pem: Option<Vec<u8>>,
    /// Accept clients without a certificate even when `client_ca_pem` is set.
    pub client_auth_optional: bool,
}

/// Builds an [`XdsServer`].
pub struct ServerBuilder {
    tls: Option<TlsConfig>,
    max_receive_message_size: usize,
    max_subscribed_names: usize,
    http: HttpSettings,
    drain_timeout: Duration,
    heartbeat_interval: Duration,
    callbacks: Arc<dyn Callbacks>,
    authorizer: Option<Arc<dyn NodeAuthorizer>>,
    metrics: Option<Arc<Metrics>>,
}

impl Default for ServerBuilder {
    fn default() -> Self {
        Self {
            tls: None,
            max_receive_message_size: DEFAULT_MAX_RECEIVE_MESSAGE_SIZE,
            max_subscribed_names: xds_cache::DEFAULT_MAX_NAMES,
            http: HttpSettings {
                keepalive_interval: Some(DEFAULT_KEEPALIVE_INTERVAL),
                keepalive_timeout: DEFAULT_KEEPALIVE_TIMEOUT,
                max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
                max_connections: None,
                first_request_timeout: Some(DEFAULT_FIRST_REQUEST_TIMEOUT),
            },
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            callbacks: Arc::new(NoCallbacks),
            authorizer: None,
            metrics: None,
        }
    }
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("tls", &self.tls.is_some())
            .field("max_receive_message_size", &self.max_receive_message_size)
            .field("max_subscribed_names", &self.max_subscribed_names)
            .field("keepalive_interval", &self.http.keepalive_interval)
            .field("max_concurrent_streams", &self.http.max_concurrent_streams)
            .field("max_connections", &self.http.max_connections)
            .field("first_request_timeout", &self.http.first_request_timeout)
            .finish_non_exhaustive()
    }
}

impl ServerBuilder {
    /// Serves over TLS.
    #[must_use]
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Largest request accepted ([`DEFAULT_MAX_RECEIVE_MESSAGE_SIZE`]); also the most bytes of
    /// names of one type a delta stream may subscribe over all its requests (a SotW stream's
    /// subscription is one request's), beyond which that stream ends with `RESOURCE_EXHAUSTED`.
    #[must_use]
    pub fn max_receive_message_size(mut self, bytes: usize) -> Self {
        self.max_receive_message_size = bytes;
        self
    }

    /// The most resource names (and `xdstp://` collection globs) of one type a stream may
    /// subscribe ([`xds_cache::DEFAULT_MAX_NAMES`]). A SotW request listing more, or a delta
    /// request taking the stream's subscription beyond it, ends that stream with
    /// `RESOURCE_EXHAUSTED` and a message naming the type and the limit; other streams are not
    /// touched. Delta subscriptions add up over a stream's requests, so without a limit one peer
    /// could grow a stream's state without bound.
    #[must_use]
    pub fn max_subscribed_names(mut self, names: usize) -> Self {
        self.max_subscribed_names = names;
        self
    }

    /// HTTP/2 keepalive ping interval; `None` disables pings ([`DEFAULT_KEEPALIVE_INTERVAL`]).
    #[must_use]
    pub fn http2_keepalive_interval(mut self, interval: Option<Duration>) -> Self {
        self.http.keepalive_interval = interval;
        self
    }

    /// How long a keepalive ping may go unanswered before the connection is closed
    /// ([`DEFAULT_KEEPALIVE_TIMEOUT`]).
    #[must_use]
    pub fn http2_keepalive_timeout(mut self, timeout: Duration) -> Self {
        self.http.keepalive_timeout = timeout;
        self
    }

    /// Concurrent streams per HTTP/2 connection ([`DEFAULT_MAX_CONCURRENT_STREAMS`]).
    #[must_use]
    pub fn max_concurrent_streams(mut self, streams: u32) -> Self {
        self.http.max_concurrent_streams = streams;
        self
    }

    /// Connections served at a time on the listener; `None` (the default) sets no limit.
    ///
    /// A connection accepted beyond the limit is closed at once, before a byte is read: its
    /// client sees the connection closed and retries with its backoff (Envoy and gRPC do), the
    /// connections already served lose nothing, and each refusal counts in the metric
    /// `xds_connections_refused_total{reason="limit"}` and, at most every 10 s, in a warning. With
    /// the limit, the memory peers can make the server hold is bounded by it (a connection with
    /// one stream costs about 35 KiB, `benches/README.md`) rather than by file descriptors.
    #[must_use]
    pub fn max_connections(mut self, connections: Option<usize>) -> Self {
        self.http.max_connections = connections;
        self
    }

    /// How long a new connection may go without sending a request before it is closed
    /// ([`DEFAULT_FIRST_REQUEST_TIMEOUT`]; `None` waits for ever). It counts from the moment
    /// the connection is accepted, TLS handshake included.
    ///
    /// A peer that connects and sends nothing (or only part of a handshake) thus holds a
    /// connection, and a place under [`max_connections`](Self::max_connections), for this long
    /// at most. The connection is closed with an HTTP/2 GOAWAY where the handshake got that far,
    /// so a gRPC channel that connected ahead of its first call reconnects quietly when it
    /// makes it; Envoy and gRPC's xDS clients open their stream as soon as they connect.
    /// Counted in `xds_connections_refused_total{reason="no_request"}`. Once a request has arrived
    /// the connection stays open however long it idles (HTTP/2 keepalive pings find dead
    /// peers).
    #[must_use]
    pub fn first_request_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.http.first_request_timeout = timeout;
        self
    }

    /// How long streams get to end after shutdown starts ([`DEFAULT_DRAIN_TIMEOUT`]).
    #[must_use]
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// How often resources with a TTL are refreshed by heartbeats ([`DEFAULT_HEARTBEAT_INTERVAL`]);
    /// keep it well below the shortest TTL you set.
    #[must_use]
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// Observes and vetoes streams, requests and responses.
    #[must_use]
    pub fn callbacks(mut self, callbacks: impl Callbacks) -> Self {
        self.callbacks = Arc::new(callbacks);
        self
    }

    /// Checks, on the first request of every stream, that the client may claim its node
    /// (see [`IdentityBinding`](crate::IdentityBinding)); refusals end the stream with
    /// `PERMISSION_DENIED`.
    #[must_use]
    pub fn authorize_nodes(mut self, authorizer: impl NodeAuthorizer) -> Self {
        self.authorizer = Some(Arc::new(authorizer));
        self
    }

    /// Registers the server's metrics (prefix `xds_`) on a Prometheus registry.
    #[must_use]
    pub fn metrics(mut self, registry: &mut Registry) -> Self {
        self.metrics = Some(Arc::new(Metrics::new(registry)));
        self
    }

    /// Finishes the server, serving resources from `source`.
    pub fn build(self, source: impl ResourceSource) -> XdsServer {
        self.build_shared(Arc::new(source))
    }

    /// Finishes the server with a shared source (`Arc<dyn ResourceSource>`).
    pub fn build_shared(self, source: Arc<dyn ResourceSource>) -> XdsServer {
        let shared = Arc::new(Shared {
            source,
            callbacks: self.callbacks.clone(),
            authorizer: self.authorizer.clone(),
            clients: Arc::new(ClientRegistry::default()),
            metrics: self.metrics.clone(),
            config: StreamConfig {
                max_receive_message_size: self.max_receive_message_size,
                heartbeat_interval: self.heartbeat_interval,
            },
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            next_stream_id: AtomicU64::new(1),
            stream_settings: xds_cache::StreamSettings {
                name_lists: Some(Default::default()),
                max_names: self.max_subscribed_names,
                max_name_bytes: self.max_receive_message_size,
            },
            sotw_bodies: Default::default(),
            delta_bodies: Default::default(),
        });
        XdsServer { shared, builder: self }
    }
}

/// An xDS server: ADS and the per-type services, SotW, from one [`ResourceSource`].
///
/// ```no_run
/// # async fn run() -> Result<(), xds_server::Error> {
/// let cache = xds_cache::SnapshotCache::new();
/// let server = xds_server::XdsServer::builder().build(cache);
/// server.serve("127.0.0.1:18000".parse().unwrap(), async { let _ = tokio::signal::ctrl_c().await; }).await
/// # }
/// ```
pub struct XdsServer {
    shared: Arc<Shared>,
    builder: ServerBuilder,
}

impl std::fmt::Debug for XdsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdsServer").field("builder", &self.builder).finish_non_exhaustive()
    }
}

impl XdsServer {
    /// Starts building a server.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// Every discovery service (ADS and per-type), to mount on your own tonic server.
    ///
    /// Streams of these routes end when [`XdsServer::shutdown_token`] is cancelled.
    pub fn routes(&self) -> Routes {
        let s = &self.shared;
        let mut routes = Routes::new(XdsService::<kind::Ads>::new(s.clone()))
            .add_service(XdsService::<kind::Lds>::new(s.clone()))
            .add_service(XdsService::<kind::Rds>::new(s.clone()))
            .add_service(XdsService::<kind::Srds>::new(s.clone()))
            .add_service(XdsService::<kind::Vhds>::new(s.clone()))
            .add_service(XdsService::<kind::Cds>::new(s.clone()))
            .add_service(XdsService::<kind::Eds>::new(s.clone()))
            .add_service(XdsService::<kind::Leds>::new(s.clone()))
            .add_service(XdsService::<kind::Sds>::new(s.clone()))
            .add_service(XdsService::<kind::Rtds>::new(s.clone()))
            .add_service(XdsService::<kind::Ecds>::new(s.clone()));
        // REST-JSON polling (api_type: REST) on the same port, over HTTP/1.1 or HTTP/2.
        let router = routes.axum_router_mut();
        for (path, type_url) in crate::fetch::REST_PATHS {
            let rest = axum::Router::new()
                .route(path, axum::routing::post(crate::fetch::rest))
                .with_state((s.clone(), *type_url));
            *router = std::mem::take(router).merge(rest);
        }
        routes
    }

    /// What every connected client holds (for an admin `/clients` page).
    pub fn clients(&self) -> Arc<ClientRegistry> {
        self.shared.clients.clone()
    }

    /// Cancelling this token ends every stream with `UNAVAILABLE` (used by graceful shutdown).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shared.shutdown.clone()
    }

    /// Binds `addr` (see [`bind`]) and serves until `shutdown` completes, then drains streams.
    pub async fn serve(
        self,
        addr: SocketAddr,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let listener = bind(addr).map_err(|source| Error::Bind { addr, source })?;
        self.serve_with_listener(listener, shutdown).await
    }

    /// Serves on an already-bound listener until `shutdown` completes, then drains streams:
    /// every stream ends with `UNAVAILABLE` so clients reconnect elsewhere, and the server waits
    /// at most the drain timeout for them.
    pub async fn serve_with_listener(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let local = listener.local_addr().ok();
        let b = &self.builder;
        let tls = b.tls.as_ref().map(crate::conn::tls_acceptor).transpose()?;
        let http = Arc::new(b.http.clone());
        info!(addr = %local.map_or_else(|| "unknown".to_string(), |a| a.to_string()), tls = tls.is_some(), "serving xDS");
        let connections = TaskTracker::new();
        let closing = CancellationToken::new();
        let services = crate::conn::Services { shared: self.shared.clone(), routes: self.routes() };
        crate::conn::accept(listener, tls, http, services, &connections, &closing, shutdown).await;
        // The listener is closed: the kernel refuses new connections while streams drain.
        info!("shutting down: closing every xDS stream");
        let drain = b.drain_timeout;
        self.shared.shutdown.cancel();
        self.shared.tasks.close();
        if tokio::time::timeout(drain, self.shared.tasks.wait()).await.is_err() {
            tracing::warn!(?drain, "streams did not end within the drain timeout");
        }
        // Then every connection: GOAWAY, and an end once its last request is answered.
        closing.cancel();
        connections.close();
        if tokio::time::timeout(drain, connections.wait()).await.is_err() {
            tracing::warn!(?drain, "connections did not close within the drain timeout");
        }
        Ok(())
    }
}

#[cfg(test)]
mod bind_tests {
    #[tokio::test]
    async fn bind_listens_on_a_free_loopback_port_and_accepts() {
        let listener = super::bind("127.0.0.1:0".parse().expect("address")).expect("binds");
        let addr = listener.local_addr().expect("bound");
        assert_ne!(addr.port(), 0);
        let (client, accepted) = tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        assert!(client.is_ok() && accepted.is_ok());
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn listeners_bound_with_reuse_port_share_one_port() {
        let first = super::bind_reuse_port("127.0.0.1:0".parse().expect("address")).expect("binds");
        let addr = first.local_addr().expect("bound");
        let second = super::bind_reuse_port(addr).expect("binds the same port");
        assert_eq!(second.local_addr().expect("bound"), addr);
        assert!(super::bind(addr).is_err(), "a listener without SO_REUSEPORT cannot join");
        // Every connection is accepted by one of the two.
        for _ in 0..8 {
            let accepted = async {
                tokio::select! {
                    a = first.accept() => a,
                    a = second.accept() => a,
                }
            };
            let (client, accepted) = tokio::join!(tokio::net::TcpStream::connect(addr), accepted);
            assert!(client.is_ok() && accepted.is_ok());
        }
    }
}
