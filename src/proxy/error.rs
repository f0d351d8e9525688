//! Every way a request can end without a backend's response, and the one mapping
//! from those to the status and short body the client gets.

use http::StatusCode;

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
            StatusCode::METHOD_NOT_ALLOWED => "405 method not allowed\n",
            StatusCode::NOT_FOUND => "404 no route matches\n",
            StatusCode::SERVICE_UNAVAILABLE => "503 no healthy backend\n",
            StatusCode::GATEWAY_TIMEOUT => "504 backend too slow\n",
            _ => "502 backend failed\n",
        }
    }

    /// A client that sent a malformed request may be out of step with the framing:
    /// its connection is closed after the answer.
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            ProxyError::BadRequest(_) | ProxyError::MethodNotAllowed(_)
        )
    }
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
}
