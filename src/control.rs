//! The running daemon's control plane: the listeners it serves, the snapshot that
//! requests read, the health checks; and the reload that changes them together.
//!
//! A reload binds the listeners it adds before it changes anything, so a reload
//! that cannot bind fails whole. It then swaps the snapshot (requests in flight
//! keep the one they started with), hands new settings to the listeners it keeps
//! (their sockets stay open), stops and drains the ones it removes, and starts and
//! stops health checks to match. Reloads are serialised.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use arc_swap::ArcSwap;
use tokio::sync::{Mutex, Notify};
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use crate::access_log::AccessLog;
use crate::cache::Cache;
use crate::config::{self, Config, ConfigError, ListenerConfig};
use crate::discovery::Discovery;
use crate::health::HealthChecks;
use crate::listener::{Listener, ListenerSettings};
use crate::metrics::Metrics;
use crate::shutdown::{self, Shutdown, ShutdownTrigger};
use crate::snapshot::{Snapshot, SnapshotError};
use crate::tls::TlsError;

/// Shared by everything that may reload: the signal handler and the admin API.
pub struct Control {
    /// The file a reload reads; `None` when weir was started from a config value.
    config_path: Option<PathBuf>,
    snapshots: Arc<ArcSwap<Snapshot>>,
    shutdown: Shutdown,
    metrics: Arc<Metrics>,
    /// Backends readiness waits for (see [`HealthChecks::unchecked`]).
    unchecked: Arc<AtomicUsize>,
    state: Mutex<State>,
    /// The runtimes that serve the listeners (see `crate::workers`); when none,
    /// the listeners are served on the runtime weir was started on.
    workers: Vec<tokio::runtime::Handle>,
}

struct State {
    config: Arc<Config>,
    /// In config order.
    listeners: Vec<RunningListener>,
    health: HealthChecks,
    /// Every listener task, removed ones included until they have drained.
    tasks: JoinSet<()>,
    /// Set once the drain has begun: no reload after that.
    closed: bool,
    /// The backend names of the config, followed.
    discovery: Discovery,
}

struct RunningListener {
    /// The configured address: across configs, a listener is the same one when
    /// this is (port 0 included).
    listen: SocketAddr,
    bound: SocketAddr,
    settings: Arc<ArcSwap<ListenerSettings>>,
    stop: ShutdownTrigger,
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on {address} ({name}): {source}")]
    Bind {
        address: SocketAddr,
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    AccessLog(#[source] io::Error),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    UpstreamTls(#[from] SnapshotError),
    #[error("weir is shutting down")]
    ShuttingDown,
    #[error("weir was started without a config file; there is nothing to re-read")]
    NoFile,
}

/// What a reload changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadSummary {
    pub listeners_added: usize,
    pub listeners_removed: usize,
    pub listeners_kept: usize,
    pub upstreams: usize,
    pub backends: usize,
}

impl Control {
    /// Binds every listener of `config` and starts serving. Binding errors are
    /// returned before anything is served.
    pub async fn start(
        config: Config,
        config_path: Option<PathBuf>,
        shutdown: Shutdown,
        workers: Vec<tokio::runtime::Handle>,
    ) -> io::Result<Arc<Control>> {
        let config = Arc::new(config);
        let metrics = Arc::new(Metrics::new());
        // Names are looked up once before the first snapshot, so that an upstream
        // of names starts with its backends (one that does not resolve starts
        // without: 503 until it does).
        let mut discovery = Discovery::new(&config.resolver, metrics.clone());
        let (prepared, answers) = discovery.prepare(&config).await;
        discovery.commit(prepared);
        let answers_changed = discovery.changed();
        let mut snapshot = Snapshot::build(config.clone(), None, &metrics, &answers)
            .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err.to_string()))?;
        snapshot.access_log = AccessLog::open(&config.logging, None)?;
        snapshot.cache = Cache::for_config(&config, None, &metrics);
        snapshot.adopt_pools();
        let snapshots = Arc::new(ArcSwap::from_pointee(snapshot));
        let mut bound = Vec::with_capacity(config.listeners.len());
        for listener in &config.listeners {
            let settings = ListenerSettings::new(listener.clone(), None, &metrics)
                .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err.to_string()))?;
            let sockets = bind(listener, workers.len()).await.map_err(into_io)?;
            bound.push((settings, sockets));
        }
        let health = HealthChecks::default();
        let control = Arc::new(Control {
            config_path,
            snapshots,
            shutdown,
            metrics,
            unchecked: health.unchecked(),
            state: Mutex::new(State {
                config: config.clone(),
                listeners: Vec::new(),
                health,
                tasks: JoinSet::new(),
                closed: false,
                discovery,
            }),
            workers,
        });
        tokio::spawn(follow_answers(
            Arc::downgrade(&control),
            answers_changed,
            control.shutdown.clone(),
        ));
        {
            let mut state = control.state.lock().await;
            for (settings, listener) in bound {
                let running = control.spawn_listener(&mut state, settings, listener);
                state.listeners.push(running);
            }
            state.health.sync(&control.snapshots.load());
        }
        control.metrics.record_reload(true);

        for upstream in &config.upstreams {
            let backends: Vec<String> = upstream
                .backends
                .iter()
                .map(|b| format!("{} (weight {})", b.address, b.weight))
                .collect();
            info!(upstream = %upstream.name, strategy = ?upstream.strategy, backends = %backends.join(", "), "upstream ready");
        }
        Ok(control)
    }

    /// The bound address of each listener, in config order.
    pub async fn addresses(&self) -> Vec<SocketAddr> {
        let state = self.state.lock().await;
        state.listeners.iter().map(|l| l.bound).collect()
    }

    /// The config in force.
    pub async fn config(&self) -> Arc<Config> {
        self.state.lock().await.config.clone()
    }

    /// The snapshot requests read now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshots.load_full()
    }

    /// The metrics of this weir, for the admin API.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// True once the drain has begun.
    pub fn draining(&self) -> bool {
        self.shutdown.has_fired()
    }

    /// True once every backend that started unhealthy has had its first check.
    pub fn first_checks_done(&self) -> bool {
        self.unchecked.load(Ordering::SeqCst) == 0
    }

    /// Re-reads the config file and applies it; an invalid file changes nothing.
    /// The outcome is logged and counted either way.
    pub async fn reload_from_file(&self) -> Result<ReloadSummary, ReloadError> {
        let result = match &self.config_path {
            None => Err(ReloadError::NoFile),
            Some(path) => match config::load(path) {
                Ok(config) => self.apply_counted(config).await,
                Err(err) => {
                    self.metrics.record_reload(false);
                    Err(err.into())
                }
            },
        };
        match &result {
            Ok(summary) => info!(?summary, "config reloaded"),
            Err(err) => error!("config reload failed; the running config stays:\n{err}"),
        }
        result
    }

    /// [`Control::apply`], counted in `weir_config_reloads_total`.
    pub async fn apply_counted(&self, config: Config) -> Result<ReloadSummary, ReloadError> {
        let result = self.apply(config).await;
        self.metrics.record_reload(result.is_ok());
        result
    }

    /// Puts `config` in force (see the module's documentation for the order).
    pub async fn apply(&self, config: Config) -> Result<ReloadSummary, ReloadError> {
        let mut state = self.state.lock().await;
        if state.closed || self.shutdown.has_fired() {
            return Err(ReloadError::ShuttingDown);
        }
        if config.runtime != state.config.runtime {
            warn!("[runtime] changes take effect at the next start, not on reload");
        }
        if config.admin != state.config.admin {
            warn!("[admin] changes take effect at the next start, not on reload");
        }
        // New settings (certificates read) and new sockets first: a listener whose
        // certificates or address fail fails the reload whole, before any change.
        let mut settings = Vec::with_capacity(config.listeners.len());
        for listener in &config.listeners {
            let kept = state.listeners.iter().find(|l| l.listen == listener.listen);
            let previous = kept.map(|running| running.settings.load_full());
            settings.push(
                ListenerSettings::new(listener.clone(), previous.as_deref(), &self.metrics)
                    .map_err(ReloadError::Tls)?,
            );
        }
        // Upstreams' TLS files are read here: a bad one fails the reload as well.
        let config = Arc::new(config);
        let previous = self.snapshots.load_full();
        // Names new to this config are looked up first; names that stay keep
        // their answers (and the follow that keeps them fresh). Nothing changes
        // for the running config until every step that can fail has passed.
        let (discovered, answers) = state.discovery.prepare(&config).await;
        let mut snapshot =
            Snapshot::build(config.clone(), Some(&previous), &self.metrics, &answers)?;
        let mut fresh = Vec::new();
        let mut kept_settings = Vec::new();
        for (listener, new_settings) in config.listeners.iter().zip(settings) {
            if state.listeners.iter().any(|l| l.listen == listener.listen) {
                kept_settings.push(new_settings);
            } else {
                fresh.push((new_settings, bind(listener, self.workers.len()).await?));
            }
        }
        // Same file and format: the same writer, its file reopened (log rotation).
        let access_log = AccessLog::open(&config.logging, previous.access_log.as_ref())
            .map_err(ReloadError::AccessLog)?;
        snapshot.access_log = access_log;
        snapshot.cache = Cache::for_config(&config, previous.cache.as_ref(), &self.metrics);
        snapshot.adopt_pools();
        self.snapshots.store(Arc::new(snapshot));
        state.discovery.commit(discovered);

        let mut summary = ReloadSummary {
            listeners_added: fresh.len(),
            upstreams: config.upstreams.len(),
            backends: config.upstreams.iter().map(|u| u.backends.len()).sum(),
            ..ReloadSummary::default()
        };
        let mut kept = Vec::new();
        for running in std::mem::take(&mut state.listeners) {
            let position = kept_settings
                .iter()
                .position(|s| s.config.listen == running.listen);
            match position {
                Some(position) => {
                    let settings = kept_settings.swap_remove(position);
                    running.settings.store(Arc::new(settings));
                    kept.push(running);
                }
                None => {
                    info!(address = %running.bound, "listener removed; draining its connections");
                    running.stop.trigger();
                    summary.listeners_removed += 1;
                }
            }
        }
        summary.listeners_kept = kept.len();
        for (settings, listener) in fresh {
            kept.push(self.spawn_listener(&mut state, settings, listener));
        }
        // Config order, so that `addresses` lines up with the file.
        kept.sort_by_key(|running| {
            config
                .listeners
                .iter()
                .position(|l| l.listen == running.listen)
        });
        state.listeners = kept;
        state.health.sync(&self.snapshots.load());
        state.config = config;
        Ok(summary)
    }

    /// Waits for the drain signal, then for every listener to drain; stops the
    /// health checks last.
    pub async fn wait(&self) {
        self.shutdown.clone().wait().await;
        let mut tasks = {
            let mut state = self.state.lock().await;
            state.closed = true;
            std::mem::take(&mut state.tasks)
        };
        while tasks.join_next().await.is_some() {}
        self.state.lock().await.health = HealthChecks::default();
    }

    /// Puts the latest answers of the backend names in force: the upstreams
    /// whose names answer otherwise are rebuilt, the others stay as they are.
    async fn apply_answers(&self) {
        let mut state = self.state.lock().await;
        if state.closed {
            return;
        }
        let answers = state.discovery.answers();
        let current = self.snapshots.load_full();
        let Some(snapshot) = current.with_answers(&answers, &self.metrics) else {
            return;
        };
        // New backends' pools take connections of the upstream's transport.
        snapshot.adopt_pools();
        self.snapshots.store(Arc::new(snapshot));
        state.health.sync(&self.snapshots.load());
    }

    /// Serves `sockets` (one per worker, or one) until the listener is stopped
    /// or weir drains.
    fn spawn_listener(
        &self,
        state: &mut State,
        settings: ListenerSettings,
        sockets: Vec<Listener>,
    ) -> RunningListener {
        let bound = sockets[0].local_addr();
        info!(listener = %settings.config.name, address = %bound, tls = settings.config.tls.is_some(), workers = sockets.len(), "listening");
        let listen = settings.config.listen;
        let settings = Arc::new(ArcSwap::from_pointee(settings));
        let (stop, stopped) = shutdown::channel();
        let grace = state.config.runtime.shutdown_timeout;
        let serve = |socket: Listener| {
            socket.serve(
                settings.clone(),
                self.snapshots.clone(),
                self.shutdown.clone(),
                stopped.clone(),
                grace,
            )
        };
        if self.workers.is_empty() {
            for socket in sockets {
                state.tasks.spawn(serve(socket));
            }
        } else {
            // Each worker accepts and drains on its own; the listener is done
            // when every worker is.
            let serving: Vec<_> = self
                .workers
                .iter()
                .zip(sockets)
                .map(|(worker, socket)| worker.spawn(serve(socket)))
                .collect();
            state.tasks.spawn(async move {
                for worker in serving {
                    let _ = worker.await;
                }
            });
        }
        RunningListener {
            listen,
            bound,
            settings,
            stop,
        }
    }
}

/// Applies each change of the backend names' answers, until the drain.
async fn follow_answers(control: Weak<Control>, changed: Arc<Notify>, mut shutdown: Shutdown) {
    let mut shutdown = std::pin::pin!(shutdown.wait());
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            () = changed.notified() => {}
        }
        let Some(control) = control.upgrade() else {
            return;
        };
        control.apply_answers().await;
    }
}

/// Binds `listener`'s address: one socket, with a handle on it for each of
/// `workers` (at least one).
async fn bind(listener: &ListenerConfig, workers: usize) -> Result<Vec<Listener>, ReloadError> {
    let failed = |source| ReloadError::Bind {
        address: listener.listen,
        name: listener.name.clone(),
        source,
    };
    let socket = Listener::bind(listener.listen).await.map_err(failed)?;
    let mut sockets = Vec::with_capacity(workers.max(1));
    for _ in 1..workers {
        sockets.push(socket.try_clone().map_err(failed)?);
    }
    sockets.push(socket);
    Ok(sockets)
}

fn into_io(err: ReloadError) -> io::Error {
    match err {
        ReloadError::Bind { ref source, .. } => io::Error::new(source.kind(), err.to_string()),
        other => io::Error::other(other.to_string()),
    }
}
