//! weir: an L7 (HTTP) reverse-proxy load balancer.
//!
//! # Layout
//!
//! - [`config`]: the TOML file → validated, typed [`config::Config`].
//! - [`router`]: host and path → route. Pure.
//! - [`balance`]: strategies that pick a backend. Pure.
//! - [`upstream`]: backends, their runtime state and pooled connections; one
//!   exchange with one backend.
//! - [`snapshot`]: router + upstreams built from one config: the unit of reload.
//! - [`health`]: active health check loops, following the running snapshot.
//! - [`proxy`]: the request path and the one mapping from errors to responses.
//! - [`listener`]: accept loops, client connection timeouts, drain.
//! - [`shutdown`]: the drain signal.
//! - [`demo`]: the zero-setup demo (three local backends and weir in front).
//!
//! Dependencies point one way: config → router/balance → upstream → snapshot →
//! proxy → listener → `run`.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod balance;
pub mod config;
pub mod demo;
pub mod health;
pub mod listener;
pub mod proxy;
pub mod router;
pub mod shutdown;
pub mod snapshot;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::task::JoinSet;
use tracing::info;

use config::Config;
use health::HealthChecks;
use listener::Listener;
use shutdown::Shutdown;
use snapshot::Snapshot;

/// A running weir: its listeners are bound and accepting.
pub struct Running {
    /// Bound addresses, in config order (the real ports when the config said 0).
    pub addresses: Vec<SocketAddr>,
    tasks: JoinSet<()>,
    /// Stopped when weir stops.
    _health_checks: HealthChecks,
}

impl Running {
    /// Waits until every listener has drained after the shutdown signal.
    pub async fn wait(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Binds every listener of `config` and starts serving. Binding errors are returned
/// before anything is served; the listeners stop and drain when `shutdown` fires.
pub async fn start(config: Config, shutdown: Shutdown) -> std::io::Result<Running> {
    let config = Arc::new(config);
    let snapshots = Arc::new(ArcSwap::from_pointee(Snapshot::build(config.clone(), None)));

    let mut listeners = Vec::with_capacity(config.listeners.len());
    for listener in &config.listeners {
        let bound = Listener::bind(listener.clone()).await.map_err(|err| {
            std::io::Error::new(
                err.kind(),
                format!(
                    "cannot listen on {} ({}): {err}",
                    listener.listen, listener.name
                ),
            )
        })?;
        listeners.push(bound);
    }

    let mut addresses = Vec::with_capacity(listeners.len());
    let mut tasks = JoinSet::new();
    for listener in listeners {
        let address = listener.local_addr()?;
        info!(listener = %listener.config.name, address = %address, "listening");
        addresses.push(address);
        tasks.spawn(listener.serve(
            snapshots.clone(),
            shutdown.clone(),
            config.runtime.shutdown_timeout,
        ));
    }
    for upstream in &config.upstreams {
        let backends: Vec<String> = upstream
            .backends
            .iter()
            .map(|b| format!("{} (weight {})", b.address, b.weight))
            .collect();
        info!(upstream = %upstream.name, strategy = ?upstream.strategy, backends = %backends.join(", "), "upstream ready");
    }
    let mut health_checks = HealthChecks::default();
    health_checks.sync(&snapshots.load());
    Ok(Running {
        addresses,
        tasks,
        _health_checks: health_checks,
    })
}

/// Runs weir with `config` until `shutdown` fires and the drain is over.
pub async fn run(config: Config, shutdown: Shutdown) -> std::io::Result<()> {
    start(config, shutdown).await?.wait().await;
    Ok(())
}
