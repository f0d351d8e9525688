//! One try on one backend: the request goes out on a pooled connection or a new
//! one, and the response head comes back within `timeouts.response`. What the try
//! means for the backend's record, and whether another follows, is the tries'
//! business (`proxy::tries`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;

use http::{Request, Response};

use super::http1;
use super::pool::{self, Sender, Transport};
use super::{Backend, BackendState, RequestBody, ResponseBody, UpstreamError};
use crate::config::UpstreamTimeouts;
use crate::http1::request::ReceivedRequest;

/// Sends `request` to `backend` and returns the response head; its body streams
/// afterwards. The backend's in-flight count must have been raised for this
/// request; it is lowered when the try fails or, else, when the response body is
/// done. A request read in place goes with its `received` head, rewritten.
pub(crate) async fn send(
    backend: &Backend,
    transport: &Transport,
    timeouts: &UpstreamTimeouts,
    request: Request<RequestBody>,
    received: Option<&ReceivedRequest>,
    preamble: Option<&[u8]>,
) -> Result<Response<ResponseBody>, Failure> {
    let state = &backend.state;
    // Lowers the in-flight count if no response body takes over that duty.
    let mut guard = InFlightGuard(Some(state));
    let request = if transport.protocol.is_http2() {
        into_http2(request, transport.scheme(), backend.address)
    } else {
        request
    };
    let answer = exchange(backend, request, received, transport, timeouts, preamble).await?;
    guard.0 = None;
    // A connection that began with a client's PROXY header belongs to that
    // client: it is not put back in the pool.
    let pool_to = preamble.is_none().then_some(transport.generation);
    Ok(ResponseBody::new(
        answer,
        state.clone(),
        pool_to,
        timeouts.idle,
    ))
}

/// A backend's answer, by the client that read it.
#[derive(Debug)]
pub(crate) enum Answer {
    Http1(Response<Box<http1::ResponseBody>>),
    Http2(Response<hyper::body::Incoming>),
}

impl Answer {
    pub(crate) fn status(&self) -> http::StatusCode {
        match self {
            Answer::Http1(response) => response.status(),
            Answer::Http2(response) => response.status(),
        }
    }
}

/// How one try ended without a response.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) error: UpstreamError,
    /// The request, when none of it reached the backend: it can go elsewhere as is.
    /// Boxed: results of every try carry this type, and the failure is rare.
    pub(crate) unsent: Option<Box<Request<RequestBody>>>,
}

impl Failure {
    fn sent(error: UpstreamError) -> Self {
        Failure {
            error,
            unsent: None,
        }
    }
}

struct InFlightGuard<'a>(Option<&'a Arc<BackendState>>);

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        if let Some(state) = self.0 {
            state.finish_request();
        }
    }
}

/// One exchange on a pooled connection, or on a new one. A pooled connection may
/// have been closed by the backend while it sat idle; when that shows before the
/// request was written, the request goes out on a fresh connection instead.
async fn exchange(
    backend: &Backend,
    mut request: Request<RequestBody>,
    received: Option<&ReceivedRequest>,
    transport: &Transport,
    timeouts: &UpstreamTimeouts,
    preamble: Option<&[u8]>,
) -> Result<Answer, Failure> {
    // A connection that began with a client's PROXY header belongs to that client:
    // it is neither taken from the pool nor put back.
    if preamble.is_none()
        && let Some(connection) = reuse(backend, transport, timeouts).await
    {
        match send_on(connection, request, received, timeouts).await {
            Ok(answer) => return Ok(answer),
            Err(SendFailure::NotSent(returned)) => request = *returned,
            Err(SendFailure::Failed(error)) => return Err(Failure::sent(error)),
        }
    }
    // Boxed: the connect future is large and rarely awaited with a warm pool, and
    // every future around this one would carry (and copy) its size otherwise.
    let connect = pool::connect(
        backend.address,
        backend.dns_name.as_deref(),
        transport,
        timeouts.connect,
        preamble,
    );
    let connection = match Box::pin(connect).await {
        Ok(connection) => connection,
        Err(error) => {
            return Err(Failure {
                error,
                unsent: Some(Box::new(request)),
            });
        }
    };
    if preamble.is_none()
        && let Some(shared) = connection.share()
    {
        // Other requests to this backend may use it from now on.
        backend.state.pool().put(shared, timeouts.idle);
    }
    match send_on(connection, request, received, timeouts).await {
        Ok(answer) => Ok(answer),
        Err(SendFailure::NotSent(request)) => Err(Failure {
            error: UpstreamError::ClosedBeforeSend,
            unsent: Some(request),
        }),
        Err(SendFailure::Failed(error)) => Err(Failure::sent(error)),
    }
}

/// HTTP/2 carries the target in `:scheme`, `:authority` and `:path`: the
/// origin-form request and its `Host` become an absolute URI (the `Host` header
/// itself is dropped, as RFC 9113 prefers `:authority` alone). Without a `Host`,
/// the backend's address is the authority.
pub(crate) fn into_http2(
    mut request: Request<RequestBody>,
    scheme: http::uri::Scheme,
    backend: SocketAddr,
) -> Request<RequestBody> {
    let host = request.headers_mut().remove(http::header::HOST);
    let authority = host
        .and_then(|host| http::uri::Authority::try_from(host.as_bytes()).ok())
        .or_else(|| request.uri().authority().cloned())
        .or_else(|| http::uri::Authority::try_from(backend.to_string()).ok());
    let mut parts = std::mem::take(request.uri_mut()).into_parts();
    parts.scheme = Some(scheme);
    parts.authority = authority;
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    *request.uri_mut() = http::Uri::from_parts(parts).unwrap_or_default();
    *request.version_mut() = http::Version::HTTP_2;
    request
}

/// A pooled connection that is ready for a new request.
async fn reuse(
    backend: &Backend,
    transport: &Transport,
    timeouts: &UpstreamTimeouts,
) -> Option<pool::Connection> {
    let pool = backend.state.pool();
    while let Some(mut connection) = pool.take(timeouts.idle, transport.generation) {
        // Ready at once unless the previous exchange is still being wound up,
        // which may take no longer than a connect would.
        let ready = std::future::poll_fn(|cx| Poll::Ready(connection.poll_ready(cx))).await;
        let ready = match ready {
            Poll::Ready(ready) => ready.is_ok(),
            Poll::Pending => tokio::time::timeout(timeouts.connect, connection.ready())
                .await
                .is_ok_and(|ready| ready.is_ok()),
        };
        if ready {
            return Some(connection);
        }
    }
    None
}

pub(crate) enum SendFailure {
    /// The connection refused the request before writing any of it. Boxed:
    /// the path is taken only when a pooled connection turns out closed.
    NotSent(Box<Request<RequestBody>>),
    Failed(UpstreamError),
}

/// Sends `request` (with its `received` head, when read in place) on
/// `connection` and waits for the response head within `timeouts.response`:
/// an HTTP/1 connection keeps that timer itself, from one exchange to the
/// next.
pub(crate) async fn send_on(
    connection: pool::Connection,
    request: Request<RequestBody>,
    received: Option<&ReceivedRequest>,
    timeouts: &UpstreamTimeouts,
) -> Result<Answer, SendFailure> {
    match connection.sender {
        Sender::Http1(connection) => connection
            .send(request, received, timeouts.response)
            .await
            .map(Answer::Http1)
            .map_err(|failed| match failed.unsent {
                Some(request) => SendFailure::NotSent(request),
                None => SendFailure::Failed(UpstreamError::from_http1(failed.error)),
            }),
        // A head read in place is made a map before an HTTP/2 try: sent
        // without it, the request would lose its fields.
        Sender::Http2(_) if received.is_some() => Err(SendFailure::Failed(
            UpstreamError::from_http1(http1::ExchangeError::Io(std::io::Error::other(
                "a head read in place reached an HTTP/2 backend",
            ))),
        )),
        Sender::Http2(mut sender) => {
            let sent = sender.try_send_request(request);
            match tokio::time::timeout(timeouts.response, sent).await {
                Err(_elapsed) => Err(SendFailure::Failed(UpstreamError::ResponseTimeout(
                    timeouts.response,
                ))),
                Ok(Ok(response)) => Ok(Answer::Http2(response)),
                Ok(Err(mut err)) => match err.take_message() {
                    Some(request) => Err(SendFailure::NotSent(Box::new(request))),
                    None => Err(SendFailure::Failed(UpstreamError::from_exchange(
                        err.into_error(),
                    ))),
                },
            }
        }
    }
}
