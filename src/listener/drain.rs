//! A listener's drain: every open connection holds a watch on it, serving or
//! parked; draining tells them all to finish and waits until the last is gone.
//!
//! hyper-util's `GracefulShutdown` does this for connections being served, but a
//! parked connection (see `park`) is not being served and must still hear the
//! drain and count as open.
//!
//! A watch is polled by hand (`poll_started`) rather than through a future: a
//! parked connection's task then keeps no waiter node for it, only its waker,
//! registered once.

use std::future::poll_fn;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use hyper_util::server::graceful::GracefulConnection;
use slab::Slab;
use tokio::sync::Notify;

#[derive(Debug)]
pub struct Drain(Arc<Shared>);

#[derive(Debug, Default)]
struct Shared {
    started: AtomicBool,
    /// Watches alive: the connections still open.
    open: AtomicUsize,
    /// The task of each watch that has waited, to wake when the drain starts.
    wakers: Mutex<Slab<Waker>>,
    /// Told when the last watch goes.
    closed: Notify,
}

impl Shared {
    fn wakers(&self) -> MutexGuard<'_, Slab<Waker>> {
        self.wakers.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One connection's view of the drain; the connection counts as open while it lives.
#[derive(Debug)]
pub struct DrainWatch {
    shared: Arc<Shared>,
    /// The waker registered in `shared.wakers`, and where.
    registered: Option<(usize, Waker)>,
}

impl Drain {
    pub fn new() -> Self {
        Drain(Arc::default())
    }

    pub fn watch(&self) -> DrainWatch {
        self.0.open.fetch_add(1, Ordering::AcqRel);
        DrainWatch {
            shared: self.0.clone(),
            registered: None,
        }
    }

    /// Connections still open.
    pub fn open(&self) -> usize {
        self.0.open.load(Ordering::Acquire)
    }

    /// Tells every connection to finish, then waits until all are closed.
    pub async fn drain(self) {
        self.0.started.store(true, Ordering::Release);
        // Woken once the lock is released: a woken task may run on another worker
        // at once and want the lock.
        let wakers = std::mem::take(&mut *self.0.wakers());
        for (_, waker) in wakers {
            waker.wake();
        }
        // The last watch to go stores a permit if this is not waiting yet.
        while self.open() > 0 {
            self.0.closed.notified().await;
        }
    }
}

impl DrainWatch {
    /// Ready once the drain has started. Registers the task's waker only when it
    /// differs from the one registered before, so a task polling this again and
    /// again takes no lock.
    pub fn poll_started(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let shared = &self.shared;
        if shared.started.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        match &mut self.registered {
            Some((_, waker)) if waker.will_wake(cx.waker()) => return Poll::Pending,
            Some((key, waker)) => {
                let mut wakers = shared.wakers();
                if let Some(slot) = wakers.get_mut(*key) {
                    slot.clone_from(cx.waker());
                }
                waker.clone_from(cx.waker());
            }
            None => {
                let key = shared.wakers().insert(cx.waker().clone());
                self.registered = Some((key, cx.waker().clone()));
            }
        }
        // Checked again after registering: a drain that started meanwhile may have
        // woken the wakers before this one was in.
        if shared.started.load(Ordering::Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Whether the drain has started (without waiting for it).
    pub fn is_started(&self) -> bool {
        self.shared.started.load(Ordering::Acquire)
    }

    /// Resolves once the drain has started.
    #[cfg(test)]
    pub async fn started(&mut self) {
        poll_fn(|cx| self.poll_started(cx)).await
    }

    /// Serves `connection` to its end; when the drain starts meanwhile, asks it to
    /// finish its requests in flight and close.
    pub async fn serve<C: GracefulConnection>(&mut self, connection: C) -> C::Output {
        let mut connection = pin!(connection);
        let mut draining = false;
        poll_fn(|cx| {
            if !draining && self.poll_started(cx).is_ready() {
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
            connection.as_mut().poll(cx)
        })
        .await
    }
}

impl Drop for DrainWatch {
    fn drop(&mut self) {
        let shared = &self.shared;
        if let Some((key, _)) = self.registered.take() {
            // Already gone if the drain woke it.
            shared.wakers().try_remove(key);
        }
        // Told whether or not the drain has started: checking `started` here could
        // race with `drain` reading `open`. A permit nobody waits for is harmless.
        if shared.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            shared.closed.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Far longer than any of these waits takes; a wait that reaches it is a
    /// watch or a drain that never finishes.
    const BOUND: Duration = Duration::from_secs(5);

    async fn within<F: Future>(what: &str, future: F) -> F::Output {
        tokio::time::timeout(BOUND, future)
            .await
            .unwrap_or_else(|_| panic!("{what}: not done within {BOUND:?}"))
    }

    #[tokio::test]
    async fn drain_wakes_a_waiting_watch_and_waits_for_it() {
        let drain = Drain::new();
        let mut watch = drain.watch();
        let waiter = tokio::spawn(async move {
            watch.started().await;
            // The drain must still be waiting for this watch here.
            watch
        });
        within("the watch to register its waker", async {
            while drain.0.wakers().is_empty() {
                tokio::task::yield_now().await;
            }
        })
        .await;
        assert_eq!(drain.open(), 1);
        let shared = drain.0.clone();
        let draining = tokio::spawn(drain.drain());
        let watch = within("the drain to wake the watch", waiter).await.unwrap();
        assert!(!draining.is_finished());
        assert_eq!(shared.open.load(Ordering::Acquire), 1);
        drop(watch);
        within("the drain to end once the watch is gone", draining)
            .await
            .unwrap();
        assert_eq!(shared.open.load(Ordering::Acquire), 0);
        assert!(shared.wakers().is_empty());
    }

    #[tokio::test]
    async fn a_watch_made_after_the_drain_started_sees_it_at_once() {
        let drain = Drain::new();
        drain.0.started.store(true, Ordering::Release);
        let mut late = drain.watch();
        within("a late watch to see the drain", late.started()).await;
    }

    #[tokio::test]
    async fn dropped_watches_free_their_waker_slots() {
        let drain = Drain::new();
        for _ in 0..3 {
            let mut watch = drain.watch();
            let polled = poll_fn(|cx| Poll::Ready(watch.poll_started(cx))).await;
            assert!(polled.is_pending());
        }
        assert!(drain.0.wakers().is_empty());
        assert_eq!(drain.open(), 0);
        within("a drain with no watch left", drain.drain()).await;
    }
}
