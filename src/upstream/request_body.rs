//! The body sent to a backend, the client's body it streams from (with its stall
//! timeout), and the error that marks a failure as the client's.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::{Instant, Sleep};

/// The body sent to a backend. An enum, not a boxed trait object: no allocation
/// per request, and room for a replay buffer when retries need one.
#[derive(Debug)]
pub enum RequestBody {
    Empty,
    /// A body read whole beforehand, kept so a retry can send it again; `None`
    /// once sent.
    Full(Option<Bytes>),
    /// The client's body, streamed as it arrives. Boxed: most requests have no
    /// body, and every layer of the request path moves the request, whose size
    /// is that of its largest variant.
    Streaming(Box<ClientBody>),
}

/// A cause of any kind, kept for the logs.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The client's request body broke, or stalled: marks the fault as the client's,
/// so it is answered 400 (or 408), not 502.
#[derive(Debug, thiserror::Error)]
pub enum ClientBodyError {
    /// A bad chunk, an early close.
    #[error("client request body: {0}")]
    Broken(#[source] BoxError),
    /// No byte of it came for `body_timeout` while weir waited for one.
    #[error("client request body stalled for {0:?} (body_timeout)")]
    Stalled(Duration),
}

/// A client's request body as its server side reads it: hyper's for HTTP/2,
/// weir's own HTTP/1 reader (boxed: it owns the connection's read side, a type
/// of the listener's), or none at all.
pub enum ClientStream {
    Empty,
    Http2(Incoming),
    Http1(Pin<Box<dyn Body<Data = Bytes, Error = BoxError> + Send + Sync>>),
}

impl std::fmt::Debug for ClientStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientStream::Empty => f.write_str("Empty"),
            ClientStream::Http2(incoming) => incoming.fmt(f),
            ClientStream::Http1(_) => f.write_str("Http1"),
        }
    }
}

impl Body for ClientStream {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ClientStream::Empty => Poll::Ready(None),
            ClientStream::Http2(incoming) => Pin::new(incoming)
                .poll_frame(cx)
                .map_err(|error| Box::new(error) as BoxError),
            ClientStream::Http1(body) => body.as_mut().poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientStream::Empty => true,
            ClientStream::Http2(incoming) => incoming.is_end_stream(),
            ClientStream::Http1(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientStream::Empty => SizeHint::with_exact(0),
            ClientStream::Http2(incoming) => incoming.size_hint(),
            ClientStream::Http1(body) => body.size_hint(),
        }
    }
}

/// A client's request body, which fails once the client has sent nothing for
/// `body_timeout` while it is waited on. Time the backend takes to accept what
/// was read (its flow control) does not count: the clock runs only while a read
/// is pending.
#[derive(Debug)]
pub struct ClientBody {
    incoming: ClientStream,
    timeout: Duration,
    /// Armed when a read finds nothing, made on the first such read (most
    /// bodies arrive with their head).
    stall: Option<Pin<Box<Sleep>>>,
    /// A read is pending: `stall` runs for it.
    waiting: bool,
}

impl ClientBody {
    pub fn new(incoming: ClientStream, timeout: Duration) -> Self {
        ClientBody {
            incoming,
            timeout,
            stall: None,
            waiting: false,
        }
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.incoming).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.waiting = false;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(ClientBodyError::Broken(err)))),
            Poll::Pending => {
                if !this.waiting {
                    this.waiting = true;
                    let due = Instant::now() + this.timeout;
                    match &mut this.stall {
                        Some(stall) => stall.as_mut().reset(due),
                        None => this.stall = Some(Box::pin(tokio::time::sleep_until(due))),
                    }
                }
                let stall = this.stall.as_mut().expect("armed above");
                ready!(stall.as_mut().poll(cx));
                Poll::Ready(Some(Err(ClientBodyError::Stalled(this.timeout))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        match self.get_mut() {
            RequestBody::Empty => Poll::Ready(None),
            RequestBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            RequestBody::Streaming(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Empty | RequestBody::Full(None) => true,
            RequestBody::Full(Some(_)) => false,
            RequestBody::Streaming(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Empty | RequestBody::Full(None) => SizeHint::with_exact(0),
            RequestBody::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            RequestBody::Streaming(body) => body.size_hint(),
        }
    }
}
