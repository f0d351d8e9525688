//! Refuses requests that are malformed or ambiguous beyond what hyper's parser
//! already rejects, so that weir and the backend can never disagree on where a
//! request starts and ends, or on which host it is for.

use std::borrow::Cow;

use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Uri, Version};

use super::error::ProxyError;
use crate::http1::head::is_valid_authority;
use crate::http1::request::ReceivedRequest;
use crate::router::{BadPath, normalise_path};

/// Checks the request head and returns the authority it is addressed to: the
/// absolute URI's authority if any, else the `Host` header. A head read in
/// place (`received`) was checked by weir's HTTP/1 codec already.
pub fn check<B>(
    request: &Request<B>,
    received: Option<&ReceivedRequest>,
) -> Result<Option<HeaderValue>, ProxyError> {
    if request.method() == Method::CONNECT {
        return Err(ProxyError::MethodNotAllowed(
            "CONNECT: weir is not a forward proxy",
        ));
    }
    if let Some(received) = received {
        // weir's HTTP/1 codec checked `Host`, its agreement with the target,
        // and the framing fields; a head read in place names its authority.
        check_target(request)?;
        return match received.head.authority {
            Some(authority) => crate::http1::head::shared_value(&received.bytes, authority)
                .map(Some)
                .map_err(|_| ProxyError::BadRequest("invalid Host header")),
            None => Ok(None),
        };
    }
    let headers = request.headers();

    let mut hosts = headers.get_all(header::HOST).iter();
    let host_header = hosts.next();
    if hosts.next().is_some() {
        return Err(ProxyError::BadRequest("more than one Host header"));
    }
    let host = match request.uri().authority() {
        // An absolute target names the host; a `Host` header that disagrees with it
        // would let weir route on one host and the backend serve another.
        Some(authority) => {
            if let Some(header) = host_header
                && !header
                    .as_bytes()
                    .eq_ignore_ascii_case(authority.as_str().as_bytes())
                && request.version() != Version::HTTP_2
            {
                return Err(ProxyError::BadRequest(
                    "Host header differs from the request target",
                ));
            }
            Some(
                HeaderValue::from_str(authority.as_str())
                    .map_err(|_| ProxyError::BadRequest("invalid authority"))?,
            )
        }
        None => match host_header {
            Some(value) => Some(value.clone()),
            None if request.version() == Version::HTTP_11 => {
                return Err(ProxyError::BadRequest(
                    "HTTP/1.1 request without Host header",
                ));
            }
            None => None,
        },
    };
    if let Some(host) = &host
        && !is_valid_authority(host.as_bytes())
    {
        return Err(ProxyError::BadRequest("invalid Host header"));
    }

    let content_lengths = headers.get_all(header::CONTENT_LENGTH).iter().count();
    if content_lengths > 1 {
        return Err(ProxyError::BadRequest(
            "more than one Content-Length header",
        ));
    }
    // Plain digits only, on HTTP/2 as on HTTP/1 (h2 reads an empty value as
    // 0): the backend must read the framing weir relays.
    if let Some(length) = headers.get(header::CONTENT_LENGTH)
        && crate::http1::head::parse_length(length.as_bytes()).is_err()
    {
        return Err(ProxyError::BadRequest("invalid Content-Length"));
    }
    if content_lengths == 1 && headers.contains_key(header::TRANSFER_ENCODING) {
        return Err(ProxyError::BadRequest(
            "both Content-Length and Transfer-Encoding",
        ));
    }
    check_target(request)?;
    Ok(host)
}

fn check_target<B>(request: &Request<B>) -> Result<(), ProxyError> {
    if request.uri().path().is_empty()
        || request.uri().path() == "*" && request.method() != Method::OPTIONS
    {
        return Err(ProxyError::BadRequest("invalid request target"));
    }
    Ok(())
}

/// Normalises the request's path ([`normalise_path`]), for the router and the
/// backend alike; the query is left as it came. Nearly every request is left
/// as it is, with no allocation (and, taken by reference, is not moved).
pub fn normalise_target<B>(request: &mut Request<B>) -> Result<(), ProxyError> {
    let normal = match normalise_path(request.uri().path()) {
        Ok(Cow::Borrowed(_)) => None,
        Ok(Cow::Owned(normal)) => Some(normal),
        Err(BadPath::AboveRoot) => {
            return Err(ProxyError::BadRequest("request path climbs above the root"));
        }
        Err(BadPath::MalformedPercentEncoding) => {
            return Err(ProxyError::BadRequest(
                "malformed percent-encoding in the request path",
            ));
        }
    };
    let Some(mut target) = normal else {
        return Ok(());
    };
    if let Some(query) = request.uri().query() {
        target.push('?');
        target.push_str(query);
    }
    let mut uri = std::mem::take(request.uri_mut()).into_parts();
    // Made of what the parsed target held, minus some percent-encodings: it parses.
    uri.path_and_query = Some(
        PathAndQuery::try_from(target)
            .map_err(|_| ProxyError::BadRequest("invalid request target"))?,
    );
    *request.uri_mut() =
        Uri::from_parts(uri).map_err(|_| ProxyError::BadRequest("invalid request target"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The check of a request whose fields are in its map.
    fn check<B>(request: &Request<B>) -> Result<Option<HeaderValue>, ProxyError> {
        super::check(request, None)
    }

    fn request(version: Version, uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::builder().version(version).uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap()
    }

    fn status(r: Result<Option<HeaderValue>, ProxyError>) -> u16 {
        r.map_or_else(|e| e.status().as_u16(), |_| 200)
    }

    #[test]
    fn http11_needs_exactly_one_host() {
        assert_eq!(status(check(&request(Version::HTTP_11, "/", &[]))), 400);
        assert_eq!(
            status(check(&request(
                Version::HTTP_11,
                "/",
                &[("host", "a"), ("host", "b")]
            ))),
            400
        );
        assert_eq!(
            status(check(&request(Version::HTTP_11, "/", &[("host", "a")]))),
            200
        );
    }

    #[test]
    fn http10_may_omit_host() {
        assert_eq!(check(&request(Version::HTTP_10, "/", &[])).unwrap(), None);
    }

    #[test]
    fn content_length_with_transfer_encoding_is_refused() {
        let r = request(
            Version::HTTP_11,
            "/",
            &[
                ("host", "a"),
                ("content-length", "5"),
                ("transfer-encoding", "chunked"),
            ],
        );
        assert_eq!(status(check(&r)), 400);
    }

    #[test]
    fn a_content_length_that_is_not_plain_digits_is_refused() {
        for bad in ["", "+5", "5, 5", " 5x"] {
            let r = request(
                Version::HTTP_2,
                "/",
                &[("host", "a"), ("content-length", bad)],
            );
            assert_eq!(status(check(&r)), 400, "{bad:?}");
        }
    }

    #[test]
    fn duplicate_content_length_is_refused() {
        let r = request(
            Version::HTTP_11,
            "/",
            &[
                ("host", "a"),
                ("content-length", "5"),
                ("content-length", "5"),
            ],
        );
        assert_eq!(status(check(&r)), 400);
    }

    #[test]
    fn absolute_target_wins_and_must_agree_with_host() {
        let r = request(
            Version::HTTP_11,
            "http://a.example/x",
            &[("host", "a.example")],
        );
        assert_eq!(check(&r).unwrap().unwrap(), "a.example");
        let r = request(
            Version::HTTP_11,
            "http://a.example/x",
            &[("host", "b.example")],
        );
        assert_eq!(status(check(&r)), 400);
    }

    #[test]
    fn host_with_path_or_userinfo_is_refused() {
        for bad in ["a/b", "user@a", "a b", ""] {
            let r = request(Version::HTTP_11, "/", &[("host", bad)]);
            assert_eq!(status(check(&r)), 400, "{bad:?}");
        }
    }

    fn normalised(uri: &str) -> Result<Uri, u16> {
        let mut request = request(Version::HTTP_11, uri, &[]);
        normalise_target(&mut request)
            .map(|()| request.uri().clone())
            .map_err(|err| err.status().as_u16())
    }

    #[test]
    fn the_path_is_normalised_and_the_query_left_alone() {
        assert_eq!(
            normalised("/api/../%61dmin?x=/../%61"),
            Ok(Uri::from_static("/admin?x=/../%61"))
        );
        assert_eq!(normalised("/a/./b"), Ok(Uri::from_static("/a/b")));
        assert_eq!(
            normalised("http://a.example:8080/x/..?q"),
            Ok(Uri::from_static("http://a.example:8080/?q"))
        );
    }

    #[test]
    fn a_normal_target_is_kept_as_it_is() {
        for uri in ["/", "/a/b?c=../d", "*", "http://a.example/x"] {
            assert_eq!(normalised(uri), Ok(Uri::from_static(uri)));
        }
    }

    #[test]
    fn a_path_climbing_above_the_root_or_with_a_bare_percent_is_refused() {
        assert_eq!(normalised("/../etc/passwd"), Err(400));
        assert_eq!(normalised("/100%?q"), Err(400));
        // In the query a bare `%` is the backend's business.
        assert_eq!(normalised("/a?100%"), Ok(Uri::from_static("/a?100%")));
    }

    #[test]
    fn connect_is_not_allowed() {
        let r = Request::builder()
            .method(Method::CONNECT)
            .uri("a.example:443")
            .header("host", "a.example:443")
            .body(())
            .unwrap();
        assert_eq!(status(check(&r)), 405);
    }
}
