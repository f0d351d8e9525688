//! Request and response rewriting between client and backend: origin-form URI,
//! `Host`, hop-by-hop headers, `X-Forwarded-*` and HTTP/2 cookie fields.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use std::net::IpAddr;

use http::{Uri, Version};

use crate::balance::Fields;

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus
/// the non-standard ones still seen in the wild.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    // Standard names compare as enum tags; only custom ones compare bytes.
    name == header::CONNECTION
        || name == header::TE
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Removes hop-by-hop headers, including those named by `Connection`.
///
/// One pass over the names first: most messages carry none of them, or only
/// `Connection`, and six hashed look-ups per message would cost more than the scan.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    if let Some(connection) = headers.get(header::CONNECTION).cloned() {
        // Further `Connection` lines are rare; they name headers too. Taken
        // before any removal: a value may name `Connection` itself.
        let more: Vec<HeaderValue> = headers
            .get_all(header::CONNECTION)
            .iter()
            .skip(1)
            .cloned()
            .collect();
        remove_named(headers, &connection);
        for value in more {
            remove_named(headers, &value);
        }
    }
    // Only the names present are removed: one hashed look-up each.
    while let Some(name) = headers.keys().find(|name| is_hop_by_hop(name)).cloned() {
        headers.remove(&name);
    }
}

/// Removes every header a `Connection` value names. Its tokens are read as bytes:
/// a value with a stray non-ASCII byte still names the headers it names. `close`
/// is removed too, when present: RFC 9110 reserves it as a field name for that
/// reason. Names are looked up as `&str`, which allocates nothing.
fn remove_named(headers: &mut HeaderMap, connection: &HeaderValue) {
    for token in connection.as_bytes().split(|&byte| byte == b',') {
        let token = token.trim_ascii();
        if token.eq_ignore_ascii_case(b"keep-alive") {
            continue; // hop-by-hop anyway, and the usual value
        }
        if let Ok(name) = std::str::from_utf8(token) {
            headers.remove(name);
        }
    }
}

/// Puts the fields a backend sent, which weir's HTTP/1 client keeps as bytes
/// for an HTTP/1 client, into the response's `HeaderMap`, ahead of those weir
/// added: for the readers of a map (an HTTP/2 client, the cache, the rate
/// limits' fields). Hop-by-hop fields come too: `rewrite_response` removes them.
pub(crate) fn take_received_fields(response: &mut http::Response<crate::upstream::ResponseBody>) {
    let Some(received) = response.body_mut().take_received_head() else {
        return;
    };
    let added = std::mem::replace(response.headers_mut(), received.header_map());
    let headers = response.headers_mut();
    let mut last = None;
    for (name, value) in added {
        // A name comes once, with the first of its values.
        if let Some(name) = name {
            last = Some(name);
        }
        if let Some(name) = &last {
            headers.append(name.clone(), value);
        }
    }
}

/// The per-connection facts the forwarded headers are made of, computed once when
/// the connection is accepted rather than per request.
#[derive(Debug, Clone)]
pub struct ClientFacts {
    /// The client's IP as an `X-Forwarded-For` element.
    pub address: HeaderValue,
    /// Whether the client came over TLS: `X-Forwarded-Proto` is `https` then.
    /// A flag, not the header value: the struct lives as long as the connection,
    /// and a `HeaderValue` would take 40 bytes of it.
    pub tls: bool,
    /// The listener's trusted proxies, present only when the peer is one of them:
    /// then its `X-Forwarded-*` headers are believed.
    pub trusted_proxies: Option<std::sync::Arc<[ipnet::IpNet]>>,
}

/// The client behind trusted proxies: `X-Forwarded-For` walked from the right,
/// skipping trusted addresses; the first other address is the client (entries
/// further left are whatever the client chose to send). `None` when the header is
/// absent or holds something that is not an address, so the caller keeps the peer.
pub fn forwarded_client(fields: Fields<'_>, trusted: &[ipnet::IpNet]) -> Option<IpAddr> {
    let mut leftmost = None;
    for value in fields.values("x-forwarded-for").rev() {
        for entry in std::str::from_utf8(value).ok()?.rsplit(',') {
            let address = parse_forwarded_address(entry.trim())?;
            if !trusted.iter().any(|network| network.contains(&address)) {
                return Some(address);
            }
            leftmost = Some(address);
        }
    }
    // Every hop was trusted: the first of them is as far as the chain goes.
    leftmost
}

/// `192.0.2.1`, `2001:db8::1`, and the `192.0.2.1:1234` / `[2001:db8::1]:1234` forms.
fn parse_forwarded_address(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
}

/// Rewrites a client request's head for the backend. `host` is the request's
/// authority (from `Host` or the absolute URI), already validated.
pub fn rewrite_request(
    uri: &mut Uri,
    version: &mut Version,
    headers: &mut HeaderMap,
    host: Option<HeaderValue>,
    client: &ClientFacts,
) {
    let from_trusted = client.trusted_proxies.is_some();
    // Without an authority in the target, `host` is the request's one `Host`
    // field, which then stays as it is: no second look-up and insertion.
    let host_from_target = uri.authority().is_some();
    // Backends get origin-form targets; the authority travels in `Host`.
    if uri.scheme().is_some() || host_from_target {
        *uri = Uri::from(origin_form(uri));
    }
    // The request goes on as HTTP/1.1, which allows one `Cookie` line; an HTTP/2
    // client may have split its cookies over several fields (RFC 9113 §8.2.3).
    if *version == Version::HTTP_2 {
        join_cookies(headers);
    }
    *version = Version::HTTP_11;
    remove_hop_by_hop(headers);

    append_forwarded_for(headers, &client.address);
    // A trusted proxy in front knows the original scheme and host: keep its word.
    if !(from_trusted && headers.contains_key(&X_FORWARDED_PROTO)) {
        let proto = if client.tls { "https" } else { "http" };
        headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    }
    let keep_host = from_trusted && headers.contains_key(&X_FORWARDED_HOST);
    match host {
        Some(host) => {
            if !keep_host {
                headers.insert(X_FORWARDED_HOST.clone(), host.clone());
            }
            if host_from_target || !headers.contains_key(header::HOST) {
                headers.insert(header::HOST, host);
            }
        }
        None if !keep_host => {
            headers.remove(&X_FORWARDED_HOST);
        }
        None => {}
    }
}

/// The origin-form target of an absolute one: its path and query, with the path
/// `/` when empty (`http://a?x` becomes `/?x`, RFC 9112 §3.2.1).
fn origin_form(uri: &Uri) -> http::uri::PathAndQuery {
    match uri.path_and_query() {
        Some(target) if target.as_str().starts_with('/') => target.clone(),
        Some(target) => format!("/{}", target.as_str())
            .parse()
            .unwrap_or_else(|_| http::uri::PathAndQuery::from_static("/")),
        None => http::uri::PathAndQuery::from_static("/"),
    }
}

/// Joins several `cookie` fields into one, separated by "; ". One field or none
/// is left as it is, with no allocation.
fn join_cookies(headers: &mut HeaderMap) {
    let mut fields = headers.get_all(header::COOKIE).iter();
    let (Some(first), Some(_)) = (fields.next(), fields.next()) else {
        return;
    };
    let mut joined = first.as_bytes().to_vec();
    for value in headers.get_all(header::COOKIE).iter().skip(1) {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(value.as_bytes());
    }
    // Made of valid values and "; ", so it is valid too.
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, value);
    }
}

/// Appends the client to `X-Forwarded-For`, folding earlier entries into one line.
fn append_forwarded_for(headers: &mut HeaderMap, address: &HeaderValue) {
    let mut earlier = headers.get_all(&X_FORWARDED_FOR).iter();
    let Some(first) = earlier.next() else {
        headers.insert(X_FORWARDED_FOR.clone(), address.clone());
        return;
    };
    let mut joined = first.as_bytes().to_vec();
    for value in earlier {
        joined.extend_from_slice(b", ");
        joined.extend_from_slice(value.as_bytes());
    }
    joined.extend_from_slice(b", ");
    joined.extend_from_slice(address.as_bytes());
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        headers.insert(X_FORWARDED_FOR.clone(), value);
    }
}

/// The protocol an HTTP/1.1 request asks to switch to (`Upgrade`, named in
/// `Connection`), if any.
pub fn requested_upgrade(version: Version, headers: &HeaderMap) -> Option<HeaderValue> {
    if version != Version::HTTP_11 {
        return None;
    }
    let protocol = headers.get(header::UPGRADE)?;
    let named = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    named.then(|| protocol.clone())
}

/// Whether the client said it accepts trailers (`TE: trailers`), which gRPC
/// requires end to end; read before the hop-by-hop headers are removed.
pub fn accepts_trailers(headers: &HeaderMap) -> bool {
    headers.get_all(header::TE).iter().any(|value| {
        value.to_str().is_ok_and(|value| {
            value.split(',').any(|token| {
                token
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .eq_ignore_ascii_case("trailers")
            })
        })
    })
}

/// `TE: trailers`, the one TE value HTTP/2 allows, passed on to an HTTP/2 backend.
pub fn keep_trailers(headers: &mut HeaderMap) {
    headers.insert(header::TE, HeaderValue::from_static("trailers"));
}

/// Puts back the two hop-by-hop headers an upgrade must carry across weir.
pub fn keep_upgrade(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(header::UPGRADE, protocol);
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
}

/// Rewrites a backend response's head for the client.
pub fn rewrite_response(headers: &mut HeaderMap) {
    remove_hop_by_hop(headers);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> ClientFacts {
        ClientFacts {
            address: HeaderValue::from_static("192.0.2.7"),
            tls: false,
            trusted_proxies: None,
        }
    }

    fn networks(list: &[&str]) -> Vec<ipnet::IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn forwarded_client_is_the_first_untrusted_from_the_right() {
        let trusted = networks(&["10.0.0.0/8"]);
        let map = headers(&[
            ("x-forwarded-for", "6.6.6.6, 203.0.113.9"),
            ("x-forwarded-for", "10.1.1.1, 10.2.2.2"),
        ]);
        assert_eq!(
            forwarded_client(Fields::Map(&map), &trusted),
            Some("203.0.113.9".parse().unwrap())
        );
    }

    #[test]
    fn forwarded_client_reads_ports_and_gives_up_on_garbage() {
        let trusted = networks(&["10.0.0.0/8"]);
        let map = headers(&[("x-forwarded-for", "[2001:db8::1]:443, 10.0.0.1")]);
        assert_eq!(
            forwarded_client(Fields::Map(&map), &trusted),
            Some("2001:db8::1".parse().unwrap())
        );
        let map = headers(&[("x-forwarded-for", "not-an-ip, 10.0.0.1")]);
        assert_eq!(forwarded_client(Fields::Map(&map), &trusted), None);
        assert_eq!(
            forwarded_client(Fields::Map(&HeaderMap::new()), &trusted),
            None
        );
    }

    #[test]
    fn all_trusted_hops_give_the_leftmost() {
        let trusted = networks(&["10.0.0.0/8"]);
        let map = headers(&[("x-forwarded-for", "10.0.0.9, 10.0.0.1")]);
        assert_eq!(
            forwarded_client(Fields::Map(&map), &trusted),
            Some("10.0.0.9".parse().unwrap())
        );
    }

    #[test]
    fn a_trusted_peer_keeps_its_proto_and_host() {
        let mut map = headers(&[
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "public.example"),
        ]);
        let mut uri: Uri = "/".parse().unwrap();
        let mut version = Version::HTTP_11;
        let trusted = ClientFacts {
            trusted_proxies: Some(networks(&["127.0.0.0/8"]).into()),
            ..facts()
        };
        rewrite_request(
            &mut uri,
            &mut version,
            &mut map,
            Some(HeaderValue::from_static("inner:8080")),
            &trusted,
        );
        assert_eq!(map["x-forwarded-proto"], "https");
        assert_eq!(map["x-forwarded-host"], "public.example");
        assert_eq!(map["host"], "inner:8080");
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn rewritten(version: Version, pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = headers(pairs);
        let mut uri: Uri = "/".parse().unwrap();
        let mut version = version;
        rewrite_request(&mut uri, &mut version, &mut map, None, &facts());
        map
    }

    #[test]
    fn http2_cookie_fields_are_joined_into_one_for_http1() {
        let cookies = [
            ("cookie", "a=1"),
            ("x-between", "yes"),
            ("cookie", "b=2; c=3"),
            ("cookie", "d=4"),
        ];
        let map = rewritten(Version::HTTP_2, &cookies);
        let sent: Vec<_> = map.get_all(header::COOKIE).iter().collect();
        assert_eq!(sent, ["a=1; b=2; c=3; d=4"]);
        assert_eq!(map["x-between"], "yes");

        let map = rewritten(Version::HTTP_2, &[("cookie", "only=1")]);
        let sent: Vec<_> = map.get_all(header::COOKIE).iter().collect();
        assert_eq!(sent, ["only=1"]);
    }

    #[test]
    fn http1_cookie_lines_are_left_as_they_came() {
        // RFC 6265 forbids several `Cookie` lines in HTTP/1; weir does not fix
        // them up, as nginx does not
        let map = rewritten(Version::HTTP_11, &[("cookie", "a=1"), ("cookie", "b=2")]);
        let sent: Vec<_> = map.get_all(header::COOKIE).iter().collect();
        assert_eq!(sent, ["a=1", "b=2"]);
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut map = headers(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-connection", "keep-alive"),
            ("x-kept", "yes"),
        ]);
        remove_hop_by_hop(&mut map);
        assert_eq!(map.len(), 1);
        assert_eq!(map["x-kept"], "yes");
    }

    #[test]
    fn an_absolute_target_without_a_path_becomes_origin_form() {
        // Found by the `forward` fuzz target.
        for (target, origin) in [
            ("http://a.example?x=1", "/?x=1"),
            ("http://a.example", "/"),
            ("http://a.example/p?q", "/p?q"),
        ] {
            let mut uri: Uri = target.parse().unwrap();
            let mut version = Version::HTTP_11;
            rewrite_request(
                &mut uri,
                &mut version,
                &mut HeaderMap::new(),
                None,
                &facts(),
            );
            assert_eq!(uri, origin, "{target}");
            assert!(uri.authority().is_none());
        }
    }

    #[test]
    fn close_and_names_beside_obs_text_are_removed() {
        // Both found by the `forward` fuzz target.
        let mut map = headers(&[("connection", "close"), ("close", "1"), ("x-kept", "yes")]);
        remove_hop_by_hop(&mut map);
        assert_eq!(map.len(), 1, "{map:?}");
        let mut map = HeaderMap::new();
        map.insert(
            header::CONNECTION,
            HeaderValue::from_bytes(b"x-secret, \xe9t\xe9").unwrap(),
        );
        map.insert("x-secret", HeaderValue::from_static("1"));
        map.insert("x-kept", HeaderValue::from_static("yes"));
        remove_hop_by_hop(&mut map);
        assert_eq!(map.len(), 1, "{map:?}");
    }

    #[test]
    fn a_connection_line_naming_connection_does_not_hide_the_next_line() {
        // Found by the `forward` fuzz target.
        let mut map = headers(&[
            ("connection", "connection"),
            ("connection", "x-a"),
            ("x-a", "1"),
            ("x-kept", "yes"),
        ]);
        remove_hop_by_hop(&mut map);
        assert_eq!(map.len(), 1, "{map:?}");
    }

    #[test]
    fn forwarded_for_is_appended_and_proto_host_replaced() {
        let mut map = headers(&[
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-for", "10.0.0.2"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
        ]);
        let mut uri: Uri = "/a?b".parse().unwrap();
        let mut version = Version::HTTP_10;
        let host = HeaderValue::from_static("site.example:8080");
        rewrite_request(&mut uri, &mut version, &mut map, Some(host), &facts());
        assert_eq!(map["x-forwarded-for"], "10.0.0.1, 10.0.0.2, 192.0.2.7");
        assert_eq!(map["x-forwarded-proto"], "http");
        assert_eq!(map["x-forwarded-host"], "site.example:8080");
        assert_eq!(map["host"], "site.example:8080");
        assert_eq!(uri, "/a?b");
        assert_eq!(version, Version::HTTP_11);
    }

    #[test]
    fn trailers_are_found_among_te_tokens() {
        for (te, accepts) in [
            ("trailers", true),
            ("gzip, Trailers", true),
            ("trailers;q=0.5", true),
            ("gzip", false),
            ("x-trailers", false),
        ] {
            assert_eq!(accepts_trailers(&headers(&[("te", te)])), accepts, "{te}");
        }
        assert!(!accepts_trailers(&HeaderMap::new()));
    }

    #[test]
    fn upgrade_must_be_named_in_connection() {
        let asked = headers(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ]);
        assert_eq!(
            requested_upgrade(Version::HTTP_11, &asked).unwrap(),
            "websocket"
        );
        let unnamed = headers(&[("connection", "keep-alive"), ("upgrade", "websocket")]);
        assert_eq!(requested_upgrade(Version::HTTP_11, &unnamed), None);
        assert_eq!(requested_upgrade(Version::HTTP_10, &asked), None);
    }

    #[test]
    fn absolute_uri_becomes_origin_form() {
        let mut map = HeaderMap::new();
        let mut uri: Uri = "http://site.example/p/q?x=1".parse().unwrap();
        let mut version = Version::HTTP_2;
        rewrite_request(
            &mut uri,
            &mut version,
            &mut map,
            Some(HeaderValue::from_static("site.example")),
            &facts(),
        );
        assert_eq!(uri, "/p/q?x=1");
        assert_eq!(map["host"], "site.example");
        assert_eq!(map["x-forwarded-for"], "192.0.2.7");
    }
}
