//! The access log's line formats: JSON and nginx's `combined` (plus weir's
//! fields), each written by hand onto a buffer, with the escaping, number and
//! time formatting they need.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderValue;

use super::Entry;

/// The date and time to the second of the last line, formatted: it changes once
/// a second, and formatting it is most of a line's arithmetic.
#[derive(Debug, Default)]
pub(super) struct Clock {
    second: Option<u64>,
    rfc3339: [u8; 19],
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
pub(super) fn json_line(line: &mut Vec<u8>, clock: &mut Clock, entry: &Entry) {
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
pub(super) fn combined_line(line: &mut Vec<u8>, entry: &Entry) {
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
    use crate::access_log::tests::entry;

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
