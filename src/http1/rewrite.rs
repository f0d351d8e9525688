//! Heads rewritten for the next hop, as edits over the received bytes (SPEC
//! "Headers"). A client's request for the backend: origin-form target,
//! HTTP/1.1, hop-by-hop fields removed (and those `Connection` names),
//! `X-Forwarded-For` appended to, `X-Forwarded-Proto` and `X-Forwarded-Host`
//! set unless a trusted proxy set them. A backend's response for the client:
//! HTTP/1.1, hop-by-hop fields removed, the framing the client can read, `Date`
//! when the backend sent none, weir's own fields. Every other line byte for
//! byte as it came.

use super::Span;
use super::date::with_date_line;
use super::edits::HeadOut;
use super::head::{Field, Framing, Known, RequestHead, ResponseHead, Version};

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

/// Writes to `edits` the backend's request head for `head` (parsed from
/// `buf`, its fields in `fields`).
pub fn request_edits(
    buf: &[u8],
    head: &RequestHead,
    fields: &[Field],
    forwarding: &Forwarding<'_>,
    edits: &mut impl HeadOut,
) {
    request_line(buf, head, forwarding, edits);

    let absolute = head.path_and_query != head.target;
    // `Connection` may name any field as hop-by-hop; rare, so looked at only
    // when it does.
    let named = head.connection.names_fields || head.connection.close;
    let mut forwarded_for = 0;
    let mut proto_kept = false;
    let mut host_kept = false;
    let mut length_said = false;
    for field in fields {
        let keep = match field.known {
            Known::Upgrade => forwarding.upgrade,
            // The framing fields are written below, in one spelling, from
            // the framing the codec read: the backend reads what weir relays
            // however the client spelled it (`ChUnKeD`, `0005`).
            Known::TransferEncoding => false,
            Known::ContentLength => {
                length_said = true;
                false
            }
            known if known.is_hop_by_hop() => false,
            // The host stays whatever `Connection` says of it.
            // An absolute target's authority is sent as `Host` below.
            Known::Host => !absolute,
            _ if named && named_by_connection(buf, fields, field.name) => false,
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
            _ => true,
        };
        if keep {
            edits.keep(field.line);
        }
    }
    match head.framing {
        Framing::Chunked => edits.add(b"Transfer-Encoding: chunked\r\n"),
        Framing::Length(length) => add_length(edits, length),
        // `Content-Length: 0` stays said: a backend may want it on a POST.
        Framing::Empty if length_said => add_length(edits, 0),
        Framing::Empty | Framing::UntilClose => {}
    }

    if absolute && let Some(authority) = head.authority {
        add_field(edits, b"Host: ", authority.of(buf));
    } else if head.authority.is_none()
        && let Some(backend) = forwarding.backend_host
    {
        add_field(edits, b"Host: ", backend);
    }
    // Earlier hops folded into one line, the client last.
    let out = edits.added_mut();
    out.extend_from_slice(b"X-Forwarded-For: ");
    if forwarded_for > 0 {
        for field in fields.iter().filter(|f| {
            f.known == Known::XForwardedFor && !(named && named_by_connection(buf, fields, f.name))
        }) {
            out.extend_from_slice(field.value.of(buf));
            out.extend_from_slice(b", ");
        }
    }
    out.extend_from_slice(forwarding.client);
    out.extend_from_slice(b"\r\n");
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
    edits: &mut impl HeadOut,
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

fn add_length(edits: &mut impl HeadOut, length: u64) {
    let out = edits.added_mut();
    out.extend_from_slice(b"Content-Length: ");
    out.extend_from_slice(itoa::Buffer::new().format(length).as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn add_field(edits: &mut impl HeadOut, name: &[u8], value: &[u8]) {
    let out = edits.added_mut();
    out.extend_from_slice(name);
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
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

/// What the response rewrite needs to know beyond the head.
#[derive(Debug, Clone, Copy)]
pub struct Answering<'a> {
    /// The version of the client's request.
    pub client_version: Version,
    /// The client's connection stays open after this exchange, as far as the
    /// client and weir are concerned (not draining).
    pub keep_alive: bool,
    /// The exchange switches protocols: `Upgrade` is kept and `Connection:
    /// upgrade` sent.
    pub upgrade: bool,
    /// Field lines of weir's own (an affinity cookie, rate-limit state),
    /// CRLF-terminated each.
    pub extra: &'a [u8],
}

/// How a response's body goes on to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relay {
    /// As it came: no body, a length, or chunks relayed without re-chunking.
    AsIs,
    /// Chunks decoded for a client that cannot read them (HTTP/1.0); the
    /// client's connection then ends the body.
    Dechunk,
    /// A body that runs to the backend's close, chunked for an HTTP/1.1
    /// client so that its connection can stay open.
    Chunk,
    /// A body that runs to the backend's close, to a client that reads it to
    /// the close too.
    UntilClose,
}

/// What the client is sent: how the body is relayed, and whether its
/// connection closes after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    pub relay: Relay,
    pub close: bool,
}

/// Writes to `edits` the client's response head for the backend's `head`
/// (parsed from `buf`, its fields in `fields`).
pub fn response_edits(
    buf: &[u8],
    head: &ResponseHead,
    fields: &[Field],
    answering: &Answering<'_>,
    edits: &mut impl HeadOut,
) -> Answer {
    let http10_client = answering.client_version == Version::Http10;
    let relay = match head.framing {
        Framing::Chunked if http10_client => Relay::Dechunk,
        Framing::UntilClose if http10_client => Relay::UntilClose,
        Framing::UntilClose => Relay::Chunk,
        _ => Relay::AsIs,
    };
    let close = !answering.keep_alive || matches!(relay, Relay::Dechunk | Relay::UntilClose);

    // `HTTP/1.x NNN reason`: the client's version, whatever the backend's.
    if head.version == answering.client_version {
        edits.keep(head.line);
    } else {
        edits.add(if http10_client {
            b"HTTP/1.0"
        } else {
            b"HTTP/1.1"
        });
        edits.keep(Span::new(
            head.line.start as usize + 8,
            head.line.end as usize,
        ));
    }
    let named = head.connection.names_fields || head.connection.close;
    // No framing field at all on a 1xx or 204 (RFC 9110 §8.6, RFC 9112
    // §6.1); on the answer to a HEAD and on a 304 (no body either) they
    // describe the representation and go on as they came; a body's framing
    // is written below in one spelling, from what the codec read.
    let bodiless = head.status == 204 || (100..200).contains(&head.status);
    let framing_as_came = head.framing == Framing::Empty && !bodiless;
    let mut dated = false;
    for field in fields {
        let keep = match field.known {
            Known::Upgrade => answering.upgrade,
            // HTTP/1.0 has no transfer codings, not even on a bodiless answer.
            Known::TransferEncoding => framing_as_came && !http10_client,
            Known::ContentLength => framing_as_came,
            known if known.is_hop_by_hop() => false,
            _ if named && named_by_connection(buf, fields, field.name) => false,
            Known::Other
                if field.name.len() == 4 && field.name.of(buf).eq_ignore_ascii_case(b"date") =>
            {
                dated = true;
                true
            }
            _ => true,
        };
        if keep {
            edits.keep(field.line);
        }
    }
    if !dated {
        with_date_line(|line| edits.add(line));
    }
    match (head.framing, relay) {
        (Framing::Length(length), _) => add_length(edits, length),
        (Framing::Chunked, Relay::AsIs) | (_, Relay::Chunk) => {
            edits.add(b"Transfer-Encoding: chunked\r\n");
        }
        _ => {}
    }
    edits.add(answering.extra);
    if answering.upgrade {
        edits.add(b"Connection: upgrade\r\n");
    } else if close {
        edits.add(b"Connection: close\r\n");
    } else if http10_client {
        edits.add(b"Connection: keep-alive\r\n");
    }
    edits.add(b"\r\n");
    Answer { relay, close }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::edits::CopiedHead;
    use crate::http1::head::{Method, parse_request, parse_response};

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

    fn rewritten(raw: &str, forwarding: Forwarding<'_>) -> String {
        let buf = raw.as_bytes();
        let mut fields = Vec::new();
        let head = parse_request(buf, &mut fields).unwrap().unwrap();
        let mut out = Vec::new();
        request_edits(
            buf,
            &head,
            &fields,
            &forwarding,
            &mut CopiedHead::new(buf, &mut out),
        );
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_plain_request_is_kept_byte_for_byte() {
        let out = rewritten(
            "GET /a?b HTTP/1.1\r\nhOsT: Example.com\r\nAccept: */*\r\n\r\n",
            forwarding(),
        );
        assert_eq!(
            out,
            "GET /a?b HTTP/1.1\r\nhOsT: Example.com\r\nAccept: */*\r\n\
             X-Forwarded-For: 192.0.2.7\r\nX-Forwarded-Proto: http\r\n\
             X-Forwarded-Host: Example.com\r\n\r\n"
        );
    }

    #[test]
    fn hop_by_hop_fields_go_and_those_connection_names() {
        let out = rewritten(
            "POST /x HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Secret\r\n\
             Keep-Alive: 5\r\nX-Secret: 1\r\nTE: trailers\r\nProxy-Connection: x\r\n\
             Upgrade: h2c\r\nTransfer-Encoding: chunked\r\nX-Other: 2\r\n\r\n",
            forwarding(),
        );
        assert_eq!(
            out,
            "POST /x HTTP/1.1\r\nHost: a\r\nX-Other: 2\r\nTransfer-Encoding: chunked\r\n\
             X-Forwarded-For: 192.0.2.7\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: a\r\n\r\n"
        );
    }

    #[test]
    fn framing_fields_go_on_in_one_spelling_whatever_the_clients() {
        let out = rewritten(
            "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ChUnKeD\r\n\r\n",
            forwarding(),
        );
        assert!(out.contains("\r\nTransfer-Encoding: chunked\r\n"), "{out}");
        assert!(!out.contains("ChUnKeD"), "{out}");
        let out = rewritten(
            "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0005\r\n\r\n",
            forwarding(),
        );
        assert!(out.contains("\r\nContent-Length: 5\r\n"), "{out}");
        assert!(!out.contains("0005"), "{out}");
        let out = rewritten(
            "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
            forwarding(),
        );
        assert!(out.contains("\r\nContent-Length: 0\r\n"), "{out}");
        let out = rewritten("GET /x HTTP/1.1\r\nHost: a\r\n\r\n", forwarding());
        assert!(!out.contains("Content-Length"), "{out}");
    }

    #[test]
    fn a_field_connection_names_goes_whatever_its_name_but_the_host() {
        let out = rewritten(
            "POST /x HTTP/1.1\r\nHost: a\r\nConnection: Expect, Host, X-Forwarded-For\r\n\
             Expect: 100-continue\r\nX-Forwarded-For: 203.0.113.9\r\nContent-Length: 2\r\n\r\n",
            forwarding(),
        );
        assert_eq!(
            out,
            "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\
             X-Forwarded-For: 192.0.2.7\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: a\r\n\r\n"
        );
    }

    #[test]
    fn forwarded_fields_are_replaced_unless_a_trusted_proxy_set_them() {
        let raw = "GET / HTTP/1.1\r\nHost: inner\r\nX-Forwarded-For: 6.6.6.6\r\n\
                   X-Forwarded-Proto: https\r\nx-forwarded-for: 10.0.0.1 \r\n\
                   X-Forwarded-Host: public.example\r\n\r\n";
        let out = rewritten(raw, forwarding());
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
        let out = rewritten(raw, trusted);
        assert_eq!(
            out,
            "GET / HTTP/1.1\r\nHost: inner\r\nX-Forwarded-Proto: https\r\n\
             X-Forwarded-Host: public.example\r\n\
             X-Forwarded-For: 6.6.6.6, 10.0.0.1, 192.0.2.7\r\n\r\n"
        );
        let out = rewritten("GET / HTTP/1.1\r\nHost: a\r\n\r\n", trusted);
        assert!(out.contains("X-Forwarded-Proto: https\r\n"), "{out}");
    }

    #[test]
    fn absolute_targets_become_origin_form_with_their_host() {
        let out = rewritten(
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
        let out = rewritten(
            "GET /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            with_backend,
        );
        assert_eq!(
            out,
            "GET /x HTTP/1.1\r\nHost: 127.0.0.1:9000\r\n\
             X-Forwarded-For: 192.0.2.7\r\nX-Forwarded-Proto: http\r\n\r\n"
        );
        let out = rewritten("GET /x HTTP/1.0\r\nHost: a\r\n\r\n", with_backend);
        assert!(out.starts_with("GET /x HTTP/1.1\r\nHost: a\r\n"), "{out}");
        assert!(!out.contains("9000"), "{out}");
    }

    #[test]
    fn a_normalised_target_replaces_the_received_one() {
        let normal = Forwarding {
            target: Some(b"/admin?x"),
            ..forwarding()
        };
        let out = rewritten("GET /api/../admin?x HTTP/1.1\r\nHost: a\r\n\r\n", normal);
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
        let out = rewritten(
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

    fn answered(raw: &str, method: Method, answering: Answering<'_>) -> (String, Answer) {
        let buf = raw.as_bytes();
        let mut fields = Vec::new();
        let head = parse_response(buf, method, &mut fields).unwrap().unwrap();
        let mut out = Vec::new();
        let answer = response_edits(
            buf,
            &head,
            &fields,
            &answering,
            &mut CopiedHead::new(buf, &mut out),
        );
        (String::from_utf8(out).unwrap(), answer)
    }

    fn answering(client_version: Version) -> Answering<'static> {
        Answering {
            client_version,
            keep_alive: true,
            upgrade: false,
            extra: b"",
        }
    }

    const DATE: &str = "Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n";

    #[test]
    fn a_plain_answer_keeps_its_lines_and_its_length() {
        let raw = format!("HTTP/1.1 200 OK\r\n{DATE}X-A: b\r\nContent-Length: 2\r\n\r\nok");
        let (out, answer) = answered(&raw, Method::Get, answering(Version::Http11));
        assert_eq!(out, &raw[..raw.len() - 2]);
        assert_eq!(
            answer,
            Answer {
                relay: Relay::AsIs,
                close: false
            }
        );
    }

    #[test]
    fn hop_by_hop_fields_go_and_date_and_weirs_fields_come() {
        let raw = "HTTP/1.0 404 Not Found\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: 5\r\nX-Hop: 1\r\nContent-Length: 0\r\n\r\n";
        let with_extra = Answering {
            extra: b"Set-Cookie: s=1\r\n",
            ..answering(Version::Http11)
        };
        let (out, answer) = answered(raw, Method::Get, with_extra);
        assert!(
            out.starts_with("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nDate: "),
            "{out}"
        );
        assert!(out.ends_with(" GMT\r\nSet-Cookie: s=1\r\n\r\n"), "{out}");
        assert!(!out.contains("Hop") && !out.contains("Keep-Alive"), "{out}");
        assert!(!answer.close);
    }

    #[test]
    fn chunks_go_on_as_they_came_to_http11_and_decoded_to_http10() {
        let raw = format!("HTTP/1.1 200 OK\r\n{DATE}Transfer-Encoding: chunked\r\n\r\n");
        let (out, answer) = answered(&raw, Method::Get, answering(Version::Http11));
        assert_eq!(out, raw);
        assert_eq!(answer.relay, Relay::AsIs);
        let (out, answer) = answered(&raw, Method::Get, answering(Version::Http10));
        assert_eq!(
            out,
            format!("HTTP/1.0 200 OK\r\n{DATE}Connection: close\r\n\r\n")
        );
        assert_eq!(
            answer,
            Answer {
                relay: Relay::Dechunk,
                close: true
            }
        );
    }

    #[test]
    fn a_body_to_the_close_is_chunked_for_http11_and_left_to_the_close_for_http10() {
        let raw = format!("HTTP/1.1 200 OK\r\n{DATE}\r\n");
        let (out, answer) = answered(&raw, Method::Get, answering(Version::Http11));
        assert_eq!(
            out,
            format!("HTTP/1.1 200 OK\r\n{DATE}Transfer-Encoding: chunked\r\n\r\n")
        );
        assert_eq!(
            answer,
            Answer {
                relay: Relay::Chunk,
                close: false
            }
        );
        let (out, answer) = answered(&raw, Method::Get, answering(Version::Http10));
        assert_eq!(
            out,
            format!("HTTP/1.0 200 OK\r\n{DATE}Connection: close\r\n\r\n")
        );
        assert_eq!(
            answer,
            Answer {
                relay: Relay::UntilClose,
                close: true
            }
        );
    }

    #[test]
    fn the_client_is_told_whether_its_connection_stays() {
        let raw = format!("HTTP/1.1 204 No Content\r\n{DATE}\r\n");
        let (out, _) = answered(&raw, Method::Get, answering(Version::Http10));
        assert!(out.ends_with("Connection: keep-alive\r\n\r\n"), "{out}");
        let closing = Answering {
            keep_alive: false,
            ..answering(Version::Http11)
        };
        let (out, answer) = answered(&raw, Method::Get, closing);
        assert!(out.ends_with("Connection: close\r\n\r\n"), "{out}");
        assert!(answer.close);
    }

    #[test]
    fn a_switch_keeps_its_upgrade() {
        let raw = format!(
            "HTTP/1.1 101 Switching Protocols\r\n{DATE}Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: x\r\n\r\n"
        );
        let switching = Answering {
            upgrade: true,
            ..answering(Version::Http11)
        };
        let (out, _) = answered(&raw, Method::Get, switching);
        assert_eq!(
            out,
            format!(
                "HTTP/1.1 101 Switching Protocols\r\n{DATE}Upgrade: websocket\r\nSec-WebSocket-Accept: x\r\nConnection: upgrade\r\n\r\n"
            )
        );
    }
    #[test]
    fn no_framing_field_goes_on_a_204_and_a_body_is_framed_in_one_spelling() {
        for raw in [
            format!("HTTP/1.1 204 No Content\r\n{DATE}Content-Length: 5\r\n\r\n"),
            format!("HTTP/1.1 204 No Content\r\n{DATE}Transfer-Encoding: chunked\r\n\r\n"),
        ] {
            let (out, _) = answered(&raw, Method::Get, answering(Version::Http11));
            assert_eq!(out, format!("HTTP/1.1 204 No Content\r\n{DATE}\r\n"));
        }
        let raw = format!("HTTP/1.1 200 OK\r\n{DATE}Transfer-Encoding: CHUNKED\r\n\r\n");
        let (out, _) = answered(&raw, Method::Get, answering(Version::Http11));
        assert_eq!(
            out,
            format!("HTTP/1.1 200 OK\r\n{DATE}Transfer-Encoding: chunked\r\n\r\n")
        );
        // What a HEAD's answer and a 304 say of the representation stays.
        let raw = format!("HTTP/1.1 200 OK\r\n{DATE}Content-Length: 0042\r\n\r\n");
        let (out, _) = answered(&raw, Method::Head, answering(Version::Http11));
        assert_eq!(out, raw);
        let raw = format!("HTTP/1.1 304 Not Modified\r\n{DATE}Content-Length: 42\r\n\r\n");
        let (out, _) = answered(&raw, Method::Get, answering(Version::Http11));
        assert_eq!(out, raw);
    }

    #[test]
    fn a_response_field_connection_names_goes_and_a_named_date_is_weirs() {
        let raw = format!(
            "HTTP/1.1 200 OK\r\n{DATE}Connection: Date, X-Gone\r\nX-Gone: 1\r\nContent-Length: 0\r\n\r\n"
        );
        let (out, _) = answered(&raw, Method::Get, answering(Version::Http11));
        assert!(!out.contains("1994") && !out.contains("X-Gone"), "{out}");
        assert!(out.contains("\r\nDate: "), "{out}");
    }
}
