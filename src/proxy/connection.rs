//! What every request of one client connection shares, and the count of its
//! requests in progress that the connection's timeouts read.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arc_swap::ArcSwap;
use atomic_waker::AtomicWaker;
use http::HeaderValue;

use super::forward::ClientFacts;
use crate::snapshot::Snapshot;

/// What every request of one client connection shares.
#[derive(Debug)]
pub struct Connection {
    /// The config in force; read once per request.
    pub snapshots: Arc<ArcSwap<Snapshot>>,
    pub listener: Arc<str>,
    pub peer: SocketAddr,
    /// The address the client connected to.
    pub local: SocketAddr,
    pub facts: ClientFacts,
    /// The listener's `idle_timeout`, which also ends a silent tunnel.
    pub idle_timeout: std::time::Duration,
    /// The listener's `body_timeout`: the longest a request body may stall.
    pub body_timeout: std::time::Duration,
    /// Requests of this connection whose response is not finished; read by the
    /// connection's idle and header timeouts. Per connection, so never contended.
    pub active: AtomicUsize,
    /// Requests started on this connection so far: lets the timeouts tell that a
    /// request came and went since they last looked.
    pub started: AtomicUsize,
    /// Woken when `active` drops to zero, so the connection starts its idle clock
    /// even if the last response ended without a further read.
    pub idle_waker: AtomicWaker,
}

impl Connection {
    /// `trusted_proxies` is the listener's list; the connection keeps it only when
    /// the peer is in it. The timeouts are `config`'s.
    pub fn new(
        listener: Arc<str>,
        peer: SocketAddr,
        local: SocketAddr,
        tls: bool,
        snapshots: Arc<ArcSwap<Snapshot>>,
        trusted_proxies: &Arc<[ipnet::IpNet]>,
        config: &crate::config::ListenerConfig,
    ) -> Self {
        let trusted = trusted_proxies
            .iter()
            .any(|network| network.contains(&peer.ip()));
        let ip = peer.ip().to_string();
        Connection {
            snapshots,
            listener,
            peer,
            local,
            idle_timeout: config.idle_timeout,
            body_timeout: config.body_timeout,
            facts: ClientFacts {
                address: HeaderValue::from_str(&ip)
                    .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
                tls,
                trusted_proxies: trusted.then(|| trusted_proxies.clone()),
            },
            active: AtomicUsize::new(0),
            started: AtomicUsize::new(0),
            idle_waker: AtomicWaker::new(),
        }
    }

    pub fn active_requests(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    pub fn started_requests(&self) -> usize {
        self.started.load(Ordering::Relaxed)
    }
}

/// Counts one request as active on its connection until dropped.
#[derive(Debug)]
pub struct RequestGuard(pub(super) Arc<Connection>);

impl RequestGuard {
    pub(super) fn new(connection: Arc<Connection>) -> Self {
        connection.active.fetch_add(1, Ordering::Relaxed);
        connection.started.fetch_add(1, Ordering::Relaxed);
        RequestGuard(connection)
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.0.idle_waker.wake();
        }
    }
}
