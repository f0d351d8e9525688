//! Header rewriting between client and backend, on heads built from the input and
//! in the order the proxy applies it: upgrade and trailers are read, the request
//! is rewritten, then `Upgrade` and `TE: trailers` are put back where the exchange
//! needs them.
//!
//! The input is text, so that seeds can be written by hand: a line of connection
//! facts (the client's IP, and the words `tls`, `trusted` for a peer among the
//! trusted proxies, `h2` for an HTTP/2 backend), a request head, a blank line, a
//! response head:
//!
//! ```text
//! 192.0.2.7 tls h2
//! GET http://shop.example/cart HTTP/1.1
//! Connection: keep-alive, x-secret
//! X-Secret: 1
//!
//! HTTP/1.1 200 OK
//! Keep-Alive: timeout=5
//! ```
//!
//! Oracles, beyond "no panic":
//! - no hop-by-hop header is left (RFC 9110 §7.6.1), nor any header the message's
//!   `Connection` names, except those the rewrite sets itself and the `Upgrade` /
//!   `Connection: upgrade` of a tunnel and the `TE: trailers` of an HTTP/2 backend;
//! - `X-Forwarded-For` is one line that ends with the client's address;
//! - the request goes out as HTTP/1.1 with an origin-form target.

#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Uri, Version};
use libfuzzer_sys::fuzz_target;
use weir::proxy::forward::{self, ClientFacts};

struct Facts {
    client_ip: IpAddr,
    tls: bool,
    /// The peer is one of the listener's trusted proxies.
    trusted: bool,
    backend_http2: bool,
}

impl Facts {
    fn parse(line: &[u8]) -> Facts {
        let mut facts = Facts {
            client_ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            tls: false,
            trusted: false,
            backend_http2: false,
        };
        for word in line.split(|&byte| byte == b' ') {
            match word {
                b"tls" => facts.tls = true,
                b"trusted" => facts.trusted = true,
                b"h2" => facts.backend_http2 = true,
                _ => {
                    if let Some(ip) = std::str::from_utf8(word).ok().and_then(|w| w.parse().ok()) {
                        facts.client_ip = ip;
                    }
                }
            }
        }
        facts
    }
}

/// Lines without their `\n` and an optional `\r` before it.
fn lines(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    text.split(|&byte| byte == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
}

/// Header lines up to a blank one (consumed) or the end. hyper hands the proxy
/// only valid names and values: other lines are skipped.
fn headers<'a>(lines: &mut impl Iterator<Item = &'a [u8]>) -> HeaderMap {
    let mut map = HeaderMap::new();
    for line in lines.by_ref() {
        if line.is_empty() {
            break;
        }
        let Some(colon) = line.iter().position(|&byte| byte == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            map.append(name, value);
        }
    }
    map
}

/// The request line and headers, as the proxy holds them once hyper parsed them.
fn request_head<'a>(lines: &mut impl Iterator<Item = &'a [u8]>) -> Parts {
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(|&byte| byte == b' ');
    let method = Method::from_bytes(parts.next().unwrap_or_default()).unwrap_or(Method::GET);
    let uri =
        Uri::try_from(parts.next().unwrap_or_default()).unwrap_or_else(|_| Uri::from_static("/"));
    let version = match parts.next().unwrap_or_default() {
        b"HTTP/0.9" => Version::HTTP_09,
        b"HTTP/1.0" => Version::HTTP_10,
        b"HTTP/2" | b"HTTP/2.0" => Version::HTTP_2,
        _ => Version::HTTP_11,
    };
    let (mut parts, ()) = Request::new(()).into_parts();
    (parts.method, parts.uri, parts.version) = (method, uri, version);
    parts.headers = headers(lines);
    parts
}

/// Every header name the `Connection` lines list, read as RFC 9110 §7.6.1 does:
/// comma-separated tokens with optional whitespace, whatever else the value holds.
fn connection_options(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&byte| byte == b','))
        .filter_map(|token| HeaderName::from_bytes(token.trim_ascii()).ok())
        .collect()
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "transfer-encoding",
        "upgrade",
    ]
    .contains(&name.as_str())
}

/// Hop-by-hop headers a message may still carry after the rewrite, with the one
/// value each may have.
type Kept = Vec<(HeaderName, HeaderValue)>;

fn check_no_hop_by_hop(which: &str, headers: &HeaderMap, named: &[HeaderName], kept: &Kept) {
    for name in headers.keys() {
        if let Some((_, value)) = kept.iter().find(|(kept_name, _)| kept_name == name) {
            let values: Vec<_> = headers.get_all(name).iter().collect();
            assert_eq!(values, [value], "{which}: kept `{name}`");
            continue;
        }
        assert!(!is_hop_by_hop(name), "{which}: hop-by-hop `{name}` left");
        assert!(
            !named.contains(name),
            "{which}: `{name}`, named in Connection, left"
        );
    }
}

fn check_request(facts: &Facts, request: Parts) {
    let Parts {
        mut uri,
        mut version,
        mut headers,
        ..
    } = request;
    let trusted: Arc<[ipnet::IpNet]> = Arc::new(["0.0.0.0/0".parse().expect("a network")]);
    let client = ClientFacts {
        address: HeaderValue::from_str(&facts.client_ip.to_string()).expect("an IP is a value"),
        tls: facts.tls,
        trusted_proxies: facts.trusted.then(|| trusted.clone()),
    };
    // The authority the proxy validated: the absolute URI's, else `Host`.
    let host = match uri.authority() {
        Some(authority) => HeaderValue::from_str(authority.as_str()).ok(),
        None => headers.get(header::HOST).cloned(),
    };

    if facts.trusted {
        let _ = forward::forwarded_client(weir::balance::Fields::Map(&headers), &trusted);
    }
    let named = connection_options(&headers);
    let upgrade = forward::requested_upgrade(version, &headers);
    let trailers = facts.backend_http2 && forward::accepts_trailers(&headers);
    forward::rewrite_request(&mut uri, &mut version, &mut headers, host, &client);
    let mut kept = Kept::new();
    if let Some(protocol) = &upgrade {
        forward::keep_upgrade(&mut headers, protocol.clone());
        kept.push((header::UPGRADE, protocol.clone()));
        kept.push((header::CONNECTION, HeaderValue::from_static("upgrade")));
    }
    if trailers {
        forward::keep_trailers(&mut headers);
        kept.push((header::TE, HeaderValue::from_static("trailers")));
    }

    assert_eq!(version, Version::HTTP_11);
    assert!(
        uri.scheme().is_none() && uri.authority().is_none(),
        "not origin-form: {uri}"
    );
    // The rewrite sets these itself, whatever `Connection` said of them.
    let named: Vec<HeaderName> = named
        .into_iter()
        .filter(|name| {
            ![
                header::HOST.as_str(),
                "x-forwarded-for",
                "x-forwarded-proto",
                "x-forwarded-host",
            ]
            .contains(&name.as_str())
        })
        .collect();
    check_no_hop_by_hop("request", &headers, &named, &kept);

    let forwarded_for: Vec<&HeaderValue> = headers.get_all("x-forwarded-for").iter().collect();
    let [forwarded_for] = forwarded_for[..] else {
        panic!("X-Forwarded-For lines: {forwarded_for:?}");
    };
    let address = client.address.as_bytes();
    let forwarded_for = forwarded_for.as_bytes();
    assert!(
        forwarded_for == address || forwarded_for.ends_with(&[b", ".as_slice(), address].concat()),
        "X-Forwarded-For {forwarded_for:?} does not end with {address:?}"
    );
}

fn check_response(mut headers: HeaderMap) {
    let named = connection_options(&headers);
    forward::rewrite_response(&mut headers);
    check_no_hop_by_hop("response", &headers, &named, &Kept::new());
}

fuzz_target!(|data: &[u8]| {
    let mut lines = lines(data);
    let facts = Facts::parse(lines.next().unwrap_or_default());
    let request = request_head(&mut lines);
    // The response's status line says nothing the rewrite reads.
    let _status_line = lines.next();
    let response_headers = headers(&mut lines);
    check_request(&facts, request);
    check_response(response_headers);
});
