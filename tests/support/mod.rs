//! Helpers shared by the socket-level tests: in-process backends, a weir started on
//! `127.0.0.1:0`, an HTTP client and a raw TCP client for bytes hyper would refuse
//! to send; the weir binary run as a child process ([`process`]); a real
//! `redis-server` ([`redis`]); and samples read out of the metrics ([`metrics`]).
//!
//! Every wait is bounded (`within`) so that a hang fails the test instead of
//! blocking the suite; nothing here sleeps to synchronise.

#![allow(dead_code)]

pub mod dns;
pub mod marks;
pub mod metrics;
pub mod pki;
pub mod process;
pub mod redis;

// Not every test binary runs weir as a process: like the rest, unused in some.
#[allow(unused_imports)]
pub use process::{WeirCommand, WeirProcess, proc_status};

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use weir::Running;
use weir::shutdown::ShutdownTrigger;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type of every test request and backend response.
pub type Body = BoxBody<Bytes, BoxError>;

/// Upper bound of any single wait: far above what a passing test needs.
pub const BOUND: Duration = Duration::from_secs(5);

/// Awaits `future`, failing the test with `what` if it takes longer than [`BOUND`].
pub async fn within<F: Future>(what: &str, future: F) -> F::Output {
    within_for(BOUND, what, future).await
}

/// Awaits `future`, failing the test with `what` if it takes longer than `bound`.
pub async fn within_for<F: Future>(bound: Duration, what: &str, future: F) -> F::Output {
    match tokio::time::timeout(bound, future).await {
        Ok(output) => output,
        Err(_) => panic!("timed out after {bound:?}: {what}"),
    }
}

/// A body fed from a channel, one chunk per message, ending when the sender drops.
pub fn channel_body(rx: tokio::sync::mpsc::Receiver<Bytes>) -> Body {
    let frames = futures_util::stream::unfold(rx, |mut rx| async move {
        let chunk = rx.recv().await?;
        Some((Ok::<_, BoxError>(hyper::body::Frame::data(chunk)), rx))
    });
    http_body_util::StreamBody::new(frames).boxed()
}

pub fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed()
}

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// A plain-text response.
pub fn text(status: u16, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .body(full(body))
        .unwrap()
}

// === backends ===

/// The head of one request a backend received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
}

/// An in-process HTTP/1.1 backend; it stops accepting when dropped.
pub struct Backend {
    pub addr: SocketAddr,
    /// TCP connections accepted so far.
    pub connections: Arc<AtomicUsize>,
    /// Request heads received so far, in arrival order.
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    accept: JoinHandle<()>,
    /// The tasks serving accepted connections, for [`Backend::kill`].
    served: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Backend {
    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn request_count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    /// The paths of the requests received so far, in arrival order.
    pub fn paths(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.uri.path().to_owned())
            .collect()
    }

    /// The last request head received; panics if there was none.
    pub fn last_request(&self) -> Recorded {
        self.requests
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("the backend received no request")
    }
}

impl Backend {
    /// A backend served by a test's own accept loop, counting its connections.
    pub fn from_parts(
        addr: SocketAddr,
        connections: Arc<AtomicUsize>,
        accept: JoinHandle<()>,
    ) -> Self {
        Backend {
            addr,
            connections,
            requests: Arc::new(Mutex::new(Vec::new())),
            accept,
            served: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Dies as a crashed process would: the port closes (connects are refused) and
    /// every open connection is dropped, mid-request or idle.
    pub fn kill(&self) {
        self.accept.abort();
        for task in self.served.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Starts a backend on `127.0.0.1:0` that records each request head and answers
/// with `handler`. Connections support upgrades (the handler may answer 101).
pub async fn spawn_backend<F, Fut>(handler: F) -> Backend
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    serve_backend(listener, Serving::default(), handler)
}

/// How a test backend speaks: plain HTTP/1.1 by default.
#[derive(Clone, Default)]
pub struct Serving {
    /// TLS with this config (its ALPN list decides h2 over TLS).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// HTTP/2 as well as HTTP/1.1: h2c with prior knowledge, or h2 under TLS.
    pub http2: bool,
}

/// [`spawn_backend`] speaking the way `serving` says.
pub async fn spawn_backend_serving<F, Fut>(serving: Serving, handler: F) -> Backend
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    serve_backend(listener, serving, handler)
}

/// [`spawn_backend`] on a given address: a backend that comes back after [`Backend::kill`].
pub async fn spawn_backend_at<F, Fut>(addr: SocketAddr, handler: F) -> Backend
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let listener = TcpListener::bind(addr).await.unwrap();
    serve_backend(listener, Serving::default(), handler)
}

fn serve_backend<F, Fut>(listener: TcpListener, serving: Serving, handler: F) -> Backend
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let served = Arc::new(Mutex::new(Vec::new()));
    let handler = Arc::new(handler);
    let accept = {
        let connections = connections.clone();
        let requests = requests.clone();
        let served = served.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                connections.fetch_add(1, Ordering::SeqCst);
                let requests = requests.clone();
                let handler = handler.clone();
                let service = service_fn(move |request: Request<Incoming>| {
                    requests.lock().unwrap().push(Recorded {
                        method: request.method().clone(),
                        uri: request.uri().clone(),
                        version: request.version(),
                        headers: request.headers().clone(),
                    });
                    let response = handler(request);
                    async move { Ok::<_, std::convert::Infallible>(response.await) }
                });
                let serving = serving.clone();
                let task = tokio::spawn(async move {
                    match serving.tls {
                        None => serve_io(TokioIo::new(stream), service, serving.http2).await,
                        Some(config) => {
                            let acceptor = tokio_rustls::TlsAcceptor::from(config);
                            if let Ok(stream) = acceptor.accept(stream).await {
                                serve_io(TokioIo::new(stream), service, serving.http2).await;
                            }
                        }
                    }
                });
                served.lock().unwrap().push(task.abort_handle());
            }
        })
    };
    Backend {
        addr,
        connections,
        requests,
        accept,
        served,
    }
}

/// Serves one backend connection until it ends.
async fn serve_io<I, S>(io: I, service: S, http2: bool)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::Service<Request<Incoming>, Response = Response<Body>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if http2 {
        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
            .serve_connection_with_upgrades(io, service)
            .await;
    } else {
        let _ = http1::Builder::new()
            .serve_connection(io, service)
            .with_upgrades()
            .await;
    }
}

/// A backend that answers every request with 200 and `name` as the body.
pub async fn spawn_named_backend(name: &'static str) -> Backend {
    spawn_backend(move |_request| async move { text(200, name) }).await
}

/// A backend answering 200 with the request's path as the body.
pub async fn spawn_path_backend() -> Backend {
    spawn_backend(|request| async move { text(200, request.uri().path().to_owned()) }).await
}

/// A backend speaking raw bytes: for each connection it reads one request head
/// (up to the blank line), then hands the socket to `respond`. For responses that
/// a correct HTTP server would never send.
pub async fn spawn_raw_backend<F, Fut>(respond: F) -> Backend
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let respond = Arc::new(respond);
    let accept = {
        let connections = connections.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                connections.fetch_add(1, Ordering::SeqCst);
                let respond = respond.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match stream.read(&mut byte).await {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    respond(stream).await;
                });
            }
        })
    };
    Backend::from_parts(addr, connections, accept)
}

/// A loopback address with a free port, for a listener a test binds later.
pub async fn free_addr() -> SocketAddr {
    refused_addr().await
}

/// An address on which nothing listens: bound, then released.
pub async fn refused_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

// === weir ===

/// A running weir with one listener.
pub struct Lb {
    pub addr: SocketAddr,
    pub trigger: ShutdownTrigger,
    pub running: Running,
}

impl Lb {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The running weir's metrics in the Prometheus text format (counters and
    /// cache gauges as `/metrics` gives them; backend gauges not refreshed).
    pub fn metrics(&self) -> String {
        self.running.control().metrics().encode()
    }

    /// How many requests of `route` the cache answered with `result`.
    pub fn cache_results(&self, route: &str, result: &str) -> f64 {
        metrics::sample(
            &self.metrics(),
            "weir_cache_requests_total",
            &[("route", route), ("result", result)],
        )
        .unwrap_or(0.0)
    }
}

/// Starts weir with `text`, where each `{name}` of `backends` is replaced by that
/// address. Without a `[[listeners]]` table one on `127.0.0.1:0` is added; a test
/// that needs listener keys writes its own with `listen = "127.0.0.1:0"`.
pub async fn start_lb(text: &str, backends: &[(&str, SocketAddr)]) -> Lb {
    let mut text = text.to_owned();
    for (name, addr) in backends {
        text = text.replace(&format!("{{{name}}}"), &addr.to_string());
    }
    if !text.contains("[[listeners]]") {
        text = format!("[[listeners]]\nlisten = \"127.0.0.1:0\"\n\n{text}");
    }
    let config = weir::config::parse(&text, "test.toml")
        .unwrap_or_else(|err| panic!("invalid test config:\n{err}\n---\n{text}"));
    start_lb_config(config).await
}

/// Starts weir with a parsed config; [`Lb::addr`] is its first listener.
pub async fn start_lb_config(config: weir::config::Config) -> Lb {
    let (trigger, shutdown) = weir::shutdown::channel();
    let running = within("weir to start", weir::start(config, shutdown))
        .await
        .unwrap();
    Lb {
        addr: running.addresses[0],
        trigger,
        running,
    }
}

/// `[[routes]]` sending everything to upstream `app`, whose backends are the
/// placeholders `names`.
pub fn one_upstream(names: &[&str], extra: &str) -> String {
    let backends: Vec<String> = names
        .iter()
        .map(|n| format!("{{ address = \"{{{n}}}\" }}"))
        .collect();
    format!(
        "[[routes]]\nupstream = \"app\"\n\n[upstreams.app]\nbackends = [{}]\n{extra}\n",
        backends.join(", ")
    )
}

/// A `[[listeners]]` table on `127.0.0.1:0` with `keys` added, for a config that
/// sets listener keys.
pub fn timed_listener(keys: &str) -> String {
    format!("[[listeners]]\nlisten = \"127.0.0.1:0\"\n{keys}\n\n")
}

// === HTTP client ===

/// An HTTP/2 client connection with prior knowledge (h2c) to `addr`; the handle
/// is the connection's task, to tell whether it is still up.
pub async fn h2c_connect(
    addr: SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<Body>,
    JoinHandle<hyper::Result<()>>,
) {
    let (sender, connection) = within("an h2c connection", async {
        let stream = TcpStream::connect(addr).await.unwrap();
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap()
    })
    .await;
    (sender, tokio::spawn(connection))
}

pub fn client() -> Client<HttpConnector, Body> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// A response read to its end.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The first `name` header as text; `None` when absent or not text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends `request` with `client` and reads the whole response.
pub async fn send(client: &Client<HttpConnector, Body>, request: Request<Body>) -> Reply {
    send_within(BOUND, client, request).await
}

/// [`send`] for exchanges that may take longer than [`BOUND`] (bulk transfers).
pub async fn send_within(
    bound: Duration,
    client: &Client<HttpConnector, Body>,
    request: Request<Body>,
) -> Reply {
    let what = format!("{} {}", request.method(), request.uri());
    within_for(bound, &what, async {
        let response = client.request(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        Reply {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body,
        }
    })
    .await
}

/// `GET url` with a `Host` header of `host` when given.
pub async fn get(client: &Client<HttpConnector, Body>, url: &str, host: Option<&str>) -> Reply {
    let mut request = Request::get(url);
    if let Some(host) = host {
        request = request.header("host", host);
    }
    send(client, request.body(empty()).unwrap()).await
}

// === raw TCP ===

/// A client connection that writes exact bytes and parses responses by hand.
pub struct RawConn {
    stream: TcpStream,
    /// Bytes read but not consumed yet.
    buf: Vec<u8>,
}

impl RawConn {
    /// This end's address, as the server sees the client.
    pub fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().unwrap()
    }
}

/// One response as it came over the wire.
#[derive(Debug)]
pub struct RawResponse {
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub version: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// Decoded body (chunked framing removed).
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn has_header(&self, name: &str) -> bool {
        self.header(name).is_some()
    }
}

/// The status of a `GET path` sent alone on a connection of its own (with a
/// `Host` and `Connection: close`); 0 if no response came.
pub async fn status_of_get(addr: SocketAddr, path: &str) -> u16 {
    let mut conn = RawConn::connect(addr).await;
    let request = format!("GET {path} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n");
    conn.send(request.as_bytes()).await;
    conn.read_response()
        .await
        .map_or(0, |response| response.status)
}

impl RawConn {
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = within("connect", TcpStream::connect(addr)).await.unwrap();
        // As browsers, curl and most HTTP clients: with Nagle on, a second
        // small write would wait for the ACK of the first, which weir's
        // listeners delay until they answer (see `listener::Listener::bind`).
        stream.set_nodelay(true).unwrap();
        RawConn {
            stream,
            buf: Vec::new(),
        }
    }

    /// Closes this end's sending side (a half-close); reading goes on.
    pub async fn shutdown_write(&mut self) {
        self.stream.shutdown().await.unwrap();
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        within("write", self.stream.write_all(bytes)).await.unwrap();
    }

    /// [`RawConn::send`] to a peer that may have closed the connection: false
    /// when the write failed.
    pub async fn try_send(&mut self, bytes: &[u8]) -> bool {
        within("write", self.stream.write_all(bytes)).await.is_ok()
    }

    /// Reads more bytes into the buffer; `false` at EOF or on a reset.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match within("read", self.stream.read(&mut chunk)).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// Waits for the peer to close the connection (EOF or reset), discarding what
    /// it still sends; `false` if it is still open after [`BOUND`].
    pub async fn closed_within_bound(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        let wait = async {
            loop {
                match self.stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                }
            }
        };
        tokio::time::timeout(BOUND, wait).await.is_ok()
    }

    /// The bytes buffered, or the next ones to arrive; empty at EOF.
    pub async fn read_some(&mut self) -> Vec<u8> {
        if self.buf.is_empty() {
            self.fill().await;
        }
        std::mem::take(&mut self.buf)
    }

    /// Everything the peer sends until it closes the connection.
    pub async fn read_to_end(&mut self) -> Vec<u8> {
        while self.fill().await {}
        std::mem::take(&mut self.buf)
    }

    /// Reads one response; `None` if the connection closed before its head was
    /// complete. Informational (1xx) responses are returned like any other.
    pub async fn read_response(&mut self) -> Option<RawResponse> {
        let head_end = loop {
            if let Some(at) = find(&self.buf, b"\r\n\r\n") {
                break at;
            }
            if !self.fill().await {
                return None;
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        self.buf.drain(..head_end + 4);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default().to_owned();
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
            .collect();
        let mut response = RawResponse {
            version,
            status,
            headers,
            body: Vec::new(),
        };
        if (100..200).contains(&status) || status == 204 || status == 304 {
            return Some(response);
        }
        let chunked = response
            .header("transfer-encoding")
            .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
        if chunked {
            response.body = self.read_chunked().await;
        } else if let Some(length) = response.header("content-length") {
            let length: usize = length.parse().expect("bad content-length");
            while self.buf.len() < length {
                if !self.fill().await {
                    break;
                }
            }
            let take = length.min(self.buf.len());
            response.body = self.buf.drain(..take).collect();
        } else {
            response.body = self.read_to_end().await;
        }
        Some(response)
    }

    /// A chunked body, decoded; stops early (with what it has) at EOF.
    async fn read_chunked(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(at) = find(&self.buf, b"\r\n") {
                    break at;
                }
                if !self.fill().await {
                    return body;
                }
            };
            let line = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
            self.buf.drain(..line_end + 2);
            let size_text = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_text, 16)
                .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
            if size == 0 {
                // Trailers (none expected) and the final CRLF.
                while find(&self.buf, b"\r\n").is_none() {
                    if !self.fill().await {
                        return body;
                    }
                }
                let end = find(&self.buf, b"\r\n").unwrap();
                self.buf.drain(..end + 2);
                return body;
            }
            while self.buf.len() < size + 2 {
                if !self.fill().await {
                    body.append(&mut self.buf);
                    return body;
                }
            }
            body.extend(self.buf.drain(..size));
            self.buf.drain(..2);
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

// === bulk data ===

/// A deterministic byte stream, produced one chunk at a time.
pub struct Generator {
    state: u64,
}

impl Generator {
    pub fn new(seed: u64) -> Self {
        Generator { state: seed | 1 }
    }

    /// The next `len` bytes (`len` a multiple of 8).
    pub fn chunk(&mut self, len: usize) -> Bytes {
        let mut out = Vec::with_capacity(len);
        for _ in 0..len / 8 {
            // xorshift64
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            out.extend_from_slice(&self.state.to_le_bytes());
        }
        Bytes::from(out)
    }
}

/// A running checksum that does not depend on how the bytes were split into
/// chunks, but does depend on their order (Fletcher-style sums).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Checksum {
    pub bytes: u64,
    sum: u64,
    sum_of_sums: u64,
}

impl Checksum {
    pub fn update(&mut self, data: &[u8]) {
        self.bytes += data.len() as u64;
        for &b in data {
            self.sum = self.sum.wrapping_add(u64::from(b));
            self.sum_of_sums = self.sum_of_sums.wrapping_add(self.sum);
        }
    }
}

impl std::fmt::Display for Checksum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:x} {:x}", self.bytes, self.sum, self.sum_of_sums)
    }
}
