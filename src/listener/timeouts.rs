//! Client connection timeouts of an HTTP/2 connection (hyper's), enforced on
//! the socket itself: `header_timeout` (the preface, and a head whose first
//! bytes came, must arrive in time: the slowloris guard), `idle_timeout`
//! (nothing to do), `send_timeout` (a client that stops reading what is sent
//! to it). weir's own HTTP/1 server keeps the same timeouts in its loop
//! (`http1`).
//!
//! Why not hyper's timers: they do not cover the phases weir tells apart, and
//! they allocate per request. Here one timer per connection serves every
//! phase and is re-armed only when the connection changes phase.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, Sleep};

use crate::config::ListenerConfig;
use crate::proxy::Connection;

/// What the connection is waiting for, which decides the deadline in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing received since the last response: `idle_timeout`.
    Idle,
    /// Bytes received with no request in flight (the preface, or the start of
    /// a request): `header_timeout` from the first of them (from the accept
    /// for the first request).
    Head,
    /// At least one request in flight: no read timeout here; the upstream
    /// timeouts bound the wait, and `body_timeout` a request body that stalls.
    Busy,
}

/// A client socket that fails its reads with `TimedOut` once the deadline of its
/// current phase has passed.
pub struct TimedIo<S> {
    io: TokioIo<S>,
    connection: Arc<Connection>,
    header_timeout: Duration,
    idle_timeout: Duration,
    phase: Phase,
    /// `Connection::started_requests` when the phase was last set: a difference
    /// means a request came (and maybe went) since.
    seen_started: usize,
    deadline: Pin<Box<Sleep>>,
    send: SendDeadline,
}

impl<S> TimedIo<S> {
    /// A connection of a listener with `config`, whose first request head is
    /// due by `head_deadline`.
    pub fn new(
        stream: S,
        connection: Arc<Connection>,
        config: &ListenerConfig,
        head_deadline: Instant,
    ) -> Self {
        TimedIo {
            io: TokioIo::new(stream),
            seen_started: connection.started_requests(),
            connection,
            header_timeout: config.header_timeout,
            idle_timeout: config.idle_timeout,
            phase: Phase::Head,
            deadline: Box::pin(tokio::time::sleep_until(head_deadline)),
            send: SendDeadline::new(config.send_timeout),
        }
    }

    fn io(&mut self) -> Pin<&mut TokioIo<S>>
    where
        S: Unpin,
    {
        Pin::new(&mut self.io)
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
            Phase::Busy | Phase::Idle => self.idle_timeout,
        };
        self.deadline.as_mut().reset(Instant::now() + timeout);
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
        match this.io().poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if !busy && (this.phase != Phase::Head || this.request_since_armed()) {
                    // The first bytes of something new while no request is in
                    // flight: due within `header_timeout`.
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
                    this.enter(Phase::Idle);
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

/// `send_timeout` on a client's writes: a write (or TLS flush) that has
/// found the socket full for that long fails, which ends the connection: a
/// client that does not read must not hold its backend connection and slot
/// for good. Shared by weir's HTTP/1 loop and hyper's HTTP/2 connections.
pub struct SendDeadline {
    timeout: Duration,
    /// The last write found the socket full.
    blocked: bool,
    /// Runs out `timeout` after a write found the socket full; made the first
    /// time one does (most connections never see a full socket).
    deadline: Option<Pin<Box<Sleep>>>,
}

impl SendDeadline {
    pub fn new(timeout: Duration) -> Self {
        SendDeadline {
            timeout,
            blocked: false,
            deadline: None,
        }
    }

    /// Passes on how a write went, or fails it once it has waited too long.
    pub fn check<T>(
        &mut self,
        cx: &mut Context<'_>,
        written: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if written.is_ready() {
            self.blocked = false;
            return written;
        }
        if !self.blocked {
            self.blocked = true;
            let due = Instant::now() + self.timeout;
            match &mut self.deadline {
                Some(deadline) => deadline.as_mut().reset(due),
                None => self.deadline = Some(Box::pin(tokio::time::sleep_until(due))),
            }
        }
        let deadline = self.deadline.as_mut().expect("armed above");
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
        this.send.check(cx, written)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = this.io().poll_write_vectored(cx, bufs);
        this.send.check(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // A TLS stream flushes its records here: the same stall as a write.
        let this = self.get_mut();
        let flushed = this.io().poll_flush(cx);
        this.send.check(cx, flushed)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let shut = this.io().poll_shutdown(cx);
        this.send.check(cx, shut)
    }
}

#[cfg(test)]
mod tests {
    //! `TimedIo` driven as hyper drives it, over an in-memory pipe, with the
    //! tokio clock paused: time is the input, and each deadline is checked a
    //! millisecond before it (still waiting) and at it (failed, or parked).

    use std::fmt::Debug;
    use std::future::Future;
    use std::pin::pin;
    use std::sync::atomic::Ordering;

    use arc_swap::ArcSwap;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tokio::time::advance;

    use super::*;
    use crate::metrics::Metrics;
    use crate::snapshot::Snapshot;

    // Each timeout its own length, so that a failure at the wrong one shows.
    const HEADER: Duration = Duration::from_secs(5);
    const IDLE: Duration = Duration::from_secs(60);
    const BODY: Duration = Duration::from_secs(20);
    const SEND: Duration = Duration::from_secs(15);
    const MS: Duration = Duration::from_millis(1);

    /// Bytes the pipe holds in each direction before a write waits.
    const PIPE: usize = 4096;

    const HEAD_LATE: &str = "request head not received within header_timeout";
    const IDLE_TOO_LONG: &str = "connection idle for idle_timeout";
    const NOT_READING: &str = "client did not read for send_timeout";

    const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";

    /// One client connection, just accepted: the client's end of the pipe, and
    /// weir's through `TimedIo`, read and written as hyper does.
    struct Conn {
        client: DuplexStream,
        io: TokioIo<TimedIo<DuplexStream>>,
        connection: Arc<Connection>,
    }

    fn accept() -> Conn {
        let text = format!(
            "[[listeners]]\nlisten = \"127.0.0.1:0\"\nheader_timeout = \"{}s\"\n\
             idle_timeout = \"{}s\"\nbody_timeout = \"{}s\"\nsend_timeout = \"{}s\"\n\
             [[routes]]\nupstream = \"a\"\n[upstreams.a]\n\
             backends = [{{ address = \"127.0.0.1:9001\" }}]\n",
            HEADER.as_secs(),
            IDLE.as_secs(),
            BODY.as_secs(),
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
        let (client, server) = tokio::io::duplex(PIPE);
        let head_deadline = Instant::now() + listener.header_timeout;
        let io = TimedIo::new(server, connection.clone(), &listener, head_deadline);
        Conn {
            client,
            io: TokioIo::new(io),
            connection,
        }
    }

    /// A request in flight on `connection`, counted as `proxy::serve` counts one.
    struct InFlight(Arc<Connection>);

    impl InFlight {
        fn start(connection: &Arc<Connection>) -> Self {
            connection.active.fetch_add(1, Ordering::Relaxed);
            connection.started.fetch_add(1, Ordering::Relaxed);
            InFlight(connection.clone())
        }
    }

    impl Drop for InFlight {
        fn drop(&mut self) {
            if self.0.active.fetch_sub(1, Ordering::Relaxed) == 1 {
                self.0.idle_waker.wake();
            }
        }
    }

    /// Polls `future` once, with this task's waker.
    async fn poll_once<F: Future>(mut future: Pin<&mut F>) -> Poll<F::Output> {
        std::future::poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx))).await
    }

    /// Asserts that `op` (a read or write of weir's end) is still waiting a
    /// millisecond before `after` from now, and has failed with `TimedOut`,
    /// saying `what`, at `after`.
    async fn times_out_after<T: Debug>(
        op: impl Future<Output = io::Result<T>>,
        after: Duration,
        what: &str,
    ) {
        let mut op = pin!(op);
        assert!(poll_once(op.as_mut()).await.is_pending(), "{what}: at once");
        advance(after - MS).await;
        assert!(
            poll_once(op.as_mut()).await.is_pending(),
            "{what}: before {after:?}"
        );
        advance(MS).await;
        match poll_once(op.as_mut()).await {
            Poll::Ready(Err(err)) => {
                assert_eq!(err.kind(), io::ErrorKind::TimedOut);
                assert_eq!(err.to_string(), what);
            }
            other => panic!("{what}: still {other:?} at {after:?}"),
        }
    }

    impl Conn {
        /// Reads what the client sent, as hyper does.
        async fn read_sent(&mut self) -> Vec<u8> {
            let mut buf = vec![0; PIPE];
            let n = poll_once(pin!(self.io.read(&mut buf))).await;
            let Poll::Ready(Ok(n @ 1..)) = n else {
                panic!("nothing to read: {n:?}");
            };
            buf.truncate(n);
            buf
        }

        /// Sends `bytes` from the client, and has weir read them.
        async fn send(&mut self, bytes: &[u8]) {
            self.client.write_all(bytes).await.unwrap();
            assert_eq!(self.read_sent().await, bytes);
        }

        /// Has weir read on with nothing there: still waiting.
        async fn read_waits(&mut self) {
            let mut buf = [0; 64];
            let read = poll_once(pin!(self.io.read(&mut buf))).await;
            assert!(read.is_pending(), "read {read:?}");
        }

        /// A whole request, answered: the connection is quiet from now on.
        async fn answered(&mut self, request: &[u8]) {
            self.send(request).await;
            let in_flight = InFlight::start(&self.connection);
            self.read_waits().await;
            drop(in_flight);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_head_is_due_header_timeout_after_the_accept() {
        let mut conn = accept();
        let mut buf = [0; 64];
        times_out_after(conn.io.read(&mut buf), HEADER, HEAD_LATE).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_trickling_in_is_still_due_at_header_timeout() {
        let mut conn = accept();
        conn.send(b"GET / HTTP/1.1\r\nX-Slow: ").await;
        // A byte a second does not move the deadline.
        for _ in 0..HEADER.as_secs() - 1 {
            advance(Duration::from_secs(1)).await;
            conn.send(b"a").await;
        }
        let mut buf = [0; 64];
        times_out_after(conn.io.read(&mut buf), Duration::from_secs(1), HEAD_LATE).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_has_no_read_deadline_and_idle_timeout_starts_at_its_end() {
        let mut conn = accept();
        conn.send(GET).await;
        let in_flight = InFlight::start(&conn.connection);
        let mut buf = [0; 64];
        // The upstream timeouts bound a request; the client's socket does not.
        // The clock runs on to each timer the read sets, if any.
        let long = HEADER + IDLE + BODY + SEND;
        let waited = tokio::time::timeout(long, conn.io.read(&mut buf)).await;
        assert!(waited.is_err(), "{waited:?}");
        drop(in_flight);
        // Quiet after its answer: idle_timeout, not header_timeout.
        times_out_after(conn.io.read(&mut buf), IDLE, IDLE_TOO_LONG).await;
    }

    #[tokio::test(start_paused = true)]
    async fn the_next_head_is_due_header_timeout_after_its_first_byte() {
        let mut conn = accept();
        conn.answered(GET).await;
        conn.read_waits().await;
        advance(IDLE / 2).await;
        conn.send(b"GET /next HT").await;
        let mut buf = [0; 64];
        times_out_after(conn.io.read(&mut buf), HEADER, HEAD_LATE).await;
    }

    /// Fills the pipe to a client that does not read.
    async fn fill(conn: &mut Conn) {
        let written = poll_once(pin!(conn.io.write(&[b'x'; PIPE]))).await;
        assert!(matches!(written, Poll::Ready(Ok(PIPE))), "{written:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_to_a_client_that_stopped_reading_fails_after_send_timeout() {
        let mut conn = accept();
        conn.send(GET).await;
        fill(&mut conn).await;
        times_out_after(conn.io.write(b"more"), SEND, NOT_READING).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_reads_however_slowly_is_not_cut() {
        let mut conn = accept();
        conn.send(GET).await;
        fill(&mut conn).await;
        {
            let mut write = pin!(conn.io.write(&[b'y'; PIPE]));
            assert!(poll_once(write.as_mut()).await.is_pending());
            advance(SEND - MS).await;
            let mut taken = [0; 1024];
            conn.client.read_exact(&mut taken).await.unwrap();
            let written = poll_once(write.as_mut()).await;
            assert!(matches!(written, Poll::Ready(Ok(1024))), "{written:?}");
        }
        // Waiting again: send_timeout from now, not from the first wait.
        times_out_after(conn.io.write(b"more"), SEND, NOT_READING).await;
    }
}
