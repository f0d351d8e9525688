//! A client's request head rewritten for the backend, as edits over the
//! received bytes (SPEC "Headers"): origin-form target, HTTP/1.1, hop-by-hop
//! fields removed (and those `Connection` names), `X-Forwarded-For` appended
//! to, `X-Forwarded-Proto` and `X-Forwarded-Host` set unless a trusted proxy
//! set them; every other line byte for byte as the client sent it.

use super::Span;
use super::edits::HeadEdits;
use super::head::{Field, Known, RequestHead, Version};

/// What the rewrite needs to know beyond the head.
#[derive(Debug, Clone, Copy)]
pub struct Forwarding<'a> {
    /// The client's address, as an `X-Forwarded-For` element.
    pub client: &'a [u8],
    /// The client came over TLS: `X-Forwarded-Proto: https`.
    pub tls: bool,
    /// The peer is one of the listener's trusted proxies: its
    /// `X-Forwarded-Proto` and `X-Forwarded-Host` stand.
    pub trusted: bool,
    /// The target to send instead of the received one (its path normalised),
    /// in origin-form.
    pub target: Option<&'a [u8]>,
    /// The `Host` to send when the request names none (HTTP/1.0): the backend.
    pub backend_host: Option<&'a [u8]>,
    /// The request is an upgrade the proxy tunnels: `Upgrade` is kept and
    /// `Connection: upgrade` sent.
    pub upgrade: bool,
}

/// Fills `edits` with the backend's request head for `head` (parsed from
/// `buf`, its fields in `fields`).
pub fn request_edits(
    buf: &[u8],
    head: &RequestHead,
    fields: &[Field],
    forwarding: &Forwarding<'_>,
    edits: &mut HeadEdits,
) {
    edits.clear();
    request_line(buf, head, forwarding, edits);

    let absolute = head.path_and_query != head.target;
    // `Connection` may name any field as hop-by-hop; rare, so looked at only
    // when it does.
    let named = head.connection.names_fields || head.connection.close;
    let mut forwarded_for = 0;
    let mut proto_kept = false;
    let mut host_kept = false;
    for field in fields {
        let keep = match field.known {
            Known::Upgrade => forwarding.upgrade,
            // Validated to be exactly `chunked`, which is how the body is
            // relayed: kept as it came.
            Known::TransferEncoding => true,
            known if known.is_hop_by_hop() => false,
            Known::XForwardedFor => {
                forwarded_for += 1;
                false
            }
            Known::XForwardedProto => {
                proto_kept |= forwarding.trusted;
                forwarding.trusted
            }
            Known::XForwardedHost => {
                host_kept |= forwarding.trusted;
                forwarding.trusted
            }
            // An absolute target's authority is sent as `Host` below.
            Known::Host => !absolute,
            Known::Other if named => !named_by_connection(buf, fields, field.name),
            _ => true,
        };
        if keep {
            edits.keep(field.line);
        }
    }

    if absolute && let Some(authority) = head.authority {
        add_field(edits, b"Host: ", authority.of(buf));
    } else if head.authority.is_none()
        && let Some(backend) = forwarding.backend_host
    {
        add_field(edits, b"Host: ", backend);
    }
    // Earlier hops folded into one line, the client last.
    let start = edits.added_mut().len();
    let out = edits.added_mut();
    out.extend_from_slice(b"X-Forwarded-For: ");
    if forwarded_for > 0 {
        for field in fields.iter().filter(|f| f.known == Known::XForwardedFor) {
            out.extend_from_slice(field.value.of(buf));
            out.extend_from_slice(b", ");
        }
    }
    out.extend_from_slice(forwarding.client);
    out.extend_from_slice(b"\r\n");
    edits.added_since(start);
    if !proto_kept {
        edits.add(if forwarding.tls {
            b"X-Forwarded-Proto: https\r\n"
        } else {
            b"X-Forwarded-Proto: http\r\n"
        });
    }
    if !host_kept && let Some(authority) = head.authority {
        add_field(edits, b"X-Forwarded-Host: ", authority.of(buf));
    }
    if forwarding.upgrade {
        edits.add(b"Connection: upgrade\r\n");
    }
    edits.add(b"\r\n");
}

/// The request line as received when it already reads `METHOD /origin
/// HTTP/1.1`; else the method kept and the rest written.
fn request_line(
    buf: &[u8],
    head: &RequestHead,
    forwarding: &Forwarding<'_>,
    edits: &mut HeadEdits,
) {
    let origin_form = head.path_and_query == head.target;
    if forwarding.target.is_none() && origin_form && head.version == Version::Http11 {
        edits.keep(head.line);
        return;
    }
    // The method and the space after it.
    edits.keep(Span::new(
        head.line.start as usize,
        head.target.start as usize,
    ));
    match forwarding.target {
        Some(target) => edits.add(target),
        None => {
            let path = head.path_and_query.of(buf);
            // `http://a?x` asks for `/?x` (RFC 9112 §3.2.1).
            if !path.starts_with(b"/") && path != b"*" {
                edits.add(b"/");
            }
            edits.add(path);
        }
    }
    edits.add(b" HTTP/1.1\r\n");
}

fn add_field(edits: &mut HeadEdits, name: &[u8], value: &[u8]) {
    let start = edits.added_mut().len();
    let out = edits.added_mut();
    out.extend_from_slice(name);
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
    edits.added_since(start);
}

/// Whether a `Connection` field names `name` (RFC 9110 §7.6.1).
fn named_by_connection(buf: &[u8], fields: &[Field], name: Span) -> bool {
    let name = name.of(buf);
    fields
        .iter()
        .filter(|field| field.known == Known::Connection)
        .flat_map(|field| field.value.of(buf).split(|&b| b == b','))
        .any(|token| token.trim_ascii().eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::head::parse_request;

    fn forwarding() -> Forwarding<'static> {
        Forwarding {
            client: b"192.0.2.7",
            tls: false,
            trusted: false,
            target: None,
            backend_host: None,
            upgrade: false,
        }
    }

    fn rewritten(raw: &str, forwarding: Forwarding<'_>) -> (String, usize) {
        let buf = raw.as_bytes();
        let mut fields = Vec::new();
        let head = parse_request(buf, &mut fields).unwrap().unwrap();
        let mut edits = HeadEdits::default();
        request_edits(buf, &head, &fields, &forwarding, &mut edits);
        let mut out = Vec::new();
        edits.copy_to(buf, &mut out);
        (String::from_utf8(out).unwrap(), edits.pieces())
    }

    #[test]
    fn a_plain_request_is_kept_byte_for_byte_in_two_pieces() {
        let (out, pieces) = rewritten(
            "GET /a?b HTTP/1.1\r\nhOsT: Example.com\r\nAccept: */*\r\n\r\n",
            forwarding(),
        );
        assert_eq!(
            out,
            "GET /a?b HTTP/1.1\r\nhOsT: Example.com\r\nAccept: */*\r\n\
             X-Forwarded-For: 192.0.2.7\r\nX-Forwarded-Proto: http\r\n\
             X-Forwarded-Host: Example.com\r\n\r\n"
        );
        assert_eq!(pieces, 2);
    }

    #[test]
    fn hop_by_hop_fields_go_and_those_connection_names() {
        let (out, _) = rewritten(
            "POST /x HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Secret\r\n\
             Keep-Alive: 5\r\nX-Secret: 1\r\nTE: trailers\r\nProxy-Connection: x\r\n\
             Upgrade: h2c\r\nTransfer-Encoding: chunked\r\nX-Other: 2\r\n\r\n",
            forwarding(),
        );
        assert_eq!(
            out,
            "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nX-Other: 2\r\n\
             X-Forwarded-For: 192.0.2.7\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: a\r\n\r\n"
        );
    }

    #[test]
    fn forwarded_fields_are_replaced_unless_a_trusted_proxy_set_them() {
        let raw = "GET / HTTP/1.1\r\nHost: inner\r\nX-Forwarded-For: 6.6.6.6\r\n\
                   X-Forwarded-Proto: https\r\nx-forwarded-for: 10.0.0.1 \r\n\
                   X-Forwarded-Host: public.example\r\n\r\n";
        let (out, _) = rewritten(raw, forwarding());
        assert_eq!(
            out,
            "GET / HTTP/1.1\r\nHost: inner\r\n\
             X-Forwarded-For: 6.6.6.6, 10.0.0.1, 192.0.2.7\r\n\
             X-Forwarded-Proto: http\r\nX-Forwarded-Host: inner\r\n\r\n"
        );
        let trusted = Forwarding {
            trusted: true,
            tls: true,
            ..forwarding()
        };
        let (out, _) = rewritten(raw, trusted);
        assert_eq!(
            out,
            "GET / HTTP/1.1\r\nHost: inner\r\nX-Forwarded-Proto: https\r\n\
             X-Forwarded-Host: public.example\r\n\
             X-Forwarded-For: 6.6.6.6, 10.0.0.1, 192.0.2.7\r\n\r\n"
        );
        let (out, _) = rewritten("GET / HTTP/1.1\r\nHost: a\r\n\r\n", trusted);
        assert!(out.contains("X-Forwarded-Proto: https\r\n"), "{out}");
    }

    #[test]
    fn absolute_targets_become_origin_form_with_their_host() {
        let (out, _) = rewritten(
            "GET http://a.example:8080?q HTTP/1.1\r\nHost: a.example:8080\r\nX: y\r\n\r\n",
            forwarding(),
        );
        assert_eq!(
            out,
            "GET /?q HTTP/1.1\r\nX: y\r\nHost: a.example:8080\r\n\
             X-Forwarded-For: 192.0.2.7\r\nX-Forwarded-Proto: http\r\n\
             X-Forwarded-Host: a.example:8080\r\n\r\n"
        );
    }

    #[test]
    fn http10_goes_on_as_http11_naming_the_backend_when_it_named_no_host() {
        let with_backend = Forwarding {
            backend_host: Some(b"127.0.0.1:9000"),
            ..forwarding()
        };
        let (out, _) = rewritten(
            "GET /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            with_backend,
        );
        assert_eq!(
            out,
            "GET /x HTTP/1.1\r\nHost: 127.0.0.1:9000\r\n\
             X-Forwarded-For: 192.0.2.7\r\nX-Forwarded-Proto: http\r\n\r\n"
        );
        let (out, _) = rewritten("GET /x HTTP/1.0\r\nHost: a\r\n\r\n", with_backend);
        assert!(out.starts_with("GET /x HTTP/1.1\r\nHost: a\r\n"), "{out}");
        assert!(!out.contains("9000"), "{out}");
    }

    #[test]
    fn a_normalised_target_replaces_the_received_one() {
        let normal = Forwarding {
            target: Some(b"/admin?x"),
            ..forwarding()
        };
        let (out, _) = rewritten("GET /api/../admin?x HTTP/1.1\r\nHost: a\r\n\r\n", normal);
        assert!(
            out.starts_with("GET /admin?x HTTP/1.1\r\nHost: a\r\n"),
            "{out}"
        );
    }

    #[test]
    fn an_upgrade_keeps_its_fields() {
        let upgrade = Forwarding {
            upgrade: true,
            ..forwarding()
        };
        let (out, _) = rewritten(
            "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Key: k\r\n\r\n",
            upgrade,
        );
        assert_eq!(
            out,
            "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n\
             X-Forwarded-For: 192.0.2.7\r\nX-Forwarded-Proto: http\r\n\
             X-Forwarded-Host: a\r\nConnection: upgrade\r\n\r\n"
        );
    }
}
