//! Request and response rewriting between client and backend: origin-form URI,
//! `Host`, hop-by-hop headers and `X-Forwarded-*`.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Uri, Version};

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus
/// the non-standard ones still seen in the wild.
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Removes hop-by-hop headers, including those named by `Connection`.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// The per-connection facts the forwarded headers are made of, computed once when
/// the connection is accepted rather than per request.
#[derive(Debug, Clone)]
pub struct ClientFacts {
    /// The client's IP as an `X-Forwarded-For` element.
    pub address: HeaderValue,
    /// `http` or `https`.
    pub proto: HeaderValue,
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
    // Backends get origin-form targets; the authority travels in `Host`.
    if uri.scheme().is_some() || uri.authority().is_some() {
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        if let Ok(origin) = path.parse() {
            *uri = origin;
        }
    }
    *version = Version::HTTP_11;
    remove_hop_by_hop(headers);

    append_forwarded_for(headers, &client.address);
    headers.insert(X_FORWARDED_PROTO.clone(), client.proto.clone());
    match host {
        Some(host) => {
            headers.insert(X_FORWARDED_HOST.clone(), host.clone());
            headers.insert(header::HOST, host);
        }
        None => {
            headers.remove(&X_FORWARDED_HOST);
        }
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
            proto: HeaderValue::from_static("http"),
        }
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
