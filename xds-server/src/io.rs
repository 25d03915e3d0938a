//! Write coalescing for the connections the server accepts.
//!
//! The HTTP/2 codec writes every DATA frame with its own system call and flushes after each:
//! a 34 KiB response to a client that accepts 16 KiB frames costs three `writev` calls, three
//! TCP segments and, over loopback or a fast LAN, three wake-ups of the receiver; small frames
//! (headers, window updates, the small responses of the first requests) cost one call each.
//! When one update fans out to every stream of a connection, those calls are most of the
//! server's CPU.
//!
//! [`Coalescing`] gathers what the codec writes into one buffer and writes it out when the
//! buffer is full ([`HIGH_WATER`]), when the connection task next reads, or when it shuts down.
//! A flush is deferred rather than done: the task is woken instead, so the bytes leave in the
//! next round of the connection task (`crate::conn`), after every stream it runs has queued
//! what it had.
//! Each deferral wakes the task, so no byte waits for outside input, and a codec that flushes
//! again and again without writing or reading in between gets a real write after
//! [`MAX_IDLE_DEFERRALS`]. Once the socket has refused bytes (a slow reader), flushes write and
//! wait for room instead, so the task sleeps until the socket drains rather than waking itself.
//!
//! The buffer is released whenever it empties, so an idle connection holds none; released
//! buffers are kept in a small per-thread pool ([`SPARES_PER_THREAD`]) for the next connection
//! that writes, so an update fanning out to every connection does not churn the allocator.

use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// Bytes gathered before they are written out without waiting for the next poll.
pub(crate) const HIGH_WATER: usize = 64 * 1024;

/// Flushes in a row with nothing new written and no read in between after which a flush
/// writes out anyway (a codec that flushes without ever reading still gets its bytes out).
pub(crate) const MAX_IDLE_DEFERRALS: u32 = 3;

/// Released buffers a thread keeps for reuse (each [`HIGH_WATER`] bytes).
pub(crate) const SPARES_PER_THREAD: usize = 8;

thread_local! {
    static SPARES: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

fn take_buffer() -> Vec<u8> {
    SPARES.with_borrow_mut(Vec::pop).unwrap_or_else(|| Vec::with_capacity(HIGH_WATER))
}

fn release_buffer(mut buf: Vec<u8>) {
    if buf.capacity() != HIGH_WATER {
        return;
    }
    buf.clear();
    SPARES.with_borrow_mut(|spares| {
        if spares.len() < SPARES_PER_THREAD {
            spares.push(buf);
        }
    });
}

/// An I/O object whose writes are gathered and written out in large pieces.
#[derive(Debug)]
pub struct Coalescing<T> {
    inner: T,
    /// Bytes not yet written; `buf[written..]` remain.
    buf: Vec<u8>,
    written: usize,
    /// `buf.len()` at the last deferred flush.
    deferred_at: usize,
    /// Deferred flushes in a row that found nothing new since the previous one.
    idle_deferrals: u32,
    /// The socket refused bytes since the buffer last emptied: flushes write (and wait for room)
    /// instead of deferring, so a slow reader makes the task wait for writability rather than
    /// wake itself over and over.
    blocked: bool,
}

impl<T> Coalescing<T> {
    /// Wraps `inner`.
    pub fn new(inner: T) -> Self {
        Coalescing { inner, buf: Vec::new(), written: 0, deferred_at: 0, idle_deferrals: 0, blocked: false }
    }

    fn pending(&self) -> usize {
        self.buf.len() - self.written
    }
}

impl<T: AsyncWrite + Unpin> Coalescing<T> {
    /// Writes the gathered bytes out; `Ready(Ok)` once none remain.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.buf.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    self.blocked = true;
                    return Poll::Pending;
                }
            }
        }
        self.blocked = false;
        // Empty: give the memory back (an idle connection holds no buffer).
        release_buffer(std::mem::take(&mut self.buf));
        self.written = 0;
        self.deferred_at = 0;
        Poll::Ready(Ok(()))
    }

    fn poll_write_slices(&mut self, cx: &mut Context<'_>, slices: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let len: usize = slices.iter().map(|s| s.len()).sum();
        if self.pending() > 0 && self.pending() + len > HIGH_WATER {
            match self.poll_write_out(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        if self.pending() == 0 && len >= HIGH_WATER {
            // Large enough on its own: no copy.
            return Pin::new(&mut self.inner).poll_write_vectored(cx, slices);
        }
        if self.written > 0 {
            // Part of the buffer left earlier; keep the rest at the front.
            self.buf.drain(..self.written);
            self.written = 0;
            self.deferred_at = 0;
        }
        if self.buf.capacity() == 0 {
            self.buf = take_buffer();
        }
        for s in slices {
            self.buf.extend_from_slice(s);
        }
        Poll::Ready(Ok(len))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Coalescing<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.idle_deferrals = 0;
        // A read starts a new round of the connection task: what the last round gathered
        // leaves now. A write that cannot proceed has registered the task for writability;
        // a failed write fails the read too (the connection is broken either way).
        if this.pending() > 0 {
            if let Poll::Ready(Err(e)) = this.poll_write_out(cx) {
                return Poll::Ready(Err(e));
            }
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalescing<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_slices(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_slices(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pending() == 0 {
            return Pin::new(&mut this.inner).poll_flush(cx);
        }
        // Unless the socket is full (then wait for room like any writer), leave in the next poll
        // with whatever else this round queues.
        if !this.blocked {
            if this.buf.len() == this.deferred_at {
                this.idle_deferrals += 1;
            } else {
                this.idle_deferrals = 0;
                this.deferred_at = this.buf.len();
            }
            if this.idle_deferrals < MAX_IDLE_DEFERRALS {
                cx.waker().wake_by_ref();
                return Poll::Ready(Ok(()));
            }
        }
        match this.poll_write_out(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_flush(cx),
            other => other,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.poll_write_out(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.inner).poll_shutdown(cx),
            other => other,
        }
    }
}

impl<T: Connected> Connected for Coalescing<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use futures::task::{waker, ArcWake};

    use super::*;

    /// A socket that records each write call and can refuse writes.
    #[derive(Default)]
    struct Socket {
        written: Vec<u8>,
        calls: usize,
        full: bool,
    }

    impl AsyncRead for Socket {
        fn poll_read(self: Pin<&mut Self>, _: &mut Context<'_>, _: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            Poll::Pending
        }
    }

    impl AsyncWrite for Socket {
        fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            if this.full {
                return Poll::Pending;
            }
            this.calls += 1;
            this.written.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl ArcWake for Wakes {
        fn wake_by_ref(arc_self: &Arc<Self>) {
            arc_self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    struct Harness {
        io: Coalescing<Socket>,
        wakes: Arc<Wakes>,
    }

    impl Harness {
        fn new() -> Self {
            Harness { io: Coalescing::new(Socket::default()), wakes: Arc::default() }
        }
        fn cx<R>(&mut self, f: impl FnOnce(Pin<&mut Coalescing<Socket>>, &mut Context<'_>) -> R) -> R {
            let w = waker(self.wakes.clone());
            let mut cx = Context::from_waker(&w);
            f(Pin::new(&mut self.io), &mut cx)
        }
        fn write(&mut self, bytes: &[u8]) -> Poll<io::Result<usize>> {
            self.cx(|io, cx| io.poll_write(cx, bytes))
        }
        fn frame(&mut self, head: &[u8], payload: &[u8]) -> Poll<io::Result<usize>> {
            self.cx(|io, cx| io.poll_write_vectored(cx, &[IoSlice::new(head), IoSlice::new(payload)]))
        }
        fn flush(&mut self) -> Poll<io::Result<()>> {
            self.cx(|io, cx| io.poll_flush(cx))
        }
        fn read(&mut self) -> Poll<io::Result<()>> {
            let mut space = [0u8; 16];
            let mut buf = ReadBuf::new(&mut space);
            self.cx(|io, cx| io.poll_read(cx, &mut buf))
        }
        fn socket(&self) -> &Socket {
            &self.io.inner
        }
    }

    #[test]
    fn a_flush_is_deferred_to_the_next_read_and_wakes_the_task() {
        let mut h = Harness::new();
        assert!(matches!(h.write(b"headers"), Poll::Ready(Ok(7))));
        assert!(matches!(h.flush(), Poll::Ready(Ok(()))));
        assert_eq!(h.socket().calls, 0, "nothing written yet");
        assert_eq!(h.wakes.0.load(Ordering::SeqCst), 1, "the task is woken to write it out");
        assert!(matches!(h.write(b" and data"), Poll::Ready(Ok(9))));
        assert!(matches!(h.flush(), Poll::Ready(Ok(()))));
        assert!(h.read().is_pending());
        assert_eq!(h.socket().calls, 1, "both pieces in one write");
        assert_eq!(h.socket().written, b"headers and data");
        assert_eq!(h.io.buf.capacity(), 0, "an emptied buffer is released");
    }

    #[test]
    fn frames_are_written_in_pieces_of_the_high_water_mark() {
        let mut h = Harness::new();
        let payload = vec![7u8; 16 * 1024];
        let mut expected = Vec::new();
        for i in 0..20u8 {
            let head = [i; 9];
            assert!(matches!(h.frame(&head, &payload), Poll::Ready(Ok(n)) if n == 9 + payload.len()));
            assert!(h.flush().is_ready());
            expected.extend_from_slice(&head);
            expected.extend_from_slice(&payload);
        }
        assert!(h.read().is_pending());
        assert_eq!(h.socket().written, expected, "every byte, in order");
        let frames_per_write = HIGH_WATER / (9 + payload.len());
        assert!(h.socket().calls <= 20 / frames_per_write + 1, "{} writes for 20 frames", h.socket().calls);
    }

    #[test]
    fn a_write_larger_than_the_mark_goes_straight_through() {
        let mut h = Harness::new();
        let big = vec![1u8; HIGH_WATER + 1];
        assert!(matches!(h.write(&big), Poll::Ready(Ok(n)) if n == big.len()));
        assert_eq!(h.socket().calls, 1);
        assert_eq!(h.io.buf.capacity(), 0, "no copy");
    }

    #[test]
    fn flushes_that_add_nothing_write_out_even_without_a_read() {
        let mut h = Harness::new();
        assert!(h.write(b"x").is_ready());
        for _ in 0..=MAX_IDLE_DEFERRALS {
            assert!(h.flush().is_ready());
        }
        assert_eq!(h.socket().written, b"x");
    }

    #[test]
    fn a_full_socket_makes_flushes_wait_instead_of_waking_the_task() {
        let mut h = Harness::new();
        let payload = vec![5u8; 40 * 1024];
        assert!(h.write(&payload).is_ready());
        h.io.inner.full = true;
        assert!(h.write(&payload).is_pending(), "the socket refuses the first 40 KiB");
        let wakes = h.wakes.0.load(Ordering::SeqCst);
        assert!(h.flush().is_pending(), "a flush waits for room");
        assert_eq!(h.wakes.0.load(Ordering::SeqCst), wakes, "and does not wake the task itself");
        h.io.inner.full = false;
        assert!(h.flush().is_ready());
        assert_eq!(h.socket().written.len(), payload.len());
        assert!(h.write(b"small").is_ready());
        assert!(h.flush().is_ready());
        assert_eq!(h.socket().written.len(), payload.len(), "drained: flushes are deferred again");
    }

    #[test]
    fn a_full_socket_keeps_the_bytes_until_it_drains() {
        let mut h = Harness::new();
        h.io.inner.full = true;
        let payload = vec![3u8; 40 * 1024];
        assert!(h.write(&payload).is_ready());
        assert!(h.write(&payload).is_pending(), "over the mark with a full socket: not accepted");
        assert!(h.read().is_pending());
        assert!(h.socket().written.is_empty());
        h.io.inner.full = false;
        assert!(h.write(&payload).is_ready());
        assert!(h.cx(|io, cx| io.poll_shutdown(cx)).is_ready());
        assert_eq!(h.socket().written.len(), 2 * payload.len(), "the first write, then the retried one");
    }
}
