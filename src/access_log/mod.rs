//! The access log: one line per request, written by a thread of its own so that a
//! slow disk never slows a request. A request writes its line into one of a few
//! in-memory buffers (one per worker thread, in effect), which the writer thread
//! swaps out and writes every few milliseconds: no allocation, queue or wake-up per
//! line. When the writer falls far behind, lines are dropped and counted rather
//! than making requests wait. The file is reopened on reload (log rotation).

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderValue, Method};
use tracing::{error, warn};

use crate::config::{AccessLogFormat, AccessLogTarget, LoggingConfig};

/// Buffers lines are written into. Each thread sticks to one, so with up to this
/// many workers no two threads share a buffer (and its lock).
const SHARDS: usize = 8;

/// Bytes a buffer may hold before the writer takes them; beyond, new lines are
/// dropped. 4 MiB is some 16,000 lines: seconds of a stalled disk at full load.
const PENDING_MAX: usize = 4 * 1024 * 1024;

/// How long the writer sleeps between batches. It polls rather than being woken
/// per line: a wake-up is a syscall and a context switch, more than everything
/// else a line costs.
const WRITE_INTERVAL: Duration = Duration::from_millis(20);

/// Largest buffer capacity kept between batches: a stall can grow a buffer to
/// `PENDING_MAX`, which should not stay allocated afterwards.
const KEPT_CAPACITY: usize = 256 * 1024;

/// A running access log, shared by the snapshots of one target and format.
#[derive(Debug)]
pub struct AccessLog {
    target: AccessLogTarget,
    format: AccessLogFormat,
    shared: Arc<Shared>,
    /// The writer thread, to wake when the log is closed.
    writer: std::thread::Thread,
}

/// Every writer thread not known to have ended, for [`finish`] to wait on.
static WRITERS: Mutex<Vec<(Arc<Shared>, JoinHandle<()>)>> = Mutex::new(Vec::new());

fn writers() -> MutexGuard<'static, Vec<(Arc<Shared>, JoinHandle<()>)>> {
    WRITERS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Has every access log write out what it has buffered, and waits for that for
/// at most `within`. For the end of the process, once no request is served.
pub fn finish(within: Duration) {
    let deadline = std::time::Instant::now() + within;
    let writers = std::mem::take(&mut *writers());
    for (shared, writer) in &writers {
        shared.closed.store(true, Ordering::Release);
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

#[derive(Debug, Default)]
struct Shared {
    shards: [Shard; SHARDS],
    dropped: AtomicU64,
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
struct Shard(Mutex<Pending>);

#[derive(Debug, Default)]
struct Pending {
    lines: Vec<u8>,
    clock: Clock,
}

/// The date and time to the second of the last line, formatted: it changes once
/// a second, and formatting it is most of a line's arithmetic.
#[derive(Debug, Default)]
struct Clock {
    second: Option<u64>,
    rfc3339: [u8; 19],
}

impl Shard {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The buffer of the calling thread: threads are dealt out to buffers in turn.
fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|shard| *shard)
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
            previous.reopen_file();
            return Ok(Some(previous.clone()));
        }
        let sink = open_sink(&logging.access_log)?;
        let shared = Arc::new(Shared::default());
        let target = logging.access_log.clone();
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
        Ok(Some(Arc::new(AccessLog {
            target,
            format: logging.access_log_format,
            shared,
            writer: thread,
        })))
    }

    /// Has the writer reopen the file (log rotation): lines recorded until now go
    /// to the file as it was, later ones to the path's new file.
    fn reopen_file(&self) {
        let mut before = Vec::new();
        for shard in &self.shared.shards {
            before.append(&mut shard.lock().lines);
        }
        let mut reopen = self.shared.reopen.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *reopen {
            // A second reload before the writer came round: still the old file.
            Some(earlier) => earlier.append(&mut before),
            None => *reopen = Some(before),
        }
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
        self.shared.closed.store(true, Ordering::Release);
        self.writer.unpark();
    }
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

/// Appends `text` as a JSON string (quoted and escaped). Runs that need no
/// escaping, nearly all of a line, are copied whole; multi-byte UTF-8 passes
/// through as it is.
fn push_json_str(line: &mut Vec<u8>, text: &str) {
    let bytes = text.as_bytes();
    line.push(b'"');
    let mut start = 0;
    for (at, &byte) in bytes.iter().enumerate() {
        if byte != b'"' && byte != b'\\' && byte >= 0x20 {
            continue;
        }
        line.extend_from_slice(&bytes[start..at]);
        match byte {
            b'"' => line.extend_from_slice(b"\\\""),
            b'\\' => line.extend_from_slice(b"\\\\"),
            control => {
                line.extend_from_slice(b"\\u00");
                line.push(HEX[usize::from(control >> 4)]);
                line.push(HEX[usize::from(control & 0xf)]);
            }
        }
        start = at + 1;
    }
    line.extend_from_slice(&bytes[start..]);
    line.push(b'"');
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends `value` as a JSON string, or `null`.
fn push_json_opt(line: &mut Vec<u8>, value: Option<&str>) {
    match value {
        Some(text) => push_json_str(line, text),
        None => line.extend_from_slice(b"null"),
    }
}

/// Appends the decimal digits of `n`, at least `width` of them (zero-padded).
/// Not `core::fmt`: it costs several times more per field, on every request.
fn push_decimal(line: &mut Vec<u8>, n: u64, width: usize) {
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(n).as_bytes();
    line.extend(std::iter::repeat_n(
        b'0',
        width.saturating_sub(digits.len()),
    ));
    line.extend_from_slice(digits);
}

fn push_ip(line: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    line.push(b'.');
                }
                push_decimal(line, u64::from(octet), 1);
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(line, "{v6}");
        }
    }
}

fn push_socket_addr(line: &mut Vec<u8>, address: SocketAddr) {
    match address {
        SocketAddr::V4(v4) => {
            push_ip(line, IpAddr::V4(*v4.ip()));
            line.push(b':');
            push_decimal(line, u64::from(v4.port()), 1);
        }
        SocketAddr::V6(v6) => {
            let _ = write!(line, "{v6}");
        }
    }
}

/// `2026-11-25T12:00:00.123Z`; the part to the second comes from `clock`, and is
/// formatted anew only when the second has changed.
fn push_rfc3339(line: &mut Vec<u8>, clock: &mut Clock, time: SystemTime) {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    if clock.second != Some(since.as_secs()) {
        let (y, mo, d, h, mi, s) = civil(since.as_secs());
        let mut text = Vec::with_capacity(19);
        push_decimal(&mut text, y.max(0) as u64, 4);
        text.push(b'-');
        push_decimal(&mut text, u64::from(mo), 2);
        text.push(b'-');
        push_decimal(&mut text, u64::from(d), 2);
        text.push(b'T');
        push_decimal(&mut text, h, 2);
        text.push(b':');
        push_decimal(&mut text, mi, 2);
        text.push(b':');
        push_decimal(&mut text, s, 2);
        match text.try_into() {
            Ok(text) => {
                clock.rfc3339 = text;
                clock.second = Some(since.as_secs());
            }
            // Past the year 9999 it does not fit the cache: written as it is.
            Err(text) => {
                clock.second = None;
                line.extend_from_slice(&text);
            }
        }
    }
    if clock.second.is_some() {
        line.extend_from_slice(&clock.rfc3339);
    }
    line.push(b'.');
    push_decimal(line, u64::from(since.subsec_millis()), 3);
    line.push(b'Z');
}

/// Seconds with six decimals, rounded to the microsecond (as `{:.6}` prints).
fn push_seconds(line: &mut Vec<u8>, duration: Duration) {
    let micros = (duration.as_nanos() + 500) / 1000;
    push_decimal(line, (micros / 1_000_000) as u64, 1);
    line.push(b'.');
    push_decimal(line, (micros % 1_000_000) as u64, 6);
}

fn version_name(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_11 => "HTTP/1.1",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP",
    }
}

/// Written by hand onto `line`: a `serde_json::Value` would allocate per field,
/// and `core::fmt` made up most of a line's cost.
fn json_line(line: &mut Vec<u8>, clock: &mut Clock, entry: &Entry) {
    line.extend_from_slice(b"{\"time\":\"");
    push_rfc3339(line, clock, entry.time);
    line.extend_from_slice(b"\",\"client\":\"");
    push_ip(line, entry.client);
    line.extend_from_slice(b"\",\"method\":");
    push_json_str(line, entry.method.as_str());
    line.extend_from_slice(b",\"path\":");
    push_json_str(line, &entry.target);
    line.extend_from_slice(b",\"protocol\":\"");
    line.extend_from_slice(version_name(entry.version).as_bytes());
    line.extend_from_slice(b"\",\"status\":");
    push_decimal(line, u64::from(entry.status), 1);
    line.extend_from_slice(b",\"bytes\":");
    push_decimal(line, entry.bytes, 1);
    line.extend_from_slice(b",\"upstream\":");
    push_json_opt(line, entry.upstream.as_deref());
    line.extend_from_slice(b",\"backend\":");
    match entry.backend {
        Some(backend) => {
            line.push(b'"');
            push_socket_addr(line, backend);
            line.push(b'"');
        }
        None => line.extend_from_slice(b"null"),
    }
    line.extend_from_slice(b",\"duration\":");
    push_seconds(line, entry.duration);
    line.extend_from_slice(b",\"attempts\":");
    push_decimal(line, u64::from(entry.attempts), 1);
    line.extend_from_slice(b"}\n");
}

/// nginx's `combined`, then upstream, backend, duration (s) and attempts.
fn combined_line(line: &mut Vec<u8>, entry: &Entry) {
    let _ = write!(
        line,
        "{} - - [{}] \"{} ",
        entry.client,
        clf_time(entry.time),
        entry.method
    );
    push_clf_escaped(line, entry.target.as_bytes());
    let _ = write!(
        line,
        " {:?}\" {} {} ",
        entry.version, entry.status, entry.bytes
    );
    push_clf_header(line, entry.referer.as_ref());
    line.push(b' ');
    push_clf_header(line, entry.user_agent.as_ref());
    let _ = writeln!(
        line,
        " {} {} {:.6} {}",
        entry.upstream.as_deref().unwrap_or("-"),
        entry
            .backend
            .map_or_else(|| "-".to_owned(), |b| b.to_string()),
        entry.duration.as_secs_f64(),
        entry.attempts,
    );
}

/// A header in quotes, escaped, or `"-"` when the request had none.
fn push_clf_header(line: &mut Vec<u8>, value: Option<&HeaderValue>) {
    line.push(b'"');
    match value {
        Some(value) => push_clf_escaped(line, value.as_bytes()),
        None => line.push(b'-'),
    }
    line.push(b'"');
}

/// Appends `bytes` escaped as nginx's `escape=default` does: `"`, `\`, control
/// characters and bytes past ASCII become `\xHH`, so a quoted field always ends
/// at the first unescaped `"` and a line stays one line.
fn push_clf_escaped(line: &mut Vec<u8>, bytes: &[u8]) {
    let mut start = 0;
    for (at, &byte) in bytes.iter().enumerate() {
        if byte != b'"' && byte != b'\\' && (0x20..0x7f).contains(&byte) {
            continue;
        }
        line.extend_from_slice(&bytes[start..at]);
        line.extend_from_slice(b"\\x");
        line.push(HEX_UPPER[usize::from(byte >> 4)]);
        line.push(HEX_UPPER[usize::from(byte & 0xf)]);
        start = at + 1;
    }
    line.extend_from_slice(&bytes[start..]);
}

/// nginx writes its `\xHH` escapes in capitals.
const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// UTC date and time of `secs` since the epoch: (year, month, day, hour, minute,
/// second).
fn civil(secs: u64) -> (i64, u32, u32, u64, u64, u64) {
    let days = (secs / 86_400) as i64;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    let rest = secs % 86_400;
    (year, month, day, rest / 3600, rest % 3600 / 60, rest % 60)
}

/// `25/Nov/2026:12:00:00 +0000`.
fn clf_time(time: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = time
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let (y, mo, d, h, mi, s) = civil(secs);
    format!(
        "{d:02}/{}/{y:04}:{h:02}:{mi:02}:{s:02} +0000",
        MONTHS[(mo - 1) as usize]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
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

    fn rfc3339(time: SystemTime) -> String {
        let mut line = Vec::new();
        push_rfc3339(&mut line, &mut Clock::default(), time);
        String::from_utf8(line).unwrap()
    }

    fn json(entry: &Entry) -> String {
        let mut line = Vec::new();
        json_line(&mut line, &mut Clock::default(), entry);
        String::from_utf8(line).unwrap()
    }

    #[test]
    fn dates_are_utc_civil_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(entry().time), "2026-11-25T12:34:56.789Z");
        assert_eq!(clf_time(entry().time), "25/Nov/2026:12:34:56 +0000");
        // A leap day.
        let leap = UNIX_EPOCH + Duration::from_secs(1_709_164_800);
        assert_eq!(rfc3339(leap), "2024-02-29T00:00:00.000Z");
    }

    #[test]
    fn a_json_line_has_every_field() {
        let line = json(&entry());
        assert!(line.ends_with('\n'));
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["time"], "2026-11-25T12:34:56.789Z");
        assert_eq!(value["client"], "192.0.2.7");
        assert_eq!(value["path"], "/a?b=\"c\"");
        assert_eq!(
            (value["status"].as_u64(), value["bytes"].as_u64()),
            (Some(200), Some(13))
        );
        assert_eq!(value["backend"], "127.0.0.1:9001");
        assert_eq!(value["duration"], 0.0015);
        assert_eq!(value["attempts"], 1);
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut tricky = entry();
        tricky.target = "/\"q\"\\\u{1}é".into();
        tricky.upstream = None;
        let line = json(&tricky);
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["path"], "/\"q\"\\\u{1}é");
        assert!(value["upstream"].is_null());
    }

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

    #[test]
    fn a_combined_line_is_nginx_combined_plus_weirs_fields() {
        let mut line = Vec::new();
        combined_line(&mut line, &entry());
        let line = String::from_utf8(line).unwrap();
        assert_eq!(
            line,
            "192.0.2.7 - - [25/Nov/2026:12:34:56 +0000] \"GET /a?b=\\x22c\\x22 HTTP/1.1\" 200 13 \"-\" \"curl/8.0\" app 127.0.0.1:9001 0.001500 1\n"
        );
    }

    fn combined(entry: &Entry) -> String {
        let mut line = Vec::new();
        combined_line(&mut line, entry);
        String::from_utf8(line).unwrap()
    }

    /// As nginx's `escape=default`: a quoted field can hold neither an unescaped
    /// `"` nor a `\` that would escape the closing quote.
    #[test]
    fn combined_quoted_fields_escape_quotes_backslashes_and_controls_as_nginx() {
        let mut tricky = entry();
        tricky.target = "/a\\b\"\u{1}".into();
        tricky.referer = Some(HeaderValue::from_static("http://x/\\"));
        tricky.user_agent = Some(HeaderValue::from_bytes(b"ua \"q\" \\ \tcaf\xc3\xa9").unwrap());
        let line = combined(&tricky);
        assert!(
            line.contains(
                "\"GET /a\\x5Cb\\x22\\x01 HTTP/1.1\" 200 13 \"http://x/\\x5C\" \"ua \\x22q\\x22 \\x5C \\x09caf\\xC3\\xA9\" app "
            ),
            "{line}"
        );
    }
}
