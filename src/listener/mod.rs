//! Client-facing listeners: bind, accept (with backoff on errors such as EMFILE),
//! serve each connection with HTTP/1.x and h2c on the same port, and drain on
//! shutdown.

mod client_write;
mod drain;
mod http1;
mod park;
mod timeouts;

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tracing::{Instrument, debug, debug_span, error, info, trace};

use crate::config::ListenerConfig;
use crate::metrics::{ListenerMetrics, Metrics};
use crate::proxy::{self, Connection};
use crate::proxy_protocol;
use crate::shutdown::Shutdown;
use crate::snapshot::Snapshot;
use crate::tls::{self, TlsError};

use client_write::PlainWrite;
use drain::{Drain, DrainWatch};
use timeouts::TimedIo;

/// Backoff after an accept error starts here and doubles up to the maximum: errors
/// such as EMFILE clear up when connections close, and retrying at once would spin.
const ACCEPT_BACKOFF_START: Duration = Duration::from_millis(5);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// A bound listener, not yet accepting: held apart from any runtime, so that
/// it may be served on whichever runtime (worker) takes it.
#[derive(Debug)]
pub(crate) struct Listener {
    tcp: std::net::TcpListener,
    address: SocketAddr,
}

/// What a listener reads for each connection it accepts, built from its config.
/// A reload swaps it in whole; connections already open keep the one they started
/// with.
pub(crate) struct ListenerSettings {
    pub config: ListenerConfig,
    name: Arc<str>,
    builder: auto::Builder<TokioExecutor>,
    trusted_proxies: Arc<[ipnet::IpNet]>,
    /// With `max_connections`: one permit per open connection.
    permits: Option<Arc<Semaphore>>,
    tls: Option<TlsAcceptor>,
    metrics: ListenerMetrics,
}

impl ListenerSettings {
    /// The facts of a connection from `client` to `local` on this listener.
    fn connection(
        &self,
        client: SocketAddr,
        local: SocketAddr,
        snapshots: Arc<ArcSwap<Snapshot>>,
    ) -> Arc<Connection> {
        Arc::new(Connection::new(
            self.name.clone(),
            client,
            local,
            self.tls.is_some(),
            snapshots,
            &self.trusted_proxies,
            &self.config,
        ))
    }

    /// Settings for `config`; the connection count carries over from `previous`
    /// when the limit did not change.
    pub fn new(
        config: ListenerConfig,
        previous: Option<&ListenerSettings>,
        metrics: &Metrics,
    ) -> Result<Self, TlsError> {
        // Certificates are read again on every reload: renewed files take effect.
        let tls = config.tls.as_ref().map(tls::acceptor).transpose()?;
        let permits = match previous {
            Some(previous) if previous.config.max_connections == config.max_connections => {
                previous.permits.clone()
            }
            _ => (config.max_connections > 0)
                .then(|| Arc::new(Semaphore::new(config.max_connections as usize))),
        };
        Ok(ListenerSettings {
            metrics: metrics.listener(&config.name),
            name: Arc::from(config.name.as_str()),
            builder: http_builder(&config),
            trusted_proxies: config.trusted_proxies.clone().into(),
            permits,
            tls,
            config,
        })
    }
}

// === impl Listener ===

impl Listener {
    pub async fn bind(address: SocketAddr) -> io::Result<Self> {
        let tcp = TcpListener::bind(address).await?;
        let address = tcp.local_addr()?;
        // The ACK of a request rides on its response instead of going alone
        // right away (as HAProxy's HTTP listeners do): one segment fewer per
        // new connection, which the client's kernel pays for. Accepted
        // connections inherit it. A client that splits a small request into
        // two writes with Nagle on waits for the delayed ACK (some 40 ms) on
        // each new connection's first request, as with HAProxy.
        let _ = socket2::SockRef::from(&tcp).set_tcp_quickack(false);
        Ok(Listener {
            tcp: tcp.into_std()?,
            address,
        })
    }

    /// Another handle on the same listening socket, for another worker: the
    /// kernel's queue of new connections is one, and whichever worker asks
    /// first takes the next.
    pub fn try_clone(&self) -> io::Result<Self> {
        Ok(Listener {
            tcp: self.tcp.try_clone()?,
            address: self.address,
        })
    }

    /// The bound address (the real port when the config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }

    /// Accepts and serves connections until `shutdown` or `stop` fires, then stops
    /// accepting and gives open connections up to `grace` to finish their requests.
    /// Each accepted connection uses the settings current at its accept.
    pub async fn serve(
        self,
        settings: Arc<ArcSwap<ListenerSettings>>,
        snapshots: Arc<ArcSwap<Snapshot>>,
        mut shutdown: Shutdown,
        mut stop: Shutdown,
        grace: Duration,
    ) {
        let tcp = match TcpListener::from_std(self.tcp) {
            Ok(tcp) => tcp,
            Err(err) => {
                error!(address = %self.address, error = %err, "cannot accept on this worker");
                return;
            }
        };
        let drain = Drain::new();
        let mut backoff = ACCEPT_BACKOFF_START;
        loop {
            let current = settings.load_full();
            // With max_connections, a permit is taken before each accept: when none
            // is left the loop stops accepting, and the kernel's backlog holds the rest.
            let permit = match &current.permits {
                None => None,
                Some(permits) => tokio::select! {
                    permit = permits.clone().acquire_owned() => permit.ok(),
                    () = shutdown.wait() => break,
                    () = stop.wait() => break,
                },
            };
            let accepted = tokio::select! {
                accepted = tcp.accept() => accepted,
                () = shutdown.wait() => break,
                () = stop.wait() => break,
            };
            // Loaded again: a reload during the wait for this connection applies to it.
            let current = settings.load_full();
            match accepted {
                Ok((stream, peer)) => {
                    backoff = ACCEPT_BACKOFF_START;
                    // Responses are written whole; Nagle would only delay them.
                    // A plain connection turns it off before its second write
                    // (see `client_write`).
                    if current.tls.is_some() {
                        let _ = stream.set_nodelay(true);
                    }
                    // The address the client connected to matters only to a PROXY
                    // header sent to backends: on a wildcard bind it costs a
                    // syscall, so the socket is asked only when one is sent (a
                    // reload that starts sending leaves older connections with
                    // the wildcard).
                    let local = if self.address.ip().is_unspecified()
                        && snapshots.load().sends_proxy_protocol
                    {
                        stream.local_addr().unwrap_or(self.address)
                    } else {
                        self.address
                    };
                    let span = debug_span!("conn", listener = %current.name, client.addr = %peer);
                    current.metrics.connections_total.inc();
                    let open =
                        OpenConnection::new(current.metrics.connections_active.clone(), permit);
                    let watcher = drain.watch();
                    if current.config.proxy_protocol || current.tls.is_some() {
                        let accepted = Accepted {
                            stream,
                            peer,
                            local,
                            settings: current.clone(),
                            snapshots: snapshots.clone(),
                            watcher,
                            open,
                        };
                        tokio::spawn(serve_accepted(accepted).instrument(span));
                    } else {
                        // The common case gets a task that is nothing but the connection's
                        // loop, which keeps only what it captures for as long as the
                        // connection is open: a 512-byte task where the general path
                        // above takes 768.
                        let connection = current.connection(peer, local, snapshots.clone());
                        let serving = serve_plain(
                            stream.into_split(),
                            connection,
                            current.clone(),
                            watcher,
                            open,
                        );
                        tokio::spawn(serving.instrument(span));
                    }
                }
                Err(err) => {
                    error!(listener = %current.name, error = %err, "accept failed; retrying in {backoff:?}");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = shutdown.wait() => break,
                        () = stop.wait() => break,
                    }
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                }
            }
        }
        drop(tcp);
        let name = settings.load().name.clone();
        let open = drain.open();
        info!(listener = %name, open_connections = open, "stopped accepting; draining");
        if tokio::time::timeout(grace, drain.drain()).await.is_err() {
            info!(listener = %name, "shutdown_timeout reached; closing remaining connections");
        }
    }
}

/// hyper's server, for HTTP/2 only: HTTP/1 is weir's own (`http1`), which
/// hands over a connection that opens with the HTTP/2 preface.
fn http_builder(config: &ListenerConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new()).http2_only();
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(config.max_concurrent_streams);
    builder
}

/// The client of a new connection on a `proxy_protocol` listener: the address
/// of the PROXY header (read within `header_timeout`). `None` closes the
/// connection: a PROXY header missing, malformed, or sent by a peer that is not
/// one of `trusted_proxies` (when that list is set).
async fn client_of(
    mut stream: TcpStream,
    peer: SocketAddr,
    settings: &ListenerSettings,
) -> Option<(TcpStream, SocketAddr)> {
    let trusted = &settings.trusted_proxies;
    if !trusted.is_empty() && !trusted.iter().any(|net| net.contains(&peer.ip())) {
        debug!("PROXY protocol from a peer outside trusted_proxies; closing");
        return None;
    }
    let header = tokio::time::timeout(
        settings.config.header_timeout,
        proxy_protocol::read_header(&mut stream),
    )
    .await;
    match header {
        Ok(Ok(client)) => Some((stream, client.unwrap_or(peer))),
        Ok(Err(err)) => {
            debug!(error = %err, "closing");
            None
        }
        Err(_elapsed) => {
            debug!("no PROXY protocol header within header_timeout; closing");
            None
        }
    }
}

/// Completes the TLS handshake within `tls_handshake_timeout`, then serves the
/// connection. A failed handshake (port scans, plain HTTP to the TLS port, clients
/// that give up) costs a debug line: nothing for weir to worry about.
async fn serve_tls(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    connection: Arc<Connection>,
    settings: Arc<ListenerSettings>,
    mut watcher: DrainWatch,
) {
    let config = &settings.config;
    match tokio::time::timeout(config.tls_handshake_timeout, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => {
            let head_deadline = tokio::time::Instant::now() + config.header_timeout;
            let limits = http1::Limits::of(config);
            let (read, write) = tokio::io::split(stream);
            let run = http1::Http1Loop::new(
                http1::ReadSide::new(read, bytes::BytesMut::new()),
                http1::TimedWrite::new(write, config.send_timeout),
                Arc::new(http1::Shared::default()),
                connection.clone(),
                &limits,
                &mut watcher,
                false,
                true,
            )
            .run(head_deadline);
            match run.await {
                http1::Ending::Closed | http1::Ending::Quiet { .. } => {}
                http1::Ending::Tunnel => outlived_by_tunnel(&connection).await,
                http1::Ending::Http2 { read, write } => {
                    let (prefix, read) = read.into_parts();
                    let stream = http1::Rewind::new(prefix, read.unsplit(write));
                    let io = TimedIo::new(stream, connection.clone(), config, head_deadline);
                    serve_connection(io, connection.clone(), &settings.builder, &mut watcher).await;
                    outlived_by_tunnel(&connection).await;
                }
            }
        }
        Ok(Err(err)) => debug!(error = %err, "TLS handshake failed"),
        Err(_) => debug!("TLS handshake not done within tls_handshake_timeout"),
    }
}

/// An accepted connection that needs more than `serve_plain`: a PROXY header to
/// read first, or TLS.
struct Accepted {
    stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    settings: Arc<ListenerSettings>,
    snapshots: Arc<ArcSwap<Snapshot>>,
    watcher: DrainWatch,
    open: OpenConnection,
}

/// Counts a connection as open (and holds its `max_connections` permit) while
/// it lives: for as long as the connection's task, however that ends.
struct OpenConnection {
    active: prometheus::IntGauge,
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl OpenConnection {
    fn new(
        active: prometheus::IntGauge,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Self {
        active.inc();
        OpenConnection {
            active,
            _permit: permit,
        }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.active.dec();
    }
}

async fn serve_accepted(accepted: Accepted) {
    let Accepted {
        stream,
        peer,
        local,
        settings,
        snapshots,
        watcher,
        open,
    } = accepted;
    // Boxed: reading the header takes more room than the connection needs for
    // the rest of its life, which the task would keep.
    let client = if settings.config.proxy_protocol {
        Box::pin(client_of(stream, peer, &settings)).await
    } else {
        Some((stream, peer))
    };
    let Some((stream, client)) = client else {
        return;
    };
    let connection = settings.connection(client, local, snapshots);
    match &settings.tls {
        None => {
            let halves = stream.into_split();
            serve_plain(halves, connection, settings.clone(), watcher, open).await;
        }
        // Boxed: a TLS connection's state is large, and plain connections (with a
        // PROXY header) should not carry its size. Written into its box as it
        // is made, not made and moved in (see `serve_plain`).
        Some(acceptor) => {
            let tls = Box::write(
                Box::new_uninit(),
                serve_tls(
                    acceptor.clone(),
                    stream,
                    connection,
                    settings.clone(),
                    watcher,
                ),
            );
            Box::into_pin(tls).await;
            drop(open);
        }
    }
}

/// Serves a plain TCP connection to its end, parking it whenever it goes quiet
/// between HTTP/1 requests (see `park`): only the socket's halves are kept
/// then; the loop, its buffers and timers are gone.
///
/// Not an `async fn`: one of those keeps its arguments twice in its future (as
/// passed, and moved into the body), and this future is a parked connection's
/// whole task. It takes the socket split (and keeps its halves where they
/// came): a `TcpStream` taken whole would keep its room in the task after
/// the split.
#[allow(clippy::manual_async_fn)]
fn serve_plain(
    (mut read, mut write): (OwnedReadHalf, OwnedWriteHalf),
    connection: Arc<Connection>,
    settings: Arc<ListenerSettings>,
    mut watcher: DrainWatch,
    open: OpenConnection,
) -> impl Future<Output = ()> {
    async move {
        // Held, not used: the connection counts as open while this future lives.
        let _ = &open;
        let config = &settings.config;
        let limits = http1::Limits::of(config);
        let shared = Arc::new(http1::Shared::default());
        let mut head_deadline = tokio::time::Instant::now() + config.header_timeout;
        let mut first = true;
        loop {
            let serving = http1::Http1Loop::new(
                http1::ReadSide::new(read, bytes::BytesMut::new()),
                http1::TimedWrite::new(
                    if first {
                        PlainWrite::new(write)
                    } else {
                        PlainWrite::unparked(write)
                    },
                    config.send_timeout,
                ),
                shared.clone(),
                connection.clone(),
                &limits,
                &mut watcher,
                true,
                first,
            );
            // Boxed: freed while the connection is parked. Written into its
            // box as it is made: the loop's future is some 11 KB, and made
            // first and then moved in, it was copied whole twice per
            // connection.
            let run = Box::write(Box::new_uninit(), serving.run(head_deadline));
            // In a block of its own: the loop's ending is gone before the
            // connection parks, and takes no room in a parked task.
            let (parked_read, parked_write, idle_deadline) = {
                let ending = Box::into_pin(run).await;
                match ending {
                    http1::Ending::Quiet {
                        read,
                        write,
                        idle_deadline,
                    } => (read, write.park(), idle_deadline),
                    http1::Ending::Closed => return,
                    // Rare, and their state is large: boxed, so that no
                    // parked connection's task keeps room for it.
                    handed => {
                        let after = after_http1(
                            handed,
                            &connection,
                            &settings,
                            &mut watcher,
                            head_deadline,
                        );
                        return Box::pin(after).await;
                    }
                }
            };
            (read, write) = (parked_read, parked_write);
            first = false;
            // The loop and its buffers are gone: the one sign of it outside this
            // task, at trace level in the connection's span.
            trace!("parked");
            // Parked: the loop's last read found nothing, so the socket's read
            // readiness was cleared then, and is set again by the client's next
            // bytes (or by them having come meanwhile: the wait returns at once).
            // Polled by hand rather than by `select!` over `readable()`: the
            // socket's own waker slot costs no room, where a `readable()` future
            // would take 152 bytes of every connection's task.
            let mut idle = std::pin::pin!(tokio::time::sleep_until(idle_deadline));
            let readable = std::future::poll_fn(|cx| {
                if watcher.poll_started(cx).is_ready() || idle.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(false);
                }
                read.as_ref().poll_read_ready(cx).map(|ready| ready.is_ok())
            });
            if !readable.await {
                // The read half closes the socket as it is dropped, with
                // a FIN (see `client_write`).
                write.forget();
                return;
            }
            // Whatever wakes a parked connection starts a new request head.
            head_deadline = tokio::time::Instant::now() + config.header_timeout;
        }
    }
}

/// A plain connection's life after its HTTP/1 loop handed it on: to a
/// tunnel, or to HTTP/2 (the client's preface read).
async fn after_http1(
    ending: http1::Ending<OwnedReadHalf, PlainWrite>,
    connection: &Arc<Connection>,
    settings: &ListenerSettings,
    watcher: &mut DrainWatch,
    head_deadline: tokio::time::Instant,
) {
    match ending {
        http1::Ending::Closed | http1::Ending::Quiet { .. } => return,
        http1::Ending::Tunnel => {}
        http1::Ending::Http2 { read, write } => {
            let (prefix, read) = read.into_parts();
            let Ok(stream) = read.reunite(write.into_half()) else {
                return;
            };
            // HTTP/2 writes its frames as they come.
            let _ = stream.set_nodelay(true);
            let stream = http1::Rewind::new(prefix, stream);
            let io = TimedIo::new(stream, connection.clone(), &settings.config, head_deadline);
            Box::pin(serve_connection(
                io,
                connection.clone(),
                &settings.builder,
                watcher,
            ))
            .await;
        }
    }
    outlived_by_tunnel(connection).await;
}

/// Waits until no request of `connection` is left: once hyper is done with a
/// connection, only a tunnel (WebSocket, Upgrade) can hold one. The connection
/// then still counts as open for `max_connections` and for the drain, which
/// waits for it up to `shutdown_timeout`.
async fn outlived_by_tunnel(connection: &Connection) {
    std::future::poll_fn(|cx| {
        connection.idle_waker.register(cx.waker());
        if connection.active_requests() == 0 {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await
}

/// Serves one client connection until hyper is done with it; true when hyper
/// ended it without an error.
async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    io: TimedIo<S>,
    connection: Arc<Connection>,
    builder: &auto::Builder<TokioExecutor>,
    watcher: &mut DrainWatch,
) -> bool {
    let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
        let connection = connection.clone();
        let request = request.map(crate::upstream::ClientStream::Http2);
        async move { Ok::<_, Infallible>(proxy::serve(connection, request, None).await) }
    });
    let serving = builder
        .serve_connection_with_upgrades(io, service)
        .into_owned();
    match watcher.serve(serving).await {
        Ok(()) => true,
        Err(err) => {
            // Clients vanish, time out and send garbage all the time: not an error of weir's.
            debug!(error = %err, "connection ended with an error");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_accepted_delay_their_acks() {
        let listener = Listener::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let _client = std::net::TcpStream::connect(listener.local_addr()).unwrap();
        let (accepted, _) = listener.tcp.accept().unwrap();
        assert!(!socket2::SockRef::from(&accepted).tcp_quickack().unwrap());
    }
}
