//! The access log: one line per request, written by a thread of its own so that a
//! slow disk never slows a request. A request writes its line into one of a few
//! in-memory buffers (one per worker thread, in effect), which the writer thread
//! swaps out and writes every few milliseconds: no allocation, queue or wake-up per
//! line. When the writer falls far behind, lines are dropped and counted rather
//! than making requests wait. The file is reopened on reload (log rotation).
//!
//! Here is what the rest of weir uses: [`AccessLog`], [`Entry`] and [`finish`].
//! `writer` holds the buffers and the writer thread, `format` the line formats.

mod format;
mod writer;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use http::{HeaderValue, Method};

use crate::config::{AccessLogFormat, AccessLogTarget, LoggingConfig};

use format::{combined_line, json_line};
use writer::{PENDING_MAX, Pending, Shared, shard_index};

/// A running access log, shared by the snapshots of one target and format.
#[derive(Debug)]
pub struct AccessLog {
    target: AccessLogTarget,
    format: AccessLogFormat,
    shared: Arc<Shared>,
    /// The writer thread, to wake when the log is closed.
    writer: std::thread::Thread,
}

/// Has every access log write out what it has buffered, and waits for that for
/// at most `within`. For the end of the process, once no request is served.
pub fn finish(within: Duration) {
    writer::finish(within);
}

/// What one line says about one request.
#[derive(Debug)]
pub struct Entry {
    pub time: SystemTime,
    pub client: IpAddr,
    pub method: Method,
    /// Path and query, as requested.
    pub target: String,
    pub version: http::Version,
    pub status: u16,
    pub bytes: u64,
    pub upstream: Option<String>,
    pub backend: Option<SocketAddr>,
    pub duration: Duration,
    pub attempts: u32,
    pub referer: Option<HeaderValue>,
    pub user_agent: Option<HeaderValue>,
}

impl AccessLog {
    /// The access log `logging` asks for: `None` when off. Keeps `previous`
    /// (reopening its file) when the target and format are the same.
    pub fn open(
        logging: &LoggingConfig,
        previous: Option<&Arc<AccessLog>>,
    ) -> io::Result<Option<Arc<AccessLog>>> {
        if logging.access_log == AccessLogTarget::Off {
            return Ok(None);
        }
        if let Some(previous) = previous
            && previous.target == logging.access_log
            && previous.format == logging.access_log_format
        {
            previous.shared.reopen_file();
            return Ok(Some(previous.clone()));
        }
        let (shared, writer) = writer::start(&logging.access_log)?;
        Ok(Some(Arc::new(AccessLog {
            target: logging.access_log.clone(),
            format: logging.access_log_format,
            shared,
            writer,
        })))
    }

    /// Adds the line of `entry` to the calling thread's buffer; never blocks on
    /// the writer.
    pub fn record(&self, entry: &Entry) {
        let mut pending = self.shared.shards[shard_index()].lock();
        if pending.lines.len() >= PENDING_MAX {
            drop(pending);
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let Pending { lines, clock } = &mut *pending;
        match self.format {
            AccessLogFormat::Json => json_line(lines, clock, entry),
            AccessLogFormat::Combined => combined_line(lines, entry),
        }
    }
}

impl Drop for AccessLog {
    /// Tells the writer to write out what is buffered and end. Does not wait: this
    /// runs on a worker thread, which a stalled disk must not hold up.
    fn drop(&mut self) {
        self.shared.close();
        self.writer.unpark();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    /// A request with every field set, for the tests of the formats and the writer.
    pub(super) fn entry() -> Entry {
        Entry {
            // 2026-11-25T12:34:56.789Z
            time: UNIX_EPOCH + Duration::from_millis(1_795_610_096_789),
            client: "192.0.2.7".parse().unwrap(),
            method: Method::GET,
            target: "/a?b=\"c\"".into(),
            version: http::Version::HTTP_11,
            status: 200,
            bytes: 13,
            upstream: Some("app".into()),
            backend: Some("127.0.0.1:9001".parse().unwrap()),
            duration: Duration::from_micros(1500),
            attempts: 1,
            referer: None,
            user_agent: Some(HeaderValue::from_static("curl/8.0")),
        }
    }
}
