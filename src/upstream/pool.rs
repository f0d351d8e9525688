//! Connections to one backend: opening them (TCP, an optional PROXY header, TLS,
//! then HTTP/1.1 or HTTP/2), parking them between requests, and handing them back
//! out. An HTTP/1.1 connection (weir's own client, `super::http1`) carries one
//! request at a time and is parked after each; an HTTP/2 connection (hyper's) is
//! shared by every request to its backend.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hyper::client::conn::http2;
use hyper::rt::{Read, Write};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tracing::debug;

use super::error::UpstreamError;
use super::http1::{BackendIo, Http1Connection};
use super::request_body::RequestBody;
use crate::config::{UpstreamProtocol, UpstreamTlsConfig};
use crate::tls::{TlsError, UpstreamTls};
use crate::workers;

use super::http1::MAX_RESPONSE_HEAD_BYTES;

/// HTTP/2 flow-control windows towards backends: large enough that one stream
/// can fill a loopback or LAN link without waiting for window updates.
const H2_STREAM_WINDOW: u32 = 1024 * 1024;
const H2_CONNECTION_WINDOW: u32 = 4 * 1024 * 1024;

/// HTTP/2 pings on a shared backend connection with no frames for this long,
/// and how long an answer may take before the connection is closed.
const H2_PING_INTERVAL: Duration = Duration::from_secs(20);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(10);

/// How an upstream's backend connections are made: TLS or not, which HTTP.
#[derive(Debug, Clone, Default)]
pub struct Transport {
    /// Tells connections made this way from connections made by an earlier
    /// config: a pool holds only those of its current generation.
    pub generation: u64,
    pub tls: Option<UpstreamTls>,
    /// What `tls` was built from, to tell whether a new config changes it.
    pub tls_config: Option<UpstreamTlsConfig>,
    pub protocol: UpstreamProtocol,
}

impl Transport {
    /// Reads the TLS files of `config`, if it has TLS.
    pub fn new(
        tls_config: Option<&UpstreamTlsConfig>,
        protocol: UpstreamProtocol,
    ) -> Result<Self, TlsError> {
        static GENERATIONS: AtomicU64 = AtomicU64::new(1);
        Ok(Transport {
            generation: GENERATIONS.fetch_add(1, Ordering::Relaxed),
            tls: tls_config
                .map(|config| UpstreamTls::new(config, protocol))
                .transpose()?,
            tls_config: tls_config.cloned(),
            protocol,
        })
    }

    /// Whether connections made by `other` are as good as this one's.
    pub fn same_settings(&self, other: &Transport) -> bool {
        self.protocol == other.protocol && self.tls_config == other.tls_config
    }

    pub fn scheme(&self) -> http::uri::Scheme {
        if self.tls.is_some() {
            http::uri::Scheme::HTTPS
        } else {
            http::uri::Scheme::HTTP
        }
    }
}

/// One backend connection: an HTTP/1.1 one of its own, or a handle on a shared
/// HTTP/2 one (whose connection task runs on its own).
#[derive(Debug)]
pub struct Connection {
    pub(super) sender: Sender,
    /// The generation of the transport that made it.
    pub(super) generation: u64,
    /// The worker whose runtime drives it, and whose idle list it goes back
    /// to, whichever worker finishes its exchange (a cached route's shared
    /// fill may be read to its end from another worker).
    pub(super) worker: usize,
}

#[derive(Debug)]
pub(super) enum Sender {
    Http1(Http1Connection),
    /// A handle on a shared, multiplexed connection.
    Http2(http2::SendRequest<RequestBody>),
}

/// A parked connection turned out closed, or otherwise unusable.
#[derive(Debug)]
pub struct Gone;

impl Connection {
    /// An HTTP/1.1 connection of transport `generation`.
    pub(super) fn http1(connection: Http1Connection, generation: u64) -> Self {
        Connection {
            sender: Sender::Http1(connection),
            generation,
            worker: workers::index(),
        }
    }

    /// Closed, as far as is known without looking at the socket (an HTTP/1.1
    /// connection is looked at when it is taken: [`Connection::poll_ready`]).
    pub fn is_closed(&self) -> bool {
        match &self.sender {
            Sender::Http1(_) => false,
            Sender::Http2(sender) => sender.is_closed(),
        }
    }

    /// Whether the connection can take a request now.
    pub fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Gone>> {
        use std::task::Poll;
        match &mut self.sender {
            Sender::Http1(connection) => Poll::Ready(if connection.poll_usable(cx) {
                Ok(())
            } else {
                Err(Gone)
            }),
            Sender::Http2(sender) => sender.poll_ready(cx).map_err(|_| Gone),
        }
    }

    /// Waits until the connection can take a request.
    pub async fn ready(&mut self) -> Result<(), Gone> {
        std::future::poll_fn(|cx| self.poll_ready(cx)).await
    }

    /// Another handle on the same connection, when it is a shared (HTTP/2) one.
    pub fn share(&self) -> Option<Connection> {
        match &self.sender {
            Sender::Http1(_) => None,
            Sender::Http2(sender) => Some(Connection {
                sender: Sender::Http2(sender.clone()),
                generation: self.generation,
                worker: self.worker,
            }),
        }
    }
}

/// Idle connections of one backend, one list per worker (see `crate::workers`),
/// each most recently used last (LIFO: the warmest connection is reused first and
/// the coldest ones age out). A worker takes and parks only connections of its
/// own, which its own runtime drives: no two workers share a list, and with an
/// HTTP/2 backend each worker has its own connection. `max_idle` holds per
/// worker, as nginx's `keepalive` limit does per worker process.
///
/// A std `Mutex` because it is held only to push or pop, never across an await;
/// it is per backend and per worker, so no other request path ever waits on it.
#[derive(Debug)]
pub struct Pool {
    idle: Box<[IdleList]>,
    max_idle: usize,
    /// The transport generation of the config in force: connections of another
    /// one (made before a reload changed TLS or the protocol) are not kept.
    generation: AtomicU64,
}

#[derive(Debug)]
struct Idle {
    connection: Connection,
    since: Instant,
}

/// One worker's idle connections, on cache lines of its own.
#[derive(Debug, Default)]
#[repr(align(128))]
struct IdleList(Mutex<Vec<Idle>>);

impl IdleList {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

// === impl Pool ===

impl Pool {
    pub fn new(max_idle: usize) -> Self {
        Pool {
            idle: (0..workers::count()).map(|_| IdleList::default()).collect(),
            max_idle,
            generation: AtomicU64::new(0),
        }
    }

    /// Keeps only connections of transport `generation` from now on.
    pub fn use_generation(&self, generation: u64) {
        if self.generation.swap(generation, Ordering::Relaxed) != generation {
            for list in &self.idle {
                list.lock().clear();
            }
        }
    }

    /// The idle connections of `worker` (the calling one's, to take from).
    fn list(&self, worker: usize) -> &IdleList {
        // A thread that is no worker (the control plane) shares the first's.
        self.idle.get(worker).unwrap_or(&self.idle[0])
    }

    fn current(&self, connection: &Connection) -> bool {
        connection.generation == self.generation.load(Ordering::Relaxed)
    }

    /// A parked connection of the calling worker that is still open and was
    /// idle for less than `idle_timeout`, if any, for a request of transport
    /// `generation`. A shared (HTTP/2) connection stays parked and a handle on
    /// it is returned. A request of an earlier config's transport (its tries
    /// outlived a reload) gets none: a connection of the new transport may
    /// speak another protocol than the one the request was shaped for.
    pub fn take(&self, idle_timeout: Duration, generation: u64) -> Option<Connection> {
        if generation != self.generation.load(Ordering::Relaxed) {
            return None;
        }
        let mut idle = self.list(workers::index()).lock();
        while let Some(entry) = idle.pop() {
            if entry.connection.is_closed()
                || entry.since.elapsed() >= idle_timeout
                || !self.current(&entry.connection)
            {
                continue;
            }
            if let Some(shared) = entry.connection.share() {
                // In use again: its idle time starts over.
                idle.push(Idle {
                    connection: entry.connection,
                    since: Instant::now(),
                });
                return Some(shared);
            }
            return Some(entry.connection);
        }
        None
    }

    /// Parks a connection whose last response has been read to the end.
    pub fn put(&self, connection: Connection, idle_timeout: Duration) {
        if connection.is_closed() || !self.current(&connection) {
            return;
        }
        let now = Instant::now();
        let mut idle = self.list(connection.worker).lock();
        // The oldest entries sit at the front: drop those past their time, and make
        // room when full. Dropping a `SendRequest` closes its connection.
        let stale = idle
            .iter()
            .take_while(|e| e.connection.is_closed() || now.duration_since(e.since) >= idle_timeout)
            .count();
        let overflow = (idle.len() - stale + 1).saturating_sub(self.max_idle);
        idle.drain(..stale + overflow);
        if self.max_idle > 0 {
            idle.push(Idle {
                connection,
                since: now,
            });
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.idle.iter().map(|list| list.lock().len()).sum()
    }
}

/// Opens a new connection to `address` (found by `dns_name`, if by a name) the
/// way `transport` says; with a `preamble` (a PROXY protocol header), writes it
/// first. TCP, the preamble and
/// the TLS handshake together get `connect_timeout`.
pub async fn connect(
    address: SocketAddr,
    dns_name: Option<&str>,
    transport: &Transport,
    connect_timeout: Duration,
    preamble: Option<&[u8]>,
) -> Result<Connection, UpstreamError> {
    let open = async {
        let mut stream = TcpStream::connect(address)
            .await
            .map_err(UpstreamError::Connect)?;
        if let Some(preamble) = preamble {
            use tokio::io::AsyncWriteExt;
            // Nothing of the request is written yet: a failure here is a connect failure.
            stream
                .write_all(preamble)
                .await
                .map_err(UpstreamError::Connect)?;
        }
        // Requests and small responses are written in one go; Nagle would only delay them.
        let _ = stream.set_nodelay(true);
        match &transport.tls {
            None => Ok(BackendIo::Plain(stream)),
            Some(tls) => tls
                .handshake(address, dns_name, stream)
                .await
                .map(|tls| BackendIo::Tls(Box::new(tls)))
                .map_err(UpstreamError::Tls),
        }
    };
    let stream = tokio::time::timeout(connect_timeout, open)
        .await
        .map_err(|_elapsed| UpstreamError::ConnectTimeout(connect_timeout))??;
    if !transport.protocol.is_http2() {
        return Ok(Connection::http1(
            Http1Connection::new(stream),
            transport.generation,
        ));
    }
    let sender = match stream {
        BackendIo::Plain(stream) => handshake(address, TokioIo::new(stream)).await,
        BackendIo::Tls(stream) => handshake(address, TokioIo::new(*stream)).await,
    }?;
    Ok(Connection {
        sender,
        generation: transport.generation,
        worker: workers::index(),
    })
}

/// Sets HTTP/2 up on an open stream and spawns the connection's task.
async fn handshake<T>(address: SocketAddr, io: T) -> Result<Sender, UpstreamError>
where
    T: Read + Write + Unpin + Send + 'static,
{
    {
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(hyper_util::rt::TokioTimer::new())
            // The connection is shared by every request to its backend: a backend
            // gone silent must be noticed, not waited on by each request in turn.
            .keep_alive_interval(H2_PING_INTERVAL)
            .keep_alive_timeout(H2_PING_TIMEOUT)
            .initial_stream_window_size(H2_STREAM_WINDOW)
            .initial_connection_window_size(H2_CONNECTION_WINDOW)
            .max_header_list_size(MAX_RESPONSE_HEAD_BYTES as u32)
            .handshake(io)
            .await
            .map_err(UpstreamError::Handshake)?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                debug!(backend = %address, error = %err, "backend connection ended with an error");
            }
        });
        Ok(Sender::Http2(sender))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A plain HTTP/1.1 connection to `address`, within 1 s.
    async fn plain_connect(address: SocketAddr) -> Result<Connection, UpstreamError> {
        connect(
            address,
            None,
            &Transport::default(),
            Duration::from_secs(1),
            None,
        )
        .await
    }

    async fn open_connection() -> (Connection, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let accept = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            // Hold the socket open until the test ends.
            std::future::pending::<()>().await;
            drop(socket);
        });
        (plain_connect(address).await.unwrap(), accept)
    }

    #[tokio::test]
    async fn parked_connection_is_handed_out_again() {
        let pool = Pool::new(4);
        let (connection, _server) = open_connection().await;
        pool.put(connection, Duration::from_secs(60));
        assert_eq!(pool.len(), 1);
        assert!(pool.take(Duration::from_secs(60), 0).is_some());
        assert!(pool.take(Duration::from_secs(60), 0).is_none());
    }

    #[tokio::test]
    async fn connection_idle_too_long_is_not_reused() {
        let pool = Pool::new(4);
        let (connection, _server) = open_connection().await;
        pool.put(connection, Duration::from_secs(60));
        assert!(pool.take(Duration::ZERO, 0).is_none());
        assert_eq!(pool.len(), 0);
    }

    #[tokio::test]
    async fn pool_keeps_at_most_max_idle() {
        let pool = Pool::new(2);
        let mut servers = Vec::new();
        for _ in 0..3 {
            let (connection, server) = open_connection().await;
            servers.push(server);
            pool.put(connection, Duration::from_secs(60));
        }
        assert_eq!(pool.len(), 2);
    }

    /// Runs `future` on `worker`'s thread and waits for its output.
    fn on<F>(worker: &tokio::runtime::Handle, future: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        worker.block_on(worker.spawn(future)).unwrap()
    }

    /// Opens a connection on `opener`'s runtime, parks it from `parker`'s
    /// thread, and tells which of the two workers can take it back.
    fn parked(opened_by: usize, parked_by: usize) -> [bool; 2] {
        let workers = crate::workers::Workers::start(2).unwrap();
        let handles = workers.handles();
        let pool = std::sync::Arc::new(Pool::new(4));
        let (connection, server) = on(&handles[opened_by], open_connection());
        let in_pool = pool.clone();
        on(&handles[parked_by], async move {
            in_pool.put(connection, Duration::from_secs(60))
        });
        let taken = [0, 1].map(|worker| {
            let pool = pool.clone();
            on(&handles[worker], async move {
                pool.take(Duration::from_secs(60), 0).is_some()
            })
        });
        server.abort();
        taken
    }

    /// A connection is handed out to the worker whose runtime drives it only.
    #[test]
    fn each_worker_takes_only_the_connections_it_parked() {
        assert_eq!(parked(0, 0), [true, false]);
        assert_eq!(parked(1, 1), [false, true]);
    }

    /// A connection whose exchange another worker finished (a cached route's
    /// shared fill, read to its end by another client) goes back to the
    /// worker that opened it.
    #[test]
    fn a_connection_goes_back_to_the_worker_that_opened_it() {
        assert_eq!(parked(1, 0), [false, true]);
        assert_eq!(parked(0, 1), [true, false]);
    }

    /// Tries that outlived a reload changing the transport open their own
    /// connections rather than take one of the new transport's.
    #[tokio::test]
    async fn a_request_of_an_earlier_transport_takes_no_parked_connection() {
        let pool = Pool::new(4);
        pool.use_generation(2);
        let (mut connection, _server) = open_connection().await;
        connection.generation = 2;
        pool.put(connection, Duration::from_secs(60));
        assert!(pool.take(Duration::from_secs(60), 1).is_none());
        assert!(pool.take(Duration::from_secs(60), 2).is_some());
    }

    #[tokio::test]
    async fn refused_connect_is_a_connect_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let err = plain_connect(address).await.unwrap_err();
        assert!(matches!(err, UpstreamError::Connect(_)), "{err:?}");
    }
}
