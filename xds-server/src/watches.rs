//! The resource watches of one stream, polled only when they may have something new.
//!
//! A stream task wakes for every request, response and watch change, and each time it asks its
//! watches for news. Polling a pending `watch::Receiver::changed` future takes the lock of the
//! channel's waiter list, which every stream watching that type shares: ten thousand streams
//! acknowledging an update took those few locks forty thousand times from both cores, for
//! nothing. A watch whose future is registered is therefore polled again only when its channel
//! has a version it has not seen (one atomic load, `has_changed`); the registration made at the
//! last poll wakes the task when one arrives.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use tokio_stream::wrappers::WatchStream;
use tokio_stream::Stream;
use xds_core::{ResourceSet, ResourceWatch};

/// What a watch yields: the type and its latest resources.
pub(crate) type Change = (Arc<str>, Option<Arc<ResourceSet>>);

/// One watch per type.
#[derive(Default)]
pub(crate) struct Watches {
    entries: Vec<Entry>,
    /// Where the next poll starts, so that no type is always asked last.
    next: usize,
    /// The waker the armed futures were registered with: polled from another task, they are
    /// registered anew.
    waker: Option<Waker>,
}

struct Entry {
    type_url: Arc<str>,
    stream: WatchStream<Option<Arc<ResourceSet>>>,
    /// A second receiver of the same channel that tells, without the channel's lock, whether a
    /// version came since the last one yielded.
    seen: ResourceWatch,
    /// The stream's change future is registered: polling it again is only useful once
    /// `seen.has_changed()`.
    armed: bool,
}

impl Watches {
    /// Watches `watch` for `type_url` (instead of an earlier watch of the type); it yields the
    /// current resources first.
    pub(crate) fn insert(&mut self, type_url: Arc<str>, watch: ResourceWatch) {
        let seen = watch.clone();
        let entry = Entry { type_url, stream: WatchStream::new(watch), seen, armed: false };
        match self.entries.iter_mut().find(|e| e.type_url == entry.type_url) {
            Some(old) => *old = entry,
            None => self.entries.push(entry),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The next change of any watch; `None` once every watch has ended (its source dropped
    /// the channel).
    pub(crate) async fn next(&mut self) -> Option<Change> {
        poll_fn(|cx| self.poll_next(cx)).await
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Change>> {
        if !self.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            self.waker = Some(cx.waker().clone());
            for entry in &mut self.entries {
                entry.armed = false;
            }
        }
        let mut i = 0;
        while i < self.entries.len() {
            let at = (self.next + i) % self.entries.len();
            let entry = &mut self.entries[at];
            // A closed channel (`Err`) is polled to learn that it ended.
            if entry.armed && !entry.seen.has_changed().unwrap_or(true) {
                i += 1;
                continue;
            }
            match Pin::new(&mut entry.stream).poll_next(cx) {
                Poll::Ready(Some(resources)) => {
                    // The new change future is not registered until polled.
                    entry.armed = false;
                    entry.seen.borrow_and_update();
                    let type_url = entry.type_url.clone();
                    self.next = (at + 1) % self.entries.len();
                    return Poll::Ready(Some((type_url, resources)));
                }
                Poll::Ready(None) => {
                    self.entries.remove(at);
                    continue;
                }
                Poll::Pending => {
                    entry.armed = true;
                    i += 1;
                }
            }
        }
        if self.entries.is_empty() {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::sync::watch;
    use xds_core::type_url;

    fn set(n: usize) -> Option<Arc<ResourceSet>> {
        Some(Arc::new(ResourceSet::empty(type_url::CLUSTER).with_version(Some(n.to_string().into()))))
    }

    fn version(c: &Change) -> &str {
        c.1.as_ref().map_or("", |s| s.version())
    }

    async fn next_within(w: &mut Watches) -> Option<Change> {
        tokio::time::timeout(Duration::from_secs(5), w.next()).await.expect("a change in time")
    }

    #[tokio::test]
    async fn yields_current_then_every_latest_change_of_each_type() {
        let (cds, cds_rx) = watch::channel(set(1));
        let (eds, eds_rx) = watch::channel(set(10));
        let mut w = Watches::default();
        w.insert(type_url::CLUSTER.into(), cds_rx);
        w.insert(type_url::ENDPOINT.into(), eds_rx);
        let mut first: Vec<String> = Vec::new();
        for _ in 0..2 {
            first.push(version(&next_within(&mut w).await.expect("current")).to_string());
        }
        first.sort();
        assert_eq!(first, ["1", "10"]);
        // Both armed now; nothing new: pending.
        assert!(tokio::time::timeout(Duration::from_millis(50), w.next()).await.is_err());
        // Changes while armed wake the task and are yielded, the latest of each.
        eds.send_replace(set(11));
        eds.send_replace(set(12));
        assert_eq!(version(&next_within(&mut w).await.expect("eds")), "12");
        let task = tokio::spawn(async move {
            let c = next_within(&mut w).await.expect("cds");
            (c.0.to_string(), version(&c).to_string(), w)
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        cds.send_replace(set(2));
        let (t, v, mut w) = task.await.expect("task");
        assert_eq!((t.as_str(), v.as_str()), (type_url::CLUSTER, "2"));
        // A change right after a yield (before the next poll) is not lost.
        eds.send_replace(set(13));
        assert_eq!(version(&next_within(&mut w).await.expect("eds")), "13");
        eds.send_replace(set(14));
        cds.send_replace(set(3));
        let mut both: Vec<String> = Vec::new();
        for _ in 0..2 {
            both.push(version(&next_within(&mut w).await.expect("change")).to_string());
        }
        both.sort();
        assert_eq!(both, ["14", "3"]);
        // Closed channels end their watch; the last one ends the whole.
        drop(cds);
        drop(eds);
        assert!(next_within(&mut w).await.is_none());
        assert!(w.is_empty());
    }

    #[derive(Default)]
    struct Woken(std::sync::atomic::AtomicBool);

    impl std::task::Wake for Woken {
        fn wake(self: Arc<Self>) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn polled_from_another_task_the_watches_wake_that_task() {
        let (cds, rx) = watch::channel(set(1));
        let mut w = Watches::default();
        w.insert(type_url::CLUSTER.into(), rx);
        let (first, second) = (Arc::new(Woken::default()), Arc::new(Woken::default()));
        let (first_waker, second_waker) = (Waker::from(first.clone()), Waker::from(second.clone()));
        let mut cx = Context::from_waker(&first_waker);
        assert!(matches!(w.poll_next(&mut cx), Poll::Ready(Some(_))), "the current resources");
        assert!(w.poll_next(&mut cx).is_pending(), "armed with the first task's waker");
        let mut cx = Context::from_waker(&second_waker);
        assert!(w.poll_next(&mut cx).is_pending());
        cds.send_replace(set(2));
        assert!(second.0.load(std::sync::atomic::Ordering::SeqCst), "the task polling now is woken");
        assert!(matches!(w.poll_next(&mut cx), Poll::Ready(Some(_))));
    }

    #[tokio::test]
    async fn a_new_watch_of_a_type_replaces_the_old() {
        let (_old, old_rx) = watch::channel(set(1));
        let (_new, new_rx) = watch::channel(set(2));
        let mut w = Watches::default();
        w.insert(type_url::CLUSTER.into(), old_rx);
        w.insert(type_url::CLUSTER.into(), new_rx);
        assert_eq!(version(&next_within(&mut w).await.expect("current")), "2");
        assert!(tokio::time::timeout(Duration::from_millis(50), w.next()).await.is_err());
    }
}
