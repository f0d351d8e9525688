//! Keep-alive HTTP/1.1 connections to one backend: opening them, parking them
//! between requests, and handing them back out.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tracing::debug;

use super::error::UpstreamError;
use super::request_body::RequestBody;

/// Largest backend response head; a larger one is a 502.
const MAX_RESPONSE_HEAD_BYTES: usize = 64 * 1024;

/// The sending half of one backend connection; its connection task runs on its own.
pub type Connection = SendRequest<RequestBody>;

/// Idle connections of one backend, most recently used last (LIFO: the warmest
/// connection is reused first and the coldest ones age out).
///
/// A std `Mutex` because it is held only to push or pop, never across an await,
/// and it is per backend: requests to different backends never share it.
#[derive(Debug)]
pub struct Pool {
    idle: Mutex<Vec<Idle>>,
    max_idle: usize,
}

#[derive(Debug)]
struct Idle {
    connection: Connection,
    since: Instant,
}

// === impl Pool ===

impl Pool {
    pub fn new(max_idle: usize) -> Self {
        Pool {
            idle: Mutex::new(Vec::new()),
            max_idle,
        }
    }

    /// A parked connection that is still open and was idle for less than
    /// `idle_timeout`, if any.
    pub fn take(&self, idle_timeout: Duration) -> Option<Connection> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(entry) = idle.pop() {
            if !entry.connection.is_closed() && entry.since.elapsed() < idle_timeout {
                return Some(entry.connection);
            }
        }
        None
    }

    /// Parks a connection whose last response has been read to the end.
    pub fn put(&self, connection: Connection, idle_timeout: Duration) {
        if connection.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
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
        self.idle.lock().unwrap().len()
    }
}

/// Opens a new HTTP/1.1 connection to `address` within `connect_timeout`; with a
/// `preamble` (a PROXY protocol header), writes it first.
pub async fn connect(
    address: SocketAddr,
    connect_timeout: Duration,
    preamble: Option<&[u8]>,
) -> Result<Connection, UpstreamError> {
    let mut stream = match tokio::time::timeout(connect_timeout, TcpStream::connect(address)).await
    {
        Err(_elapsed) => return Err(UpstreamError::ConnectTimeout(connect_timeout)),
        Ok(Err(source)) => return Err(UpstreamError::Connect(source)),
        Ok(Ok(stream)) => stream,
    };
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
    let (sender, connection) = http1::Builder::new()
        .max_header_size(MAX_RESPONSE_HEAD_BYTES)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(UpstreamError::Handshake)?;
    tokio::spawn(async move {
        if let Err(err) = connection.with_upgrades().await {
            debug!(backend = %address, error = %err, "backend connection ended with an error");
        }
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn open_connection() -> (Connection, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let accept = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            // Hold the socket open until the test ends.
            std::future::pending::<()>().await;
            drop(socket);
        });
        (
            connect(address, Duration::from_secs(1), None)
                .await
                .unwrap(),
            accept,
        )
    }

    #[tokio::test]
    async fn parked_connection_is_handed_out_again() {
        let pool = Pool::new(4);
        let (connection, _server) = open_connection().await;
        pool.put(connection, Duration::from_secs(60));
        assert_eq!(pool.len(), 1);
        assert!(pool.take(Duration::from_secs(60)).is_some());
        assert!(pool.take(Duration::from_secs(60)).is_none());
    }

    #[tokio::test]
    async fn connection_idle_too_long_is_not_reused() {
        let pool = Pool::new(4);
        let (connection, _server) = open_connection().await;
        pool.put(connection, Duration::from_secs(60));
        assert!(pool.take(Duration::ZERO).is_none());
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

    #[tokio::test]
    async fn refused_connect_is_a_connect_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let err = connect(address, Duration::from_secs(1), None)
            .await
            .unwrap_err();
        assert!(matches!(err, UpstreamError::Connect(_)), "{err:?}");
    }
}
