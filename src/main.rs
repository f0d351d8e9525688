//! The `weir` command: parses the CLI, sets up logging, the runtime and signals,
//! and hands over to the library.

/// mimalloc: per-thread free lists make the request path's small allocations
/// cheaper than glibc's, and freed pages go back to the system (see
/// [`release_freed_memory`]), so memory that idle connections shed shows up as shed.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tracing::{info, warn};

use tracing_subscriber::EnvFilter;
use weir::admin_client::AdminTarget;
use weir::config;
use weir::control::Control;
use weir::shutdown::{self, ShutdownTrigger};

/// weir: a reverse-proxy load balancer for HTTP.
#[derive(Debug, Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    /// The config file (TOML).
    #[arg(long, short, value_name = "FILE", required = true)]
    config: Option<PathBuf>,
    /// Only parse and validate the config: print the problems, exit 0 if valid, 1 if not.
    #[arg(long, requires = "config")]
    check: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start three demo backends on loopback and weir in front of them.
    Demo {
        /// Where the demo proxy listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Where the demo's admin API and status page listen.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: SocketAddr,
    },
    /// Show a running weir's listeners, routes, upstreams and backends.
    Status {
        #[command(flatten)]
        admin: AdminArgs,
        /// Print the admin API's JSON as it is, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Make a running weir read its config file again (as SIGHUP).
    Reload {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// The response cache of a running weir.
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
}

#[derive(Debug, Subcommand)]
enum CacheCommand {
    /// Drop stored responses of a host's path (every query and variant) or
    /// path prefix, here and, through Redis, in every instance.
    Purge {
        #[command(flatten)]
        admin: AdminArgs,
        /// The host, as clients send it in `Host`.
        #[arg(long)]
        host: String,
        /// One path.
        #[arg(long, conflicts_with = "prefix", required_unless_present = "prefix")]
        path: Option<String>,
        /// Every path under this prefix.
        #[arg(long)]
        prefix: Option<String>,
    },
}

/// How to reach a running weir's admin API.
#[derive(Debug, clap::Args)]
struct AdminArgs {
    /// The config file of the running weir: its [admin] listen and token.
    #[arg(long, short, value_name = "FILE", required_unless_present = "admin")]
    config: Option<PathBuf>,
    /// The admin API's address, e.g. 127.0.0.1:9901 (instead of --config).
    #[arg(long, value_name = "ADDR")]
    admin: Option<SocketAddr>,
    /// The admin token (default: $WEIR_ADMIN_TOKEN, then the config's admin.token).
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_level = init_logging();

    let result = match (&cli.command, &cli.config) {
        (Some(Command::Demo { listen, admin }), _) => run_demo(*listen, *admin),
        (Some(Command::Status { admin, json }), _) => return admin_status(admin, *json),
        (Some(Command::Reload { admin }), _) => return admin_reload(admin),
        (Some(Command::Cache { command }), _) => match command {
            CacheCommand::Purge {
                admin,
                host,
                path,
                prefix,
            } => return admin_purge(admin, host, path.as_deref(), prefix.as_deref()),
        },
        (None, Some(path)) if cli.check => return check(path),
        (None, Some(path)) => run_daemon(path, log_level),
        (None, None) => unreachable!("clap requires --config without a subcommand"),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("weir: {err:#}");
            ExitCode::FAILURE
        }
    }
}

// === the admin API from the command line ===

/// The admin API that `args` names: `--admin`, or the [admin] of `--config`.
fn admin_target(args: &AdminArgs) -> anyhow::Result<AdminTarget> {
    let configured = match &args.config {
        Some(path) => {
            let config =
                config::load(path).map_err(|err| anyhow::anyhow!("invalid config:\n{err}"))?;
            Some(config.admin.ok_or_else(|| {
                anyhow::anyhow!(
                    "{} has no [admin] table: the running weir has no admin API to ask",
                    path.display()
                )
            })?)
        }
        None => None,
    };
    let address = match (args.admin, &configured) {
        (Some(address), _) => address,
        (None, Some(admin)) => {
            let mut address = admin.listen;
            if address.port() == 0 {
                anyhow::bail!(
                    "[admin] listen has port 0: give the address weir bound with --admin"
                );
            }
            // A wildcard bind is reached on loopback.
            if address.ip().is_unspecified() {
                address.set_ip(if address.is_ipv4() {
                    std::net::Ipv4Addr::LOCALHOST.into()
                } else {
                    std::net::Ipv6Addr::LOCALHOST.into()
                });
            }
            address
        }
        (None, None) => anyhow::bail!("give --config FILE or --admin ADDR"),
    };
    let token = args
        .token
        .clone()
        .or_else(|| std::env::var("WEIR_ADMIN_TOKEN").ok())
        .or_else(|| configured.and_then(|a| a.token.map(|t| t.0)));
    Ok(AdminTarget { address, token })
}

/// Sends one request to the admin API on a small runtime of its own.
fn admin_request(
    args: &AdminArgs,
    method: http::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<weir::admin_client::Answer> {
    let target = admin_target(args)?;
    let runtime = runtime()?;
    Ok(runtime.block_on(target.send(method, path, body))?)
}

/// Prints why a command failed and gives its exit code.
fn failed(err: impl std::fmt::Display) -> ExitCode {
    eprintln!("weir: {err:#}");
    ExitCode::FAILURE
}

/// The admin API's own words for a refusal, or its status.
fn refusal(answer: &weir::admin_client::Answer) -> String {
    match answer.json() {
        Some(value) if value["error"].is_string() => {
            value["error"].as_str().unwrap_or_default().to_owned()
        }
        _ => format!(
            "{}: {}",
            answer.status,
            String::from_utf8_lossy(&answer.body).trim()
        ),
    }
}

fn admin_status(args: &AdminArgs, json: bool) -> ExitCode {
    let answer = match admin_request(args, http::Method::GET, "/status", None) {
        Ok(answer) => answer,
        Err(err) => return failed(err),
    };
    match answer.json() {
        Some(value) if answer.status.is_success() => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&value).unwrap_or_default()
                );
            } else {
                print!("{}", weir::admin_client::status_table(&value));
            }
            ExitCode::SUCCESS
        }
        _ => failed(refusal(&answer)),
    }
}

fn admin_reload(args: &AdminArgs) -> ExitCode {
    let answer = match admin_request(args, http::Method::POST, "/reload", None) {
        Ok(answer) => answer,
        Err(err) => return failed(err),
    };
    match answer.json() {
        Some(value) if answer.status.is_success() => {
            println!(
                "weir: reloaded: {} upstreams, {} backends; listeners {} kept, {} added, {} removed",
                value["upstreams"],
                value["backends"],
                value["listeners_kept"],
                value["listeners_added"],
                value["listeners_removed"]
            );
            ExitCode::SUCCESS
        }
        _ => failed(format!(
            "reload refused, the running config is unchanged:\n{}",
            refusal(&answer)
        )),
    }
}

fn admin_purge(args: &AdminArgs, host: &str, path: Option<&str>, prefix: Option<&str>) -> ExitCode {
    let body = match (path, prefix) {
        (Some(path), _) => serde_json::json!({ "host": host, "path": path }),
        (None, Some(prefix)) => serde_json::json!({ "host": host, "prefix": prefix }),
        (None, None) => unreachable!("clap requires --path or --prefix"),
    };
    let answer = match admin_request(args, http::Method::POST, "/cache/purge", Some(body)) {
        Ok(answer) => answer,
        Err(err) => return failed(err),
    };
    match answer.json() {
        Some(value) if answer.status.is_success() => {
            let purged = &value["purged"];
            let redis = match purged["redis"].as_u64() {
                Some(n) => format!("{n} in Redis"),
                None => "none in Redis (not used, or unavailable)".to_owned(),
            };
            println!("weir: purged {} in memory, {redis}", purged["memory"]);
            ExitCode::SUCCESS
        }
        _ => failed(refusal(&answer)),
    }
}

/// `--check`: like `nginx -t`.
fn check(path: &std::path::Path) -> ExitCode {
    match config::load(path) {
        Ok(config) => {
            // Certificates, keys and CAs are files of their own: read them too.
            let listener_problems = config.listeners.iter().filter_map(|l| {
                let tls = l.tls.as_ref()?;
                let err = weir::tls::acceptor(tls).err()?;
                Some(format!("listener {}: {err}", l.name))
            });
            let upstream_problems = config.upstreams.iter().filter_map(|u| {
                let tls = u.tls.as_ref()?;
                let err = weir::tls::UpstreamTls::new(tls, u.protocol).err()?;
                Some(format!("upstream {}: {err}", u.name))
            });
            let tls_problems: Vec<String> = listener_problems.chain(upstream_problems).collect();
            if !tls_problems.is_empty() {
                eprintln!("{}", tls_problems.join("\n"));
                return ExitCode::FAILURE;
            }
            println!("weir: {} is valid", path.display());
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("{err}");
            ExitCode::FAILURE
        }
    }
}

fn run_daemon(path: &std::path::Path, log_level: LogLevel) -> anyhow::Result<()> {
    let config = config::load(path).map_err(|err| anyhow::anyhow!("invalid config:\n{err}"))?;
    log_level.set(&config.logging.level);
    let workers = match config.runtime.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    // One worker serves on the runtime of the control plane; more get threads
    // (and runtimes) of their own, and the control plane keeps this one.
    let workers = if workers > 1 {
        weir::workers::Workers::start(workers)?
    } else {
        weir::workers::Workers::none()
    };
    let served = runtime()?.block_on(async {
        let (trigger, shutdown) = shutdown::channel();
        // Installed before the listeners accept: a signal sent as soon as weir says
        // it listens must find its handler, not the default action (exit).
        let signals = Signals::install();
        let running = weir::start_on(config, Some(path.to_owned()), shutdown, &workers).await?;
        tokio::spawn(watch_signals(
            signals,
            trigger,
            running.control(),
            Some(log_level),
        ));
        tokio::spawn(release_freed_memory());
        for worker in workers.handles() {
            worker.spawn(release_freed_memory());
        }
        running.wait().await;
        info!("drained; exiting");
        Ok(())
    });
    // The workers stop with what they still run.
    drop(workers);
    // The runtime is gone, and with it every request: the access log's last lines
    // can be written out.
    weir::access_log::finish(std::time::Duration::from_secs(2));
    served
}

fn run_demo(listen: SocketAddr, admin: SocketAddr) -> anyhow::Result<()> {
    use weir::demo::Behaviour;
    runtime()?.block_on(async move {
        let mut backends = Vec::new();
        for (i, behaviour) in [Behaviour::Quick, Behaviour::Slow, Behaviour::Flaky]
            .into_iter()
            .enumerate()
        {
            backends
                .push(weir::demo::start_backend(format!("backend-{}", i + 1), behaviour).await?);
        }
        let config = weir::demo::config(listen, admin, &backends)?;
        let (trigger, shutdown) = shutdown::channel();
        let signals = Signals::install();
        let running = weir::start(config, shutdown).await.context(
            "try other addresses with `weir demo --listen 127.0.0.1:PORT --admin 127.0.0.1:PORT`",
        )?;
        info!(
            "demo ready: weir on http://{listen} in front of {} backends (weights 3, 1, 1; \
             backend-2 is slow, backend-3 fails now and then). Try:\n\n    \
             for i in $(seq 200); do curl -s http://{listen}/hello; done\n\n\
             and watch it on the status page: http://{admin}/\n\
             Ctrl-C to stop.",
            backends.len()
        );
        tokio::spawn(watch_signals(signals, trigger, running.control(), None));
        running.wait().await;
        Ok(())
    })
}

/// The control plane's runtime, which with one worker is also the worker's:
/// single-threaded, as with nothing to steal work from, a multi-threaded
/// scheduler would only add synchronisation to every wake-up.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// Once a second, hands pages freed since back to the system. mimalloc does so
/// lazily, when a thread next allocates, and only 100 ms after the free: after a
/// burst (thousands of connections served, then parked) a process that has gone
/// quiet would keep them for good. `mi_collect` frees the empty pages of the
/// thread it runs on (so every worker runs this task too, as does the control
/// plane) and purges the free memory of every thread's arenas. Under load,
/// what this gives back is soon taken again: once a second, a few page faults.
async fn release_freed_memory() {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        // SAFETY: mi_collect takes no pointers and may be called from any thread at
        // any time. `true`: free memory is purged whether or not its purge delay
        // has passed.
        unsafe { libmimalloc_sys::mi_collect(true) };
    }
}

/// The signals weir acts on, their handlers installed.
struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    fn install() -> Option<Signals> {
        let installed = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        );
        let (Ok(term), Ok(int), Ok(hup)) = installed else {
            warn!("cannot install signal handlers; stop weir with SIGKILL");
            return None;
        };
        Some(Signals { term, int, hup })
    }
}

/// SIGTERM / SIGINT start the drain; SIGHUP re-reads the config file.
async fn watch_signals(
    signals: Option<Signals>,
    trigger: ShutdownTrigger,
    control: Arc<Control>,
    log_level: Option<LogLevel>,
) {
    let Some(Signals {
        mut term,
        mut int,
        mut hup,
    }) = signals
    else {
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                info!("SIGHUP: reloading the config");
                let (control, log_level) = (control.clone(), log_level.clone());
                // The outcome is logged by the reload itself.
                tokio::spawn(async move {
                    if control.reload_from_file().await.is_ok()
                        && let Some(log_level) = log_level
                    {
                        log_level.set(&control.config().await.logging.level);
                    }
                });
            }
        }
    }
    info!("shutdown signal received; draining");
    trigger.trigger();
}

/// The log filter, changeable while running: `[logging] level`, unless `RUST_LOG`
/// says otherwise (then it wins, at start and on reload).
#[derive(Clone)]
struct LogLevel {
    handle: tracing_subscriber::reload::Handle<EnvFilter, tracing_subscriber::Registry>,
    from_env: bool,
}

impl LogLevel {
    fn set(&self, level: &str) {
        if self.from_env {
            return;
        }
        if let Err(err) = self.handle.reload(EnvFilter::new(level)) {
            warn!(error = %err, "cannot change the log level");
        }
    }
}

/// Logs to stderr, at `RUST_LOG` or info until the config says otherwise.
fn init_logging() -> LogLevel {
    use tracing_subscriber::prelude::*;
    let from_env = EnvFilter::try_from_default_env().ok();
    let (filter, handle) = tracing_subscriber::reload::Layer::new(
        from_env.clone().unwrap_or_else(|| EnvFilter::new("info")),
    );
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .init();
    LogLevel {
        handle,
        from_env: from_env.is_some(),
    }
}
