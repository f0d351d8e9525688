//! The head parser must never panic, and what it accepts must be what it says:
//! every span inside the head, the lines tiling it, no byte a parser downstream
//! could read another way, framing and `Host` as the fields say, and nothing
//! hyper's parser would refuse. `find_end` must give the same verdict fed the
//! whole buffer, at fuzz-chosen cut points, or byte by byte.
//!
//! Input layout: byte 0 holds the number of cuts (low four bits), whether the
//! buffer is a response (bit 4) and the method of the request it answers (bits
//! 5 to 7, an index into `METHODS`); then two little-endian bytes per cut give
//! its position (modulo the buffer length + 1); the rest is the buffer.

#![no_main]

use libfuzzer_sys::fuzz_target;
use weir::http1::Span;
use weir::http1::head::{
    self, Field, Framing, HeadError, Known, Method, RequestHead, ResponseHead, Version,
};

/// Past this, byte-by-byte feeding costs more than it finds.
const BYTEWISE_MAX: usize = 4096;

const METHODS: [Method; 8] = [
    Method::Get,
    Method::Head,
    Method::Post,
    Method::Put,
    Method::Delete,
    Method::Options,
    Method::Connect,
    Method::Other,
];

/// Feeds `buf` to `find_end` up to each cut, then whole, resuming where it
/// says to after each "not yet".
fn find_end_in_pieces(buf: &[u8], cuts: &[usize]) -> Result<Option<usize>, HeadError> {
    let mut from = 0;
    let mut verdict = Ok(None);
    for &end in cuts.iter().chain([&buf.len()]) {
        verdict = head::find_end(&buf[..end], from);
        match verdict {
            Ok(None) => from = head::resume_from(&buf[..end]),
            _ => break,
        }
    }
    verdict
}

fn inside(span: Span, len: usize, what: &str) {
    assert!(
        span.start <= span.end && span.end as usize <= len,
        "{what} {span:?} outside the head of {len} bytes"
    );
}

/// Which `Known` a field name must be read as.
fn known_of(name: &[u8]) -> Known {
    [
        ("host", Known::Host),
        ("content-length", Known::ContentLength),
        ("transfer-encoding", Known::TransferEncoding),
        ("connection", Known::Connection),
        ("keep-alive", Known::KeepAlive),
        ("proxy-connection", Known::ProxyConnection),
        ("te", Known::Te),
        ("upgrade", Known::Upgrade),
        ("expect", Known::Expect),
        ("x-forwarded-for", Known::XForwardedFor),
        ("x-forwarded-proto", Known::XForwardedProto),
        ("x-forwarded-host", Known::XForwardedHost),
    ]
    .into_iter()
    .find(|(known, _)| name.eq_ignore_ascii_case(known.as_bytes()))
    .map_or(Known::Other, |(_, known)| known)
}

fn is_blank(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == b' ' || b == b'\t')
}

/// The head's bytes: no NUL nor other control but CR, LF and HTAB, and CR and
/// LF only together.
fn check_bytes(head: &[u8]) {
    for (at, &b) in head.iter().enumerate() {
        assert!(
            !b.is_ascii_control() || matches!(b, b'\r' | b'\n' | b'\t'),
            "control byte {b:#04x} at {at}"
        );
        match b {
            b'\n' => assert!(at > 0 && head[at - 1] == b'\r', "bare LF at {at}"),
            b'\r' => assert_eq!(head.get(at + 1), Some(&b'\n'), "bare CR at {at}"),
            _ => {}
        }
    }
}

/// The field lines start at `at` and tile the head up to its blank line; each
/// is `name ":" OWS value OWS CRLF`. hyper's types take every name and value.
fn check_fields(buf: &[u8], len: usize, mut at: u32, fields: &[Field]) {
    for field in fields {
        inside(field.name, len, "name");
        inside(field.value, len, "value");
        inside(field.line, len, "field line");
        let (name, value) = (field.name.of(buf), field.value.of(buf));
        assert_eq!(field.line.start, at, "field lines tile the head");
        assert_eq!(field.name.start, field.line.start);
        assert!(!name.is_empty());
        assert_eq!(buf[field.name.end as usize], b':');
        assert!(field.value.start > field.name.end);
        assert!(field.value.end as usize + 2 <= field.line.end as usize);
        assert!(is_blank(
            &buf[field.name.end as usize + 1..field.value.start as usize]
        ));
        assert!(is_blank(
            &buf[field.value.end as usize..field.line.end as usize - 2]
        ));
        assert_eq!(
            &buf[field.line.end as usize - 2..field.line.end as usize],
            b"\r\n"
        );
        if let (Some(first), Some(last)) = (value.first(), value.last()) {
            assert!(
                !is_blank(&[*first]) && !is_blank(&[*last]),
                "value {value:?}"
            );
        }
        assert_eq!(field.known, known_of(name), "{name:?}");
        assert!(
            http::HeaderName::from_bytes(name).is_ok(),
            "hyper refuses the name {name:?}"
        );
        assert!(
            http::HeaderValue::from_bytes(value).is_ok(),
            "hyper refuses the value {value:?}"
        );
        at = field.line.end;
    }
    assert_eq!(
        &buf[at as usize..len],
        b"\r\n",
        "the blank line ends the head"
    );
}

/// The only framing the fields allow, `None` for a head that must be refused;
/// `no_body` for a response that has none whatever its fields say.
fn expected_framing(
    buf: &[u8],
    fields: &[Field],
    version: Version,
    no_body: bool,
    until_close: bool,
) -> Option<Framing> {
    let values = |known| {
        fields
            .iter()
            .filter(move |field| field.known == known)
            .map(|field| field.value.of(buf))
    };
    let lengths: Vec<&[u8]> = values(Known::ContentLength).collect();
    let codings: Vec<&[u8]> = values(Known::TransferEncoding).collect();
    let length = match lengths[..] {
        [] => None,
        [value] => {
            if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
                return None;
            }
            Some(std::str::from_utf8(value).ok()?.parse::<u64>().ok()?)
        }
        _ => return None,
    };
    let chunked = match codings[..] {
        [] => false,
        [value] if value.eq_ignore_ascii_case(b"chunked") && version == Version::Http11 => true,
        _ => return None,
    };
    Some(match (chunked, length) {
        (true, Some(_)) => return None,
        _ if no_body => Framing::Empty,
        (true, None) => Framing::Chunked,
        (false, Some(0)) => Framing::Empty,
        (false, Some(n)) => Framing::Length(n),
        (false, None) if until_close => Framing::UntilClose,
        (false, None) => Framing::Empty,
    })
}

fn method_of(name: &[u8]) -> Method {
    match name {
        b"GET" => Method::Get,
        b"HEAD" => Method::Head,
        b"POST" => Method::Post,
        b"PUT" => Method::Put,
        b"DELETE" => Method::Delete,
        b"OPTIONS" => Method::Options,
        b"TRACE" => Method::Trace,
        b"CONNECT" => Method::Connect,
        _ => Method::Other,
    }
}

fn check_request(buf: &[u8], head: &RequestHead, fields: &[Field]) {
    let len = head.len;
    assert!(len <= buf.len());
    for (span, what) in [
        (head.line, "request line"),
        (head.method_name, "method"),
        (head.target, "target"),
        (head.path_and_query, "path and query"),
    ] {
        inside(span, len, what);
    }
    check_bytes(&buf[..len]);

    // Empty lines, then `method SP target SP HTTP/1.x CRLF`.
    let skipped = &buf[..head.line.start as usize];
    assert!(skipped.chunks(2).all(|pair| pair == b"\r\n"), "{skipped:?}");
    assert_eq!(head.method_name.start, head.line.start);
    assert!(!head.method_name.is_empty() && !head.target.is_empty());
    assert_eq!(head.target.start, head.method_name.end + 1);
    assert_eq!(buf[head.method_name.end as usize], b' ');
    let version: &[u8] = match head.version {
        Version::Http10 => b" HTTP/1.0\r\n",
        Version::Http11 => b" HTTP/1.1\r\n",
    };
    assert_eq!(
        &buf[head.target.end as usize..head.line.end as usize],
        version
    );
    check_fields(buf, len, head.line.end, fields);

    let method_name = head.method_name.of(buf);
    assert_eq!(head.method, method_of(method_name));
    let target = head.target.of(buf);
    assert!(
        target.iter().all(|b| (0x21..=0x7e).contains(b)),
        "{target:?}"
    );
    assert!(target != b"*" || matches!(head.method, Method::Options | Method::Connect));

    // Host: once at most; once in HTTP/1.1 unless the target is absolute, and
    // then the same as the target's authority.
    let hosts: Vec<Span> = fields
        .iter()
        .filter(|field| field.known == Known::Host)
        .map(|field| field.value)
        .collect();
    assert!(hosts.len() <= 1, "{} Host fields", hosts.len());
    let host = hosts.first().copied();
    let absolute = head.method != Method::Connect && target[0] != b'/' && target != b"*";
    if absolute {
        let starts = |prefix: &[u8]| {
            target.len() >= prefix.len() && target[..prefix.len()].eq_ignore_ascii_case(prefix)
        };
        let scheme = if starts(b"http://") {
            7
        } else {
            assert!(starts(b"https://"), "{target:?}");
            8
        };
        let authority = head.authority.expect("an absolute target has an authority");
        assert_eq!(authority.start, head.target.start + scheme);
        assert_eq!(head.path_and_query.start, authority.end);
        assert_eq!(head.path_and_query.end, head.target.end);
        if let Some(host) = host {
            assert!(host.of(buf).eq_ignore_ascii_case(authority.of(buf)));
        }
    } else {
        assert_eq!(head.authority, host);
        assert_eq!(head.path_and_query, head.target);
        if head.version == Version::Http11 {
            assert!(host.is_some(), "HTTP/1.1 without Host");
        }
    }
    if let Some(authority) = head.authority {
        inside(authority, len, "authority");
        assert!(head::is_valid_authority(authority.of(buf)));
    }

    assert_eq!(
        Some(head.framing),
        expected_framing(buf, fields, head.version, false, false),
        "framing"
    );

    // What hyper's server would make of the request line.
    assert!(
        http::Method::from_bytes(method_name).is_ok(),
        "hyper refuses the method {method_name:?}"
    );
    if head.method != Method::Connect {
        let uri = http::Uri::try_from(target)
            .unwrap_or_else(|err| panic!("hyper refuses the target {target:?}: {err}"));
        if absolute {
            assert_eq!(
                uri.authority().map(|a| a.as_str().as_bytes()),
                head.authority.map(|a| a.of(buf)),
                "hyper reads another authority"
            );
        }
    }
}

fn check_response(buf: &[u8], head: &ResponseHead, fields: &[Field], method: Method) {
    let len = head.len;
    assert!(len <= buf.len());
    inside(head.line, len, "status line");
    check_bytes(&buf[..len]);

    // `HTTP/1.x SP 3DIGIT [SP reason] CRLF`, from the buffer's first byte.
    let line = head.line.of(buf);
    assert_eq!(head.line.start, 0);
    let version: &[u8] = match head.version {
        Version::Http10 => b"HTTP/1.0 ",
        Version::Http11 => b"HTTP/1.1 ",
    };
    assert!(line.starts_with(version), "{line:?}");
    assert!(line.ends_with(b"\r\n"), "{line:?}");
    assert!(line.len() >= 14, "{line:?}");
    assert_eq!(line[9..12], *format!("{:03}", head.status).as_bytes());
    assert!(line.len() == 14 || line[12] == b' ', "{line:?}");
    assert_eq!(memchr_count(line, b'\n'), 1);
    check_fields(buf, len, head.line.end, fields);

    let no_body =
        head.status < 200 || head.status == 204 || head.status == 304 || method == Method::Head;
    assert_eq!(
        Some(head.framing),
        expected_framing(buf, fields, head.version, no_body, true),
        "framing"
    );

    // What hyper's client would make of the status.
    assert!(
        http::StatusCode::from_u16(head.status).is_ok(),
        "hyper refuses the status {}",
        head.status
    );
}

fn memchr_count(bytes: &[u8], byte: u8) -> usize {
    bytes.iter().filter(|&&b| b == byte).count()
}

/// Splits `data` into what byte 0 says, the cut points and the buffer.
fn layout(data: &[u8]) -> Option<(u8, Vec<usize>, &[u8])> {
    let (&first, rest) = data.split_first()?;
    let count = usize::from(first & 0x0f);
    if rest.len() < count * 2 {
        return Some((first, Vec::new(), rest));
    }
    let (positions, buf) = rest.split_at(count * 2);
    let mut cuts: Vec<usize> = positions
        .chunks_exact(2)
        .map(|pair| usize::from(u16::from_le_bytes([pair[0], pair[1]])) % (buf.len() + 1))
        .collect();
    cuts.sort_unstable();
    Some((first, cuts, buf))
}

fuzz_target!(|data: &[u8]| {
    let Some((first, cuts, buf)) = layout(data) else {
        return;
    };
    let response = first & 0x10 != 0;
    let method = METHODS[usize::from(first >> 5)];

    let whole = head::find_end(buf, 0);
    if let Ok(Some(end)) = whole {
        assert!(end >= 4 && end <= buf.len() && buf[end - 4..end] == *b"\r\n\r\n");
    }
    assert_eq!(find_end_in_pieces(buf, &cuts), whole, "cut at {cuts:?}");
    if buf.len() <= BYTEWISE_MAX {
        let every: Vec<usize> = (1..buf.len()).collect();
        assert_eq!(find_end_in_pieces(buf, &every), whole, "byte by byte");
    }

    let mut fields = Vec::new();
    if response {
        let Ok(Some(head)) = head::parse_response(buf, method, &mut fields) else {
            return;
        };
        check_response(buf, &head, &fields, method);
        assert_eq!(
            whole,
            Ok(Some(head.len)),
            "find_end ends the head elsewhere"
        );
        // Nothing after the head changes how it reads.
        let mut again = Vec::new();
        let alone = head::parse_response(&buf[..head.len], method, &mut again);
        assert_eq!(alone, Ok(Some(head)));
        assert_eq!(again, fields);
    } else {
        let Ok(Some(head)) = head::parse_request(buf, &mut fields) else {
            return;
        };
        check_request(buf, &head, &fields);
        // The end found is the head's, or that of empty lines before it.
        match whole {
            Ok(Some(end)) => assert!(
                end == head.len || end <= head.line.start as usize,
                "find_end ends the head at {end}, parse_request at {}",
                head.len
            ),
            other => panic!("find_end gave {other:?} for a head of {} bytes", head.len),
        }
        let mut again = Vec::new();
        let alone = head::parse_request(&buf[..head.len], &mut again);
        assert_eq!(alone, Ok(Some(head)));
        assert_eq!(again, fields);
    }
});
