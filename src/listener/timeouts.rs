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
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
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
    /// `Connection::started_requests` when the phase was last set: a difference
    /// means a request came (and maybe went) since.
    seen_started: usize,
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
            seen_started: 0,
            deadline: Box::pin(tokio::time::sleep(header_timeout)),
        }
    }

    /// True when a request started since the phase was last set.
    fn request_since_armed(&self) -> bool {
        self.connection.started_requests() != self.seen_started
    }

    fn enter(&mut self, phase: Phase) {
        self.phase = phase;
        self.seen_started = self.connection.started_requests();
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
        let read = if busy {
            Pin::new(&mut this.io).poll_read(cx, buf)
        } else {
            read_head_bytes(this.io.inner_mut(), &this.connection, cx, buf)
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

/// Reads bytes that start (or continue) a request head through a stack buffer, so
/// they can be looked at before hyper parses them: hyper resolves a head carrying
/// both `Content-Length` and `Transfer-Encoding` by dropping the former, and weir
/// refuses such requests outright, so it must see the raw head. Body bytes, read
/// while a request is in flight, go straight to hyper's buffer.
fn read_head_bytes(
    stream: &mut TcpStream,
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
    if has_conflicting_framing(bytes) {
        connection
            .conflicting_framing
            .store(true, Ordering::Relaxed);
    }
    buf.put_slice(bytes);
    Poll::Ready(Ok(()))
}

/// Enough for the heads of nearly all requests in one read; longer ones take more.
const HEAD_READ_BYTES: usize = 4096;

/// True when the head at the start of `bytes` has both a `Content-Length` and a
/// `Transfer-Encoding` line (case-insensitive). Only the first head is looked at.
fn has_conflicting_framing(bytes: &[u8]) -> bool {
    let head = match bytes.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(end) => &bytes[..end + 2],
        None => bytes,
    };
    let (mut length, mut encoding) = (false, false);
    for line in head.split(|&b| b == b'\n').skip(1) {
        length |= starts_with_ignore_case(line, b"content-length:");
        encoding |= starts_with_ignore_case(line, b"transfer-encoding:");
    }
    length && encoding
}

fn starts_with_ignore_case(line: &[u8], name: &[u8]) -> bool {
    line.len() >= name.len() && line[..name.len()].eq_ignore_ascii_case(name)
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

#[cfg(test)]
mod tests {
    use super::has_conflicting_framing;

    #[test]
    fn both_framing_headers_in_one_head_are_seen() {
        let head = b"POST / HTTP/1.1\r\nHost: a\r\ncontent-LENGTH: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(has_conflicting_framing(head));
    }

    #[test]
    fn one_framing_header_is_fine() {
        assert!(!has_conflicting_framing(
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
        ));
        assert!(!has_conflicting_framing(
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        ));
    }

    #[test]
    fn header_names_in_the_body_do_not_count() {
        let bytes =
            b"POST / HTTP/1.1\r\nContent-Length: 30\r\n\r\n\r\nTransfer-Encoding: chunked\r\n";
        assert!(!has_conflicting_framing(bytes));
    }
}
