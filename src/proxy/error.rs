//! Every way a request can end without a backend's response, and the one mapping
//! from those to the status and short body the client gets.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};

use super::body::ProxyBody;

use crate::upstream::UpstreamError;

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
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::NoBackend => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Upstream(err) => {
                StatusCode::from_u16(err.status_code()).unwrap_or(StatusCode::BAD_GATEWAY)
            }
        }
    }

    /// The plain-text body: the status and a few words, never internal details.
    pub fn body(&self) -> &'static str {
        if let ProxyError::Upstream(UpstreamError::AtCapacity) = self {
            return "503 every backend is at its connection limit\n";
        }
        match self.status() {
            StatusCode::BAD_REQUEST => "400 bad request\n",
            StatusCode::REQUEST_TIMEOUT => "408 request body too slow\n",
            StatusCode::METHOD_NOT_ALLOWED => "405 method not allowed\n",
            StatusCode::NOT_FOUND => "404 no route matches\n",
            StatusCode::SERVICE_UNAVAILABLE => "503 no healthy backend\n",
            StatusCode::GATEWAY_TIMEOUT => "504 backend too slow\n",
            _ => "502 backend failed\n",
        }
    }

    /// The gRPC status code for a gRPC client, after the gRPC project's HTTP
    /// mapping, with two refinements: a try that never reached a backend is
    /// UNAVAILABLE (safe for the client to retry), and weir's own timeouts are
    /// DEADLINE_EXCEEDED.
    pub fn grpc_status(&self) -> u8 {
        const UNKNOWN: u8 = 2;
        const DEADLINE_EXCEEDED: u8 = 4;
        const UNIMPLEMENTED: u8 = 12;
        const INTERNAL: u8 = 13;
        const UNAVAILABLE: u8 = 14;
        if let ProxyError::Upstream(err) = self
            && err.nothing_sent()
        {
            return UNAVAILABLE;
        }
        match self.status() {
            StatusCode::BAD_REQUEST => INTERNAL,
            StatusCode::NOT_FOUND => UNIMPLEMENTED,
            StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE => UNAVAILABLE,
            StatusCode::GATEWAY_TIMEOUT => DEADLINE_EXCEEDED,
            _ => UNKNOWN,
        }
    }

    /// A "trailers-only" gRPC answer: status 200 and the gRPC status in the
    /// headers, no body, as gRPC clients expect from a proxy.
    pub fn grpc_response(&self) -> Response<ProxyBody> {
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
        matches!(
            self,
            ProxyError::BadRequest(_)
                | ProxyError::MethodNotAllowed(_)
                | ProxyError::Upstream(UpstreamError::ClientBody(_))
        )
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
