//! Workers that share nothing on the request path: with `runtime.workers` above
//! one, each worker is a thread with a single-threaded runtime of its own, which
//! accepts on every listener (a copy of the listening socket), serves the
//! connections it accepted from start to end, and keeps its own idle backend
//! connections. The control plane (reloads, health checks, discovery, the admin
//! API) runs on the runtime that started weir.
//!
//! A multi-threaded runtime would share its task queues, its I/O driver and its
//! timers among all requests; here a request touches nothing another worker
//! uses but the metrics' atomic counters. As with nginx's worker processes,
//! whichever worker is free first takes a new connection.

use std::cell::Cell;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// How many workers serve requests: what per-worker state is split into.
static COUNT: AtomicUsize = AtomicUsize::new(1);

thread_local! {
    /// The worker this thread is; 0 for any thread that is not a worker.
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// The worker the calling thread is (0 outside the workers).
pub fn index() -> usize {
    INDEX.get()
}

/// How many workers there are; state kept per worker has this many parts.
pub fn count() -> usize {
    COUNT.load(Ordering::Relaxed)
}

/// The worker threads; none when everything runs on the caller's runtime.
/// Dropping them stops each runtime (and what it still runs) and joins its
/// thread.
#[derive(Default)]
pub struct Workers {
    threads: Vec<WorkerThread>,
}

struct WorkerThread {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Workers {
    /// No worker threads: listeners are served on the runtime that starts them.
    pub fn none() -> Self {
        Workers::default()
    }

    /// Starts `count` worker threads, each running its own runtime until dropped.
    /// Per-worker state made afterwards is split `count` ways.
    pub fn start(count: usize) -> io::Result<Self> {
        COUNT.store(count.max(1), Ordering::Relaxed);
        let mut threads = Vec::with_capacity(count);
        for index in 0..count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handle = runtime.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("weir-worker-{index}"))
                .spawn(move || {
                    INDEX.set(index);
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                })?;
            threads.push(WorkerThread {
                handle,
                stop: Some(stop),
                thread: Some(thread),
            });
        }
        Ok(Workers { threads })
    }

    /// The runtime of each worker, in order; empty when there are none.
    pub fn handles(&self) -> Vec<Handle> {
        self.threads.iter().map(|t| t.handle.clone()).collect()
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for worker in &mut self.threads {
            if let Some(stop) = worker.stop.take() {
                let _ = stop.send(());
            }
        }
        for worker in &mut self.threads {
            if let Some(thread) = worker.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_worker_knows_its_index() {
        let workers = Workers::start(2).unwrap();
        let seen: Vec<usize> = workers
            .handles()
            .iter()
            .map(|handle| {
                let (send, receive) = std::sync::mpsc::channel();
                handle.spawn(async move { send.send(index()).unwrap() });
                receive.recv().unwrap()
            })
            .collect();
        assert_eq!(seen, [0, 1]);
        assert_eq!(count(), 2);
        assert_eq!(index(), 0, "the test's own thread is no worker");
        drop(workers);
    }
}
