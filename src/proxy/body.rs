//! The response body weir sends to clients: a backend's streamed body or a short
//! local answer, carrying the connection's request guard until it is done.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use crate::access_log;
use crate::cache::CacheBody;
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
    /// Index of the listener in [`Snapshot::requests`] (none for a listener a
    /// reload removed).
    pub slot: Option<usize>,
    pub upstream: Option<usize>,
    pub started: Instant,
    /// Response body bytes sent so far.
    pub bytes: u64,
    /// The access log line to complete and write, when the log is on.
    pub log: Option<Box<access_log::Entry>>,
}

impl Drop for Finish {
    fn drop(&mut self) {
        let duration = self.started.elapsed();
        if let Some(slot) = self.slot {
            let metrics = &self.snapshot.requests[slot];
            let histogram = match self.upstream {
                Some(upstream) => &metrics.duration_by_upstream[upstream],
                None => &metrics.unrouted_duration,
            };
            histogram.observe(duration.as_secs_f64());
        }
        if let (Some(mut entry), Some(log)) = (self.log.take(), &self.snapshot.access_log) {
            entry.bytes = self.bytes;
            entry.duration = duration;
            log.record(&entry);
        }
    }
}

#[derive(Debug)]
enum Kind {
    Upstream(ResponseBody),
    Cache(CacheBody),
    Local(Option<Bytes>),
}

/// A response body relayed to the client: a backend's, or the cache's.
#[derive(Debug)]
pub(crate) enum Relayed {
    Upstream(ResponseBody),
    Cache(CacheBody),
}

/// Why a relayed body stopped short: the client's connection is then ended
/// without the body's end, so the response never looks whole.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

impl ProxyBody {
    pub(super) fn upstream(body: Relayed, request: RequestGuard) -> Self {
        ProxyBody {
            kind: match body {
                Relayed::Upstream(body) => Kind::Upstream(body),
                Relayed::Cache(body) => Kind::Cache(body),
            },
            _request: Some(request),
            _finish: None,
        }
    }

    /// The backend's response head as it came, when weir's HTTP/1 client
    /// kept it so: the response's `HeaderMap` then holds only what weir added
    /// (see `forward::take_received_fields`). Taken once.
    pub fn take_received_head(&mut self) -> Option<crate::upstream::http1::ReceivedHead> {
        match &mut self.kind {
            Kind::Upstream(body) => body.take_received_head(),
            Kind::Cache(_) | Kind::Local(_) => None,
        }
    }

    /// Records the request's end through `finish` when this body is done.
    pub fn finish_with(&mut self, finish: Finish) {
        self._finish = Some(finish);
    }

    pub fn local(text: &'static str) -> Self {
        ProxyBody {
            // An empty text is no body at all: HTTP/2 then ends the stream with
            // the headers (what a gRPC "trailers-only" answer needs).
            kind: Kind::Local((!text.is_empty()).then(|| Bytes::from_static(text.as_bytes()))),
            _request: None,
            _finish: None,
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let frame = match &mut this.kind {
            Kind::Upstream(body) => Pin::new(body).poll_frame(cx).map_err(BodyError::from),
            Kind::Cache(body) => Pin::new(body).poll_frame(cx).map_err(BodyError::from),
            Kind::Local(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        };
        if let (Some(finish), Poll::Ready(Some(Ok(frame)))) = (&mut this._finish, &frame)
            && let Some(data) = frame.data_ref()
        {
            finish.bytes += data.len() as u64;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Upstream(body) => body.is_end_stream(),
            Kind::Cache(body) => body.is_end_stream(),
            Kind::Local(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Upstream(body) => body.size_hint(),
            Kind::Cache(body) => body.size_hint(),
            Kind::Local(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}
