//! Client connection timeouts, enforced on the socket itself: `header_timeout`
//! (the whole request head must arrive in time: the slowloris guard) and
//! `idle_timeout` (keep-alive connections with nothing to do).
//!
//! Why not hyper's `header_read_timeout`: it starts counting when hyper begins
//! waiting for a head, so it also cuts idle keep-alive connections after the header
//! timeout, it does not cover the protocol detection of the auto builder, and it
//! allocates a new timer for every request. Here one timer per connection serves
//! both timeouts and is re-armed only when the connection changes phase.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use crate::proxy::Connection;

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
pub struct TimedIo {
    io: TokioIo<TcpStream>,
    connection: Arc<Connection>,
    header_timeout: Duration,
    idle_timeout: Duration,
    phase: Phase,
    /// Bytes arrived while requests were in flight (pipelining): the next head
    /// has started.
    read_while_busy: bool,
    deadline: Pin<Box<Sleep>>,
}

impl TimedIo {
    pub fn new(
        stream: TcpStream,
        connection: Arc<Connection>,
        header_timeout: Duration,
        idle_timeout: Duration,
    ) -> Self {
        TimedIo {
            io: TokioIo::new(stream),
            connection,
            header_timeout,
            idle_timeout,
            phase: Phase::Head,
            read_while_busy: false,
            deadline: Box::pin(tokio::time::sleep(header_timeout)),
        }
    }

    fn enter(&mut self, phase: Phase) {
        self.phase = phase;
        let timeout = match phase {
            Phase::Head => self.header_timeout,
            Phase::Idle | Phase::Busy => self.idle_timeout,
        };
        self.deadline.as_mut().reset(Instant::now() + timeout);
    }
}

impl Read for TimedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let busy = this.connection.active_requests() > 0;
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if busy {
                    this.read_while_busy = true;
                } else if this.phase != Phase::Head {
                    this.enter(Phase::Head);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
            Poll::Pending => {
                if busy {
                    if this.phase != Phase::Busy {
                        this.phase = Phase::Busy;
                    }
                    // The deadline is still polled so that a request finishing without
                    // a further read wakes the connection to start its idle clock.
                    if this.deadline.as_mut().poll(cx).is_ready() {
                        this.enter(Phase::Busy);
                        let _ = this.deadline.as_mut().poll(cx);
                    }
                    return Poll::Pending;
                }
                if this.phase == Phase::Busy {
                    let next = if std::mem::take(&mut this.read_while_busy) {
                        Phase::Head
                    } else {
                        Phase::Idle
                    };
                    this.enter(next);
                }
                ready!(this.deadline.as_mut().poll(cx));
                let what = match this.phase {
                    Phase::Head => "request head not received within header_timeout",
                    _ => "connection idle for idle_timeout",
                };
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what)))
            }
        }
    }
}

impl Write for TimedIo {
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
