//! weir's own HTTP/1 server side: one client connection served by one loop
//! that reads a request head in place (`http1::head`), hands the request to the
//! proxy, and writes the response it gets back, then the next request, on the
//! same task that drives the backend.
//!
//! The request body is read by the proxy from the connection itself: its read
//! side (socket and buffer) is lent to the body and comes back when the body
//! ends or is dropped. A connection whose body did not come back whole is not
//! read again: the bytes after it could not be told from a request.

use std::future::poll_fn;
use std::io;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use atomic_waker::AtomicWaker;
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Response, StatusCode, header};
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::{Instant, Sleep};
use tracing::debug;

use crate::config::ListenerConfig;
use crate::http1::date::with_date_line;
use crate::http1::edits::CopiedHead;
use crate::http1::head::{self, Field, Framing, HeadError, HeadReader, RequestHead, Version};
use crate::http1::request::{self, BodyLeft, Piece, ReceivedRequest};
use crate::http1::rewrite::{self, Answer, Answering, Relay};
use crate::proxy::{self, BodyError, ClientIo, Connection, Http1Upgrade, ProxyBody};
use crate::upstream::{BoxError, ClientStream};

use super::client_write::ClientWrite;
use super::drain::DrainWatch;
use super::park::PARK_AFTER;
use super::timeouts::SendDeadline;

/// Room asked of the buffer before each read: a usual head, or a good piece of
/// a body, in one read.
const READ_BYTES: usize = 8 * 1024;

/// Below this much room left, the buffer is grown before a read.
const READ_SPARE_MIN: usize = 1024;

/// Response bytes gathered before they are written even if the body has more
/// at once: bounds the buffer a fast backend and a slow client make.
const OUT_FLUSH_BYTES: usize = 16 * 1024;

/// Body pieces queued to be written beside the gathered bytes: at most this
/// many, and this many bytes, before they are written.
const MAX_QUEUED: usize = 16;
const QUEUED_FLUSH_BYTES: usize = 256 * 1024;

/// A gathering buffer grown past this by a response is let go after it.
const OUT_KEEP_BYTES: usize = 64 * 1024;

/// A body piece at most this long is copied behind what is already waiting to
/// be written (a head, a chunk's size line); a longer one is queued and written
/// beside it, in the same vectored write.
const COPY_BYTES: usize = 4 * 1024;

/// What an HTTP/2 client sends first (RFC 9113 §3.4).
const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The read side of a client connection.
pub(super) trait ClientRead: AsyncRead + Unpin + Send + Sync + 'static {}

impl<T: AsyncRead + Unpin + Send + Sync + 'static> ClientRead for T {}

/// The read side, with its unused bytes and how much of the current request's
/// body is still to come.
pub(super) struct ReadSide<R> {
    io: R,
    buf: BytesMut,
    body: BodyLeft,
}

impl<R: ClientRead> ReadSide<R> {
    pub(super) fn new(io: R, buf: BytesMut) -> Self {
        ReadSide {
            io,
            buf,
            body: BodyLeft::Done,
        }
    }

    /// The bytes read and not used, and the socket.
    pub(super) fn into_parts(self) -> (Bytes, R) {
        (self.buf.freeze(), self.io)
    }

    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        // Grown only when nearly full: a body piece handed on shares the
        // buffer's block, and reserving before every read would start a new
        // block per piece, each kept alive by its piece (a body sent a byte
        // at a time would pin a block per byte).
        if self.buf.capacity() - self.buf.len() < READ_SPARE_MIN {
            self.buf.reserve(READ_BYTES);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
    }

    /// Ready once the client has closed its side (or the connection broke)
    /// while its request is served: the request is then abandoned, as hyper
    /// does. What it sends meanwhile (a pipelined request) is kept, up to
    /// `limit` bytes; past that nothing is read until the response is out.
    /// Once a pipelined request is there, the socket is not looked at: a
    /// client that sent its requests and then closed its side still gets the
    /// answers (the end is found when the next head is read).
    fn poll_gone(&mut self, cx: &mut Context<'_>, limit: usize) -> Poll<()> {
        if !self.body.is_done() || !self.buf.is_empty() {
            return Poll::Pending;
        }
        while self.buf.len() < limit {
            match self.poll_fill(cx) {
                Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(()),
                Poll::Ready(Ok(_)) => {}
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Pending
    }

    /// Skips what is left of a body nobody read, among the bytes already
    /// read: true when it was all there.
    fn skip_buffered_body(&mut self) -> bool {
        self.body.skip_buffered(&mut self.buf)
    }
}

/// What a connection's loop and the body it lent its read side to share.
pub(super) struct Shared<R> {
    /// The read side, back from a body that ended or was dropped.
    returned: Mutex<Option<ReadSide<R>>>,
    /// The body was first waited on for a client that expects `100 Continue`.
    continue_wanted: AtomicBool,
    /// The connection's loop, to wake for that.
    loop_waker: AtomicWaker,
}

impl<R> Default for Shared<R> {
    fn default() -> Self {
        Shared {
            returned: Mutex::new(None),
            continue_wanted: AtomicBool::new(false),
            loop_waker: AtomicWaker::new(),
        }
    }
}

impl<R> Shared<R> {
    fn give_back(&self, side: ReadSide<R>) {
        *self.returned.lock().unwrap_or_else(|e| e.into_inner()) = Some(side);
    }

    fn take_back(&self) -> Option<ReadSide<R>> {
        self.returned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}

/// A request body read from the client connection it came on.
struct RequestBodyReader<R: ClientRead> {
    side: Option<ReadSide<R>>,
    shared: Arc<Shared<R>>,
    /// The client waits for `100 Continue` before it sends the body.
    expect_continue: bool,
}

impl<R: ClientRead> RequestBodyReader<R> {
    fn finish(&mut self) {
        if let Some(side) = self.side.take() {
            self.shared.give_back(side);
        }
    }
}

impl<R: ClientRead> Drop for RequestBodyReader<R> {
    fn drop(&mut self) {
        self.finish();
    }
}

impl<R: ClientRead> Body for RequestBodyReader<R> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            let Some(side) = this.side.as_mut() else {
                return Poll::Ready(None);
            };
            match side.body.next_piece(&mut side.buf) {
                Ok(Piece::Data(data)) => {
                    if side.body.is_done() {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Piece::End) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Err(error) => {
                    this.finish();
                    return Poll::Ready(Some(Err(Box::new(error))));
                }
                Ok(Piece::NeedMore) => {}
            }
            if this.expect_continue {
                this.expect_continue = false;
                this.shared.continue_wanted.store(true, Ordering::Release);
                this.shared.loop_waker.wake();
            }
            match ready!(side.poll_fill(cx)) {
                Ok(0) => {
                    side.body = BodyLeft::Broken;
                    this.finish();
                    return Poll::Ready(Some(Err(
                        "client closed the connection before the end of its body".into(),
                    )));
                }
                Ok(_) => {}
                Err(error) => {
                    side.body = BodyLeft::Broken;
                    this.finish();
                    return Poll::Ready(Some(Err(Box::new(error))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.side.as_ref().is_none_or(|side| side.body.is_done())
    }

    fn size_hint(&self) -> SizeHint {
        match self.side.as_ref().map(|side| &side.body) {
            Some(BodyLeft::Length(left)) => SizeHint::with_exact(*left),
            Some(BodyLeft::Chunked(_)) => SizeHint::default(),
            _ => SizeHint::with_exact(0),
        }
    }
}

/// The write side of a client connection, under `send_timeout`.
pub(super) struct TimedWrite<W> {
    io: W,
    send: SendDeadline,
}

impl<W> TimedWrite<W> {
    pub(super) fn new(io: W, timeout: Duration) -> Self {
        TimedWrite {
            io,
            send: SendDeadline::new(timeout),
        }
    }

    pub(super) fn into_inner(self) -> W {
        self.io
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for TimedWrite<W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let done = Pin::new(&mut this.io).poll_write(cx, buf);
        this.send.check(cx, done)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let done = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.send.check(cx, done)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let done = Pin::new(&mut this.io).poll_flush(cx);
        this.send.check(cx, done)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let done = Pin::new(&mut this.io).poll_shutdown(cx);
        this.send.check(cx, done)
    }
}

/// A connection's two halves as one stream again (for a tunnel).
struct Joined<R, W> {
    read: R,
    write: W,
}

impl<R: AsyncRead + Unpin, W: Unpin> AsyncRead for Joined<R, W> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().read).poll_read(cx, out)
    }
}

impl<R: Unpin, W: AsyncWrite + Unpin> AsyncWrite for Joined<R, W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().write).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().write).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.write.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().write).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().write).poll_shutdown(cx)
    }
}

/// A connection whose first bytes were read already, and are read again.
pub(super) struct Rewind<S> {
    prefix: Bytes,
    io: S,
}

impl<S> Rewind<S> {
    pub(super) fn new(prefix: Bytes, io: S) -> Self {
        Rewind { prefix, io }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let take = this.prefix.len().min(out.remaining());
            out.put_slice(&this.prefix.split_to(take));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, out)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// How a connection's loop ended.
pub(super) enum Ending<R, W> {
    /// Closed (or to be closed): nothing more to read in step.
    Closed,
    /// Quiet with nothing buffered: the caller keeps only the socket until
    /// the client speaks again, or `idle_deadline`.
    Quiet {
        read: R,
        write: W,
        idle_deadline: Instant,
    },
    /// Handed to a tunnel, which the caller waits for.
    Tunnel,
    /// The client spoke HTTP/2 (its preface is the start of `read.buf`).
    Http2 { read: ReadSide<R>, write: W },
}

/// What the loop needs of its listener.
pub(super) struct Limits {
    header_timeout: Duration,
    idle_timeout: Duration,
    max_header_bytes: usize,
}

impl Limits {
    pub(super) fn of(config: &ListenerConfig) -> Self {
        Limits {
            header_timeout: config.header_timeout,
            idle_timeout: config.idle_timeout,
            max_header_bytes: config.max_header_bytes,
        }
    }
}

/// Where the loop is when it waits for bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// Nothing of a next request yet: `idle_timeout` (which ends at the
    /// instant held), parking, the drain.
    Idle(Instant),
    /// Part of a head received (or the first one due): `header_timeout`.
    Head,
}

/// One client connection served over HTTP/1 until it ends or goes quiet.
pub(super) struct Http1Loop<'a, R: ClientRead, W> {
    read: Option<ReadSide<R>>,
    write: TimedWrite<W>,
    shared: Arc<Shared<R>>,
    connection: Arc<Connection>,
    limits: &'a Limits,
    watcher: &'a mut DrainWatch,
    /// Quiet connections are handed back to be parked.
    parks: bool,
    /// Still before the first request: an HTTP/2 preface is looked for.
    first: bool,
    fields: Vec<Field>,
    /// Response bytes gathered to be written: the head, chunk framing, small
    /// body pieces.
    out: Vec<u8>,
    /// Fields weir adds to a backend's head, as lines.
    added: Vec<u8>,
    /// Larger body pieces, each with where in `out` it goes.
    queued: Vec<(usize, Bytes)>,
    queued_bytes: usize,
    timer: Option<Pin<Box<Sleep>>>,
}

/// What the head of one request said that the response needs.
struct Asked {
    http10: bool,
    head: bool,
    keeps_alive: bool,
}

impl<'a, R: ClientRead, W: ClientWrite> Http1Loop<'a, R, W> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        read: ReadSide<R>,
        write: TimedWrite<W>,
        shared: Arc<Shared<R>>,
        connection: Arc<Connection>,
        limits: &'a Limits,
        watcher: &'a mut DrainWatch,
        parks: bool,
        first: bool,
    ) -> Self {
        Http1Loop {
            read: Some(read),
            write,
            shared,
            connection,
            limits,
            watcher,
            parks,
            first,
            fields: Vec::new(),
            out: Vec::new(),
            added: Vec::new(),
            queued: Vec::new(),
            queued_bytes: 0,
            timer: None,
        }
    }

    /// Serves requests until the connection ends, goes quiet or is handed on;
    /// the first head is due by `head_deadline`.
    pub(super) async fn run(mut self, head_deadline: Instant) -> Ending<R, W> {
        let mut deadline = Some(head_deadline);
        loop {
            let head = match self.read_head(deadline.take()).await {
                Ok(Some(head)) => head,
                Ok(None) => return self.end(),
                Err(Stop::Quiet(idle_deadline)) => {
                    let read = self.read.take().expect("the loop holds its read side");
                    return Ending::Quiet {
                        read: read.io,
                        write: self.write.into_inner(),
                        idle_deadline,
                    };
                }
                Err(Stop::Http2) => {
                    let read = self.read.take().expect("the loop holds its read side");
                    return Ending::Http2 {
                        read,
                        write: self.write.into_inner(),
                    };
                }
                Err(Stop::Refused(status)) => {
                    self.refuse(status).await;
                    return self.end();
                }
                Err(Stop::Closed) => return self.end(),
            };
            match self.exchange(head).await {
                Next::Continue => {}
                Next::Close => return self.end(),
                Next::Tunnel(sender) => {
                    let read = self.read.take().expect("a tunnel's read side is back");
                    // The bytes that followed the request head first, then
                    // the socket.
                    let (prefix, read) = read.into_parts();
                    let handed = Rewind::new(
                        prefix,
                        Joined {
                            read,
                            write: self.write,
                        },
                    );
                    // A tunnel that gave up meanwhile drops the connection.
                    let _ = sender.send(Box::new(handed));
                    return Ending::Tunnel;
                }
            }
        }
    }

    fn end(mut self) -> Ending<R, W> {
        // Whatever the client still sends is not read: closing now is what
        // ends its wait (a lingering close matters only to bodies cut short,
        // which the client learns of either way).
        if self.read.take().is_some() {
            self.write.into_inner().close();
        }
        Ending::Closed
    }

    /// Ends the response stream before the connection closes: a shutdown,
    /// unless the close that follows does as much (see `ClientWrite`).
    async fn end_stream(&mut self) {
        if !(W::CLOSE_ENDS_STREAM && self.read.is_some()) {
            let _ = self.write.shutdown().await;
        }
    }

    fn rearm(&mut self, at: Instant) {
        match &mut self.timer {
            Some(timer) => timer.as_mut().reset(at),
            None => self.timer = Some(Box::pin(tokio::time::sleep_until(at))),
        }
    }

    /// Reads the next request head: `Ok(None)` when the client closed between
    /// requests. `head_deadline` is the first head's.
    async fn read_head(&mut self, head_deadline: Option<Instant>) -> Result<Option<Parsed>, Stop> {
        let mut reader = HeadReader::default();
        let mut wait = None;
        if let Some(deadline) = head_deadline {
            self.rearm(deadline);
            wait = Some(Wait::Head);
        }
        loop {
            let side = self.read.as_mut().expect("the loop holds its read side");
            if !side.buf.is_empty() {
                if self.first {
                    let seen = side.buf.len().min(HTTP2_PREFACE.len());
                    if side.buf[..seen] == HTTP2_PREFACE[..seen] {
                        if seen == HTTP2_PREFACE.len() {
                            return Err(Stop::Http2);
                        }
                    } else {
                        self.first = false;
                    }
                }
                if !self.first {
                    match request::take_head(
                        &mut reader,
                        &mut side.buf,
                        self.limits.max_header_bytes,
                        &mut self.fields,
                    ) {
                        Ok(Some((head, bytes))) => return Ok(Some(Parsed { head, bytes })),
                        Ok(None) => {}
                        Err(HeadError::TooLarge) => {
                            return Err(Stop::Refused(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE));
                        }
                        Err(HeadError::Malformed(why)) => {
                            debug!(client.addr = %self.connection.peer, error = why, "malformed request head");
                            return Err(Stop::Refused(StatusCode::BAD_REQUEST));
                        }
                    }
                }
                if wait != Some(Wait::Head) && !side.buf.is_empty() {
                    // The first bytes of a head: it must be whole in time.
                    self.rearm(Instant::now() + self.limits.header_timeout);
                    wait = Some(Wait::Head);
                }
            }
            // Nothing more to parse: read, trying first without a timer, which
            // a busy client's next request seldom needs.
            let side = self.read.as_mut().expect("the loop holds its read side");
            let read = poll_fn(|cx| Poll::Ready(side.poll_fill(cx))).await;
            match read {
                Poll::Ready(Ok(0)) if side.buf.is_empty() => return Ok(None),
                Poll::Ready(Ok(0)) => return Err(Stop::Closed),
                Poll::Ready(Ok(_)) => continue,
                Poll::Ready(Err(error)) => {
                    debug!(error = %error, "client connection failed");
                    return Err(Stop::Closed);
                }
                Poll::Pending => {}
            }
            if wait.is_none() {
                // Between requests, nothing buffered.
                let now = Instant::now();
                let until = now + self.limits.idle_timeout;
                let first_wake = if self.parks {
                    now + PARK_AFTER.min(self.limits.idle_timeout)
                } else {
                    until
                };
                self.rearm(first_wake);
                wait = Some(Wait::Idle(until));
            }
            let idle = matches!(wait, Some(Wait::Idle(_)));
            let timer = self.timer.as_mut().expect("armed above");
            let watcher = &mut *self.watcher;
            let side = self.read.as_mut().expect("the loop holds its read side");
            // The read just tried found nothing and left this task's waker
            // with the socket: the first look here need not read again (data
            // that came since have woken the task, which looks again at once).
            let mut just_read = true;
            let woke = poll_fn(|cx| {
                if idle && watcher.poll_started(cx).is_ready() {
                    return Poll::Ready(Woke::Drain);
                }
                if !std::mem::take(&mut just_read)
                    && let Poll::Ready(read) = side.poll_fill(cx)
                {
                    return Poll::Ready(Woke::Read(read));
                }
                timer.as_mut().poll(cx).map(|()| Woke::Timer)
            })
            .await;
            match woke {
                Woke::Drain => return Ok(None),
                Woke::Read(Ok(0)) if side.buf.is_empty() => return Ok(None),
                Woke::Read(Ok(0)) => return Err(Stop::Closed),
                Woke::Read(Ok(_)) => {}
                Woke::Read(Err(error)) => {
                    debug!(error = %error, "client connection failed");
                    return Err(Stop::Closed);
                }
                Woke::Timer
                    if let Some(Wait::Idle(until)) = wait
                        && self.parks
                        && Instant::now() < until =>
                {
                    return Err(Stop::Quiet(until));
                }
                Woke::Timer => {
                    debug!(
                        "{}",
                        if idle {
                            "connection idle for idle_timeout"
                        } else {
                            "request head not received within header_timeout"
                        }
                    );
                    return Err(Stop::Closed);
                }
            }
        }
    }

    /// Answers a head refused before it reached the proxy, then the
    /// connection closes.
    async fn refuse(&mut self, status: StatusCode) {
        self.out.clear();
        self.out.extend_from_slice(b"HTTP/1.1 ");
        self.out.extend_from_slice(status.as_str().as_bytes());
        self.out.push(b' ');
        self.out
            .extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
        self.out
            .extend_from_slice(b"\r\ncontent-length: 0\r\nconnection: close\r\n");
        with_date_line(|line| self.out.extend_from_slice(line));
        self.out.extend_from_slice(b"\r\n");
        let out = std::mem::take(&mut self.out);
        if self.write.write_all(&out).await.is_ok() {
            self.end_stream().await;
        }
        self.out = out;
    }

    /// One request and its response.
    async fn exchange(&mut self, parsed: Parsed) -> Next {
        let Parsed { head, bytes } = parsed;
        let asked = Asked {
            http10: head.version == Version::Http10,
            head: head.method == head::Method::Head,
            keeps_alive: head.keeps_alive(),
        };
        // The head goes on as it came, its fields unconverted, unless it asks
        // for a tunnel or names no host: those (rare) take the `HeaderMap` path.
        let in_place = !head.connection.upgrade && head.authority.is_some();
        let made = if in_place {
            request::to_request_line(&head, &bytes).map(|request| {
                let received = Box::new(ReceivedRequest {
                    bytes,
                    head,
                    fields: Arc::from(&self.fields[..]),
                    outgoing: None,
                });
                (request, Some(received))
            })
        } else {
            request::to_request(&head, &self.fields, &bytes).map(|request| (request, None))
        };
        let (mut request, received) = match made {
            Ok(made) => made,
            Err(why) => {
                debug!(client.addr = %self.connection.peer, error = why, "request head refused");
                self.refuse(StatusCode::BAD_REQUEST).await;
                return Next::Close;
            }
        };
        // The body reads the connection itself; the loop gets it back after.
        let body_left = BodyLeft::of(head.framing);
        let lent = (!body_left.is_done()).then_some(body_left);
        let expect_continue = head.expect_continue && !asked.http10 && lent.is_some();
        let body = match lent {
            None => ClientStream::Empty,
            Some(left) => {
                let mut side = self.read.take().expect("the loop holds its read side");
                side.body = left;
                ClientStream::Http1(Box::pin(RequestBodyReader {
                    side: Some(side),
                    shared: self.shared.clone(),
                    expect_continue,
                }))
            }
        };
        let handing = (head.connection.upgrade && !asked.http10).then(|| {
            let (sender, receiver) = tokio::sync::oneshot::channel();
            request
                .extensions_mut()
                .insert(Http1Upgrade(Arc::new(Mutex::new(Some(receiver)))));
            sender
        });
        let request = request.map(|()| body);
        let mut continued = !expect_continue;
        let mut serving = pin!(proxy::serve(self.connection.clone(), request, received));
        let limit = self.limits.max_header_bytes;
        let response = loop {
            let shared = &self.shared;
            let read = &mut self.read;
            let polled = poll_fn(|cx| {
                if let Poll::Ready(response) = serving.as_mut().poll(cx) {
                    return Poll::Ready(Waited::Response(response));
                }
                if read.is_none() {
                    *read = shared.take_back();
                }
                if let Some(side) = read
                    && side.poll_gone(cx, limit).is_ready()
                {
                    return Poll::Ready(Waited::Gone);
                }
                if !continued {
                    shared.loop_waker.register(cx.waker());
                    if shared.continue_wanted.swap(false, Ordering::AcqRel) {
                        return Poll::Ready(Waited::Continue);
                    }
                }
                Poll::Pending
            })
            .await;
            match polled {
                Waited::Response(response) => break response,
                Waited::Gone => {
                    debug!("client closed its connection before its response");
                    return Next::Close;
                }
                Waited::Continue => {
                    continued = true;
                    if self
                        .write
                        .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                        .await
                        .is_err()
                    {
                        return Next::Close;
                    }
                }
            }
        };
        self.shared.continue_wanted.store(false, Ordering::Relaxed);
        let mut body_whole = self.take_back_read_side();
        let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        let keep_alive =
            asked.keeps_alive && body_whole && !switching && !self.watcher.is_started();
        let written = self.write_response(response, &asked, keep_alive).await;
        let keep_alive = match written {
            Ok(keep_alive) => keep_alive,
            Err(error) => {
                debug!(error = %error, "response not sent whole");
                return Next::Close;
            }
        };
        if switching {
            // The 101 is out: from here the connection is the tunnel's, with
            // whatever followed the request head.
            let whole = self.read.as_ref().is_some_and(|side| side.body.is_done());
            return match handing {
                Some(sender) if whole => Next::Tunnel(sender),
                _ => Next::Close,
            };
        }
        if !body_whole {
            body_whole = self.take_back_read_side();
        }
        if keep_alive && body_whole {
            Next::Continue
        } else {
            self.end_stream().await;
            Next::Close
        }
    }

    /// Takes back the read side if the body gave it back; true when the
    /// connection can be read in step again (the body read whole, or the
    /// rest of it already here and skipped).
    fn take_back_read_side(&mut self) -> bool {
        if self.read.is_none() {
            self.read = self.shared.take_back();
        }
        match &mut self.read {
            None => false,
            Some(side) => side.skip_buffered_body(),
        }
    }

    /// Writes `response`; true when the connection may serve another request.
    async fn write_response(
        &mut self,
        response: Response<ProxyBody>,
        asked: &Asked,
        keep_alive: bool,
    ) -> io::Result<bool> {
        let (parts, mut body) = response.into_parts();
        self.out.clear();
        let framing = match body.take_received_head() {
            Some(received) => {
                self.added.clear();
                for (name, value) in &parts.headers {
                    self.added.extend_from_slice(name.as_str().as_bytes());
                    self.added.extend_from_slice(b": ");
                    self.added.extend_from_slice(value.as_bytes());
                    self.added.extend_from_slice(b"\r\n");
                }
                let answer = rewrite::response_edits(
                    &received.bytes,
                    &received.head,
                    &received.fields,
                    &Answering {
                        client_version: if asked.http10 {
                            Version::Http10
                        } else {
                            Version::Http11
                        },
                        keep_alive,
                        upgrade: false,
                        extra: &self.added,
                    },
                    &mut CopiedHead::new(&received.bytes, &mut self.out),
                );
                received_framing(received.head.framing, answer)
            }
            None => encode_head(
                &mut self.out,
                parts.status,
                &parts.headers,
                &body,
                asked,
                keep_alive,
            ),
        };
        drop(parts);
        let keep_alive = keep_alive && framing.keeps_alive;
        let mut left = match framing.body {
            Out::None => {
                drop(body);
                self.flush_out().await?;
                return Ok(keep_alive);
            }
            Out::Length(length) => Some(length),
            Out::Chunked | Out::UntilClose => None,
        };
        let chunked = matches!(framing.body, Out::Chunked);
        let limit = self.limits.max_header_bytes;
        loop {
            let out = &self.out;
            let queued = !self.queued.is_empty();
            let read = &mut self.read;
            let shared = &self.shared;
            let next = poll_fn(|cx| {
                if let Poll::Ready(frame) = Pin::new(&mut body).poll_frame(cx) {
                    return Poll::Ready(Some(frame));
                }
                // Nothing more for now: what is ready goes out meanwhile.
                if !out.is_empty() || queued {
                    return Poll::Ready(None);
                }
                if read.is_none() {
                    *read = shared.take_back();
                }
                if let Some(side) = read
                    && side.poll_gone(cx, limit).is_ready()
                {
                    return Poll::Ready(Some(Some(Err(BodyError::from(
                        "client closed its connection during the response",
                    )))));
                }
                Poll::Pending
            })
            .await;
            let frame = match next {
                None => {
                    self.flush_out().await?;
                    continue;
                }
                Some(None) => break,
                Some(Some(Ok(frame))) => frame,
                Some(Some(Err(error))) => {
                    return Err(io::Error::other(error));
                }
            };
            let Ok(data) = frame.into_data() else {
                // Trailers: HTTP/1 clients get none (as with hyper, which
                // sends only those a `Trailer` field announced).
                continue;
            };
            if data.is_empty() {
                continue;
            }
            if let Some(left) = &mut left {
                if data.len() as u64 > *left {
                    return Err(io::Error::other("response body longer than its length"));
                }
                *left -= data.len() as u64;
            }
            let mut size_line = [0u8; 18];
            let size_line = if chunked {
                crate::http1::body::chunk_size_line(data.len(), &mut size_line)
            } else {
                &[]
            };
            let tail: &[u8] = if chunked { b"\r\n" } else { b"" };
            self.out.extend_from_slice(size_line);
            if data.len() <= COPY_BYTES {
                self.out.extend_from_slice(&data);
            } else {
                // Written beside the gathered bytes, in the same write.
                self.queued_bytes += data.len();
                self.queued.push((self.out.len(), data));
            }
            self.out.extend_from_slice(tail);
            if self.out.len() >= OUT_FLUSH_BYTES
                || self.queued_bytes >= QUEUED_FLUSH_BYTES
                || self.queued.len() == MAX_QUEUED
            {
                self.flush_out().await?;
            }
        }
        drop(body);
        if let Some(left) = left
            && left > 0
        {
            return Err(io::Error::other("response body shorter than its length"));
        }
        if chunked {
            self.out.extend_from_slice(b"0\r\n\r\n");
        }
        self.flush_out().await?;
        if self.out.capacity() > OUT_KEEP_BYTES {
            self.out = Vec::new();
        }
        Ok(keep_alive)
    }

    /// Writes what was gathered: the bytes copied into `out`, with the
    /// queued pieces between them where they belong, in one vectored write
    /// when the socket takes it all.
    async fn flush_out(&mut self) -> io::Result<()> {
        if self.queued.is_empty() {
            if !self.out.is_empty() {
                self.write.write_all(&self.out).await?;
            }
        } else {
            let mut pieces: [&[u8]; 2 * MAX_QUEUED + 1] = [&[]; 2 * MAX_QUEUED + 1];
            let mut count = 0;
            let mut from = 0;
            for (at, data) in &self.queued {
                pieces[count] = &self.out[from..*at];
                pieces[count + 1] = data;
                count += 2;
                from = *at;
            }
            pieces[count] = &self.out[from..];
            count += 1;
            write_all_vectored(&mut self.write, &mut pieces[..count]).await?;
            self.queued.clear();
            self.queued_bytes = 0;
        }
        self.out.clear();
        self.write.flush().await
    }
}

/// Writes every byte of `pieces`, in as few writes as the socket allows.
async fn write_all_vectored<W: AsyncWrite + Unpin>(
    write: &mut W,
    pieces: &mut [&[u8]],
) -> io::Result<()> {
    let mut first = 0;
    while first < pieces.len() {
        if pieces[first].is_empty() {
            first += 1;
            continue;
        }
        let mut io_slices = [io::IoSlice::new(&[]); 2 * MAX_QUEUED + 1];
        let count = (pieces.len() - first).min(io_slices.len());
        for (slot, piece) in io_slices.iter_mut().zip(&pieces[first..first + count]) {
            *slot = io::IoSlice::new(piece);
        }
        let mut written =
            poll_fn(|cx| Pin::new(&mut *write).poll_write_vectored(cx, &io_slices[..count]))
                .await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while written > 0 && first < pieces.len() {
            let piece = pieces[first];
            if written >= piece.len() {
                written -= piece.len();
                first += 1;
            } else {
                pieces[first] = &piece[written..];
                written = 0;
            }
        }
    }
    Ok(())
}

/// A parsed head and its bytes.
struct Parsed {
    head: RequestHead,
    bytes: Bytes,
}

enum Stop {
    Quiet(Instant),
    Http2,
    Refused(StatusCode),
    Closed,
}

enum Woke {
    Drain,
    Read(io::Result<usize>),
    Timer,
}

enum Waited<T> {
    Response(T),
    Gone,
    Continue,
}

enum Next {
    Continue,
    Close,
    /// A protocol switch went out: the connection goes to the tunnel.
    Tunnel(tokio::sync::oneshot::Sender<ClientIo>),
}

/// How a response's body goes out.
enum Out {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

struct Encoded {
    body: Out,
    /// The framing leaves the connection usable after the body.
    keeps_alive: bool,
}

/// How the body of a backend's head written as edits goes out. Its chunks
/// come decoded from weir's client, and go out chunked again.
fn received_framing(framing: Framing, answer: Answer) -> Encoded {
    let body = match answer.relay {
        Relay::AsIs => match framing {
            Framing::Empty | Framing::Length(0) => Out::None,
            Framing::Length(length) => Out::Length(length),
            Framing::Chunked => Out::Chunked,
            // A body to the close is never relayed as it is.
            Framing::UntilClose => Out::UntilClose,
        },
        Relay::Chunk => Out::Chunked,
        Relay::Dechunk | Relay::UntilClose => Out::UntilClose,
    };
    Encoded {
        body,
        keeps_alive: !answer.close,
    }
}

/// Writes the response head into `out`, framing the body as HTTP/1 needs it
/// (the rules hyper's server follows, kept so that clients see no change).
fn encode_head(
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &HeaderMap,
    body: &ProxyBody,
    asked: &Asked,
    keep_alive: bool,
) -> Encoded {
    let code = status.as_u16();
    let informational = (100..200).contains(&code);
    let no_content = code == 204 || code == 304;
    let can_length = !informational && !no_content;
    let can_body = can_length && !asked.head;
    out.extend_from_slice(if asked.http10 {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    });
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
    out.extend_from_slice(b"\r\n");
    let end_stream = body.is_end_stream();
    let exact = body.size_hint().exact();
    let mut wrote_length = false;
    let mut length: Option<u64> = None;
    let mut has_date = false;
    let mut says_close = false;
    let mut says_keep_alive = false;
    for (name, value) in headers {
        match *name {
            header::CONTENT_LENGTH => {
                if wrote_length || code == 101 {
                    continue;
                }
                if end_stream && !asked.head {
                    // No body: the length written below, if any.
                    continue;
                }
                let Some(declared) = head::parse_length(value.as_bytes()).ok() else {
                    continue;
                };
                if !can_length {
                    continue;
                }
                // A body that disagrees fails as it is written.
                length = Some(declared);
                wrote_length = true;
            }
            header::TRANSFER_ENCODING => continue,
            header::CONNECTION => {
                for token in value.as_bytes().split(|&b| b == b',') {
                    let token = token.trim_ascii();
                    says_close |= token.eq_ignore_ascii_case(b"close");
                    says_keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                }
            }
            header::DATE => has_date = true,
            _ => {}
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let mut keeps_alive = !says_close && code != 101;
    let body_out = if code == 101 {
        Out::None
    } else if let Some(length) = length {
        if can_body {
            Out::Length(length)
        } else {
            Out::None
        }
    } else if end_stream || exact == Some(0) {
        if can_length && !asked.head {
            out.extend_from_slice(b"content-length: 0\r\n");
        }
        Out::None
    } else if let Some(exact) = exact {
        if can_length {
            let mut digits = itoa::Buffer::new();
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(digits.format(exact).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if can_body {
            Out::Length(exact)
        } else {
            Out::None
        }
    } else if !can_body {
        Out::None
    } else if asked.http10 {
        keeps_alive = false;
        Out::UntilClose
    } else {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        Out::Chunked
    };
    let keeps_alive = keeps_alive && keep_alive;
    // Said to HTTP/1.0 clients too, whose default it is: as nginx does.
    if keeps_alive {
        if asked.http10 && !says_keep_alive {
            out.extend_from_slice(b"connection: keep-alive\r\n");
        }
    } else if !says_close && code != 101 {
        out.extend_from_slice(b"connection: close\r\n");
    }
    if !has_date {
        with_date_line(|line| out.extend_from_slice(line));
    }
    out.extend_from_slice(b"\r\n");
    Encoded {
        body: body_out,
        keeps_alive,
    }
}

#[cfg(test)]
mod tests {
    //! The loop's timers, with the tokio clock paused: time is the input, and
    //! each deadline is checked a millisecond before it (the connection still
    //! open) and at it. Requests go to no route, so weir answers them itself.

    use arc_swap::ArcSwap;
    use tokio::io::{AsyncReadExt, DuplexStream, ReadHalf, WriteHalf};
    use tokio::task::JoinHandle;
    use tokio::time::advance;

    use super::*;
    use crate::listener::drain::Drain;
    use crate::metrics::Metrics;
    use crate::snapshot::Snapshot;

    // Each timeout its own length, so that a failure at the wrong one shows.
    const HEADER: Duration = Duration::from_secs(5);
    const IDLE: Duration = Duration::from_secs(60);
    const SEND: Duration = Duration::from_secs(15);
    const MS: Duration = Duration::from_millis(1);

    /// A request no route takes: weir answers it 404 at once.
    const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: unrouted.test\r\n\r\n";

    type Ended = Ending<ReadHalf<DuplexStream>, WriteHalf<DuplexStream>>;

    struct Conn {
        client: DuplexStream,
        serving: JoinHandle<Ended>,
        drain: Drain,
        /// Read from weir and not looked at yet.
        got: Vec<u8>,
    }

    /// A connection just accepted, served by the loop in a task of its own;
    /// `parks`: handed back once quiet. `pipe` bytes fit in each direction.
    fn accept(parks: bool, pipe: usize) -> Conn {
        let text = format!(
            "[[listeners]]\nlisten = \"127.0.0.1:0\"\nheader_timeout = \"{}s\"\n\
             idle_timeout = \"{}s\"\nsend_timeout = \"{}s\"\n\
             [[routes]]\nhost = \"routed.test\"\nupstream = \"a\"\n[upstreams.a]\n\
             backends = [{{ address = \"127.0.0.1:9001\" }}]\n",
            HEADER.as_secs(),
            IDLE.as_secs(),
            SEND.as_secs(),
        );
        let config = Arc::new(crate::config::parse(&text, "test.toml").unwrap());
        let listener = config.listeners[0].clone();
        let snapshot = Snapshot::build(config, None, &Metrics::new(), &Default::default()).unwrap();
        let connection = Arc::new(Connection::new(
            listener.name.as_str().into(),
            "192.0.2.7:40000".parse().unwrap(),
            listener.listen,
            false,
            Arc::new(ArcSwap::from_pointee(snapshot)),
            &Arc::from([]),
            &listener,
        ));
        let (client, server) = tokio::io::duplex(pipe);
        let (read, write) = tokio::io::split(server);
        let drain = Drain::new();
        let mut watcher = drain.watch();
        let head_deadline = Instant::now() + listener.header_timeout;
        let serving = tokio::spawn(async move {
            let limits = Limits::of(&listener);
            Http1Loop::new(
                ReadSide::new(read, BytesMut::new()),
                TimedWrite::new(write, listener.send_timeout),
                Arc::new(Shared::default()),
                connection,
                &limits,
                &mut watcher,
                parks,
                true,
            )
            .run(head_deadline)
            .await
        });
        Conn {
            client,
            serving,
            drain,
            got: Vec::new(),
        }
    }

    /// Lets every task run as far as it can at the current instant.
    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    impl Conn {
        async fn send(&mut self, bytes: &[u8]) {
            self.client.write_all(bytes).await.unwrap();
            settle().await;
        }

        /// Reads the 404 weir answers a request with (a whole one: head and
        /// its `Content-Length` of body).
        async fn answered(&mut self) {
            let mut buf = vec![0; 4096];
            loop {
                if let Some(head_end) = self.got.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&self.got[..head_end]).to_lowercase();
                    assert!(head.starts_with("http/1.1 404"), "{head}");
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .and_then(|l| l.trim().parse().ok())
                        .expect("a length");
                    if self.got.len() >= head_end + 4 + length {
                        self.got.drain(..head_end + 4 + length);
                        return;
                    }
                }
                let n = self.client.read(&mut buf).await.unwrap();
                assert!(n > 0, "closed before the answer: {:?}", self.got);
                self.got.extend_from_slice(&buf[..n]);
            }
        }

        /// Asserts that the connection is still open a millisecond before
        /// `after` from now, and has been ended at `after` (closed with
        /// nothing more said, or handed back).
        async fn ends_after(self, after: Duration) -> Ended {
            let (ended, rest) = self.ends_after_saying(after).await;
            assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
            ended
        }

        /// As `ends_after`, with what weir sent meanwhile.
        async fn ends_after_saying(mut self, after: Duration) -> (Ended, Vec<u8>) {
            settle().await;
            assert!(!self.serving.is_finished(), "ended at once");
            advance(after - MS).await;
            settle().await;
            assert!(!self.serving.is_finished(), "ended before {after:?}");
            advance(MS).await;
            settle().await;
            assert!(self.serving.is_finished(), "still open at {after:?}");
            let ended = self.serving.await.unwrap();
            let mut rest = std::mem::take(&mut self.got);
            if matches!(ended, Ending::Closed) {
                self.client.read_to_end(&mut rest).await.unwrap();
            }
            (ended, rest)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_head_is_due_header_timeout_after_the_accept() {
        let conn = accept(false, 4096);
        assert!(matches!(conn.ends_after(HEADER).await, Ending::Closed));
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_trickling_in_is_still_due_at_header_timeout() {
        let mut conn = accept(false, 4096);
        conn.send(b"GET / HTTP/1.1\r\nX-Slow: ").await;
        // A byte a second does not move the deadline.
        for _ in 0..HEADER.as_secs() - 1 {
            advance(Duration::from_secs(1)).await;
            conn.send(b"a").await;
        }
        assert!(matches!(
            conn.ends_after(Duration::from_secs(1)).await,
            Ending::Closed
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_timeout_starts_at_the_end_of_a_response() {
        let mut conn = accept(false, 4096);
        conn.send(GET).await;
        conn.answered().await;
        assert!(matches!(conn.ends_after(IDLE).await, Ending::Closed));
    }

    #[tokio::test(start_paused = true)]
    async fn the_next_head_is_due_header_timeout_after_its_first_byte() {
        let mut conn = accept(false, 4096);
        conn.send(GET).await;
        conn.answered().await;
        advance(IDLE / 2).await;
        conn.send(b"GET /next HT").await;
        assert!(matches!(conn.ends_after(HEADER).await, Ending::Closed));
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_connection_is_handed_back_with_its_idle_deadline() {
        let mut conn = accept(true, 4096);
        conn.send(GET).await;
        conn.answered().await;
        let answered = Instant::now();
        match conn.ends_after(PARK_AFTER).await {
            Ending::Quiet { idle_deadline, .. } => assert_eq!(idle_deadline, answered + IDLE),
            _ => panic!("not handed back quiet"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_partial_head_is_never_handed_back_quiet() {
        let mut conn = accept(true, 4096);
        conn.send(GET).await;
        conn.answered().await;
        conn.send(b"GET /next HT").await;
        assert!(matches!(conn.ends_after(HEADER).await, Ending::Closed));
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_does_not_read_is_cut_after_send_timeout() {
        // Room for the request, not for the answer.
        let mut conn = accept(false, 64);
        conn.send(GET).await;
        let (ended, sent) = conn.ends_after_saying(SEND).await;
        assert!(matches!(ended, Ending::Closed));
        assert_eq!(sent.len(), 64, "only what the pipe took");
    }

    #[tokio::test(start_paused = true)]
    async fn the_drain_ends_an_idle_connection_at_once() {
        let mut conn = accept(false, 4096);
        conn.send(GET).await;
        conn.answered().await;
        settle().await;
        assert!(!conn.serving.is_finished());
        let drain = std::mem::replace(&mut conn.drain, Drain::new());
        let draining = tokio::spawn(drain.drain());
        settle().await;
        assert!(
            conn.serving.is_finished(),
            "still open after the drain began"
        );
        assert!(matches!(conn.serving.await.unwrap(), Ending::Closed));
        draining.await.unwrap();
    }

    /// A reader that gives one byte per read.
    struct Trickle(Vec<u8>);

    impl AsyncRead for Trickle {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            out: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            if !this.0.is_empty() {
                out.put_slice(&[this.0.remove(0)]);
            }
            Poll::Ready(Ok(()))
        }
    }

    /// A body sent a byte at a time, its pieces kept (for a retry): they
    /// share the buffer's blocks rather than each keeping one of its own.
    #[test]
    fn a_body_read_a_byte_at_a_time_does_not_pin_a_block_per_byte() {
        const LEN: usize = 4000;
        let mut side = ReadSide::new(Trickle(vec![b'x'; LEN]), BytesMut::new());
        side.body = BodyLeft::Length(LEN as u64);
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut pieces = Vec::new();
        while pieces.len() < LEN {
            assert!(matches!(side.poll_fill(&mut cx), Poll::Ready(Ok(1))));
            match side.body.next_piece(&mut side.buf).unwrap() {
                Piece::Data(piece) => pieces.push(piece),
                other => panic!("{other:?}"),
            }
        }
        // Consecutive pieces lie side by side unless a new block began.
        let blocks = 1 + pieces
            .windows(2)
            .filter(|pair| pair[0].as_ptr().wrapping_add(1) != pair[1].as_ptr())
            .count();
        assert!(blocks <= 2, "{blocks} blocks for {LEN} one-byte pieces");
    }

    #[tokio::test(start_paused = true)]
    async fn pipelined_requests_are_answered_in_turn() {
        let mut conn = accept(false, 4096);
        let mut two = GET.to_vec();
        two.extend_from_slice(GET);
        conn.send(&two).await;
        conn.answered().await;
        conn.answered().await;
        assert!(matches!(conn.ends_after(IDLE).await, Ending::Closed));
    }
}
