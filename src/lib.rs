//! weir: an L7 (HTTP) reverse-proxy load balancer.
//!
//! # Layout
//!
//! - [`workers`]: the threads that serve requests, each sharing nothing with
//!   the others on the request path.
//! - [`http1`]: weir's own HTTP/1 codec: heads parsed in place, chunked
//!   bodies scanned, heads rewritten as edits over the received bytes. Pure.
//! - [`config`]: the TOML file → validated, typed [`config::Config`].
//! - [`router`]: host and path → route. Pure.
//! - [`balance`]: strategies that pick a backend. Pure.
//! - [`upstream`]: a group of backends, their runtime state and pooled
//!   connections; one exchange with one backend.
//! - [`metrics`]: the Prometheus families and the handles resolved per config.
//! - [`proxy_protocol`]: the PROXY protocol header, read and written.
//! - [`access_log`]: one line per request, written off the request path.
//! - `discovery`: backend names looked up, and again as their TTLs run out.
//! - `redis_connection`: the Redis that instances share, bounded by its timeout.
//! - `cache`: the response cache (RFC 9111), in memory and through Redis.
//! - `rate_limit`: named GCRA policies per route, local or global (Redis).
//! - `snapshot`: router + upstreams built from one config: the unit of reload.
//! - [`tls`]: certificates by SNI, ALPN and client certificates (rustls).
//! - `health`: active health check loops and their probe, following the
//!   running snapshot.
//! - [`proxy`]: the request path (validate, route, rewrite, the tries on the
//!   upstream, the response) and the one table from errors to answers.
//! - [`listener`]: accept loops, client connection timeouts, drain.
//! - [`control`]: the running listeners, snapshot and checks, and the reload.
//! - `history`: the last minutes of every backend, sampled from the metrics, for the status page.
//! - `admin`: the admin API (metrics, health, status, reload), and who may use it.
//! - [`admin_client`]: the admin API from the command line (`weir status`, ...).
//! - [`shutdown`]: the drain signal.
//! - [`demo`]: the zero-setup demo (three local backends and weir in front).
//!
//! Dependencies point one way: workers → http1 → config → router/balance → metrics → upstream →
//! redis_connection → cache / rate_limit → access_log / discovery / snapshot →
//! health / proxy → listener → control → admin → `run`.

#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

// weir's API: the config, the running instance and its control, the demo.
pub mod access_log;
pub mod admin_client;
pub mod config;
pub mod control;
pub mod demo;
pub mod shutdown;
pub mod tls;
pub mod workers;

// Exported on purpose for the benchmarks, fuzz targets and the tests that drive
// one part directly: not weir's API.
#[doc(hidden)]
pub mod balance;
// weir's own HTTP/1 codec, built piece by piece; public for the fuzz targets.
#[doc(hidden)]
pub mod http1;
#[doc(hidden)]
pub mod listener;
#[doc(hidden)]
pub mod metrics;
#[doc(hidden)]
pub mod proxy;
#[doc(hidden)]
pub mod proxy_protocol;
#[doc(hidden)]
pub mod router;
#[doc(hidden)]
pub mod upstream;

pub(crate) mod admin;
pub(crate) mod cache;
pub(crate) mod discovery;
pub(crate) mod health;
pub(crate) mod history;
pub(crate) mod rate_limit;
pub(crate) mod redis_connection;
pub(crate) mod snapshot;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use config::Config;
use control::Control;
use shutdown::{Shutdown, ShutdownTrigger};

/// A running weir: its listeners are bound and accepting.
pub struct Running {
    /// Bound addresses at start, in config order (the real ports when the config
    /// said 0).
    pub addresses: Vec<SocketAddr>,
    control: Arc<Control>,
    admin_stop: ShutdownTrigger,
}

impl Running {
    /// The control plane: reloads, the config and snapshot in force.
    pub fn control(&self) -> Arc<Control> {
        self.control.clone()
    }

    /// Waits until every listener has drained after the shutdown signal.
    pub async fn wait(self) {
        self.control.wait().await;
        self.admin_stop.trigger();
    }
}

/// Binds every listener of `config` and starts serving. Binding errors are returned
/// before anything is served; the listeners stop and drain when `shutdown` fires.
/// A reload re-reads `config_path`, when given.
pub async fn start_from(
    config: Config,
    config_path: Option<PathBuf>,
    shutdown: Shutdown,
) -> std::io::Result<Running> {
    start_on(config, config_path, shutdown, &workers::Workers::none()).await
}

/// [`start_from`], with the listeners served by `workers` (the control plane
/// stays on the caller's runtime); with no workers, by the caller's runtime.
pub async fn start_on(
    config: Config,
    config_path: Option<PathBuf>,
    shutdown: Shutdown,
    workers: &workers::Workers,
) -> std::io::Result<Running> {
    let admin =
        match &config.admin {
            None => None,
            Some(admin) => Some(tokio::net::TcpListener::bind(admin.listen).await.map_err(
                |err| {
                    std::io::Error::new(
                        err.kind(),
                        format!("cannot listen on {} (admin): {err}", admin.listen),
                    )
                },
            )?),
        };
    let control = Control::start(config, config_path, shutdown, workers.handles()).await?;
    // The admin API outlives the drain, so that /readyz can say "draining".
    let (admin_stop, admin_stopped) = shutdown::channel();
    if let Some(admin) = admin {
        tokio::spawn(admin::serve(admin, control.clone(), admin_stopped));
    }
    Ok(Running {
        addresses: control.addresses().await,
        control,
        admin_stop,
    })
}

/// [`start_from`] a config that has no file to re-read.
pub async fn start(config: Config, shutdown: Shutdown) -> std::io::Result<Running> {
    start_from(config, None, shutdown).await
}

/// Runs weir with `config` until `shutdown` fires and the drain is over.
pub async fn run(config: Config, shutdown: Shutdown) -> std::io::Result<()> {
    start(config, shutdown).await?.wait().await;
    Ok(())
}
