//! The resource watches of one stream, each polled only when it woke the task.
//!
//! A stream task wakes for every request, response and watch change. With the watches in a
//! `StreamMap`, every wake-up polled all of them, and polling a pending
//! `watch::Receiver::changed` future takes the lock of the channel's waiter list, which every
//! stream watching that type shares: ten thousand streams acknowledging an update took those few
//! locks forty thousand times from both cores, for nothing.
//!
//! Here each watch is polled with a waker of its own, which marks the watch and wakes the task.
//! A watch is polled again only when marked: when its registration fired (a new version, or a
//! late notification of one already seen: either way the registration is used up and the poll
//! registers it again), or when it yielded a value (its next change is not registered until
//! polled). A watch that is not marked still holds its registration, so nothing can be missed.
//! (Skipping by comparing versions instead is not safe: tokio's watch wakes its waiters in
//! batches, so a late wake-up for a version already seen can use up a registration that a version
//! check would then not renew.)

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use futures::task::AtomicWaker;
use tokio::sync::watch::error::RecvError;
use tokio_util::sync::ReusableBoxFuture;
use xds_core::{ResourceSet, ResourceWatch};

/// What a watch yields: the type and its latest resources.
pub(crate) type Change = (Arc<str>, Option<Arc<ResourceSet>>);

/// One watch per type.
#[derive(Default)]
pub(crate) struct Watches {
    entries: Vec<Entry>,
    /// Where the next poll starts, so that no type is always asked last.
    next: usize,
    /// The task to wake when a watch fires: the one that polled last.
    task: Arc<AtomicWaker>,
}

struct Entry {
    type_url: Arc<str>,
    stream: Follow,
    mark: Arc<Mark>,
    /// `mark` as a waker, made once.
    waker: Waker,
}

/// A watch's values: the current one first, then one per change, until the source drops its
/// sender. (tokio-stream's `WatchStream` does the same with two boxed futures per watch, a first
/// one and then the one it reuses; here the first value needs none.)
enum Follow {
    First(ResourceWatch),
    Changes(ReusableBoxFuture<'static, (Result<(), RecvError>, ResourceWatch)>),
    Ended,
}

async fn changed(mut watch: ResourceWatch) -> (Result<(), RecvError>, ResourceWatch) {
    let changed = watch.changed().await;
    (changed, watch)
}

impl Follow {
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Option<Arc<ResourceSet>>>> {
        match self {
            // Polled in place: this is every later poll of every watch.
            Self::Changes(next) => match next.poll(cx) {
                Poll::Ready((Ok(()), mut watch)) => {
                    let value = watch.borrow_and_update().clone();
                    next.set(changed(watch));
                    Poll::Ready(Some(value))
                }
                Poll::Ready((Err(_), _)) => {
                    *self = Self::Ended;
                    Poll::Ready(None)
                }
                Poll::Pending => Poll::Pending,
            },
            Self::First(_) | Self::Ended => match std::mem::replace(self, Self::Ended) {
                Self::First(mut watch) => {
                    let value = watch.borrow_and_update().clone();
                    *self = Self::Changes(ReusableBoxFuture::new(changed(watch)));
                    Poll::Ready(Some(value))
                }
                _ => Poll::Ready(None),
            },
        }
    }
}

/// Set when a watch's registration fired or its next change is not registered yet.
struct Mark {
    due: AtomicBool,
    task: Arc<AtomicWaker>,
}

impl Wake for Mark {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Marked before the task is woken: the task's poll that follows sees the mark.
        self.due.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl Watches {
    /// Watches `watch` for `type_url` (instead of an earlier watch of the type); it yields the
    /// current resources first.
    pub(crate) fn insert(&mut self, type_url: Arc<str>, watch: ResourceWatch) {
        let mark = Arc::new(Mark { due: AtomicBool::new(true), task: self.task.clone() });
        let waker = Waker::from(mark.clone());
        let entry = Entry { type_url, stream: Follow::First(watch), mark, waker };
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
        // Registered before the marks are read: a watch that fires after its mark was read wakes
        // this task.
        self.task.register(cx.waker());
        let mut i = 0;
        while i < self.entries.len() {
            let at = (self.next + i) % self.entries.len();
            let entry = &mut self.entries[at];
            if !entry.mark.due.swap(false, Ordering::Acquire) {
                i += 1;
                continue;
            }
            // Polled with the watch's own waker: its registration marks it. The task's budget
            // applies as usual: a watch that yields to it wakes (and so marks) itself.
            match entry.stream.poll_next(&mut Context::from_waker(&entry.waker)) {
                Poll::Ready(Some(resources)) => {
                    // The next change is not registered until the watch is polled again.
                    entry.mark.due.store(true, Ordering::Relaxed);
                    let type_url = entry.type_url.clone();
                    self.next = (at + 1) % self.entries.len();
                    return Poll::Ready(Some((type_url, resources)));
                }
                Poll::Ready(None) => {
                    self.entries.remove(at);
                }
                Poll::Pending => i += 1,
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
    use std::sync::atomic::AtomicUsize;
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

    type Publisher = watch::Sender<Option<Arc<ResourceSet>>>;

    /// Watches of clusters and endpoints, at these versions.
    fn cds_and_eds(cds: usize, eds: usize) -> (Publisher, Publisher, Watches) {
        let (cds, cds_rx) = watch::channel(set(cds));
        let (eds, eds_rx) = watch::channel(set(eds));
        let mut w = Watches::default();
        w.insert(type_url::CLUSTER.into(), cds_rx);
        w.insert(type_url::ENDPOINT.into(), eds_rx);
        (cds, eds, w)
    }

    #[tokio::test]
    async fn yields_current_then_every_latest_change_of_each_type() {
        let (cds, eds, mut w) = cds_and_eds(1, 10);
        let mut first: Vec<String> = Vec::new();
        for _ in 0..2 {
            first.push(version(&next_within(&mut w).await.expect("current")).to_string());
        }
        first.sort();
        assert_eq!(first, ["1", "10"]);
        // Both registered now; nothing new: pending.
        assert!(tokio::time::timeout(Duration::from_millis(50), w.next()).await.is_err());
        // Changes while registered wake the task and are yielded, the latest of each.
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
    struct Woken(AtomicBool);

    impl Wake for Woken {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
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
        assert!(w.poll_next(&mut cx).is_pending(), "registered");
        let mut cx = Context::from_waker(&second_waker);
        assert!(w.poll_next(&mut cx).is_pending());
        cds.send_replace(set(2));
        assert!(second.0.load(Ordering::SeqCst), "the task polling now is woken");
        assert!(!first.0.load(Ordering::SeqCst));
        assert!(matches!(w.poll_next(&mut cx), Poll::Ready(Some(_))));
    }

    #[test]
    fn a_watch_that_did_not_fire_is_not_polled() {
        let (_cds, eds, mut w) = cds_and_eds(1, 10);
        let task = Arc::new(Woken::default());
        let waker = Waker::from(task.clone());
        let mut cx = Context::from_waker(&waker);
        for _ in 0..2 {
            assert!(matches!(w.poll_next(&mut cx), Poll::Ready(Some(_))));
        }
        assert!(w.poll_next(&mut cx).is_pending());
        assert!(w.entries.iter().all(|e| !e.mark.due.load(Ordering::SeqCst)), "both registered, none due");
        eds.send_replace(set(11));
        assert!(task.0.load(Ordering::SeqCst), "the task is woken");
        let due: Vec<&str> =
            w.entries.iter().filter(|e| e.mark.due.load(Ordering::SeqCst)).map(|e| &*e.type_url).collect();
        assert_eq!(due, [type_url::ENDPOINT], "only the watch that fired is due");
        match w.poll_next(&mut cx) {
            Poll::Ready(Some(c)) => assert_eq!((&*c.0, version(&c)), (type_url::ENDPOINT, "11")),
            other => panic!("expected the endpoint change, got {:?}", other.map(|o| o.map(|c| c.0))),
        }
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

    /// The load that lost updates with a version-check shortcut: thousands of tasks on one
    /// channel, each version published once the previous one reached every task. tokio's watch
    /// wakes its waiters in batches, so late wake-ups of an old version hit tasks that already
    /// registered for the next; every task must still see every version.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_tasks_on_one_channel_see_every_version() {
        const TASKS: usize = 2_000;
        const ROUNDS: usize = 10;
        const BUSY_POLLS: usize = 20;
        let (tx, rx) = watch::channel(set(0));
        let seen = Arc::new(AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..TASKS {
            let (rx, seen) = (rx.clone(), seen.clone());
            tasks.spawn(async move {
                let mut w = Watches::default();
                w.insert(type_url::CLUSTER.into(), rx);
                for round in 0..=ROUNDS {
                    // Polled among other wake-ups first (a stream's requests and responses),
                    // then only when a watch wakes the task. Versions are only published once
                    // every task saw the previous one.
                    let mut change = None;
                    for _ in 0..BUSY_POLLS {
                        tokio::select! {
                            biased;
                            c = w.next() => {
                                change = c;
                                break;
                            }
                            () = tokio::task::yield_now() => {}
                        }
                    }
                    let change = match change {
                        Some(c) => c,
                        None => next_within(&mut w).await.expect("a version"),
                    };
                    assert_eq!(version(&change), round.to_string());
                    seen.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
        for round in 1..=ROUNDS {
            let want = TASKS * round;
            let reached = tokio::time::timeout(Duration::from_secs(10), async {
                while seen.load(Ordering::SeqCst) < want {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
            .await;
            assert!(
                reached.is_ok(),
                "round {round}: {} of {TASKS} tasks saw the version",
                seen.load(Ordering::SeqCst) - (want - TASKS)
            );
            tx.send_replace(set(round));
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("every task saw every version");
        }
    }
}
