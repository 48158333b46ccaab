//! Request deadlines without a tokio timer per request.
//!
//! Every request has a wall-clock deadline ([`crate::Limits::request_timeout`]) that
//! covers time in host calls too (epoch interruption only stops wasm code). A tokio
//! timer per request takes a lock on the runtime's timer wheel and, whenever the driver
//! is not parked on an earlier timer (under load it rarely is), writes to the driver's
//! wake-up descriptor, and `perf` put a share of the host's samples on a trivial request
//! there, some of it waiting for that lock (BENCHMARKS.md, "Host overhead"). Deadlines are seconds long and need no
//! millisecond precision, so instead the runtime's epoch thread scans every watched
//! request each [`SCAN_EVERY`] and signals any request past its deadline; the request
//! waits for that signal beside its work and gives up (dropping the guest's call, which
//! cancels it) when it comes. A request costs one lock of a mutex nobody else holds for
//! long and one allocation.
//! (Measured end to end with `scripts/cpu-per-request` on the `hello` component, CPU
//! per request did not change beyond the noise of A/B runs (BENCHMARKS.md, "Host
//! overhead"): the timer's share went to waiting elsewhere. It stays for what it removes, a lock shared by every request
//! in flight and a wake-up write per request, and for the test of host-call timeouts
//! that came with it, `tests/tests/host.rs`.)

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// How often deadlines are checked: a request is stopped at most this long after its
/// deadline.
pub const SCAN_EVERY: Duration = Duration::from_millis(50);

/// The requests being watched, shared by every app of one [`crate::Runtime`].
#[derive(Clone, Default)]
pub struct Deadlines {
    watched: Arc<Mutex<Vec<Arc<Entry>>>>,
}

struct Entry {
    deadline: Instant,
    /// Signalled once, when the deadline has passed.
    signal: Notify,
    expired: AtomicBool,
    done: AtomicBool,
}

/// A watched request; dropping it stops the watch.
pub struct Watch(Arc<Entry>);

impl Watch {
    /// Whether the request reached its deadline.
    pub fn expired(&self) -> bool {
        self.0.expired.load(Ordering::Acquire)
    }

    /// Completes once the deadline has passed (at most [`SCAN_EVERY`] later).
    pub async fn passed(&self) {
        // `notify_one` leaves a permit when nobody waits yet, so a signal sent before
        // this is first polled is not lost.
        self.0.signal.notified().await
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.0.done.store(true, Ordering::Release);
    }
}

impl Deadlines {
    /// Signals the returned [`Watch`] once `deadline` has passed, unless it is dropped
    /// first.
    pub fn watch(&self, deadline: Instant) -> Watch {
        let entry = Arc::new(Entry {
            deadline,
            signal: Notify::new(),
            expired: AtomicBool::new(false),
            done: AtomicBool::new(false),
        });
        // A poisoned lock only means a scan panicked midway; the list is still valid.
        let mut watched = self.watched.lock().unwrap_or_else(|p| p.into_inner());
        watched.push(entry.clone());
        Watch(entry)
    }

    /// Forgets finished requests and signals those past their deadline.
    pub fn scan(&self, now: Instant) {
        let mut expired = Vec::new();
        {
            let mut watched = self.watched.lock().unwrap_or_else(|p| p.into_inner());
            watched.retain(|entry| {
                if entry.done.load(Ordering::Acquire) {
                    return false;
                }
                if entry.deadline <= now {
                    expired.push(entry.clone());
                    return false;
                }
                true
            });
        }
        for entry in expired {
            entry.expired.store(true, Ordering::Release);
            entry.signal.notify_one();
        }
    }

    /// Requests currently watched (for tests).
    pub fn len(&self) -> usize {
        self.watched.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_past_its_deadline_is_signalled_and_marked() {
        let deadlines = Deadlines::default();
        let now = Instant::now();
        let watch = deadlines.watch(now + Duration::from_millis(100));
        deadlines.scan(now);
        assert!(!watch.expired());
        assert_eq!(deadlines.len(), 1);
        let early = tokio::time::timeout(Duration::from_millis(20), watch.passed()).await;
        assert!(early.is_err(), "signalled before its deadline");
        deadlines.scan(now + Duration::from_millis(100));
        assert!(watch.expired());
        // The signal was sent while nobody waited: it is kept for the next wait.
        tokio::time::timeout(Duration::from_secs(5), watch.passed())
            .await
            .expect("the deadline's signal was lost");
        assert!(deadlines.is_empty());
    }

    #[tokio::test]
    async fn a_finished_request_is_forgotten_and_never_signalled() {
        let deadlines = Deadlines::default();
        let now = Instant::now();
        let watch = deadlines.watch(now);
        let entry = watch.0.clone();
        drop(watch);
        deadlines.scan(now + Duration::from_secs(1));
        assert!(deadlines.is_empty());
        assert!(!entry.expired.load(Ordering::Acquire));
    }
}
