//! What the streams of a run report, lock-free: per stream the time it opened, reached the full
//! state and received each update; totals of bytes and resources received; errors.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Results of every stream of a run.
#[derive(Debug)]
pub struct Recorder {
    start: Instant,
    /// Nanoseconds since `start` plus one; 0 = not yet.
    opened: Vec<AtomicU64>,
    full: Vec<AtomicU64>,
    /// `[update][stream]`.
    updates: Vec<Vec<AtomicU64>>,
    full_count: AtomicUsize,
    update_counts: Vec<AtomicUsize>,
    bytes: AtomicU64,
    responses: AtomicU64,
    resources: AtomicU64,
    errors: AtomicUsize,
    first_errors: Mutex<Vec<String>>,
}

/// How many distinct error texts a run keeps.
const KEPT_ERRORS: usize = 5;

impl Recorder {
    /// A recorder for `streams` streams and `updates` updates, timed from now.
    pub fn new(streams: usize, updates: usize) -> Self {
        let slots = || (0..streams).map(|_| AtomicU64::new(0)).collect::<Vec<_>>();
        Self {
            start: Instant::now(),
            opened: slots(),
            full: slots(),
            updates: (0..updates).map(|_| slots()).collect(),
            full_count: AtomicUsize::new(0),
            update_counts: (0..updates).map(|_| AtomicUsize::new(0)).collect(),
            bytes: AtomicU64::new(0),
            responses: AtomicU64::new(0),
            resources: AtomicU64::new(0),
            errors: AtomicUsize::new(0),
            first_errors: Mutex::new(Vec::new()),
        }
    }

    /// When the run started.
    pub fn start(&self) -> Instant {
        self.start
    }

    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX - 1) + 1
    }

    /// The stream's response stream is open.
    pub fn opened(&self, stream: usize) {
        if let Some(slot) = self.opened.get(stream) {
            slot.store(self.now(), Ordering::Relaxed);
        }
    }

    /// The stream holds the full state (recorded once).
    pub fn full_state(&self, stream: usize) {
        if let Some(slot) = self.full.get(stream) {
            if slot.compare_exchange(0, self.now(), Ordering::Relaxed, Ordering::Relaxed).is_ok() {
                self.full_count.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The stream received update `index`.
    pub fn updated(&self, index: usize, stream: usize) {
        let Some(slot) = self.updates.get(index).and_then(|u| u.get(stream)) else { return };
        if slot.compare_exchange(0, self.now(), Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            self.update_counts[index].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A response of `bytes` bytes with `resources` resources arrived.
    pub fn received(&self, bytes: usize, resources: usize) {
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        self.responses.fetch_add(1, Ordering::Relaxed);
        self.resources.fetch_add(resources as u64, Ordering::Relaxed);
    }

    /// A stream failed.
    pub fn error(&self, _stream: usize, text: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut kept) = self.first_errors.lock() {
            if kept.len() < KEPT_ERRORS && !kept.contains(&text) {
                kept.push(text);
            }
        }
    }

    /// Streams holding the full state.
    pub fn full_count(&self) -> usize {
        self.full_count.load(Ordering::Relaxed)
    }

    /// Streams that received update `index`.
    pub fn update_count(&self, index: usize) -> usize {
        self.update_counts.get(index).map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Failed streams.
    pub fn errors(&self) -> usize {
        self.errors.load(Ordering::Relaxed)
    }

    /// Up to a few distinct error texts.
    pub fn error_texts(&self) -> Vec<String> {
        self.first_errors.lock().map(|k| k.clone()).unwrap_or_default()
    }

    /// Bytes, responses and resources received so far.
    pub fn totals(&self) -> (u64, u64, u64) {
        (
            self.bytes.load(Ordering::Relaxed),
            self.responses.load(Ordering::Relaxed),
            self.resources.load(Ordering::Relaxed),
        )
    }

    fn at(v: &AtomicU64) -> Option<Duration> {
        match v.load(Ordering::Relaxed) {
            0 => None,
            n => Some(Duration::from_nanos(n - 1)),
        }
    }

    /// For streams `range`: time from opening to the full state.
    pub fn convergence(&self, range: std::ops::Range<usize>) -> Vec<Duration> {
        range.filter_map(|i| Some(Self::at(&self.full[i])?.saturating_sub(Self::at(&self.opened[i])?))).collect()
    }

    /// For streams `range`: when each reached the full state, since the start of the run.
    pub fn full_at(&self, range: std::ops::Range<usize>) -> Vec<Duration> {
        range.filter_map(|i| Self::at(&self.full[i])).collect()
    }

    /// For streams `range`: when each received update `index`, since the start of the run.
    pub fn update_at(&self, index: usize, range: std::ops::Range<usize>) -> Vec<Duration> {
        let Some(u) = self.updates.get(index) else { return Vec::new() };
        range.filter_map(|i| Self::at(&u[i])).collect()
    }
}
