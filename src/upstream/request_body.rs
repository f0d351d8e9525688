//! The body sent to a backend, and the error that marks its failure as the
//! client's.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

/// The body sent to a backend. An enum, not a boxed trait object: no allocation
/// per request, and room for a replay buffer when retries need one.
#[derive(Debug)]
pub enum RequestBody {
    Empty,
    /// A body read whole beforehand, kept so a retry can send it again; `None`
    /// once sent.
    Full(Option<Bytes>),
    /// The client's body, streamed as it arrives.
    Streaming(Incoming),
}

/// The client's request body broke (bad chunk, early close): marks the fault as the
/// client's, so it is answered 400, not 502.
#[derive(Debug, thiserror::Error)]
#[error("client request body: {0}")]
pub struct ClientBodyError(#[source] pub hyper::Error);

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
            RequestBody::Streaming(incoming) => {
                Pin::new(incoming).poll_frame(cx).map_err(ClientBodyError)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Empty | RequestBody::Full(None) => true,
            RequestBody::Full(Some(_)) => false,
            RequestBody::Streaming(incoming) => incoming.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Empty | RequestBody::Full(None) => SizeHint::with_exact(0),
            RequestBody::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            RequestBody::Streaming(incoming) => incoming.size_hint(),
        }
    }
}
