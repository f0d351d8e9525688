//! What can go wrong talking to a backend, with where it went wrong: the proxy maps
//! it to a status, and the retry policy reads whether the request was sent.

use std::time::Duration;

use super::request_body::ClientBodyError;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The TCP connect failed (refused, unreachable, reset). Nothing was sent.
    #[error("connect failed: {0}")]
    Connect(#[source] std::io::Error),
    /// The TLS handshake with the backend failed (certificate, name, protocol).
    /// Nothing was sent.
    #[error("TLS handshake failed: {0}")]
    Tls(#[source] std::io::Error),
    /// The TCP connect took longer than `timeouts.connect`. Nothing was sent.
    #[error("connect timed out after {0:?}")]
    ConnectTimeout(Duration),
    /// The connection opened but could not be set up for HTTP. Nothing was sent.
    #[error("connection setup failed: {0}")]
    Handshake(#[source] hyper::Error),
    /// A new connection closed before the request could be written.
    #[error("backend closed the connection before the request was sent")]
    ClosedBeforeSend,
    /// The exchange failed after the request was handed to the connection: reset,
    /// closed early, or an unparsable (or too large) response head.
    #[error("request failed: {0}")]
    Exchange(#[source] hyper::Error),
    /// The client's request body broke or stalled (before or while it was
    /// forwarded); the backend saw an incomplete request, if any.
    #[error("{0}")]
    ClientBody(#[source] ClientBodyError),
    /// The backend answered 101 to a request that asked for no protocol switch.
    #[error("backend switched protocols without being asked")]
    UnaskedUpgrade,
    /// No response head within `timeouts.response`.
    #[error("no response within {0:?}")]
    ResponseTimeout(Duration),
    /// Every usable backend had `max_connections_per_backend` requests in flight
    /// (for `queue_timeout`, when set). Nothing was sent.
    #[error("every backend is at max_connections_per_backend")]
    AtCapacity,
    /// No response head within `timeouts.request`, over all tries.
    #[error("no response within the request deadline of {0:?}")]
    RequestTimeout(Duration),
}

impl UpstreamError {
    /// True when a timeout, not a refusal or a broken exchange, ended the try.
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            UpstreamError::ConnectTimeout(_)
                | UpstreamError::ResponseTimeout(_)
                | UpstreamError::RequestTimeout(_)
        )
    }

    /// The status a client gets for this failure when no retry is left (the one
    /// mapping; the proxy's error type defers to it).
    pub fn status_code(&self) -> u16 {
        match self {
            UpstreamError::ClientBody(ClientBodyError::Stalled(_)) => 408,
            UpstreamError::ClientBody(ClientBodyError::Broken(_)) => 400,
            UpstreamError::AtCapacity => 503,
            err if err.is_timeout() => 504,
            _ => 502,
        }
    }

    /// True when the request never reached the backend, so sending it elsewhere is
    /// safe whatever its method.
    pub fn nothing_sent(&self) -> bool {
        matches!(
            self,
            UpstreamError::Connect(_)
                | UpstreamError::Tls(_)
                | UpstreamError::ConnectTimeout(_)
                | UpstreamError::Handshake(_)
                | UpstreamError::ClosedBeforeSend
        )
    }
}

impl UpstreamError {
    /// Classifies a failed exchange: the client's body breaking is the client's
    /// fault, anything else the backend's.
    pub(super) fn from_exchange(err: hyper::Error) -> Self {
        let client_body = std::error::Error::source(&err)
            .and_then(|source| source.downcast_ref::<ClientBodyError>());
        match client_body {
            Some(ClientBodyError::Stalled(timeout)) => {
                UpstreamError::ClientBody(ClientBodyError::Stalled(*timeout))
            }
            // hyper keeps the cause boxed; rebuild ours around the same text.
            Some(ClientBodyError::Broken(_)) => {
                UpstreamError::ClientBody(ClientBodyError::Broken(err))
            }
            None => UpstreamError::Exchange(err),
        }
    }
}
