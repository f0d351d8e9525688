//! The write side of a client connection: when Nagle's algorithm is turned
//! off, and how the side ends when the connection closes.
//!
//! A plain TCP connection spares two system calls of the usual four a
//! one-request connection spends on its socket besides reading and writing:
//! - `TCP_NODELAY` is set before the connection's second write, not at
//!   accept. Nagle holds back a small segment only while an earlier one is
//!   unacknowledged, so a connection's first write goes out at once with or
//!   without it (as nginx, which sets it once a connection is kept alive).
//! - A connection that closes with its read side back is closed without a
//!   `shutdown` first: with nothing of the client's left unread, `close` sends
//!   the same FIN; with bytes unread, both end in a reset.
//!
//! TLS sends its `close_notify` in its shutdown, and sets `TCP_NODELAY` at
//! accept: its handshake writes several times anyway.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use tokio::net::tcp::OwnedWriteHalf;

/// What the HTTP/1 loop needs of a client connection's write side.
pub(super) trait ClientWrite: AsyncWrite + Unpin + Send + Sync + 'static {
    /// Whether closing the socket ends the stream as its shutdown would: the
    /// loop then closes a connection without shutting it down first.
    const CLOSE_ENDS_STREAM: bool;

    /// Lets go of this side without shutting it down, when the read side is
    /// let go of too: the socket closes.
    fn close(self);
}

/// Any split stream (TLS, and the tests' in-memory pipes): shut down before
/// it closes.
impl<T: tokio::io::AsyncRead + AsyncWrite + Send + Sync + 'static> ClientWrite
    for tokio::io::WriteHalf<T>
{
    const CLOSE_ENDS_STREAM: bool = false;

    fn close(self) {}
}

/// The write half of a plain TCP connection.
pub(super) struct PlainWrite {
    half: OwnedWriteHalf,
    nagle: Nagle,
}

/// Where a plain connection is with `TCP_NODELAY`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Nagle {
    /// Nothing written yet: the first write goes out at once either way.
    Unwritten,
    /// Written to once; set off before the next write.
    Written,
    Off,
}

impl PlainWrite {
    /// A new connection's write side.
    pub(super) fn new(half: OwnedWriteHalf) -> Self {
        PlainWrite {
            half,
            nagle: Nagle::Unwritten,
        }
    }

    /// The write side of a connection woken from parking (see `park`).
    pub(super) fn unparked(half: OwnedWriteHalf) -> Self {
        PlainWrite {
            half,
            nagle: Nagle::Off,
        }
    }

    /// The half alone, for a parked connection, with Nagle off: a parked
    /// connection keeps no more than its socket's halves (a state byte here
    /// would grow every parked task by a word).
    pub(super) fn park(mut self) -> OwnedWriteHalf {
        if self.nagle != Nagle::Off {
            self.nagle_off();
        }
        self.half
    }

    pub(super) fn into_half(self) -> OwnedWriteHalf {
        self.half
    }

    /// Called before each write: turns Nagle off once something was written.
    fn before_write(&mut self) {
        if self.nagle == Nagle::Written {
            self.nagle_off();
        }
    }

    fn nagle_off(&mut self) {
        // A failure leaves Nagle on: responses may then wait for an ACK,
        // nothing worse, and the write that follows reports a dead socket.
        let _ = self.half.as_ref().set_nodelay(true);
        self.nagle = Nagle::Off;
    }

    fn after_write(&mut self, done: &Poll<io::Result<usize>>) {
        if self.nagle == Nagle::Unwritten && matches!(done, Poll::Ready(Ok(n)) if *n > 0) {
            self.nagle = Nagle::Written;
        }
    }
}

impl ClientWrite for PlainWrite {
    const CLOSE_ENDS_STREAM: bool = true;

    fn close(self) {
        // Dropped, the half would shut the socket down; forgotten, it lets the
        // read half's drop close it.
        self.half.forget();
    }
}

impl AsyncWrite for PlainWrite {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.before_write();
        let done = Pin::new(&mut this.half).poll_write(cx, buf);
        this.after_write(&done);
        done
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.before_write();
        let done = Pin::new(&mut this.half).poll_write_vectored(cx, bufs);
        this.after_write(&done);
        done
    }

    fn is_write_vectored(&self) -> bool {
        self.half.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().half).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().half).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    #[tokio::test]
    async fn nagle_goes_off_before_the_second_write_only() {
        let (_client, server) = pair().await;
        let (_read, write) = server.into_split();
        let mut write = PlainWrite::new(write);
        write.write_all(b"first").await.unwrap();
        assert!(!write.half.as_ref().nodelay().unwrap());
        write.write_all(b"second").await.unwrap();
        assert!(write.half.as_ref().nodelay().unwrap());
    }

    #[tokio::test]
    async fn a_parked_connection_has_nagle_off() {
        let (_client, server) = pair().await;
        let (_read, write) = server.into_split();
        let parked = PlainWrite::new(write).park();
        assert!(parked.as_ref().nodelay().unwrap());
    }

    #[tokio::test]
    async fn close_without_shutdown_still_ends_the_stream() {
        let (mut client, server) = pair().await;
        let (read, write) = server.into_split();
        let mut write = PlainWrite::new(write);
        write.write_all(b"response").await.unwrap();
        write.close();
        let mut got = [0; 8];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"response");
        // The socket closes with its read half, with a FIN: a reset would
        // fail the read.
        drop(read);
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    }
}
