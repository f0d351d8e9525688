//! weir's HTTP/1.1 client on one backend connection, driven by the request's
//! own task: no connection task, no channel between the request and its
//! connection. The request head is encoded from the request's parts, the
//! response head parsed in place by weir's codec (`crate::http1`), and the
//! response body read straight from the connection's buffer, while the rest
//! of the request body still goes out (a backend may answer before it has
//! read the whole request, and stream its answer as it reads).

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap};
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

use super::request_body::{ClientBodyError, RequestBody};
use crate::http1::body::chunk_size_line;
use crate::http1::chunked::{ChunkError, ChunkedScanner};
use crate::http1::head::{self, Field, Framing, HeadError, Method, ResponseHead};
use crate::http1::request::ReceivedRequest;

/// Largest backend response head; a larger one is a 502.
pub const MAX_RESPONSE_HEAD_BYTES: usize = 64 * 1024;

/// What a read asks room for: a response head and a good part of a body.
const READ_SIZE: usize = 16 * 1024;

/// The stream under a backend connection: plain TCP or TLS.
#[derive(Debug)]
pub enum BackendIo {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for BackendIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendIo::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            BackendIo::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for BackendIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            BackendIo::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            BackendIo::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            BackendIo::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            BackendIo::Tls(stream) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            BackendIo::Plain(stream) => stream.is_write_vectored(),
            BackendIo::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendIo::Plain(stream) => Pin::new(stream).poll_flush(cx),
            BackendIo::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendIo::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            BackendIo::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Makes room in a connection's read buffer for the next read: a spare
/// buffer when it has none (between exchanges it holds none), else more.
fn read_room(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() >= 1024 {
        return;
    }
    if buf.capacity() == 0 {
        *buf = spare_buffers::take().unwrap_or_else(|| BytesMut::with_capacity(READ_SIZE));
    } else {
        buf.reserve(READ_SIZE);
    }
}

/// Read buffers of connections done with an exchange, kept by the thread
/// (the worker) for its next exchange: a connection parked in a pool holds
/// no buffer, yet a busy worker does not allocate and free 16 KiB for each
/// exchange (a fifth of a small request's allocator cost). A buffer is kept
/// as it is when its exchange ends, when the response's last bytes (frozen
/// parts of it) are often still on their way to the client. It is used
/// again only for room no frozen part shares (`try_reclaim`: the whole
/// buffer once nothing else holds it, or an unshared tail large enough),
/// and a few are kept at most.
mod spare_buffers {
    use std::cell::RefCell;

    use bytes::BytesMut;

    use super::READ_SIZE;

    /// Spare buffers a thread keeps, at 16 KiB each: enough for the
    /// exchanges one worker finishes while their last bytes are still on
    /// their way out.
    const KEPT: usize = 8;

    thread_local! {
        static SPARE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
    }

    /// Keeps `buf`, emptied, for a later exchange; when as many are kept
    /// already, it goes in place of the oldest.
    pub(super) fn put(mut buf: BytesMut) {
        if buf.capacity() == 0 {
            return;
        }
        buf.clear();
        SPARE.with_borrow_mut(|spare| {
            if spare.len() == KEPT {
                spare.remove(0);
            }
            spare.push(buf);
        });
    }

    /// A kept buffer with unshared room for a read, the longest kept first:
    /// the one most likely no longer shared. The others stay.
    pub(super) fn take() -> Option<BytesMut> {
        SPARE.with_borrow_mut(|spare| {
            let free = spare
                .iter_mut()
                .position(|buf| buf.try_reclaim(READ_SIZE))?;
            Some(spare.remove(free))
        })
    }
}

/// One HTTP/1.1 connection to a backend, between exchanges.
#[derive(Debug)]
pub struct Http1Connection {
    io: BackendIo,
    /// What was read and not yet handed on; empty between exchanges (else the
    /// connection is not reused).
    buf: BytesMut,
    /// The response timeout's timer, made at the first exchange and set again
    /// for each: a timer made and dropped per exchange costs a registration
    /// and a removal in the runtime's timer wheel each time (some 500
    /// instructions), where setting a later deadline on one already there
    /// costs next to nothing. A parked connection's timer may still fire
    /// once, waking the task that last used it for nothing.
    response_timer: Option<Pin<Box<Sleep>>>,
}

/// How an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// Reading or writing the connection failed, or it closed before a
    /// complete response.
    #[error("{0}")]
    Io(#[source] io::Error),
    #[error("backend closed the connection before a complete response head")]
    Closed,
    /// The response head is malformed, ambiguous or too large.
    #[error("{0}")]
    BadHead(#[source] HeadError),
    /// The client's request body broke or stalled while it was being sent.
    #[error("{0}")]
    ClientBody(#[source] ClientBodyError),
    /// The request body was not as long as its `Content-Length` said.
    #[error("request body length differs from its Content-Length")]
    BodyLength,
    /// No response head within the response timeout.
    #[error("no response head within {0:?}")]
    TimedOut(Duration),
}

/// How an exchange failed.
#[derive(Debug)]
pub struct Failed {
    pub error: ExchangeError,
    /// The request, when none of it was written: it can go out elsewhere.
    pub unsent: Option<Box<http::Request<RequestBody>>>,
}

impl Http1Connection {
    pub fn new(io: BackendIo) -> Self {
        Http1Connection {
            io,
            buf: BytesMut::new(),
            response_timer: None,
        }
    }

    /// Whether a parked connection can take a request: not closed by the
    /// backend, and with nothing unasked-for sent on it. Costs no syscall when
    /// nothing came since the last read found the socket empty.
    pub fn poll_usable(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        let mut probe = ReadBuf::new(&mut probe);
        // Any outcome but "nothing to read yet" (end of stream, an error, a
        // byte nobody asked for) makes the connection unusable.
        Pin::new(&mut self.io)
            .poll_read(cx, &mut probe)
            .is_pending()
    }

    /// Sends `request` and reads the response head; the body streams after,
    /// and the connection comes back through it ([`ResponseBody::take_connection`]).
    /// A request read in place goes out as its `received` head rewritten;
    /// any other is written from its map. The response head must be read
    /// within `response_timeout` of the start.
    pub async fn send(
        mut self,
        request: http::Request<RequestBody>,
        received: Option<&ReceivedRequest>,
        response_timeout: Duration,
    ) -> Result<http::Response<Box<ResponseBody>>, Failed> {
        let deadline = tokio::time::Instant::now() + response_timeout;
        let (parts, body) = request.into_parts();
        let method = Method::of(parts.method.as_str().as_bytes());
        let rewritten =
            received.and_then(|received| Some((received.outgoing.clone()?, received.head.framing)));
        let (head, framing) = match rewritten {
            // Rewritten as edits over the client's head, its framing field
            // written from what the codec read: the body goes out so framed.
            Some((head, framing)) => (head, Outgoing::of(framing)),
            // A head read in place and not rewritten would go out without
            // its fields: refused, though no path leads here.
            None if received.is_some() => {
                return Err(Failed {
                    error: ExchangeError::Io(io::Error::other(
                        "a client's head reached the backend unrewritten",
                    )),
                    unsent: None,
                });
            }
            None => {
                let mut head = Vec::with_capacity(256);
                match encode_head(&parts, &body, &mut head) {
                    Ok(framing) => (Bytes::from(head), framing),
                    Err(error) => {
                        return Err(Failed {
                            error,
                            unsent: None,
                        });
                    }
                }
            }
        };
        let closes = parts
            .headers
            .get_all(header::CONNECTION)
            .iter()
            .any(|value| has_token(value.as_bytes(), b"close"));
        let mut writer = BodyWriter::new(head, body, framing);
        let mut reader = head::HeadReader::default();
        // Room for the fields of most responses: one allocation.
        let mut fields = Vec::with_capacity(32);
        let timer = match &mut self.response_timer {
            Some(timer) => {
                timer.as_mut().reset(deadline);
                timer
            }
            None => self
                .response_timer
                .insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        let io = &mut self.io;
        let buf = &mut self.buf;
        let mut exchange = |cx: &mut Context<'_>| {
            if !writer.finished() {
                match writer.poll_write(io, cx) {
                    Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                    Poll::Ready(Ok(())) | Poll::Pending => {}
                }
            }
            loop {
                match reader.response(buf, method, MAX_RESPONSE_HEAD_BYTES, &mut fields) {
                    Ok(Some(head)) if (100..200).contains(&head.status) && head.status != 101 => {
                        // Interim answers (100 Continue, 103) are the backend's
                        // to this hop; weir's client side sends 100 itself.
                        buf.advance(head.len);
                        reader.reset();
                        continue;
                    }
                    Ok(Some(head)) => return Poll::Ready(Ok(head)),
                    Ok(None) => {}
                    Err(error) => return Poll::Ready(Err(ExchangeError::BadHead(error))),
                }
                read_room(buf);
                match ready!(tokio_util::io::poll_read_buf(
                    Pin::new(&mut *io),
                    cx,
                    &mut *buf
                )) {
                    Ok(0) => return Poll::Ready(Err(ExchangeError::Closed)),
                    Ok(_) => {}
                    Err(error) => return Poll::Ready(Err(ExchangeError::Io(error))),
                }
            }
        };
        let head = std::future::poll_fn(|cx| match exchange(cx) {
            Poll::Pending => timer
                .as_mut()
                .poll(cx)
                .map(|()| Err(ExchangeError::TimedOut(response_timeout))),
            done => done,
        })
        .await;
        let head = match head {
            Ok(head) => head,
            Err(error) => {
                // A request none of which was written may go elsewhere, unless
                // its own body is what failed, or its time ran out (as a
                // timeout around the whole exchange counts it sent).
                let unsent = (!writer.sent
                    && !writer.taken
                    && !matches!(
                        error,
                        ExchangeError::ClientBody(_) | ExchangeError::TimedOut(_)
                    ))
                .then(|| Box::new(http::Request::from_parts(parts, writer.body)));
                return Err(Failed { error, unsent });
            }
        };

        let mut response = http::Response::new(());
        *response.status_mut() = http::StatusCode::from_u16(head.status).map_err(|_| Failed {
            error: ExchangeError::BadHead(HeadError::Malformed("invalid status")),
            unsent: None,
        })?;
        *response.version_mut() = match head.version {
            head::Version::Http10 => http::Version::HTTP_10,
            head::Version::Http11 => http::Version::HTTP_11,
        };
        let bytes = self.buf.split_to(head.len).freeze();
        // A switch of protocols is read whole by the tunnel's code; any other
        // head stays as it came, for an HTTP/1 client to be sent as edits
        // over it, and is made a `HeaderMap` only where one is read.
        let received = if head.status == 101 {
            *response.headers_mut() = header_map(&bytes, &fields);
            None
        } else {
            Some(ReceivedHead {
                bytes,
                head,
                fields,
            })
        };
        // An answer before the whole request went out: the backend may not
        // have read the rest, and would read it as the next request, so the
        // connection is not used again. A switch of protocols then would
        // have the tunnel start mid-request: refused.
        let answered_early = !writer.finished();
        if head.status == 101 && answered_early {
            return Err(Failed {
                error: ExchangeError::BadHead(HeadError::Malformed(
                    "protocols switched before the request was sent",
                )),
                unsent: None,
            });
        }
        let framing = if head.status == 101 {
            Framing::Empty
        } else {
            head.framing
        };
        let body = ResponseBody {
            state: match framing {
                Framing::Empty => BodyState::Done,
                Framing::Length(length) => BodyState::Length(length),
                Framing::Chunked => BodyState::Chunked(ChunkedScanner::default()),
                Framing::UntilClose => BodyState::UntilClose,
            },
            received,
            reusable: head.keeps_alive() && !closes && head.status != 101 && !answered_early,
            upgraded: head.status == 101,
            connection: Some(self),
            writer,
        };
        // Boxed once here: it is moved through every layer of the path.
        Ok(response.map(|()| Box::new(body)))
    }
}

/// A backend's response head as it came: its bytes and the offsets weir's
/// codec parsed into them.
#[derive(Debug)]
pub struct ReceivedHead {
    pub bytes: Bytes,
    pub head: ResponseHead,
    pub fields: Vec<Field>,
}

impl ReceivedHead {
    /// Its fields, every one, hop-by-hop included, as a `HeaderMap`.
    pub fn header_map(&self) -> HeaderMap {
        header_map(&self.bytes, &self.fields)
    }
}

/// The response's fields as a `HeaderMap`, for the parts of weir that read
/// one. The codec validated names and values; one that `http` still refuses
/// is left out rather than failing the response.
fn header_map(head: &Bytes, fields: &[Field]) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(fields.len());
    for (name, value) in head::http_fields(head, fields).flatten() {
        headers.append(name, value);
    }
    headers
}

fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// How the request body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outgoing {
    Empty,
    /// Bytes still to come.
    Length(u64),
    Chunked,
}

impl Outgoing {
    fn of(framing: Framing) -> Self {
        match framing {
            Framing::Length(0) | Framing::Empty | Framing::UntilClose => Outgoing::Empty,
            Framing::Length(length) => Outgoing::Length(length),
            Framing::Chunked => Outgoing::Chunked,
        }
    }
}

/// Writes the request head into `out`: the target in origin-form, every field
/// of the map but the framing ones, and the one framing field the body needs,
/// written by weir: the request's `Content-Length` when it has one (plain
/// digits, once: else the request is refused, as the framing the backend would
/// read could differ from the one weir relays), else the body's known size,
/// else chunked.
fn encode_head(
    parts: &http::request::Parts,
    body: &RequestBody,
    out: &mut Vec<u8>,
) -> Result<Outgoing, ExchangeError> {
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    match parts.uri.path_and_query() {
        Some(target) if target.as_str().starts_with('/') || target.as_str() == "*" => {
            out.extend_from_slice(target.as_str().as_bytes());
        }
        Some(target) => {
            out.push(b'/');
            out.extend_from_slice(target.as_str().as_bytes());
        }
        None => out.push(b'/'),
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut length = None;
    for (name, value) in &parts.headers {
        if name == header::TRANSFER_ENCODING {
            continue;
        }
        if name == header::CONTENT_LENGTH {
            if length.is_some() {
                return Err(ExchangeError::BodyLength);
            }
            length =
                Some(head::parse_length(value.as_bytes()).map_err(|_| ExchangeError::BodyLength)?);
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let length = match length {
        Some(length) => Some(length),
        // A request without framing fields has no body (RFC 9112 §6.3).
        None if body.is_end_stream() => None,
        None => body.size_hint().exact(),
    };
    let framing = match length {
        Some(length) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(length).as_bytes());
            out.extend_from_slice(b"\r\n");
            if length == 0 {
                Outgoing::Empty
            } else {
                Outgoing::Length(length)
            }
        }
        None if body.is_end_stream() => Outgoing::Empty,
        None => {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
            Outgoing::Chunked
        }
    };
    out.extend_from_slice(b"\r\n");
    Ok(framing)
}

/// Sends the request, head then body, as far as the body and the connection
/// allow at each poll.
#[derive(Debug)]
struct BodyWriter {
    /// Bytes to write before more of the body is read.
    queue: VecDeque<Bytes>,
    body: RequestBody,
    framing: Outgoing,
    /// The body has been read to its end (its terminator queued).
    read_all: bool,
    /// Some of the request was written.
    sent: bool,
    /// The body was asked for its first bytes.
    asked: bool,
    /// Something was taken from the body: it cannot be sent again as it is.
    taken: bool,
    /// What was written has been flushed (see [`BodyWriter::finished`]).
    flushed: bool,
}

impl BodyWriter {
    fn new(head: Bytes, body: RequestBody, framing: Outgoing) -> Self {
        let mut queue = VecDeque::with_capacity(4);
        queue.push_back(head);
        BodyWriter {
            queue,
            read_all: framing == Outgoing::Empty,
            body,
            framing,
            sent: false,
            asked: false,
            taken: false,
            flushed: false,
        }
    }

    /// Everything, head and body, is written and flushed.
    fn finished(&self) -> bool {
        self.read_all && self.queue.is_empty() && self.flushed
    }

    fn poll_write(
        &mut self,
        io: &mut BackendIo,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), ExchangeError>> {
        // The body is asked once before the head goes: its first bytes leave
        // with the head, and a body that is broken from its start (a bad
        // first chunk) leaves the backend without even the head.
        if !self.asked {
            self.asked = true;
            if !self.read_all
                && matches!(self.body, RequestBody::Streaming(_))
                && let Poll::Ready(polled) = Pin::new(&mut self.body).poll_frame(cx)
            {
                self.take(polled)?;
            }
        }
        loop {
            while !self.queue.is_empty() {
                let mut slices = [IoSlice::new(&[]); 8];
                let count = self.queue.len().min(slices.len());
                for (slot, bytes) in slices.iter_mut().zip(self.queue.iter()) {
                    *slot = IoSlice::new(bytes);
                }
                let written =
                    match ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices[..count])) {
                        Ok(0) => {
                            return Poll::Ready(Err(ExchangeError::Io(
                                io::ErrorKind::WriteZero.into(),
                            )));
                        }
                        Ok(written) => written,
                        Err(error) => return Poll::Ready(Err(ExchangeError::Io(error))),
                    };
                self.sent = true;
                let mut left = written;
                while left > 0 {
                    let front = self.queue.front_mut().expect("written bytes were queued");
                    if front.len() <= left {
                        left -= front.len();
                        self.queue.pop_front();
                    } else {
                        front.advance(left);
                        left = 0;
                    }
                }
            }
            if self.read_all {
                // A TLS stream takes bytes it has not yet sent: the request is
                // out only once flushed.
                if !self.flushed {
                    if let Err(error) = ready!(Pin::new(&mut *io).poll_flush(cx)) {
                        return Poll::Ready(Err(ExchangeError::Io(error)));
                    }
                    self.flushed = true;
                }
                return Poll::Ready(Ok(()));
            }
            let polled = ready!(Pin::new(&mut self.body).poll_frame(cx));
            self.take(polled)?;
        }
    }

    /// Queues what a poll of the body gave.
    fn take(
        &mut self,
        polled: Option<Result<Frame<Bytes>, ClientBodyError>>,
    ) -> Result<(), ExchangeError> {
        self.taken = true;
        match polled {
            Some(Ok(frame)) => {
                // Trailers have no place in a body sent with a length, and
                // HTTP/1.1 backends rarely read them: left out.
                let Ok(data) = frame.into_data() else {
                    return Ok(());
                };
                if data.is_empty() {
                    return Ok(());
                }
                match &mut self.framing {
                    Outgoing::Length(left) => {
                        let len = data.len() as u64;
                        if len > *left {
                            return Err(ExchangeError::BodyLength);
                        }
                        *left -= len;
                        self.queue.push_back(data);
                    }
                    Outgoing::Chunked => {
                        let mut line = [0u8; 18];
                        let line = chunk_size_line(data.len(), &mut line);
                        self.queue.push_back(Bytes::copy_from_slice(line));
                        self.queue.push_back(data);
                        self.queue.push_back(Bytes::from_static(b"\r\n"));
                    }
                    Outgoing::Empty => return Err(ExchangeError::BodyLength),
                }
            }
            Some(Err(error)) => return Err(ExchangeError::ClientBody(error)),
            None => {
                match self.framing {
                    Outgoing::Length(0) | Outgoing::Empty => {}
                    Outgoing::Length(_) => return Err(ExchangeError::BodyLength),
                    Outgoing::Chunked => self.queue.push_back(Bytes::from_static(b"0\r\n\r\n")),
                }
                self.read_all = true;
            }
        }
        Ok(())
    }
}

#[derive(Debug)]
enum BodyState {
    /// Bytes still to come.
    Length(u64),
    Chunked(ChunkedScanner),
    UntilClose,
    Done,
    /// Broken; nothing more is read.
    Failed,
}

/// Why a response body stopped short.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("backend connection: {0}")]
    Io(#[source] io::Error),
    #[error("backend closed the connection before the end of the response body")]
    Truncated,
    #[error("backend response body: {0}")]
    Chunked(#[source] ChunkError),
    #[error("request body: {0}")]
    Request(#[source] ExchangeError),
}

/// A backend's response body, read from its connection as the client takes
/// it; the rest of the request goes out meanwhile.
#[derive(Debug)]
pub struct ResponseBody {
    state: BodyState,
    /// The head, when it was kept as it came (all but a 101's).
    received: Option<ReceivedHead>,
    connection: Option<Http1Connection>,
    writer: BodyWriter,
    /// The connection may carry another exchange once both are done.
    reusable: bool,
    upgraded: bool,
}

impl ResponseBody {
    /// The response's head as the backend sent it; the response's own
    /// `HeaderMap` holds only what weir added since. Taken once.
    pub fn take_received_head(&mut self) -> Option<ReceivedHead> {
        self.received.take()
    }

    /// The connection, when the exchange is complete both ways and it may
    /// carry another.
    pub fn take_connection(&mut self) -> Option<Http1Connection> {
        let complete = matches!(self.state, BodyState::Done) && self.writer.finished();
        if !(complete && self.reusable) {
            return None;
        }
        self.connection
            .take()
            .filter(|c| c.buf.is_empty())
            .map(|mut connection| {
                // Between exchanges a connection holds no buffer.
                spare_buffers::put(std::mem::take(&mut connection.buf));
                connection
            })
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let Some(connection) = this.connection.as_mut() else {
            return Poll::Ready(None);
        };
        // A complete answer stays complete, whatever becomes of the rest of
        // the request.
        if matches!(this.state, BodyState::Done | BodyState::Failed) {
            return Poll::Ready(None);
        }
        if !this.writer.finished()
            && let Poll::Ready(Err(error)) = this.writer.poll_write(&mut connection.io, cx)
        {
            // The backend answered; what it did not get of the request no
            // longer matters to this response, but the connection is spent.
            this.reusable = false;
            this.writer.read_all = true;
            this.writer.queue.clear();
            if matches!(error, ExchangeError::ClientBody(_)) {
                this.state = BodyState::Failed;
                return Poll::Ready(Some(Err(BodyError::Request(error))));
            }
        }
        loop {
            let buf = &mut connection.buf;
            match &mut this.state {
                BodyState::Done | BodyState::Failed => return Poll::Ready(None),
                BodyState::Length(left) if !buf.is_empty() => {
                    let take = (*left).min(buf.len() as u64) as usize;
                    *left -= take as u64;
                    let data = buf.split_to(take).freeze();
                    if *left == 0 {
                        this.state = BodyState::Done;
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                BodyState::Chunked(scanner) if !buf.is_empty() => match scanner.decode(buf) {
                    Ok(decoded) => {
                        buf.advance(decoded.framing);
                        if decoded.done {
                            this.state = BodyState::Done;
                            return Poll::Ready(None);
                        }
                        if decoded.data > 0 {
                            let data = buf.split_to(decoded.data).freeze();
                            return Poll::Ready(Some(Ok(Frame::data(data))));
                        }
                    }
                    Err(error) => {
                        this.state = BodyState::Failed;
                        return Poll::Ready(Some(Err(BodyError::Chunked(error))));
                    }
                },
                BodyState::UntilClose if !buf.is_empty() => {
                    let data = buf.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                _ => {}
            }
            read_room(buf);
            match ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut connection.io),
                cx,
                buf
            )) {
                Ok(0) => {
                    if matches!(this.state, BodyState::UntilClose) {
                        this.state = BodyState::Done;
                        return Poll::Ready(None);
                    }
                    this.state = BodyState::Failed;
                    return Poll::Ready(Some(Err(BodyError::Truncated)));
                }
                Ok(_) => {}
                Err(error) => {
                    this.state = BodyState::Failed;
                    return Poll::Ready(Some(Err(BodyError::Io(error))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, BodyState::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            BodyState::Length(left) => SizeHint::with_exact(left),
            BodyState::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

/// A backend connection after a protocol switch: what the backend sent past
/// its 101 head is read first.
#[derive(Debug)]
pub struct Upgraded {
    io: BackendIo,
    leftover: Bytes,
}

impl ResponseBody {
    /// After a 101 answer: the connection, for the tunnel.
    pub fn upgraded(&mut self) -> Option<Upgraded> {
        if !self.upgraded {
            return None;
        }
        let connection = self.connection.take()?;
        Some(Upgraded {
            io: connection.io,
            leftover: connection.buf.freeze(),
        })
    }
}

impl AsyncRead for Upgraded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.leftover.is_empty() {
            let take = this.leftover.len().min(buf.remaining());
            buf.put_slice(&this.leftover.split_to(take));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Upgraded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A backend that reads one request head (and `body` more bytes), sends
    /// `answer`, and hands back what it read; then holds the socket open
    /// until the test ends, or closes it with `close`.
    async fn backend(
        answer: &'static [u8],
        body: usize,
        close: bool,
    ) -> (Http1Connection, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut received = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                let n = socket.read(&mut chunk).await.unwrap();
                received.extend_from_slice(&chunk[..n]);
                if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n")
                    && received.len() >= end + 4 + body
                {
                    break;
                }
                assert!(n > 0, "closed before a whole request");
            }
            socket.write_all(answer).await.unwrap();
            if close {
                drop(socket);
            } else {
                tokio::spawn(async move {
                    let mut rest = Vec::new();
                    let _ = socket.read_to_end(&mut rest).await;
                });
            }
            received
        });
        let stream = TcpStream::connect(address).await.unwrap();
        (Http1Connection::new(BackendIo::Plain(stream)), server)
    }

    fn post(body: &'static str) -> http::Request<RequestBody> {
        http::Request::post("/up?x=1")
            .header("host", "app")
            .header("x-custom", "Value")
            .body(RequestBody::Full(Some(Bytes::from_static(body.as_bytes()))))
            .unwrap()
    }

    #[tokio::test]
    async fn a_request_goes_out_with_its_length_and_the_connection_comes_back() {
        let (connection, server) = backend(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: b\r\n\r\nok",
            5,
            false,
        )
        .await;
        let mut response = connection
            .send(post("hello"), None, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.headers().is_empty(), "the head is kept as it came");
        let received = response.body_mut().take_received_head().unwrap();
        assert_eq!(received.header_map()["x-a"], "b");
        assert_eq!(
            &received.bytes[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: b\r\n\r\n"
        );
        let mut body = response.into_body();
        let mut data = Vec::new();
        while let Some(frame) = body.frame().await {
            data.extend_from_slice(&frame.unwrap().into_data().unwrap());
        }
        assert_eq!(data, b"ok");
        assert!(
            body.take_connection().is_some(),
            "a complete exchange keeps its connection"
        );
        let received = String::from_utf8(server.await.unwrap()).unwrap();
        assert_eq!(
            received,
            "POST /up?x=1 HTTP/1.1\r\nhost: app\r\nx-custom: Value\r\ncontent-length: 5\r\n\r\nhello"
        );
    }

    #[test]
    fn the_framing_field_is_weirs_own() {
        let request = |length: &str| {
            http::Request::post("/")
                .header("content-length", length)
                .header("transfer-encoding", "chunked")
                .body(RequestBody::Full(Some(Bytes::from_static(b"12345"))))
                .unwrap()
                .into_parts()
        };
        let (parts, body) = request("5");
        let mut out = Vec::new();
        assert_eq!(
            encode_head(&parts, &body, &mut out).unwrap(),
            Outgoing::Length(5)
        );
        assert_eq!(out, b"POST / HTTP/1.1\r\ncontent-length: 5\r\n\r\n");
        for bad in ["", "+5", "5, 5", "0x5"] {
            let (parts, body) = request(bad);
            assert!(
                encode_head(&parts, &body, &mut Vec::new()).is_err(),
                "{bad:?}"
            );
        }
        let (mut parts, body) = request("5");
        parts
            .headers
            .append("content-length", http::HeaderValue::from_static("5"));
        assert!(encode_head(&parts, &body, &mut Vec::new()).is_err());
    }

    #[tokio::test]
    async fn an_answer_before_the_whole_request_spends_the_connection() {
        // The backend answers on the head, and reads none of the body.
        let (connection, _server) = backend(
            b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\n\r\n",
            0,
            false,
        )
        .await;
        let body = Bytes::from(vec![b'x'; 32 * 1024 * 1024]);
        let request = http::Request::post("/")
            .body(RequestBody::Full(Some(body)))
            .unwrap();
        let response = connection
            .send(request, None, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(response.status(), 413);
        let mut body = response.into_body();
        assert!(body.is_end_stream());
        assert!(body.take_connection().is_none());
    }

    #[tokio::test]
    async fn interim_answers_are_skipped_and_bodiless_answers_are_complete() {
        let (connection, _server) = backend(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
            5,
            false,
        )
        .await;
        let response = connection
            .send(post("hello"), None, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(response.status(), 204);
        let mut body = response.into_body();
        assert!(body.is_end_stream());
        assert!(body.take_connection().is_some());
    }

    #[tokio::test]
    async fn a_chunked_answer_is_decoded() {
        let (connection, _server) = backend(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x\r\nde\r\n0\r\nT: 1\r\n\r\n",
            0,
            false,
        )
        .await;
        let request = http::Request::get("/").body(RequestBody::Empty).unwrap();
        let response = connection
            .send(request, None, Duration::from_secs(5))
            .await
            .unwrap();
        let mut body = response.into_body();
        let mut data = Vec::new();
        while let Some(frame) = body.frame().await {
            data.extend_from_slice(&frame.unwrap().into_data().unwrap());
        }
        assert_eq!(data, b"abcde");
        assert!(body.take_connection().is_some());
    }

    #[tokio::test]
    async fn a_cut_chunked_answer_ends_in_an_error() {
        let (connection, _server) = backend(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
            0,
            true,
        )
        .await;
        let request = http::Request::get("/").body(RequestBody::Empty).unwrap();
        let body = connection
            .send(request, None, Duration::from_secs(5))
            .await
            .unwrap()
            .into_body();
        assert!(body.collect().await.is_err());
    }

    #[tokio::test]
    async fn bytes_past_the_answer_spend_the_connection() {
        let (connection, _server) = backend(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA",
            0,
            false,
        )
        .await;
        let request = http::Request::get("/").body(RequestBody::Empty).unwrap();
        let mut body = connection
            .send(request, None, Duration::from_secs(5))
            .await
            .unwrap()
            .into_body();
        while let Some(frame) = body.frame().await {
            frame.unwrap();
        }
        assert!(body.take_connection().is_none());
    }

    #[tokio::test]
    async fn an_answer_without_length_runs_to_the_close() {
        let (connection, _server) = backend(b"HTTP/1.1 200 OK\r\n\r\nuntil close", 0, true).await;
        let request = http::Request::get("/").body(RequestBody::Empty).unwrap();
        let mut body = connection
            .send(request, None, Duration::from_secs(5))
            .await
            .unwrap()
            .into_body();
        let mut data = Vec::new();
        while let Some(frame) = body.frame().await {
            data.extend_from_slice(&frame.unwrap().into_data().unwrap());
        }
        assert_eq!(data, b"until close");
        assert!(body.take_connection().is_none());
    }

    #[tokio::test]
    async fn malformed_answers_are_refused() {
        for answer in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\nok"[..],
            b"HTTP/1.1 200 OK\nContent-Length: 2\r\n\r\nok",
            b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
        ] {
            let answer: &'static [u8] = Box::leak(answer.to_vec().into_boxed_slice());
            let (connection, _server) = backend(answer, 0, false).await;
            let request = http::Request::get("/").body(RequestBody::Empty).unwrap();
            let failed = connection
                .send(request, None, Duration::from_secs(5))
                .await
                .unwrap_err();
            assert!(
                matches!(failed.error, ExchangeError::BadHead(_)),
                "{:?}: {:?}",
                String::from_utf8_lossy(answer),
                failed.error
            );
            assert!(failed.unsent.is_none());
        }
    }

    #[tokio::test]
    async fn a_parked_connection_the_backend_closed_is_not_usable() {
        let (mut connection, server) =
            backend(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 0, true).await;
        let request = http::Request::get("/").body(RequestBody::Empty).unwrap();
        let mut body = connection
            .send(request, None, Duration::from_secs(5))
            .await
            .unwrap()
            .into_body();
        connection = body.take_connection().expect("complete");
        server.await.unwrap();
        // The backend's FIN wakes the check; it then says "gone".
        std::future::poll_fn(|cx| {
            if connection.poll_usable(cx) {
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await;
    }
}
