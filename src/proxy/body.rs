//! The response body weir sends to clients: a backend's streamed body or a short
//! local answer, carrying the connection's request guard until it is done.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use crate::snapshot::Snapshot;
use crate::upstream::ResponseBody;

use super::RequestGuard;

#[derive(Debug)]
pub struct ProxyBody {
    kind: Kind,
    /// Keeps the request counted as in flight on its client connection until the
    /// response has been written (or abandoned), so idle timeouts leave it alone.
    _request: Option<RequestGuard>,
    /// Records the request's duration when the body is done or dropped.
    _finish: Option<Finish>,
}

/// The end of a request: when the response body is done (or abandoned), its
/// duration goes into the histogram of its listener and upstream.
#[derive(Debug)]
pub struct Finish {
    /// Kept to the end: the histograms of the config the request started with.
    pub snapshot: Arc<Snapshot>,
    /// Index of the listener in [`Snapshot::requests`].
    pub slot: usize,
    pub upstream: Option<usize>,
    pub started: Instant,
}

impl Drop for Finish {
    fn drop(&mut self) {
        let metrics = &self.snapshot.requests[self.slot];
        let histogram = match self.upstream {
            Some(upstream) => &metrics.duration_by_upstream[upstream],
            None => &metrics.unrouted_duration,
        };
        histogram.observe(self.started.elapsed().as_secs_f64());
    }
}

#[derive(Debug)]
enum Kind {
    Upstream(ResponseBody),
    Local(Option<Bytes>),
}

impl ProxyBody {
    pub(super) fn upstream(body: ResponseBody, request: RequestGuard) -> Self {
        ProxyBody {
            kind: Kind::Upstream(body),
            _request: Some(request),
            _finish: None,
        }
    }

    /// Records the request's end through `finish` when this body is done.
    pub fn finish_with(&mut self, finish: Finish) {
        self._finish = Some(finish);
    }

    pub fn local(text: &'static str) -> Self {
        ProxyBody {
            kind: Kind::Local(Some(Bytes::from_static(text.as_bytes()))),
            _request: None,
            _finish: None,
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match &mut self.get_mut().kind {
            Kind::Upstream(body) => Pin::new(body).poll_frame(cx),
            Kind::Local(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Upstream(body) => body.is_end_stream(),
            Kind::Local(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Upstream(body) => body.size_hint(),
            Kind::Local(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}
