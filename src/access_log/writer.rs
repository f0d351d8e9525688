//! The access log's writer: the buffers requests write their lines into, the
//! thread that swaps them out and writes them every few milliseconds, and the
//! sink it writes to (stdout, or the file, reopened on reload).

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{JoinHandle, Thread};
use std::time::Duration;

use tracing::{error, warn};

use super::format::Clock;
use crate::config::AccessLogTarget;

/// Buffers lines are written into. Each thread sticks to one, so with up to this
/// many workers no two threads share a buffer (and its lock).
const SHARDS: usize = 8;

/// Bytes a buffer may hold before the writer takes them; beyond, new lines are
/// dropped. 4 MiB is some 16,000 lines: seconds of a stalled disk at full load.
pub(super) const PENDING_MAX: usize = 4 * 1024 * 1024;

/// How long the writer sleeps between batches. It polls rather than being woken
/// per line: a wake-up is a syscall and a context switch, more than everything
/// else a line costs.
const WRITE_INTERVAL: Duration = Duration::from_millis(20);

/// Largest buffer capacity kept between batches: a stall can grow a buffer to
/// `PENDING_MAX`, which should not stay allocated afterwards.
const KEPT_CAPACITY: usize = 256 * 1024;

/// Every writer thread not known to have ended, for [`finish`] to wait on.
static WRITERS: Mutex<Vec<(Arc<Shared>, JoinHandle<()>)>> = Mutex::new(Vec::new());

fn writers() -> MutexGuard<'static, Vec<(Arc<Shared>, JoinHandle<()>)>> {
    WRITERS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Closes every access log, wakes its writer, and waits for at most `within`
/// until each has written out what it had buffered.
pub(super) fn finish(within: Duration) {
    let deadline = std::time::Instant::now() + within;
    let writers = std::mem::take(&mut *writers());
    for (shared, writer) in &writers {
        shared.close();
        writer.thread().unpark();
    }
    for (_, writer) in writers {
        while !writer.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        if writer.is_finished() {
            let _ = writer.join();
        }
    }
}

/// The buffers of one access log, and what its writer is told.
#[derive(Debug, Default)]
pub(super) struct Shared {
    pub(super) shards: [Shard; SHARDS],
    pub(super) dropped: AtomicU64,
    /// Set by a reload: the lines buffered before it, which the writer writes to
    /// the file as it was before reopening the path.
    reopen: Mutex<Option<Vec<u8>>>,
    /// Set when the log is dropped: the writer writes what is left and ends.
    closed: AtomicBool,
}

/// One buffer, on cache lines of its own: threads appending to different
/// buffers never touch the same line.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(super) struct Shard(Mutex<Pending>);

#[derive(Debug, Default)]
pub(super) struct Pending {
    pub(super) lines: Vec<u8>,
    pub(super) clock: Clock,
}

impl Shard {
    pub(super) fn lock(&self) -> MutexGuard<'_, Pending> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The buffer of the calling thread: threads are dealt out to buffers in turn.
pub(super) fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|shard| *shard)
}

impl Shared {
    /// Has the writer reopen the file (log rotation): lines recorded until now go
    /// to the file as it was, later ones to the path's new file.
    pub(super) fn reopen_file(&self) {
        let mut before = Vec::new();
        for shard in &self.shards {
            before.append(&mut shard.lock().lines);
        }
        let mut reopen = self.reopen.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *reopen {
            // A second reload before the writer came round: still the old file.
            Some(earlier) => earlier.append(&mut before),
            None => *reopen = Some(before),
        }
    }

    /// Tells the writer to write out what is buffered and end; the caller wakes it.
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }
}

/// Opens `target` and starts its writer thread, known to [`finish`]: the
/// buffers to write lines into, and the thread to wake when they are closed.
pub(super) fn start(target: &AccessLogTarget) -> io::Result<(Arc<Shared>, Thread)> {
    let sink = open_sink(target)?;
    let shared = Arc::new(Shared::default());
    let writer = {
        let (target, shared) = (target.clone(), shared.clone());
        std::thread::Builder::new()
            .name("weir-access-log".into())
            .spawn(move || write_lines(&shared, sink, &target))?
    };
    let thread = writer.thread().clone();
    {
        let mut writers = writers();
        writers.retain(|(_, writer)| !writer.is_finished());
        writers.push((shared.clone(), writer));
    }
    Ok((shared, thread))
}

fn open_sink(target: &AccessLogTarget) -> io::Result<Box<dyn Write + Send>> {
    Ok(match target {
        AccessLogTarget::Off | AccessLogTarget::Stdout => Box::new(io::stdout()),
        AccessLogTarget::File(path) => Box::new(open_file(path)?),
    })
}

fn open_file(path: &PathBuf) -> io::Result<std::fs::File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|err| io::Error::new(err.kind(), format!("access log {}: {err}", path.display())))
}

/// The writer thread: every interval, swaps each buffer for an empty one and
/// writes what it took; ends, having written everything, once the log is closed.
fn write_lines(shared: &Shared, mut sink: Box<dyn Write + Send>, target: &AccessLogTarget) {
    // Swapped with the shards' buffers in turn, so their capacity is reused.
    let mut taken = Vec::new();
    let mut reported = 0;
    loop {
        let closing = shared.closed.load(Ordering::Acquire);
        let reopen = shared
            .reopen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(before) = reopen {
            if let Err(err) = sink.write_all(&before) {
                error!(error = %err, "access log write failed");
            }
            let _ = sink.flush();
            if let AccessLogTarget::File(path) = target {
                match open_file(path) {
                    Ok(file) => sink = Box::new(file),
                    Err(err) => {
                        error!(error = %err, "access log reopen failed; writing on to the old file")
                    }
                }
            }
        }
        for shard in &shared.shards {
            std::mem::swap(&mut shard.lock().lines, &mut taken);
            if !taken.is_empty() {
                if let Err(err) = sink.write_all(&taken) {
                    error!(error = %err, "access log write failed");
                }
                taken.clear();
                taken.shrink_to(KEPT_CAPACITY);
            }
        }
        let _ = sink.flush();
        let now_dropped = shared.dropped.load(Ordering::Relaxed);
        if now_dropped != reported {
            warn!(
                dropped = now_dropped - reported,
                "access log writer fell behind; lines dropped"
            );
            reported = now_dropped;
        }
        if closing {
            return;
        }
        std::thread::park_timeout(WRITE_INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access_log::AccessLog;
    use crate::access_log::tests::entry;
    use crate::config::{AccessLogFormat, LoggingConfig};

    /// Closes `log` and waits until its writer has written everything.
    fn written(log: Arc<AccessLog>) {
        let shared = log.shared.clone();
        drop(log);
        let mut writers = writers();
        // Not there when another test's `open` found it finished and let it go.
        let at = writers
            .iter()
            .position(|(other, _)| Arc::ptr_eq(other, &shared));
        let writer = at.map(|at| writers.remove(at).1);
        drop(writers);
        if let Some(writer) = writer {
            writer.join().unwrap();
        }
    }

    fn file_log(path: &std::path::Path) -> Arc<AccessLog> {
        let logging = LoggingConfig {
            access_log: AccessLogTarget::File(path.to_owned()),
            access_log_format: AccessLogFormat::Json,
            ..LoggingConfig::default()
        };
        AccessLog::open(&logging, None).unwrap().unwrap()
    }

    #[test]
    fn lines_from_several_threads_are_all_written_whole_by_the_time_the_log_is_dropped() {
        let dir = std::env::temp_dir().join(format!("weir-access-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("threads.log");
        let _ = std::fs::remove_file(&path);
        let log = file_log(&path);
        std::thread::scope(|scope| {
            for thread in 0..4u16 {
                let log = &log;
                scope.spawn(move || {
                    for n in 0..500u16 {
                        let mut entry = entry();
                        entry.status = 200 + thread;
                        entry.attempts = u32::from(n);
                        log.record(&entry);
                    }
                });
            }
        });
        written(log);
        let text = std::fs::read_to_string(&path).unwrap();
        let mut seen = std::collections::HashSet::new();
        for line in text.lines() {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            seen.insert((value["status"].as_u64(), value["attempts"].as_u64()));
        }
        assert_eq!(seen.len(), 4 * 500);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_full_buffer_drops_lines_and_counts_them() {
        let dir = std::env::temp_dir().join(format!("weir-access-log-full-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = file_log(&dir.join("full.log"));
        // The writer takes a buffer at most every WRITE_INTERVAL; filled up to the
        // limit in between, the buffer refuses the next line.
        let shard = &log.shared.shards[shard_index()];
        shard.lock().lines.resize(PENDING_MAX, b'\n');
        log.record(&entry());
        let refused = log.shared.dropped.load(Ordering::Relaxed);
        let taken = shard.lock().lines.len() < PENDING_MAX;
        // Unless the writer took the buffer in that very moment, the line was refused.
        assert!(refused == 1 || taken, "refused {refused}");
        written(log);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
