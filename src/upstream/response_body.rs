//! A backend's response body, which hands its connection back to the pool once
//! read to the end.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::backend::BackendState;
use super::exchange::Answer;
use super::http1::{self, Upgraded};
use super::pool::Connection;

/// A backend's response body. While it lives, the request counts as in flight on its
/// backend; once it has been read to the end its connection goes back to the pool.
/// Dropped early (client gone, body broken), the connection is closed instead, as
/// the rest of the response would still be on the wire.
#[derive(Debug)]
pub struct ResponseBody {
    inner: Inner,
    backend: Arc<BackendState>,
    /// The transport generation to pool an HTTP/1.1 connection under; `None`
    /// for a connection that is not pooled (it began with a client's PROXY
    /// header).
    pool_to: Option<u64>,
    idle_timeout: Duration,
    /// Still counted as in flight on `backend` (until a tunnel takes that over).
    in_flight: bool,
}

#[derive(Debug)]
enum Inner {
    /// weir's own HTTP/1.1 client, which holds the connection. Boxed: it
    /// holds the connection, its buffer and the rest of the request, and the
    /// response is moved through every layer of the path.
    Http1(Box<http1::ResponseBody>),
    /// hyper's HTTP/2 client; the connection is shared and stays in the pool.
    Http2(Incoming),
}

/// Why a backend's response body stopped short.
#[derive(Debug, thiserror::Error)]
pub enum ResponseBodyError {
    #[error(transparent)]
    Http1(#[from] http1::BodyError),
    #[error(transparent)]
    Http2(#[from] hyper::Error),
}

/// A request counted as in flight on its backend until dropped: what a tunnel
/// keeps after its 101 response is done.
#[derive(Debug)]
pub struct InFlight(Arc<BackendState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.finish_request();
    }
}

impl ResponseBody {
    /// `backend`'s in-flight count must have been raised for this request; it is
    /// lowered when the body is dropped.
    pub(super) fn new(
        answer: Answer,
        backend: Arc<BackendState>,
        pool_to: Option<u64>,
        idle_timeout: Duration,
    ) -> Response<Self> {
        let (parts, inner) = match answer {
            Answer::Http1(response) => {
                let (parts, body) = response.into_parts();
                (parts, Inner::Http1(body))
            }
            Answer::Http2(response) => {
                let (parts, body) = response.into_parts();
                (parts, Inner::Http2(body))
            }
        };
        Response::from_parts(
            parts,
            ResponseBody {
                inner,
                backend,
                pool_to,
                idle_timeout,
                in_flight: true,
            },
        )
    }

    /// Hands the request's in-flight count over to the caller: a tunnel, which
    /// occupies its backend for as long as it lasts.
    pub fn keep_in_flight(&mut self) -> Option<InFlight> {
        std::mem::take(&mut self.in_flight).then(|| InFlight(self.backend.clone()))
    }

    /// The head weir's HTTP/1 client kept as the backend sent it: then the
    /// response's `HeaderMap` holds only what weir added since. Taken once.
    pub fn take_received_head(&mut self) -> Option<http1::ReceivedHead> {
        match &mut self.inner {
            Inner::Http1(body) => body.take_received_head(),
            Inner::Http2(_) => None,
        }
    }

    /// After a 101 answer: the backend's side of the tunnel.
    pub fn upgraded(&mut self) -> Option<Upgraded> {
        match &mut self.inner {
            Inner::Http1(body) => body.upgraded(),
            Inner::Http2(_) => None,
        }
    }

    /// Pools the connection if its exchange is complete both ways (a request
    /// body still being written after an early answer would hold up the next
    /// request); else it is closed with the body.
    fn release(&mut self) {
        if let (Inner::Http1(body), Some(generation)) = (&mut self.inner, self.pool_to)
            && let Some(connection) = body.take_connection()
        {
            self.backend
                .pool()
                .put(Connection::http1(connection, generation), self.idle_timeout);
        }
    }

    /// Reads the whole body into memory (tests and small internal uses only).
    pub async fn collect_bytes(self) -> Result<Bytes, ResponseBodyError> {
        Ok(self.collect().await?.to_bytes())
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = ResponseBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ResponseBodyError>>> {
        let this = self.get_mut();
        let frame = match &mut this.inner {
            Inner::Http1(body) => Pin::new(body.as_mut()).poll_frame(cx).map_err(Into::into),
            Inner::Http2(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
        };
        if let Poll::Ready(None) = frame {
            this.release();
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Http1(body) => body.is_end_stream(),
            Inner::Http2(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Http1(body) => body.size_hint(),
            Inner::Http2(body) => body.size_hint(),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // A body that was never polled because it is empty (HEAD, 204, 304) is
        // complete all the same.
        if self.is_end_stream() {
            self.release();
        }
        if self.in_flight {
            self.backend.finish_request();
        }
    }
}
