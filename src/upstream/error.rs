//! What went wrong on the way to a backend, said by the layer that saw it: what
//! happened, where it came from ([`Origin`]), and whether the request may go again
//! ([`Retry`]). What the client is told is decided once, in the proxy's table.

use std::time::Duration;

use super::http1::ExchangeError;
use super::request_body::{BoxError, ClientBodyError};

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
    /// The connection broke after the request was handed to it: reset, closed
    /// before a complete response head, or the exchange was cut short.
    #[error("connection lost after the request was sent: {0}")]
    Reset(#[source] BoxError),
    /// The backend's response head could not be read: malformed or too large.
    #[error("unreadable response: {0}")]
    BadResponse(#[source] BoxError),
    /// The backend answered 101 to a request that asked for no protocol switch.
    #[error("backend switched protocols without being asked")]
    UnaskedUpgrade,
    /// No response head within `timeouts.response`.
    #[error("no response within {0:?}")]
    ResponseTimeout(Duration),
    /// The client's request body broke or stalled (before or while it was
    /// forwarded); the backend saw an incomplete request, if any.
    #[error("{0}")]
    ClientBody(#[source] ClientBodyError),
    /// Every usable backend had `max_connections_per_backend` requests in flight
    /// (for `queue_timeout`, when set). Nothing was sent.
    #[error("every backend is at max_connections_per_backend")]
    AtCapacity,
    /// No response head within `timeouts.request`, over all tries.
    #[error("no response within the request deadline of {0:?}")]
    RequestTimeout(Duration),
}

/// Where a failure came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The backend, or the way to it: counts against the backend's record.
    Backend,
    /// The client, whose request body broke or stalled: says nothing of the
    /// backend, and the client's connection may be out of step.
    Client,
    /// One of weir's own limits over all tries (capacity, the request deadline).
    Limit,
}

/// Whether the request may be tried again after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// None of the request reached a backend: it may go again whatever its method.
    Unsent,
    /// The backend may have acted on the request: only a replayable one (an
    /// idempotent method with its body kept) may go again.
    IfReplayable,
    /// Not tried again.
    Never,
}

impl UpstreamError {
    pub fn origin(&self) -> Origin {
        match self {
            UpstreamError::ClientBody(_) => Origin::Client,
            UpstreamError::AtCapacity | UpstreamError::RequestTimeout(_) => Origin::Limit,
            UpstreamError::Connect(_)
            | UpstreamError::Tls(_)
            | UpstreamError::ConnectTimeout(_)
            | UpstreamError::Handshake(_)
            | UpstreamError::ClosedBeforeSend
            | UpstreamError::Reset(_)
            | UpstreamError::BadResponse(_)
            | UpstreamError::UnaskedUpgrade
            | UpstreamError::ResponseTimeout(_) => Origin::Backend,
        }
    }

    pub fn retry(&self) -> Retry {
        match self {
            UpstreamError::Connect(_)
            | UpstreamError::Tls(_)
            | UpstreamError::ConnectTimeout(_)
            | UpstreamError::Handshake(_)
            | UpstreamError::ClosedBeforeSend => Retry::Unsent,
            UpstreamError::Reset(_)
            | UpstreamError::BadResponse(_)
            | UpstreamError::ResponseTimeout(_) => Retry::IfReplayable,
            // A switch nobody asked for is the backend's design, not a glitch; the
            // client's body and weir's limits stay broken on any backend.
            UpstreamError::UnaskedUpgrade
            | UpstreamError::ClientBody(_)
            | UpstreamError::AtCapacity
            | UpstreamError::RequestTimeout(_) => Retry::Never,
        }
    }

    /// Classifies a failed exchange: the client's body breaking is the client's
    /// fault; else an unreadable head or a lost connection.
    pub(super) fn from_exchange(err: hyper::Error) -> Self {
        let client_body = std::error::Error::source(&err)
            .and_then(|source| source.downcast_ref::<ClientBodyError>());
        match client_body {
            Some(ClientBodyError::Stalled(timeout)) => {
                UpstreamError::ClientBody(ClientBodyError::Stalled(*timeout))
            }
            // hyper keeps the cause boxed; rebuild ours around the same text.
            Some(ClientBodyError::Broken(_)) => {
                UpstreamError::ClientBody(ClientBodyError::Broken(err.into()))
            }
            None if err.is_parse() => UpstreamError::BadResponse(err.into()),
            None => UpstreamError::Reset(err.into()),
        }
    }

    /// Classifies a failed exchange of weir's HTTP/1 client.
    pub(super) fn from_http1(err: ExchangeError) -> Self {
        match err {
            ExchangeError::ClientBody(body) => UpstreamError::ClientBody(body),
            ExchangeError::BodyLength => {
                UpstreamError::ClientBody(ClientBodyError::Broken(err.into()))
            }
            ExchangeError::BadHead(_) => UpstreamError::BadResponse(err.into()),
            ExchangeError::Io(_) | ExchangeError::Closed => UpstreamError::Reset(err.into()),
            ExchangeError::TimedOut(limit) => UpstreamError::ResponseTimeout(limit),
        }
    }
}
