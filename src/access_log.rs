//! The access log: one line per request, written by a thread of its own so that a
//! slow disk never slows a request. Requests hand their line to a bounded queue;
//! when the writer falls that far behind, lines are dropped and counted rather
//! than making requests wait. The file is reopened on reload (log rotation).

use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderValue, Method};
use tracing::{error, warn};

use crate::config::{AccessLogFormat, AccessLogTarget, LoggingConfig};

/// Lines that may wait for the writer; beyond, new lines are dropped.
const QUEUE_LINES: usize = 16 * 1024;

/// A running access log, shared by the snapshots of one target and format.
#[derive(Debug)]
pub struct AccessLog {
    target: AccessLogTarget,
    format: AccessLogFormat,
    queue: SyncSender<Message>,
    dropped: Arc<AtomicU64>,
}

enum Message {
    Line(Vec<u8>),
    Reopen,
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
            let _ = previous.queue.try_send(Message::Reopen);
            return Ok(Some(previous.clone()));
        }
        let sink = open_sink(&logging.access_log)?;
        let (queue, lines) = sync_channel(QUEUE_LINES);
        let dropped = Arc::new(AtomicU64::new(0));
        let target = logging.access_log.clone();
        {
            let (target, dropped) = (target.clone(), dropped.clone());
            std::thread::Builder::new()
                .name("weir-access-log".into())
                .spawn(move || write_lines(lines, sink, &target, &dropped))?;
        }
        Ok(Some(Arc::new(AccessLog {
            target,
            format: logging.access_log_format,
            queue,
            dropped,
        })))
    }

    /// Queues the line of `entry`; never blocks.
    pub fn record(&self, entry: &Entry) {
        let line = match self.format {
            AccessLogFormat::Json => json_line(entry),
            AccessLogFormat::Combined => combined_line(entry),
        };
        match self.queue.try_send(Message::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
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

/// How long the writer sleeps between batches. It polls rather than blocking on
/// the queue: a blocked reader would have to be woken, a syscall and a context
/// switch per request, which costs more than everything else the log does.
const WRITE_INTERVAL: Duration = Duration::from_millis(20);

/// The writer thread: every interval, writes what has queued up and flushes; ends
/// when every sender is gone.
fn write_lines(
    lines: Receiver<Message>,
    sink: Box<dyn Write + Send>,
    target: &AccessLogTarget,
    dropped: &AtomicU64,
) {
    let mut out = BufWriter::with_capacity(64 * 1024, sink);
    let mut reported = 0;
    loop {
        let open = loop {
            match lines.try_recv() {
                Ok(Message::Line(line)) => {
                    if let Err(err) = out.write_all(&line) {
                        error!(error = %err, "access log write failed");
                    }
                }
                Ok(Message::Reopen) => {
                    let _ = out.flush();
                    if let AccessLogTarget::File(path) = target {
                        match open_file(path) {
                            Ok(file) => out = BufWriter::with_capacity(64 * 1024, Box::new(file)),
                            Err(err) => {
                                error!(error = %err, "access log reopen failed; writing on to the old file")
                            }
                        }
                    }
                }
                Err(TryRecvError::Empty) => break true,
                Err(TryRecvError::Disconnected) => break false,
            }
        };
        let _ = out.flush();
        let now_dropped = dropped.load(Ordering::Relaxed);
        if now_dropped != reported {
            warn!(
                dropped = now_dropped - reported,
                "access log writer fell behind; lines dropped"
            );
            reported = now_dropped;
        }
        if !open {
            return;
        }
        std::thread::sleep(WRITE_INTERVAL);
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
/// By hand: `core::fmt` costs several times more per field, on every request.
fn push_decimal(line: &mut Vec<u8>, mut n: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    line.extend_from_slice(&digits[at.min(digits.len() - width.min(20))..]);
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

/// `2026-11-25T12:00:00.123Z`.
fn push_rfc3339(line: &mut Vec<u8>, time: SystemTime) {
    let (y, mo, d, h, mi, s, ms) = civil(time);
    push_decimal(line, y.max(0) as u64, 4);
    line.push(b'-');
    push_decimal(line, u64::from(mo), 2);
    line.push(b'-');
    push_decimal(line, u64::from(d), 2);
    line.push(b'T');
    push_decimal(line, h, 2);
    line.push(b':');
    push_decimal(line, mi, 2);
    line.push(b':');
    push_decimal(line, s, 2);
    line.push(b'.');
    push_decimal(line, u64::from(ms), 3);
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

/// Written by hand into one buffer: a `serde_json::Value` would allocate per
/// field, and `core::fmt` made up most of a line's cost.
fn json_line(entry: &Entry) -> Vec<u8> {
    let mut line = Vec::with_capacity(256);
    line.extend_from_slice(b"{\"time\":\"");
    push_rfc3339(&mut line, entry.time);
    line.extend_from_slice(b"\",\"client\":\"");
    push_ip(&mut line, entry.client);
    line.extend_from_slice(b"\",\"method\":");
    push_json_str(&mut line, entry.method.as_str());
    line.extend_from_slice(b",\"path\":");
    push_json_str(&mut line, &entry.target);
    line.extend_from_slice(b",\"protocol\":\"");
    line.extend_from_slice(version_name(entry.version).as_bytes());
    line.extend_from_slice(b"\",\"status\":");
    push_decimal(&mut line, u64::from(entry.status), 1);
    line.extend_from_slice(b",\"bytes\":");
    push_decimal(&mut line, entry.bytes, 1);
    line.extend_from_slice(b",\"upstream\":");
    push_json_opt(&mut line, entry.upstream.as_deref());
    line.extend_from_slice(b",\"backend\":");
    match entry.backend {
        Some(backend) => {
            line.push(b'"');
            push_socket_addr(&mut line, backend);
            line.push(b'"');
        }
        None => line.extend_from_slice(b"null"),
    }
    line.extend_from_slice(b",\"duration\":");
    push_seconds(&mut line, entry.duration);
    line.extend_from_slice(b",\"attempts\":");
    push_decimal(&mut line, u64::from(entry.attempts), 1);
    line.extend_from_slice(b"}\n");
    line
}

/// nginx's `combined`, then upstream, backend, duration (s) and attempts.
fn combined_line(entry: &Entry) -> Vec<u8> {
    let header = |value: &Option<HeaderValue>| {
        value
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .map_or_else(|| "-".to_owned(), |v| v.replace('"', "\\\""))
    };
    format!(
        "{} - - [{}] \"{} {} {:?}\" {} {} \"{}\" \"{}\" {} {} {:.6} {}\n",
        entry.client,
        clf_time(entry.time),
        entry.method,
        entry.target.replace('"', "%22"),
        entry.version,
        entry.status,
        entry.bytes,
        header(&entry.referer),
        header(&entry.user_agent),
        entry.upstream.as_deref().unwrap_or("-"),
        entry
            .backend
            .map_or_else(|| "-".to_owned(), |b| b.to_string()),
        entry.duration.as_secs_f64(),
        entry.attempts,
    )
    .into_bytes()
}

/// UTC date and time of `time`: (year, month, day, hour, minute, second, millis).
fn civil(time: SystemTime) -> (i64, u32, u32, u64, u64, u64, u32) {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
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
    (
        year,
        month,
        day,
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since.subsec_millis(),
    )
}

/// `25/Nov/2026:12:00:00 +0000`.
fn clf_time(time: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, mo, d, h, mi, s, _) = civil(time);
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
        push_rfc3339(&mut line, time);
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
        let line = String::from_utf8(json_line(&entry())).unwrap();
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
        let line = String::from_utf8(json_line(&tricky)).unwrap();
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["path"], "/\"q\"\\\u{1}é");
        assert!(value["upstream"].is_null());
    }

    #[test]
    fn a_combined_line_is_nginx_combined_plus_weirs_fields() {
        let line = String::from_utf8(combined_line(&entry())).unwrap();
        assert_eq!(
            line,
            "192.0.2.7 - - [25/Nov/2026:12:34:56 +0000] \"GET /a?b=%22c%22 HTTP/1.1\" 200 13 \"-\" \"curl/8.0\" app 127.0.0.1:9001 0.001500 1\n"
        );
    }
}
