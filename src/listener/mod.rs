//! Client-facing listeners: bind, accept (with backoff on errors such as EMFILE),
//! serve each connection with HTTP/1.x and h2c on the same port, and drain on
//! shutdown.

mod framing;
mod timeouts;

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{Instrument, debug, debug_span, error, info};

use crate::config::ListenerConfig;
use crate::proxy::{self, Connection};
use crate::shutdown::Shutdown;
use crate::snapshot::Snapshot;

use timeouts::TimedIo;

/// Backoff after an accept error starts here and doubles up to the maximum: errors
/// such as EMFILE clear up when connections close, and retrying at once would spin.
const ACCEPT_BACKOFF_START: Duration = Duration::from_millis(5);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// A bound listener, not yet accepting.
#[derive(Debug)]
pub struct Listener {
    pub config: ListenerConfig,
    tcp: TcpListener,
}

// === impl Listener ===

impl Listener {
    pub async fn bind(config: ListenerConfig) -> io::Result<Self> {
        let tcp = TcpListener::bind(config.listen).await?;
        Ok(Listener { config, tcp })
    }

    /// The bound address (the real port when the config asked for port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// Accepts and serves connections until `shutdown` fires, then stops accepting
    /// and gives open connections up to `grace` to finish their requests.
    pub async fn serve(
        self,
        snapshots: Arc<ArcSwap<Snapshot>>,
        mut shutdown: Shutdown,
        grace: Duration,
    ) {
        let name: Arc<str> = Arc::from(self.config.name.as_str());
        let builder = Arc::new(http_builder(&self.config));
        let graceful = GracefulShutdown::new();
        let trusted_proxies: Arc<[ipnet::IpNet]> = self.config.trusted_proxies.clone().into();
        let mut backoff = ACCEPT_BACKOFF_START;
        // With max_connections, a permit is taken before each accept: when none is
        // left the loop stops accepting, and the kernel's backlog holds the rest.
        let permits = (self.config.max_connections > 0)
            .then(|| Arc::new(Semaphore::new(self.config.max_connections as usize)));
        loop {
            let permit = match &permits {
                None => None,
                Some(permits) => tokio::select! {
                    permit = permits.clone().acquire_owned() => permit.ok(),
                    () = shutdown.wait() => break,
                },
            };
            let accepted = tokio::select! {
                accepted = self.tcp.accept() => accepted,
                () = shutdown.wait() => break,
            };
            match accepted {
                Ok((stream, peer)) => {
                    backoff = ACCEPT_BACKOFF_START;
                    let connection = Arc::new(Connection::new(
                        name.clone(),
                        peer,
                        false,
                        snapshots.clone(),
                        &trusted_proxies,
                    ));
                    let span = debug_span!("conn", listener = %name, client.addr = %peer);
                    let serving =
                        serve_connection(stream, connection, &self.config, &builder, &graceful);
                    match permit {
                        None => tokio::spawn(serving.instrument(span)),
                        Some(permit) => tokio::spawn(
                            async move {
                                serving.await;
                                drop(permit);
                            }
                            .instrument(span),
                        ),
                    };
                }
                Err(err) => {
                    error!(listener = %name, error = %err, "accept failed; retrying in {backoff:?}");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = shutdown.wait() => break,
                    }
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                }
            }
        }
        drop(self.tcp);
        let open = graceful.count();
        info!(listener = %name, open_connections = open, "stopped accepting; draining");
        if tokio::time::timeout(grace, graceful.shutdown())
            .await
            .is_err()
        {
            info!(listener = %name, "shutdown_timeout reached; closing remaining connections");
        }
    }
}

fn http_builder(config: &ListenerConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // Header and idle timeouts are enforced by `TimedIo`; see there why.
        .header_read_timeout(None)
        .max_buf_size(config.max_header_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX));
    builder
}

/// Serves one client connection to its end.
fn serve_connection(
    stream: TcpStream,
    connection: Arc<Connection>,
    config: &ListenerConfig,
    builder: &auto::Builder<TokioExecutor>,
    graceful: &GracefulShutdown,
) -> impl Future<Output = ()> + Send + 'static {
    let _ = stream.set_nodelay(true);
    let io = TimedIo::new(
        stream,
        connection.clone(),
        config.header_timeout,
        config.idle_timeout,
    );
    let service = service_fn(move |request| {
        let connection = connection.clone();
        async move { Ok::<_, Infallible>(proxy::serve(connection, request).await) }
    });
    let serving = graceful.watch(
        builder
            .serve_connection_with_upgrades(io, service)
            .into_owned(),
    );
    async move {
        if let Err(err) = serving.await {
            // Clients vanish, time out and send garbage all the time: not an error of weir's.
            debug!(error = %err, "connection ended with an error");
        }
    }
}
