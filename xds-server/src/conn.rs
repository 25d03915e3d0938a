//! Serving accepted connections: one task per connection runs the connection's HTTP/2 codec and
//! every stream on it.
//!
//! A server built on Tokio's default executor spawns a task per HTTP/2 stream (hyper's, which
//! runs the service and sends the response body) beside the connection's task, and this crate
//! would add one more (the stream's own, [`crate::stream`]). With many streams per connection
//! and more than one worker thread, the tasks of one connection run on different threads:
//! every request and every response then crosses threads twice (a parked worker woken, and the
//! HTTP/2 connection's lock taken from both sides). Serving connections this way instead took a
//! fifth to a quarter off the server's CPU for the initial state of 10,000 streams over 100
//! connections, and a tenth off each update (`benches/README.md`, "One task per connection").
//!
//! Here a connection's streams are futures owned by the connection's task ([`StreamSet`]):
//! hyper hands them over through [`ConnExecutor`], and this crate's stream futures are handed
//! the same executor with the connection's [`Peer`]. A wake-up of any of them wakes the one
//! connection task, which polls the codec and whichever streams were woken, on one thread,
//! while other connections run on the other threads.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use futures::future::Either;
use futures::stream::FuturesUnordered;
use futures::task::AtomicWaker;
use futures::{StreamExt, TryFutureExt};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::rustls::{
    self,
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    server::WebPkiClientVerifier,
    RootCertStore, ServerConfig,
};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::body::Body;
use tonic::codegen::Service;
use tonic::service::Routes;
use tonic::transport::server::Connected;
use tracing::{debug, warn};

use crate::body::ServedBody;
use crate::io::Coalescing;
use crate::metrics::{Metrics, RefusalLabel, REFUSED_LIMIT, REFUSED_NO_REQUEST};
use crate::service::StreamMethod;
use crate::stream::{Peer, Shared};
use crate::{Error, TlsConfig};

/// A stream's future, as the connection task owns it.
pub(crate) type StreamFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// [`Signal::state`]: the connection task is being polled.
const POLLING: u8 = 1;
/// [`Signal::state`]: the connection (its codec and socket) was woken since it was last polled.
const CONNECTION: u8 = 2;
/// [`Signal::state`]: a stream was woken, or handed over, since the streams were last polled.
const STREAMS: u8 = 4;
/// The parts a poll may have to poll.
const PARTS: u8 = CONNECTION | STREAMS;

/// What the connection, its streams and [`ConnExecutor`] wake: the connection task, unless it
/// is being polled at the time, in which case the poll goes round once more instead (a wake-up
/// of a running task would make Tokio schedule it again, and wake another worker thread for
/// it). It records which part was woken, so a poll polls only those: a stream's wake-up does
/// not poll the codec, nor the codec's the streams.
struct Signal {
    state: AtomicU8,
    /// Futures handed to the connection, not yet polled.
    handed: Mutex<Vec<StreamFuture>>,
    task: AtomicWaker,
}

impl Default for Signal {
    fn default() -> Self {
        // The first poll polls both.
        Self { state: AtomicU8::new(PARTS), handed: Mutex::default(), task: AtomicWaker::new() }
    }
}

impl Signal {
    fn wake(&self, part: u8) {
        // Neither polling nor woken before: wake the task. Woken before: that wake-up stands;
        // polling: the poll sees the part's bit and goes round again.
        if self.state.fetch_or(part, Ordering::AcqRel) == 0 {
            self.task.wake();
        }
    }
}

/// The waker of one part of a connection task.
struct PartWaker {
    signal: Arc<Signal>,
    part: u8,
}

impl Wake for PartWaker {
    fn wake(self: Arc<Self>) {
        self.signal.wake(self.part);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.signal.wake(self.part);
    }
}

/// Runs futures on the task of one connection (hyper's executor for its HTTP/2 streams, and
/// the one this crate's streams are spawned with, from the connection's [`Peer`]).
#[derive(Clone, Default)]
pub(crate) struct ConnExecutor(Arc<Signal>);

impl std::fmt::Debug for ConnExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnExecutor").finish_non_exhaustive()
    }
}

impl ConnExecutor {
    /// Hands `future` to the connection's task.
    pub(crate) fn spawn(&self, future: StreamFuture) {
        self.0.handed.lock().push(future);
        self.0.wake(STREAMS);
    }
}

impl<F> hyper::rt::Executor<F> for ConnExecutor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, future: F) {
        self.spawn(Box::pin(future));
    }
}

/// How many times one poll of a connection goes round its codec and its streams while they
/// wake each other, before it lets other tasks run (and has Tokio poll it again later). A
/// response typically takes three: the stream queues it, the codec frames it, the next round's
/// read writes it out (see [`crate::io`]).
const ROUNDS_PER_POLL: usize = 8;

/// A connection and the streams it runs: done when the connection has ended and every stream
/// with it (a stream ends on its own once its connection is gone).
pub(crate) struct StreamSet<C> {
    connection: Option<Pin<Box<C>>>,
    executor: ConnExecutor,
    /// Given to the connection when it is polled.
    connection_waker: Waker,
    /// Given to the streams when they are polled.
    streams_waker: Waker,
    running: FuturesUnordered<StreamFuture>,
}

impl<C> StreamSet<C> {
    pub(crate) fn new(connection: C, executor: ConnExecutor) -> Self {
        let waker = |part| Waker::from(Arc::new(PartWaker { signal: executor.0.clone(), part }));
        Self {
            connection: Some(Box::pin(connection)),
            connection_waker: waker(CONNECTION),
            streams_waker: waker(STREAMS),
            executor,
            running: FuturesUnordered::new(),
        }
    }

    /// Calls `act` on the connection, unless it has ended, and has the next poll poll it: a
    /// call from outside its poll (a shutdown) may give it work without waking it.
    pub(crate) fn act_on_connection(&mut self, act: impl FnOnce(Pin<&mut C>)) {
        if let Some(connection) = self.connection.as_mut() {
            act(connection.as_mut());
            self.executor.0.state.fetch_or(CONNECTION, Ordering::AcqRel);
        }
    }
}

/// Moves the futures handed to `signal`'s connection into its running set.
fn adopt(signal: &Signal, running: &mut FuturesUnordered<StreamFuture>) {
    let handed = std::mem::take(&mut *signal.handed.lock());
    running.extend(handed);
}

impl<C, E> Future for StreamSet<C>
where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Self { connection, executor, connection_waker, streams_waker, running } = self.get_mut();
        let signal = &*executor.0;
        signal.task.register(cx.waker());
        let mut woken = signal.state.swap(POLLING, Ordering::AcqRel) & PARTS;
        let mut rounds = 0;
        loop {
            if woken == 0 {
                // Nothing to do, unless a wake-up comes in between.
                match signal.state.compare_exchange(POLLING, 0, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => return Poll::Pending,
                    Err(_) => {
                        woken = signal.state.swap(POLLING, Ordering::AcqRel) & PARTS;
                        continue;
                    }
                }
            }
            if rounds == ROUNDS_PER_POLL {
                // Keep what is left for the next poll, and ask for one.
                signal.state.fetch_or(woken, Ordering::AcqRel);
                signal.state.fetch_and(!POLLING, Ordering::AcqRel);
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            rounds += 1;
            if woken & CONNECTION != 0 {
                let mut connection_cx = Context::from_waker(connection_waker);
                if let Some(Poll::Ready(result)) = connection.as_mut().map(|c| c.as_mut().poll(&mut connection_cx)) {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "connection ended");
                    }
                    *connection = None;
                }
                // Streams the codec just handed over or woke run in this round.
                woken |= signal.state.fetch_and(!STREAMS, Ordering::AcqRel) & STREAMS;
            }
            if woken & STREAMS != 0 {
                adopt(signal, running);
                let mut streams_cx = Context::from_waker(streams_waker);
                while let Poll::Ready(Some(())) = running.poll_next_unpin(&mut streams_cx) {}
                adopt(signal, running);
            }
            if connection.is_none() && running.is_empty() && signal.handed.lock().is_empty() {
                signal.state.store(0, Ordering::Release);
                return Poll::Ready(());
            }
            woken = signal.state.swap(POLLING, Ordering::AcqRel) & PARTS;
        }
    }
}

/// Time a TLS handshake may take before the connection is dropped.
pub(crate) const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// HTTP settings and limits of the connections a server accepts (set on its builder).
#[derive(Debug, Clone)]
pub(crate) struct HttpSettings {
    pub(crate) keepalive_interval: Option<Duration>,
    pub(crate) keepalive_timeout: Duration,
    pub(crate) max_concurrent_streams: u32,
    pub(crate) max_connections: Option<usize>,
    pub(crate) first_request_timeout: Option<Duration>,
}

impl HttpSettings {
    /// The codec of one connection (HTTP/2, or HTTP/1.1 for REST polling), running its streams on
    /// `executor`.
    fn builder(&self, executor: ConnExecutor) -> auto::Builder<ConnExecutor> {
        let mut builder = auto::Builder::new(executor);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(self.max_concurrent_streams)
            .keep_alive_interval(self.keepalive_interval)
            .keep_alive_timeout(self.keepalive_timeout);
        // hyper enforces its HTTP/1 header read timeout only with a timer.
        builder.http1().timer(TokioTimer::new());
        builder
    }
}

/// The rustls acceptor for `tls`, or an error that says which part was refused.
pub(crate) fn tls_acceptor(tls: &TlsConfig) -> Result<TlsAcceptor, Error> {
    let refused = |what: &str, e: &dyn std::fmt::Display| Error::Tls(format!("{what}: {e}"));
    let certs = CertificateDer::pem_slice_iter(&tls.cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| refused("server certificate chain", &e))?;
    if certs.is_empty() {
        return Err(Error::Tls("server certificate chain: no CERTIFICATE in the PEM".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(&tls.key_pem).map_err(|e| refused("server private key", &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| refused("protocol versions", &e))?;
    let config = match &tls.client_ca_pem {
        None => config.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(ca) {
                let cert = cert.map_err(|e| refused("client CA bundle", &e))?;
                roots.add(cert).map_err(|e| refused("client CA bundle", &e))?;
            }
            let mut verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            if tls.client_auth_optional {
                verifier = verifier.allow_unauthenticated();
            }
            config.with_client_cert_verifier(verifier.build().map_err(|e| refused("client CA bundle", &e))?)
        }
    };
    let mut config = config.with_single_cert(certs, key).map_err(|e| refused("server certificate and key", &e))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// What every connection serves: the discovery streams directly, everything else through
/// tonic's router.
#[derive(Clone)]
pub(crate) struct Services {
    pub shared: Arc<Shared>,
    pub routes: Routes,
}

/// Pause after a failure to accept that is not the connection's own (out of file descriptors):
/// the listener is tried again after it rather than in a busy loop.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Least time between two warnings about connections refused at the limit.
const REFUSAL_WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// How long a connection closed for sending no request gets to go after its GOAWAY before it is
/// dropped.
const UNUSED_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// One served connection's place in the count of a listener's open connections (for
/// `max_connections` and the `connections_open` gauge), given back when the connection's task
/// ends.
struct OpenConnection {
    open: Arc<AtomicUsize>,
    metrics: Option<Arc<Metrics>>,
}

impl OpenConnection {
    fn new(open: &Arc<AtomicUsize>, metrics: Option<&Arc<Metrics>>) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = metrics {
            m.connections_open.inc();
        }
        Self { open: open.clone(), metrics: metrics.cloned() }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        if let Some(m) = &self.metrics {
            m.connections_open.dec();
        }
    }
}

/// Connections refused at the limit since the last warning, so a flood of them makes one
/// warning every [`REFUSAL_WARNING_INTERVAL`] rather than one each.
#[derive(Default)]
struct Refusals {
    last_warning: Option<Instant>,
    unreported: u64,
}

impl Refusals {
    fn refuse(&mut self, limit: usize, metrics: Option<&Arc<Metrics>>, now: Instant) {
        if let Some(m) = metrics {
            m.connections_refused.get_or_create(&RefusalLabel { reason: REFUSED_LIMIT }).inc();
        }
        self.unreported += 1;
        if self.last_warning.is_none_or(|last| now.duration_since(last) >= REFUSAL_WARNING_INTERVAL) {
            warn!(
                limit,
                refused = self.unreported,
                "connection limit reached: closing new connections until some end (raise max_connections if \
                 these clients are wanted)"
            );
            self.last_warning = Some(now);
            self.unreported = 0;
        }
    }
}

/// Accepts connections on `listener` and serves `services` on each until `stop` is cancelled, then
/// stops accepting and returns; the connections go on until `closing` is cancelled.
pub(crate) async fn accept(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    http: Arc<HttpSettings>,
    services: Services,
    connections: &TaskTracker,
    closing: &CancellationToken,
    stop: impl Future<Output = ()>,
) {
    let mut stop = std::pin::pin!(stop);
    let open = Arc::new(AtomicUsize::new(0));
    let mut refusals = Refusals::default();
    let metrics = services.shared.metrics.clone();
    loop {
        let (tcp, remote) = tokio::select! {
            () = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) if is_connection_error(&e) => {
                    debug!(error = %e, "a connection failed while being accepted");
                    continue;
                }
                Err(e) => {
                    warn!(error = %e, "cannot accept connections; trying again in {ACCEPT_RETRY:?}");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            },
        };
        if let Some(limit) = http.max_connections {
            if open.load(Ordering::Relaxed) >= limit {
                debug!(%remote, limit, "connection refused: the connection limit is reached");
                drop(tcp);
                refusals.refuse(limit, metrics.as_ref(), Instant::now());
                continue;
            }
        }
        let place = OpenConnection::new(&open, metrics.as_ref());
        let accepted = tokio::time::Instant::now();
        let first_request_by = http.first_request_timeout.map(|t| accepted + t);
        // The first-request deadline counts the handshake too, when it is the sooner.
        let handshake_by =
            first_request_by.map_or(accepted + TLS_HANDSHAKE_TIMEOUT, |by| by.min(accepted + TLS_HANDSHAKE_TIMEOUT));
        let _ = tcp.set_nodelay(true);
        let (tls, http, services, closing) = (tls.clone(), http.clone(), services.clone(), closing.clone());
        connections.spawn(async move {
            let _place = place;
            match tls {
                None => serve(Coalescing::new(tcp), &http, services, closing, first_request_by).await,
                Some(acceptor) => match tokio::time::timeout_at(handshake_by, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => serve(Coalescing::new(tls), &http, services, closing, first_request_by).await,
                    Ok(Err(e)) => debug!(error = %e, "TLS handshake failed"),
                    Err(_) => debug!(after = ?handshake_by - accepted, "TLS handshake timed out"),
                },
            }
        });
    }
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        e.kind(),
        K::ConnectionAborted | K::ConnectionReset | K::BrokenPipe | K::Interrupted | K::WouldBlock | K::TimedOut
    )
}

/// Serves one connection until it ends (on `closing`, after its streams have ended), or until
/// `first_request_by` if no request has come by then.
async fn serve<IO>(
    io: IO,
    http: &HttpSettings,
    services: Services,
    closing: CancellationToken,
    first_request_by: Option<tokio::time::Instant>,
) where
    IO: Connected + AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let info = io.connect_info();
    let metrics = services.shared.metrics.clone();
    let requested = Arc::new(AtomicBool::new(false));
    let requested_in_service = requested.clone();
    let executor = ConnExecutor::default();
    let builder = http.builder(executor.clone());
    // Who the client is (address, certificate identities) is read once for the connection's
    // streams, not per stream; they run on the connection's task.
    let mut extensions = http::Extensions::new();
    extensions.insert(info.clone());
    let peer = Peer { connection: Some(executor.clone()), ..Peer::of(extensions) };
    let remote = peer.addr;
    let service = hyper::service::service_fn(move |mut request: http::Request<Incoming>| {
        requested_in_service.store(true, Ordering::Relaxed);
        // The discovery streams are served here, without tonic's router and a box around every
        // body; everything else (`Fetch*`, REST polling, unknown paths) goes through the router.
        match StreamMethod::at(request.uri().path()) {
            Some(method) => Either::Left(std::future::ready(Ok(method.serve(services.shared.clone(), &peer, request)))),
            None => {
                request.extensions_mut().insert(info.clone());
                let routed = services.routes.clone().call(request.map(Body::new));
                Either::Right(routed.map_ok(|r| r.map(ServedBody::Tonic)))
            }
        }
    });
    let mut set = StreamSet::new(builder.serve_connection(TokioIo::new(io), service), executor);
    let mut closing = std::pin::pin!(closing.cancelled_owned());
    let mut shutting_down = false;
    // Until the first request: when the connection is closed for want of one, then when it is
    // dropped if the GOAWAY did not end it.
    let mut unused = first_request_by.map(|by| Box::pin(tokio::time::sleep_until(by)));
    let mut closing_unused = false;
    std::future::poll_fn(|cx| {
        if !shutting_down && closing.as_mut().poll(cx).is_ready() {
            shutting_down = true;
            // GOAWAY, and an end once idle.
            set.act_on_connection(|connection| connection.graceful_shutdown());
        }
        if Pin::new(&mut set).poll(cx).is_ready() {
            return Poll::Ready(());
        }
        // After the connection's turn, so a request that came in time is seen whatever the load.
        let Some(deadline) = unused.as_mut() else { return Poll::Pending };
        if requested.load(Ordering::Relaxed) && !closing_unused {
            unused = None;
            return Poll::Pending;
        }
        if deadline.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        if closing_unused {
            return Poll::Ready(());
        }
        debug!(
            peer = ?remote,
            timeout = ?http.first_request_timeout.unwrap_or_default(),
            "closing a connection that sent no request in time"
        );
        if let Some(m) = &metrics {
            m.connections_refused.get_or_create(&RefusalLabel { reason: REFUSED_NO_REQUEST }).inc();
        }
        closing_unused = true;
        deadline.as_mut().reset(tokio::time::Instant::now() + UNUSED_CLOSE_GRACE);
        let _ = deadline.as_mut().poll(cx);
        set.act_on_connection(|connection| connection.graceful_shutdown());
        Pin::new(&mut set).poll(cx)
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_at_the_limit_warn_at_most_once_per_interval() {
        let mut refusals = Refusals::default();
        let start = Instant::now();
        refusals.refuse(2, None, start);
        assert_eq!((refusals.last_warning, refusals.unreported), (Some(start), 0), "the first warns at once");
        refusals.refuse(2, None, start + Duration::from_secs(1));
        refusals.refuse(2, None, start + Duration::from_secs(2));
        assert_eq!((refusals.last_warning, refusals.unreported), (Some(start), 2), "then they are held back");
        let later = start + REFUSAL_WARNING_INTERVAL;
        refusals.refuse(2, None, later);
        assert_eq!((refusals.last_warning, refusals.unreported), (Some(later), 0), "and reported together");
    }

    /// A waker that counts its wake-ups (the connection task as Tokio sees it).
    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn outer() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count::default());
        (count.clone(), Waker::from(count))
    }

    /// A connection that stays open until `open` is cleared.
    fn connection(open: Arc<std::sync::atomic::AtomicBool>) -> impl Future<Output = Result<(), String>> {
        std::future::poll_fn(move |_| if open.load(Ordering::SeqCst) { Poll::Pending } else { Poll::Ready(Ok(())) })
    }

    /// A connection task over an open connection, and its executor.
    fn open_connection(
    ) -> (Arc<std::sync::atomic::AtomicBool>, ConnExecutor, StreamSet<impl Future<Output = Result<(), String>>>) {
        let open = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let executor = ConnExecutor::default();
        let set = StreamSet::new(connection(open.clone()), executor.clone());
        (open, executor, set)
    }

    /// A stream that wakes itself `times` times, then ends; counts its polls.
    fn waking_stream(times: usize, polls: Arc<AtomicUsize>) -> StreamFuture {
        Box::pin(std::future::poll_fn(move |cx| {
            if polls.fetch_add(1, Ordering::SeqCst) < times {
                cx.waker().wake_by_ref();
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        }))
    }

    #[test]
    fn wake_ups_during_a_poll_are_more_rounds_of_it_not_a_new_schedule() {
        let (_open, executor, mut set) = open_connection();
        let polls = Arc::new(AtomicUsize::new(0));
        executor.spawn(waking_stream(2, polls.clone()));
        let (count, waker) = outer();
        assert!(Pin::new(&mut set).poll(&mut Context::from_waker(&waker)).is_pending(), "the connection is open");
        assert_eq!(polls.load(Ordering::SeqCst), 3, "woken twice while polled: ran to its end in one poll");
        assert_eq!(count.0.load(Ordering::SeqCst), 0, "and the task was not scheduled again");
        assert!(set.running.is_empty());
    }

    #[test]
    fn a_stream_handed_over_between_polls_wakes_the_task_once() {
        let (_open, executor, mut set) = open_connection();
        let (count, waker) = outer();
        assert!(Pin::new(&mut set).poll(&mut Context::from_waker(&waker)).is_pending());
        let polls = Arc::new(AtomicUsize::new(0));
        executor.spawn(waking_stream(0, polls.clone()));
        executor.spawn(waking_stream(0, polls.clone()));
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "one wake-up for both");
        assert_eq!(polls.load(Ordering::SeqCst), 0, "run by the connection's task, not by the caller");
        assert!(Pin::new(&mut set).poll(&mut Context::from_waker(&waker)).is_pending());
        assert_eq!(polls.load(Ordering::SeqCst), 2);
        // Idle again: the next hand-over wakes the task again.
        executor.spawn(waking_stream(0, polls.clone()));
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_poll_polls_only_the_parts_that_were_woken() {
        let connection_polls = Arc::new(AtomicUsize::new(0));
        let counted = connection_polls.clone();
        let connection = std::future::poll_fn(move |_| {
            counted.fetch_add(1, Ordering::SeqCst);
            Poll::<Result<(), String>>::Pending
        });
        let executor = ConnExecutor::default();
        let mut set = StreamSet::new(connection, executor.clone());
        let stream_waker = Arc::new(Mutex::new(None::<Waker>));
        let stream_polls = Arc::new(AtomicUsize::new(0));
        let (w, p) = (stream_waker.clone(), stream_polls.clone());
        executor.spawn(Box::pin(std::future::poll_fn(move |cx| {
            p.fetch_add(1, Ordering::SeqCst);
            *w.lock() = Some(cx.waker().clone());
            Poll::<()>::Pending
        })));
        let (_, waker) = outer();
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut set).poll(&mut cx).is_pending());
        assert_eq!((connection_polls.load(Ordering::SeqCst), stream_polls.load(Ordering::SeqCst)), (1, 1));
        // A stream's wake-up: the stream is polled, the connection is not.
        stream_waker.lock().take().expect("registered").wake();
        assert!(Pin::new(&mut set).poll(&mut cx).is_pending());
        assert_eq!((connection_polls.load(Ordering::SeqCst), stream_polls.load(Ordering::SeqCst)), (1, 2));
        // A poll nothing woke polls nothing.
        assert!(Pin::new(&mut set).poll(&mut cx).is_pending());
        assert_eq!((connection_polls.load(Ordering::SeqCst), stream_polls.load(Ordering::SeqCst)), (1, 2));
    }

    #[test]
    fn a_stream_that_never_rests_lets_other_tasks_run() {
        let (_open, executor, mut set) = open_connection();
        let polls = Arc::new(AtomicUsize::new(0));
        executor.spawn(waking_stream(usize::MAX, polls.clone()));
        let (count, waker) = outer();
        assert!(Pin::new(&mut set).poll(&mut Context::from_waker(&waker)).is_pending());
        let after_one_poll = polls.load(Ordering::SeqCst);
        assert!((ROUNDS_PER_POLL..=2 * ROUNDS_PER_POLL).contains(&after_one_poll), "{after_one_poll} polls");
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "the task asks to be polled again");
    }

    #[test]
    fn done_once_the_connection_and_every_stream_have_ended() {
        let (open, executor, mut set) = open_connection();
        // A stream that ends when told (as a stream does once its connection has gone).
        let ended = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stream_waker = Arc::new(Mutex::new(None::<Waker>));
        let (e, w) = (ended.clone(), stream_waker.clone());
        executor.spawn(Box::pin(std::future::poll_fn(move |cx| {
            if e.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            *w.lock() = Some(cx.waker().clone());
            Poll::Pending
        })));
        let (count, waker) = outer();
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut set).poll(&mut cx).is_pending());
        // The connection ends (as the socket's wake-up would tell it).
        open.store(false, Ordering::SeqCst);
        set.connection_waker.wake_by_ref();
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "the connection's wake-up reaches the task");
        assert!(Pin::new(&mut set).poll(&mut cx).is_pending(), "the connection ended, a stream has not");
        assert!(set.connection.is_none());
        ended.store(true, Ordering::SeqCst);
        stream_waker.lock().take().expect("registered").wake();
        assert_eq!(count.0.load(Ordering::SeqCst), 2, "the stream's wake-up reaches the task");
        assert!(Pin::new(&mut set).poll(&mut cx).is_ready());
    }
}
