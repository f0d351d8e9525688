//! A backend's response body, which hands its connection back to the pool once
//! read to the end.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::backend::BackendState;
use super::pool::Connection;

/// A backend's response body. While it lives, the request counts as in flight on its
/// backend; once it has been read to the end its connection goes back to the pool.
/// Dropped early (client gone, body broken), the connection is closed instead, as
/// the rest of the response would still be on the wire.
#[derive(Debug)]
pub struct ResponseBody {
    inner: Incoming,
    backend: Arc<BackendState>,
    /// The connection, with the flag its request body sets once sent whole
    /// (none when it was whole from the start).
    connection: Option<(Connection, Option<Arc<AtomicBool>>)>,
    idle_timeout: Duration,
    /// Still counted as in flight on `backend` (until a tunnel takes that over).
    in_flight: bool,
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
        inner: Incoming,
        backend: Arc<BackendState>,
        connection: Option<(Connection, Option<Arc<AtomicBool>>)>,
        idle_timeout: Duration,
    ) -> Self {
        ResponseBody {
            inner,
            backend,
            connection,
            idle_timeout,
            in_flight: true,
        }
    }

    /// Hands the request's in-flight count over to the caller: a tunnel, which
    /// occupies its backend for as long as it lasts.
    pub fn keep_in_flight(&mut self) -> Option<InFlight> {
        std::mem::take(&mut self.in_flight).then(|| InFlight(self.backend.clone()))
    }

    /// Pools the connection if its request went out whole too. Else the request
    /// body is still being written after an early answer: the connection is
    /// ended, which drops that body, and the client's connection is closed
    /// after its response rather than waiting on a backend that may never read.
    fn release(&mut self) {
        if let Some((connection, request_sent)) = self.connection.take() {
            if request_sent.is_none_or(|sent| sent.load(Ordering::Acquire)) {
                self.backend.pool().put(connection, self.idle_timeout);
            } else {
                connection.abandon();
            }
        }
    }

    /// Reads the whole body into memory (tests and small internal uses only).
    pub async fn collect_bytes(self) -> Result<Bytes, hyper::Error> {
        Ok(self.collect().await?.to_bytes())
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let frame = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(None) = frame {
            this.release();
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // A body that was never polled because it is empty (HEAD, 204, 304) is
        // complete all the same.
        if self.inner.is_end_stream() {
            self.release();
        }
        if self.in_flight {
            self.backend.finish_request();
        }
    }
}
