//! Client connection timeouts, enforced on the socket itself: `header_timeout`
//! (the whole request head must arrive in time: the slowloris guard) and
//! `idle_timeout` (keep-alive connections with nothing to do); and parking, which
//! ends hyper's hold on an HTTP/1 connection that has gone quiet (see `park`).
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
    /// At least one request in flight: no client timeout; the upstream timeouts
    /// bound the wait.
    Busy,
}

/// A client socket that fails its reads with `TimedOut` once the deadline of its
/// current phase has passed.
pub struct TimedIo<S> {
    /// Present until dropped (a parked socket is handed on then).
    io: Option<TokioIo<S>>,
    connection: Arc<Connection>,
    header_timeout: Duration,
    idle_timeout: Duration,
    phase: Phase,
    /// Bytes arrived while requests were in flight (pipelining): the next head
    /// has started.
    read_while_busy: bool,
    /// `Connection::started_requests` when the phase was last set: a difference
    /// means a request came (and maybe went) since.
    seen_started: usize,
    /// Raw scan of the request head being received; see `framing`.
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
            io: Some(TokioIo::new(stream)),
            seen_started: connection.started_requests(),
            connection,
            header_timeout: config.header_timeout,
            idle_timeout: config.idle_timeout,
            phase: Phase::Head,
            read_while_busy: false,
            head_scan: HeadScan::default(),
            deadline: Box::pin(tokio::time::sleep_until(head_deadline)),
            park,
            idle_deadline: head_deadline,
            parked: false,
            write_blocked: false,
        }
    }

    fn io(&mut self) -> Pin<&mut TokioIo<S>>
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

    /// Whether hyper is surely between messages, holding nothing: the last head
    /// read was whole and announced no body (a body may still be arriving after
    /// an early response), and the response went out whole.
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
                self.idle_deadline = now + self.idle_timeout;
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
        if !busy
            && (this.phase != Phase::Head || this.request_since_armed())
            && this.head_scan.body_follows()
        {
            // Whatever arrives now starts a new request head.
            this.head_scan.reset();
        }
        let read = if busy {
            this.io().poll_read(cx, buf)
        } else {
            let io = this
                .io
                .as_mut()
                .expect("the socket stays until the TimedIo is dropped");
            read_head_bytes(
                io.inner_mut(),
                &mut this.head_scan,
                &this.connection,
                cx,
                buf,
            )
        };
        match read {
            Poll::Ready(Ok(())) => {
                if busy {
                    this.read_while_busy = true;
                } else if this.phase != Phase::Head || this.request_since_armed() {
                    // The first bytes of a new request head.
                    this.read_while_busy = false;
                    this.enter(Phase::Head);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
            Poll::Pending => {
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
                    // same read, start the next head.
                    let next =
                        if std::mem::take(&mut this.read_while_busy) || this.head_scan.mid_head() {
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
                    _ => "connection idle for idle_timeout",
                };
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what)))
            }
        }
    }
}

/// Reads bytes that start (or continue) a request head through a stack buffer, so
/// they can be looked at before hyper parses them: hyper resolves a head carrying
/// both `Content-Length` and `Transfer-Encoding` by dropping the former, and weir
/// refuses such requests outright, so it must see the raw head. Body bytes, read
/// while a request is in flight, go straight to hyper's buffer.
fn read_head_bytes<S: AsyncRead + Unpin>(
    stream: &mut S,
    scan: &mut HeadScan,
    connection: &Connection,
    cx: &mut Context<'_>,
    mut buf: ReadBufCursor<'_>,
) -> Poll<io::Result<()>> {
    let mut scratch = [const { MaybeUninit::<u8>::uninit() }; HEAD_READ_BYTES];
    let limit = buf.remaining().min(HEAD_READ_BYTES);
    let mut read = tokio::io::ReadBuf::uninit(&mut scratch[..limit]);
    ready!(tokio::io::AsyncRead::poll_read(
        Pin::new(stream),
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

/// Enough for the heads of nearly all requests in one read; longer ones take more.
const HEAD_READ_BYTES: usize = 4096;

impl<S: AsyncRead + AsyncWrite + Unpin> Write for TimedIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = this.io().poll_write(cx, buf);
        this.write_blocked = written.is_pending();
        written
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = this.io().poll_write_vectored(cx, bufs);
        this.write_blocked = written.is_pending();
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.io.as_ref().is_some_and(|io| io.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().io().poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.parked {
            // The socket is parked, not closed.
            return Poll::Ready(Ok(()));
        }
        this.io().poll_shutdown(cx)
    }
}

impl<S> Drop for TimedIo<S> {
    fn drop(&mut self) {
        if self.parked
            && let (Some(io), Some(slot)) = (self.io.take(), &self.park)
        {
            slot.put(io.into_inner(), self.idle_deadline);
        }
    }
}
