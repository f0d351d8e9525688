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
                    // The first bytes of a new request head (or a whole one, not
                    // yet counted: no parking under it); or, after an early
                    // answer, more of a body still coming, which may stall for
                    // `body_timeout` from here. Parking waits for the scan to
                    // be at rest, so a body never parks.
                    let next = if this.head_scan.in_body() {
                        Phase::Idle
                    } else {
                        Phase::Head
                    };
                    this.enter(next);
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

#[cfg(test)]
mod tests {
    //! `TimedIo` driven as hyper drives it, over an in-memory pipe, with the
    //! tokio clock paused: time is the input, and each deadline is checked a
    //! millisecond before it (still waiting) and at it (failed, or parked).

    use std::fmt::Debug;
    use std::future::Future;
    use std::pin::pin;

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
    const BODY_STALLED: &str = "request body stalled for body_timeout";
    const NOT_READING: &str = "client did not read for send_timeout";

    const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";

    /// One client connection, just accepted: the client's end of the pipe, and
    /// weir's through `TimedIo`, read and written as hyper does.
    struct Conn {
        client: DuplexStream,
        io: TokioIo<TimedIo<DuplexStream>>,
        connection: Arc<Connection>,
    }

    fn accept(park: Option<Arc<ParkSlot<DuplexStream>>>) -> Conn {
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
        let io = TimedIo::new(server, connection.clone(), &listener, head_deadline, park);
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
        let mut conn = accept(None);
        let mut buf = [0; 64];
        times_out_after(conn.io.read(&mut buf), HEADER, HEAD_LATE).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_trickling_in_is_still_due_at_header_timeout() {
        let mut conn = accept(None);
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
        let mut conn = accept(None);
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
        let mut conn = accept(None);
        conn.answered(GET).await;
        conn.read_waits().await;
        advance(IDLE / 2).await;
        conn.send(b"GET /next HT").await;
        let mut buf = [0; 64];
        times_out_after(conn.io.read(&mut buf), HEADER, HEAD_LATE).await;
    }

    /// A request body still coming after its response ended (the backend
    /// answered early): its rest is due within `body_timeout` of the response's
    /// end, parking or not. While the request is in flight, a stalled body is
    /// the request path's to cut.
    async fn a_body_still_coming_after_the_response(park: Option<Arc<ParkSlot<DuplexStream>>>) {
        let mut conn = accept(park.clone());
        conn.answered(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabcd")
            .await;
        let mut buf = [0; 64];
        times_out_after(conn.io.read(&mut buf), BODY, BODY_STALLED).await;
        drop(conn.io);
        assert!(park.is_none_or(|slot| slot.take().is_none()), "parked");
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_still_coming_after_the_response_is_due_within_body_timeout() {
        a_body_still_coming_after_the_response(None).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_mid_body_does_not_park_and_its_body_timeout_stands() {
        let slot = Arc::new(ParkSlot::default());
        a_body_still_coming_after_the_response(Some(slot)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn more_of_a_body_after_its_response_restarts_body_timeout_not_header_timeout() {
        let mut conn = accept(None);
        conn.answered(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabcd")
            .await;
        conn.read_waits().await;
        advance(Duration::from_secs(1)).await;
        // Body bytes, not the start of a head: the rest may stall for body_timeout.
        conn.send(b"ef").await;
        let mut buf = [0; 64];
        times_out_after(conn.io.read(&mut buf), BODY, BODY_STALLED).await;
    }

    /// A whole request read while none is counted (hyper has not dispatched it
    /// yet) must not look like a quiet connection: parking now would end hyper's
    /// connection under the request.
    #[tokio::test(start_paused = true)]
    async fn a_request_read_but_not_yet_dispatched_is_not_parked() {
        let slot = Arc::new(ParkSlot::default());
        let mut conn = accept(Some(slot.clone()));
        conn.answered(GET).await;
        conn.send(GET).await;
        let mut buf = [0; 64];
        let mut read = pin!(conn.io.read(&mut buf));
        assert!(poll_once(read.as_mut()).await.is_pending());
        advance(PARK_AFTER * 3).await;
        let read = poll_once(read.as_mut()).await;
        assert!(read.is_pending(), "read {read:?}");
        drop(conn.io);
        assert!(slot.take().is_none(), "parked");
    }

    /// Fills the pipe to a client that does not read.
    async fn fill(conn: &mut Conn) {
        let written = poll_once(pin!(conn.io.write(&[b'x'; PIPE]))).await;
        assert!(matches!(written, Poll::Ready(Ok(PIPE))), "{written:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_to_a_client_that_stopped_reading_fails_after_send_timeout() {
        let mut conn = accept(None);
        conn.send(GET).await;
        fill(&mut conn).await;
        times_out_after(conn.io.write(b"more"), SEND, NOT_READING).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_reads_however_slowly_is_not_cut() {
        let mut conn = accept(None);
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

    #[tokio::test(start_paused = true)]
    async fn a_quiet_connection_parks_its_socket_with_its_idle_deadline() {
        let slot = Arc::new(ParkSlot::default());
        let mut conn = accept(Some(slot.clone()));
        conn.answered(GET).await;
        let quiet_from = Instant::now();
        let mut buf = [0; 64];
        {
            let mut read = pin!(conn.io.read(&mut buf));
            assert!(poll_once(read.as_mut()).await.is_pending());
            advance(PARK_AFTER - MS).await;
            assert!(poll_once(read.as_mut()).await.is_pending());
            advance(MS).await;
            // End of input, for hyper.
            let read = poll_once(read.as_mut()).await;
            assert!(matches!(read, Poll::Ready(Ok(0))), "{read:?}");
        }
        // hyper then shuts its end down, which leaves the socket open.
        conn.io.shutdown().await.unwrap();
        drop(conn.io);
        let (mut parked, idle_deadline) = slot.take().expect("a parked socket");
        assert_eq!(idle_deadline, quiet_from + IDLE);
        // The same socket, open both ways.
        conn.client.write_all(b"GET /next").await.unwrap();
        let mut next = [0; 9];
        parked.read_exact(&mut next).await.unwrap();
        assert_eq!(&next, b"GET /next");
        parked.write_all(b"HTTP/1.1").await.unwrap();
        let mut answer = [0; 8];
        conn.client.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"HTTP/1.1");
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_http2_connection_does_not_park_and_its_idle_timeout_stands() {
        let slot = Arc::new(ParkSlot::default());
        let mut conn = accept(Some(slot.clone()));
        conn.connection.http2.store(true, Ordering::Relaxed);
        conn.answered(GET).await;
        let mut buf = [0; 64];
        times_out_after(conn.io.read(&mut buf), IDLE, IDLE_TOO_LONG).await;
        drop(conn.io);
        assert!(slot.take().is_none(), "parked");
    }
}
