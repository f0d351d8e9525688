//! Every way a request can end without a backend's response, and the one mapping
//! from those to the status and short body the client gets.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};

use super::body::ProxyBody;

use crate::upstream::{ClientBodyError, Origin, UpstreamError};

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The request is malformed or ambiguous; it is never forwarded.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("method not allowed: {0}")]
    MethodNotAllowed(&'static str),
    #[error("no route matches")]
    NoRoute,
    #[error("no healthy backend in upstream")]
    NoBackend,
    /// A rate-limit policy of the route refused the request.
    #[error("rate limited")]
    RateLimited,
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
}

/// What a client is told when its request ends without a backend's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Answer {
    /// The HTTP status; also the `code` label of the request metrics and the
    /// access log's status, gRPC or not.
    status: StatusCode,
    /// The plain-text body: the status and a few words, never internal details.
    text: &'static str,
    /// The gRPC status a gRPC client gets instead (in a 200 "trailers-only"
    /// answer).
    grpc: u8,
}

// gRPC status codes, after the gRPC project's HTTP mapping, with two refinements:
// a try that never reached a backend is UNAVAILABLE (safe for the client to retry),
// and weir's own timeouts are DEADLINE_EXCEEDED.
const UNKNOWN: u8 = 2;
const DEADLINE_EXCEEDED: u8 = 4;
const UNIMPLEMENTED: u8 = 12;
const INTERNAL: u8 = 13;
const UNAVAILABLE: u8 = 14;

const BAD_REQUEST: Answer = Answer {
    status: StatusCode::BAD_REQUEST,
    text: "400 bad request\n",
    grpc: INTERNAL,
};
const BACKEND_FAILED: Answer = Answer {
    status: StatusCode::BAD_GATEWAY,
    text: "502 backend failed\n",
    grpc: UNAVAILABLE,
};
const BACKEND_TOO_SLOW: Answer = Answer {
    status: StatusCode::GATEWAY_TIMEOUT,
    text: "504 backend too slow\n",
    grpc: DEADLINE_EXCEEDED,
};

/// The one table: every way a request can end without a backend's answer, and
/// what the client gets for it.
fn answer(err: &ProxyError) -> Answer {
    match err {
        ProxyError::BadRequest(_) => BAD_REQUEST,
        ProxyError::MethodNotAllowed(_) => Answer {
            status: StatusCode::METHOD_NOT_ALLOWED,
            text: "405 method not allowed\n",
            grpc: UNKNOWN,
        },
        ProxyError::NoRoute => Answer {
            status: StatusCode::NOT_FOUND,
            text: "404 no route matches\n",
            grpc: UNIMPLEMENTED,
        },
        ProxyError::NoBackend => Answer {
            status: StatusCode::SERVICE_UNAVAILABLE,
            text: "503 no healthy backend\n",
            grpc: UNAVAILABLE,
        },
        // UNAVAILABLE, as the gRPC project maps 429 (and as Envoy answers):
        // the client may try again after backing off.
        ProxyError::RateLimited => Answer {
            status: StatusCode::TOO_MANY_REQUESTS,
            text: "429 too many requests\n",
            grpc: UNAVAILABLE,
        },
        ProxyError::Upstream(err) => upstream_answer(err),
    }
}

/// The table's rows for failures on the way to a backend.
fn upstream_answer(err: &UpstreamError) -> Answer {
    match err {
        UpstreamError::Connect(_)
        | UpstreamError::Tls(_)
        | UpstreamError::Handshake(_)
        | UpstreamError::ClosedBeforeSend
        | UpstreamError::Reset(_)
        | UpstreamError::BadResponse(_)
        | UpstreamError::UnaskedUpgrade => BACKEND_FAILED,
        // Nothing was sent: the gRPC client may safely try again.
        UpstreamError::ConnectTimeout(_) => Answer {
            grpc: UNAVAILABLE,
            ..BACKEND_TOO_SLOW
        },
        UpstreamError::ResponseTimeout(_) | UpstreamError::RequestTimeout(_) => BACKEND_TOO_SLOW,
        UpstreamError::AtCapacity => Answer {
            status: StatusCode::SERVICE_UNAVAILABLE,
            text: "503 every backend is at its connection limit\n",
            grpc: UNAVAILABLE,
        },
        UpstreamError::ClientBody(ClientBodyError::Stalled(_)) => Answer {
            status: StatusCode::REQUEST_TIMEOUT,
            text: "408 request body too slow\n",
            grpc: UNKNOWN,
        },
        UpstreamError::ClientBody(ClientBodyError::Broken(_)) => BAD_REQUEST,
    }
}

/// The status a failed try stands for, by the one table: what a backend's
/// metrics count it as.
pub(super) fn upstream_status(err: &UpstreamError) -> StatusCode {
    upstream_answer(err).status
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        answer(self).status
    }

    /// The plain-text body: the status and a few words, never internal details.
    pub fn body(&self) -> &'static str {
        answer(self).text
    }

    /// The gRPC status code for a gRPC client.
    pub fn grpc_status(&self) -> u8 {
        answer(self).grpc
    }

    /// The answer a client gets: for a gRPC client a gRPC one, else plain text.
    pub fn response(&self, grpc: bool) -> Response<ProxyBody> {
        if grpc {
            return self.grpc_response();
        }
        let mut response = Response::new(ProxyBody::local(self.body()));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if self.closes_connection() {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }

    /// A "trailers-only" gRPC answer: status 200 and the gRPC status in the
    /// headers, no body, as gRPC clients expect from a proxy.
    fn grpc_response(&self) -> Response<ProxyBody> {
        let mut response = Response::new(ProxyBody::local(""));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert(
            "grpc-status",
            HeaderValue::from(u16::from(self.grpc_status())),
        );
        // The body's words, which are plain ASCII and need no percent-encoding.
        let message = self.body().trim_end();
        if let Ok(message) = HeaderValue::from_str(message) {
            headers.insert("grpc-message", message);
        }
        if self.closes_connection() {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }

    /// A client that sent a malformed request, or whose body broke or stalled,
    /// may be out of step with the framing: its connection is closed after the
    /// answer.
    pub fn closes_connection(&self) -> bool {
        match self {
            ProxyError::BadRequest(_) | ProxyError::MethodNotAllowed(_) => true,
            ProxyError::NoRoute | ProxyError::NoBackend | ProxyError::RateLimited => false,
            ProxyError::Upstream(err) => err.origin() == Origin::Client,
        }
    }
}

/// A gRPC request: its content type is `application/grpc` or a `+proto`-like
/// variant of it.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn each_error_has_its_status() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let cases = [
            (ProxyError::BadRequest("x"), 400),
            (ProxyError::MethodNotAllowed("x"), 405),
            (ProxyError::NoRoute, 404),
            (ProxyError::NoBackend, 503),
            (UpstreamError::AtCapacity.into(), 503),
            (UpstreamError::Connect(refused).into(), 502),
            (UpstreamError::ClosedBeforeSend.into(), 502),
            (
                UpstreamError::ConnectTimeout(Duration::from_secs(1)).into(),
                504,
            ),
            (
                UpstreamError::ResponseTimeout(Duration::from_secs(1)).into(),
                504,
            ),
        ];
        for (err, status) in cases {
            assert_eq!(err.status().as_u16(), status, "{err:?}");
            assert!(err.body().starts_with(&status.to_string()), "{err:?}");
        }
    }

    #[test]
    fn only_malformed_requests_close_the_connection() {
        assert!(ProxyError::BadRequest("x").closes_connection());
        assert!(!ProxyError::NoRoute.closes_connection());
        assert!(!ProxyError::NoBackend.closes_connection());
    }

    #[test]
    fn grpc_clients_get_a_grpc_status() {
        let timeout = UpstreamError::ResponseTimeout(Duration::from_secs(1));
        for (err, grpc_status) in [
            (ProxyError::NoRoute, 12),
            (ProxyError::NoBackend, 14),
            (UpstreamError::ClosedBeforeSend.into(), 14),
            (timeout.into(), 4),
            (
                UpstreamError::ConnectTimeout(Duration::from_secs(1)).into(),
                14,
            ),
            (ProxyError::BadRequest("x"), 13),
            (ProxyError::MethodNotAllowed("x"), 2),
        ] {
            let response = err.grpc_response();
            assert_eq!(response.status(), StatusCode::OK);
            let headers = response.headers();
            assert_eq!(headers["content-type"], "application/grpc");
            assert_eq!(
                headers["grpc-status"],
                grpc_status.to_string().as_str(),
                "{err}"
            );
            assert!(headers.contains_key("grpc-message"));
        }
    }

    #[test]
    fn grpc_requests_are_told_by_their_content_type() {
        let mut headers = HeaderMap::new();
        assert!(!is_grpc(&headers));
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc+proto"),
        );
        assert!(is_grpc(&headers));
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        assert!(!is_grpc(&headers));
    }
}
