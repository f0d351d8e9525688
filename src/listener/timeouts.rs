//! Client connection timeouts, enforced on the socket itself: `header_timeout`
//! (the whole request head must arrive in time: the slowloris guard),
//! `idle_timeout` (keep-alive connections with nothing to do), `send_timeout` (a
//! client that stops reading what is sent to it); and parking, which ends hyper's
//! hold on an HTTP/1 connection that has gone quiet (see `park`).
//!
//! Why not hyper's `header_read_timeout`: it starts counting when hyper begins
//! waiting for a head, so it also cuts idle keep-alive connections after the header
//! timeout, it does not cover the protocol detection of the auto builder, and it
//! allocates a new timer for every request. Here one timer per connection serves
//! both timeouts and is re-armed only when the connection changes phase.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, Sleep};

use crate::config::ListenerConfig;
use crate::proxy::Connection;

use super::framing::HeadScan;
use super::park::{PARK_AFTER, ParkSlot};

/// What the connection is waiting for, which decides the deadline in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing received since the last response: `idle_timeout`.
    Idle,
    /// Part of a request head received: `header_timeout` from its first byte
    /// (from the accept for the first request).
    Head,
    /// At least one request in flight: no read timeout here; the upstream
    /// timeouts bound the wait, and `body_timeout` a request body that stalls.
    Busy,
}

/// A client socket that fails its reads with `TimedOut` once the deadline of its
/// current phase has passed.
pub struct TimedIo<S> {
    /// Present until dropped (a parked socket is handed on then).
    io: Option<TokioIo<Counted<S>>>,
    connection: Arc<Connection>,
    header_timeout: Duration,
    idle_timeout: Duration,
    body_timeout: Duration,
    send_timeout: Duration,
    phase: Phase,
    /// `Connection::started_requests` when the phase was last set: a difference
    /// means a request came (and maybe went) since.
    seen_started: usize,
    /// Follows the request framing on the raw bytes; see `framing`.
    head_scan: HeadScan,
    deadline: Pin<Box<Sleep>>,
    /// Where the socket goes when the connection parks; `None` when it cannot
    /// (TLS, whose state would stay anyway).
    park: Option<Arc<ParkSlot<S>>>,
    /// When the current idle period ends the connection (`idle_timeout`).
    idle_deadline: Instant,
    /// The connection went quiet and is handing its socket back to be parked.
    parked: bool,
    /// The last write found the socket full: hyper still holds response bytes.
    write_blocked: bool,
    /// Runs out `send_timeout` after a write found the socket full; made the
    /// first time one does (most connections never see a full socket).
    send_deadline: Option<Pin<Box<Sleep>>>,
}

impl<S> TimedIo<S> {
    /// A connection of a listener with `config`, whose first (or next) request
    /// head is due by `head_deadline`.
    pub fn new(
        stream: S,
        connection: Arc<Connection>,
        config: &ListenerConfig,
        head_deadline: Instant,
        park: Option<Arc<ParkSlot<S>>>,
    ) -> Self {
        TimedIo {
            io: Some(TokioIo::new(Counted {
                inner: stream,
                read: 0,
            })),
            seen_started: connection.started_requests(),
            connection,
            header_timeout: config.header_timeout,
            idle_timeout: config.idle_timeout,
            body_timeout: config.body_timeout,
            send_timeout: config.send_timeout,
            phase: Phase::Head,
            head_scan: HeadScan::default(),
            deadline: Box::pin(tokio::time::sleep_until(head_deadline)),
            park,
            idle_deadline: head_deadline,
            parked: false,
            write_blocked: false,
            send_deadline: None,
        }
    }

    fn io(&mut self) -> Pin<&mut TokioIo<Counted<S>>>
    where
        S: Unpin,
    {
        Pin::new(
            self.io
                .as_mut()
                .expect("the socket stays until the TimedIo is dropped"),
        )
    }

    /// Whether a quiet connection may park: plain HTTP/1 only (an HTTP/2
    /// connection's state lives in hyper and cannot be rebuilt later).
    fn may_park(&self) -> bool {
        self.park.is_some() && !self.connection.http2.load(Ordering::Relaxed)
    }

    /// Whether hyper is surely between messages, holding nothing: every byte
    /// read belongs to a complete message (a body may still be arriving after an
    /// early response, or a pipelined head be half there), and the response went
    /// out whole.
    fn hyper_is_idle(&self) -> bool {
        self.head_scan.at_rest() && !self.write_blocked
    }

    /// True when a request started since the phase was last set.
    fn request_since_armed(&self) -> bool {
        self.connection.started_requests() != self.seen_started
    }

    fn enter(&mut self, phase: Phase) {
        self.phase = phase;
        self.seen_started = self.connection.started_requests();
        let now = Instant::now();
        let deadline = match phase {
            Phase::Head => now + self.header_timeout,
            Phase::Busy => now + self.idle_timeout,
            Phase::Idle => {
                // A body still coming after its response ended may stall only as
                // long as any body.
                let timeout = if self.head_scan.in_body() {
                    self.idle_timeout.min(self.body_timeout)
                } else {
                    self.idle_timeout
                };
                self.idle_deadline = now + timeout;
                if self.may_park() {
                    // The same timer first wakes the connection to park it.
                    now + PARK_AFTER.min(self.idle_timeout)
                } else {
                    self.idle_deadline
                }
            }
        };
        self.deadline.as_mut().reset(deadline);
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Read for TimedIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let busy = this.connection.active_requests() > 0;
        let upgraded = this.connection.upgraded.load(Ordering::Relaxed);
        if upgraded {
            // Tunnelled bytes are not HTTP.
            this.head_scan.give_up();
        }
        let io = this
            .io
            .as_mut()
            .expect("the socket stays until the TimedIo is dropped");
        match read_scanned(io, &mut this.head_scan, &this.connection, cx, buf) {
            Poll::Ready(Ok(())) => {
                if !busy && (this.phase != Phase::Head || this.request_since_armed()) {
                    // The first bytes of a new request head.
                    this.enter(Phase::Head);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
            Poll::Pending => {
                if upgraded {
                    // A tunnel's reads: its own idle clock bounds them, and the
                    // connection's idle waker is its connection task's (see
                    // `outlived_by_tunnel`).
                    return Poll::Pending;
                }
                if busy {
                    this.phase = Phase::Busy;
                    // Be woken when the last request finishes, then look again: it
                    // may have finished while this waker was being registered.
                    this.connection.idle_waker.register(cx.waker());
                    if this.connection.active_requests() > 0 {
                        return Poll::Pending;
                    }
                }
                if this.phase == Phase::Busy || this.request_since_armed() {
                    // Bytes that came while busy, or after the last head in the
                    // same read, may have started the next head.
                    let next = if this.head_scan.mid_head() {
                        Phase::Head
                    } else {
                        Phase::Idle
                    };
                    this.enter(next);
                }
                ready!(this.deadline.as_mut().poll(cx));
                if this.phase == Phase::Idle && Instant::now() < this.idle_deadline {
                    if this.may_park() && this.hyper_is_idle() {
                        // Quiet for a while: end of input for hyper, which then ends
                        // the connection without a word; the socket itself stays open.
                        this.parked = true;
                        return Poll::Ready(Ok(()));
                    }
                    // Not now (a response still going out, a body still coming):
                    // the idle timeout itself stands.
                    this.deadline.as_mut().reset(this.idle_deadline);
                    ready!(this.deadline.as_mut().poll(cx));
                }
                let what = match this.phase {
                    Phase::Head => "request head not received within header_timeout",
                    _ if this.head_scan.in_body() => "request body stalled for body_timeout",
                    _ => "connection idle for idle_timeout",
                };
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what)))
            }
        }
    }
}

/// Reads the next bytes for hyper, letting the scan see each of them (see
/// `framing`): through a stack buffer, so they can be looked at before hyper
/// parses them, or straight into hyper's buffer where they can only be body
/// data (or the scan has lost track), counted but not looked at.
fn read_scanned<S: AsyncRead + Unpin>(
    io: &mut TokioIo<Counted<S>>,
    scan: &mut HeadScan,
    connection: &Connection,
    cx: &mut Context<'_>,
    mut buf: ReadBufCursor<'_>,
) -> Poll<io::Result<()>> {
    if scan.unscanned_room() >= buf.remaining() as u64 {
        let before = io.inner().read;
        ready!(Pin::new(&mut *io).poll_read(cx, buf))?;
        scan.skip(io.inner().read - before);
        return Poll::Ready(Ok(()));
    }
    let mut scratch = [const { MaybeUninit::<u8>::uninit() }; SCRATCH_BYTES];
    let limit = buf.remaining().min(SCRATCH_BYTES);
    let mut read = tokio::io::ReadBuf::uninit(&mut scratch[..limit]);
    ready!(AsyncRead::poll_read(
        Pin::new(io.inner_mut()),
        cx,
        &mut read
    ))?;
    let bytes = read.filled();
    if scan.feed(bytes) {
        connection
            .conflicting_framing
            .store(true, Ordering::Relaxed);
    }
    buf.put_slice(bytes);
    Poll::Ready(Ok(()))
}

/// Enough for the heads of nearly all requests, and for the tail of a body and
/// the head behind it, in one read; longer ones take more.
const SCRATCH_BYTES: usize = 16 * 1024;

/// A socket that counts the bytes read from it: what a read straight into
/// hyper's buffer brought, which hyper's cursor does not tell afterwards.
pub struct Counted<S> {
    inner: S,
    read: u64,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        this.read += (buf.filled().len() - before) as u64;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<S> TimedIo<S> {
    /// Notes how a write went; one that has found the socket full for
    /// `send_timeout` fails, which ends the connection: a client that does not
    /// read must not hold its backend connection and slot for good.
    fn written<T>(
        &mut self,
        cx: &mut Context<'_>,
        written: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if written.is_ready() {
            self.write_blocked = false;
            return written;
        }
        if !self.write_blocked {
            self.write_blocked = true;
            let due = Instant::now() + self.send_timeout;
            match &mut self.send_deadline {
                Some(deadline) => deadline.as_mut().reset(due),
                None => self.send_deadline = Some(Box::pin(tokio::time::sleep_until(due))),
            }
        }
        let deadline = self.send_deadline.as_mut().expect("armed above");
        ready!(deadline.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "client did not read for send_timeout",
        )))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Write for TimedIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = this.io().poll_write(cx, buf);
        this.written(cx, written)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = this.io().poll_write_vectored(cx, bufs);
        this.written(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.as_ref().is_some_and(|io| io.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // A TLS stream flushes its records here: the same stall as a write.
        let this = self.get_mut();
        let flushed = this.io().poll_flush(cx);
        this.written(cx, flushed)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.parked {
            // The socket is parked, not closed.
            return Poll::Ready(Ok(()));
        }
        let shut = this.io().poll_shutdown(cx);
        this.written(cx, shut)
    }
}

impl<S> Drop for TimedIo<S> {
    fn drop(&mut self) {
        if self.parked
            && let (Some(io), Some(slot)) = (self.io.take(), &self.park)
        {
            slot.put(io.into_inner().inner, self.idle_deadline);
        }
    }
}
