//! Backends by name: each `address = "name:port"` and `srv = "name"` entry of an
//! upstream is looked up, and looked up again when its records' TTL runs out
//! (clamped to `[resolver] min_ttl`..`max_ttl`). The answers of every name are
//! kept in one [`ResolvedSets`]; a changed answer wakes the control plane, which
//! rebuilds the upstreams it concerns (`Snapshot::with_answers`). Lookups run on
//! tokio through hickory-resolver: nothing blocks a runtime thread.
//!
//! A failed lookup keeps the last good answer for as long as it fails; a name
//! that no longer exists (NXDOMAIN, or no records) keeps it for `hold_missing`.
//! Each name logs only its changes of state, not every lookup.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig as HickoryConfig};
use hickory_resolver::net::NetError;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use tokio::sync::Notify;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::config::{Config, DnsLookup, ResolverConfig};
use crate::metrics::{DnsMetrics, Metrics};
use crate::upstream::{Resolved, ResolvedSets};

/// One name entry of one upstream.
type Key = (String, DnsLookup);

/// Addresses one name may bring at most: a runaway record set must not build
/// balancer tables of unbounded size.
const MAX_ADDRESSES_PER_NAME: usize = 1024;

/// Addresses named in the log line of a name that resolves (with their count).
const LOGGED_ADDRESSES: usize = 16;

/// A whole lookup (an SRV name's targets included) gets this many `timeout`s.
const LOOKUP_DEADLINE_TIMEOUTS: u32 = 3;

/// SRV weights are scaled so that one answer's add up to at most this: the
/// smooth round robin's table is as long as the weights' sum.
const MAX_SRV_WEIGHT_SUM: u64 = 10_000;

/// The names of the config in force, each followed by a task of its own.
pub struct Discovery {
    config: ResolverConfig,
    resolver: Arc<Resolver>,
    answers: Arc<Mutex<ResolvedSets>>,
    changed: Arc<Notify>,
    metrics: Arc<Metrics>,
    follows: HashMap<Key, AbortHandle>,
}

impl Discovery {
    pub fn new(config: &ResolverConfig, metrics: Arc<Metrics>) -> Self {
        Discovery {
            config: config.clone(),
            resolver: Arc::new(Resolver::new(config)),
            answers: Arc::default(),
            changed: Arc::default(),
            metrics,
            follows: HashMap::new(),
        }
    }

    /// The latest answers of every followed name.
    pub fn answers(&self) -> ResolvedSets {
        lock(&self.answers).clone()
    }

    /// Notified each time an answer changes.
    pub fn changed(&self) -> Arc<Notify> {
        self.changed.clone()
    }

    /// The answers `config` would run with, without changing anything: those of
    /// the names followed now, and names new to it looked up once (all at once,
    /// each within its deadline). With a changed `[resolver]` every name is
    /// looked up anew. [`Discovery::commit`] puts the result in force once the
    /// config is.
    pub async fn prepare(&self, config: &Config) -> (Prepared, ResolvedSets) {
        let resolver = (config.resolver != self.config).then(|| {
            (
                config.resolver.clone(),
                Arc::new(Resolver::new(&config.resolver)),
            )
        });
        let (resolver_config, resolver_now) = match &resolver {
            Some((config, resolver)) => (config, resolver),
            None => (&self.config, &self.resolver),
        };
        let wanted: Vec<Key> = config
            .upstreams
            .iter()
            .flat_map(|upstream| {
                upstream
                    .dns
                    .iter()
                    .map(|entry| (upstream.name.clone(), entry.lookup.clone()))
            })
            .collect();
        let fresh_answers: Arc<Mutex<ResolvedSets>> = Arc::default();
        let mut first = JoinSet::new();
        for key in &wanted {
            if resolver.is_none() && self.follows.contains_key(key) {
                continue;
            }
            let mut follow = Follow {
                metrics: self.metrics.dns(&key.0),
                key: key.clone(),
                resolver: resolver_now.clone(),
                config: resolver_config.clone(),
                answers: fresh_answers.clone(),
                changed: Arc::default(),
                state: State::Unknown,
                missing_since: None,
            };
            first.spawn(async move {
                let next = follow.look_up().await;
                (follow, next)
            });
        }
        let mut fresh = Vec::new();
        while let Some(done) = first.join_next().await {
            if let Ok(looked_up) = done {
                fresh.push(looked_up);
            }
        }
        let fresh_answers = lock(&fresh_answers).clone();
        let mut answers = if resolver.is_some() {
            ResolvedSets::new()
        } else {
            let current = lock(&self.answers);
            wanted
                .iter()
                .filter_map(|key| Some((key.clone(), current.get(key)?.clone())))
                .collect()
        };
        answers.extend(fresh_answers.clone());
        let prepared = Prepared {
            resolver,
            wanted,
            fresh,
            fresh_answers,
        };
        (prepared, answers)
    }

    /// Follows the names `prepared` was made for, from now on: names no longer
    /// wanted are dropped with their answers; new ones keep their first answer
    /// and go on being looked up on their own.
    pub fn commit(&mut self, prepared: Prepared) {
        let Prepared {
            resolver,
            wanted,
            fresh,
            fresh_answers,
        } = prepared;
        if let Some((config, resolver)) = resolver {
            self.config = config;
            self.resolver = resolver;
            for (_, follow) in self.follows.drain() {
                follow.abort();
            }
        }
        self.follows.retain(|key, follow| {
            let keep = wanted.contains(key);
            if !keep {
                follow.abort();
            }
            keep
        });
        {
            let mut answers = lock(&self.answers);
            answers.retain(|key, _| wanted.contains(key));
            answers.extend(fresh_answers);
        }
        for (mut follow, next) in fresh {
            follow.answers = self.answers.clone();
            follow.changed = self.changed.clone();
            let key = follow.key.clone();
            let task = tokio::spawn(follow.run(next));
            if let Some(replaced) = self.follows.insert(key, task.abort_handle()) {
                replaced.abort();
            }
        }
    }
}

/// Names looked up for a config not yet in force: see [`Discovery::prepare`].
pub struct Prepared {
    /// A new resolver, when `[resolver]` changed.
    resolver: Option<(ResolverConfig, Arc<Resolver>)>,
    wanted: Vec<Key>,
    /// New names, looked up once, and when to look each up again.
    fresh: Vec<(Follow, Duration)>,
    fresh_answers: ResolvedSets,
}

impl Drop for Discovery {
    fn drop(&mut self) {
        for follow in self.follows.values() {
            follow.abort();
        }
    }
}

fn lock(answers: &Mutex<ResolvedSets>) -> MutexGuard<'_, ResolvedSets> {
    // A panic while holding the lock leaves a whole map: keep using it.
    answers
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What a name's last lookup said, for logging changes only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Unknown,
    Resolved,
    Missing,
    Failing,
}

/// One name of one upstream, looked up again and again.
struct Follow {
    key: Key,
    resolver: Arc<Resolver>,
    config: ResolverConfig,
    answers: Arc<Mutex<ResolvedSets>>,
    changed: Arc<Notify>,
    metrics: DnsMetrics,
    state: State,
    /// When the name was first found missing, in a row.
    missing_since: Option<Instant>,
}

impl Follow {
    async fn run(mut self, mut next: Duration) {
        loop {
            tokio::time::sleep(next).await;
            next = self.look_up().await;
        }
    }

    /// Looks the name up once, keeps the answer, and says when to look again.
    async fn look_up(&mut self) -> Duration {
        let (upstream, lookup) = &self.key;
        // A deadline over the whole lookup (SRV targets included): a slow name
        // server must not hold a reload or a start for long.
        let deadline = self.config.timeout.saturating_mul(LOOKUP_DEADLINE_TIMEOUTS);
        let outcome = tokio::time::timeout(deadline, self.resolver.resolve(lookup))
            .await
            .unwrap_or(Err(Failure::Failed(NetError::Timeout)));
        let now = Instant::now();
        match outcome {
            Ok((mut addresses, ttl)) => {
                self.metrics.success.inc();
                self.missing_since = None;
                // Lowest priority first, so that the cap keeps those.
                addresses.sort_by_key(|a| (a.priority, a.address));
                let found = addresses.len();
                addresses.truncate(MAX_ADDRESSES_PER_NAME);
                if self.state != State::Resolved {
                    if found > MAX_ADDRESSES_PER_NAME {
                        warn!(upstream, name = %lookup, found, kept = MAX_ADDRESSES_PER_NAME, "backend name has too many addresses; the first ones are kept");
                    }
                    let list: Vec<String> = addresses
                        .iter()
                        .take(LOGGED_ADDRESSES)
                        .map(|a| a.address.to_string())
                        .collect();
                    info!(upstream, name = %lookup, count = addresses.len(), addresses = %list.join(", "), "backend name resolved");
                }
                self.state = State::Resolved;
                self.store(Some(addresses));
                // Never panics, whatever the config: min_ttl wins.
                ttl.min(self.config.max_ttl).max(self.config.min_ttl)
            }
            Err(Failure::Missing) => {
                self.metrics.nxdomain.inc();
                let since = *self.missing_since.get_or_insert(now);
                let held = now - since;
                let hold = self.config.hold_missing;
                if self.state != State::Missing {
                    warn!(upstream, name = %lookup, hold = ?hold, "backend name does not exist (NXDOMAIN or no records); its last addresses are kept for hold_missing");
                    self.state = State::Missing;
                }
                if held >= hold {
                    self.store(Some(Vec::new()));
                    self.config.min_ttl
                } else {
                    self.config.min_ttl.min(hold - held)
                }
            }
            Err(Failure::Failed(err)) => {
                self.metrics.failure.inc();
                if self.state != State::Failing {
                    warn!(upstream, name = %lookup, error = %err, "backend name lookup failed; its last addresses are kept");
                    self.state = State::Failing;
                }
                self.config.min_ttl
            }
        }
    }

    /// Keeps `addresses` as the name's answer; wakes the control plane when it
    /// changed.
    fn store(&self, addresses: Option<Vec<Resolved>>) {
        let mut answers = lock(&self.answers);
        let changed = match addresses {
            Some(addresses) => {
                answers.insert(self.key.clone(), addresses.clone()) != Some(addresses)
            }
            None => answers.remove(&self.key).is_some(),
        };
        drop(answers);
        if changed {
            self.changed.notify_one();
        }
    }
}

/// Why a lookup gave no addresses.
#[derive(Debug)]
enum Failure {
    /// NXDOMAIN, or the name exists without records of the kind asked.
    Missing,
    /// A timeout, SERVFAIL, no name server reachable, a malformed answer.
    Failed(NetError),
}

/// The stub resolver: `[resolver] nameservers`, else those of `/etc/resolv.conf`.
struct Resolver {
    inner: Result<TokioResolver, String>,
}

impl Resolver {
    fn new(config: &ResolverConfig) -> Self {
        let builder = if config.nameservers.is_empty() {
            TokioResolver::builder_tokio().map_err(|err| {
                format!("cannot read the system's resolver configuration (/etc/resolv.conf): {err}")
            })
        } else {
            let servers = config
                .nameservers
                .iter()
                .map(|server| name_server(*server))
                .collect();
            Ok(TokioResolver::builder_with_config(
                HickoryConfig::from_name_servers(servers),
                TokioRuntimeProvider::default(),
            ))
        };
        let inner = builder.and_then(|mut builder| {
            let options = builder.options_mut();
            options.timeout = config.timeout;
            // One query per lookup: the next lookup, min_ttl later, is the retry.
            options.attempts = 0;
            // weir schedules lookups by the TTLs itself; a cached answer would
            // only hide a change until its TTL ran out anyway.
            options.cache_size = 0;
            builder
                .build()
                .map_err(|err| format!("cannot set up the resolver: {err}"))
        });
        if let Err(err) = &inner {
            warn!("{err}; backend names will not resolve");
        }
        Resolver { inner }
    }

    /// The addresses of `lookup` (each a backend), and the TTL of the answer.
    /// An A/AAAA name's addresses get weight 1 here: the entry's weight is
    /// applied when its upstream is built, so that a reload changing it needs no
    /// lookup.
    async fn resolve(&self, lookup: &DnsLookup) -> Result<(Vec<Resolved>, Duration), Failure> {
        let resolver = match &self.inner {
            Ok(resolver) => resolver,
            Err(err) => {
                return Err(Failure::Failed(NetError::from(err.clone())));
            }
        };
        match lookup {
            DnsLookup::Address { host, port } => {
                let (ips, ttl) = addresses(resolver, host).await?;
                let name: Arc<str> = Arc::from(host.trim_end_matches('.'));
                let resolved = ips
                    .into_iter()
                    .map(|ip| Resolved {
                        address: SocketAddr::new(ip, *port),
                        weight: 1,
                        priority: 0,
                        name: name.clone(),
                    })
                    .collect();
                Ok((resolved, ttl))
            }
            DnsLookup::Srv { name } => srv(resolver, name).await,
        }
    }
}

fn name_server(address: SocketAddr) -> NameServerConfig {
    let mut server = NameServerConfig::udp_and_tcp(address.ip());
    for connection in &mut server.connections {
        connection.port = address.port();
    }
    server
}

/// The A and AAAA addresses of `host`, and the smallest TTL among them. Each
/// family is asked on its own: a failure of one (not its absence) fails the
/// lookup, rather than dropping that family's backends until the next one.
async fn addresses(
    resolver: &TokioResolver,
    host: &str,
) -> Result<(Vec<IpAddr>, Duration), Failure> {
    let (v4, v6) = tokio::join!(resolver.ipv4_lookup(host), resolver.ipv6_lookup(host));
    let mut ips = Vec::new();
    let mut ttl = None::<Duration>;
    for family in [v4, v6] {
        match family.map_err(classify) {
            Ok(lookup) => {
                ips.extend(
                    lookup
                        .answers()
                        .iter()
                        .filter_map(|r| r.data.ip_addr())
                        .filter(|ip| routable(*ip)),
                );
                let family_ttl = smallest_ttl(&lookup);
                ttl = Some(ttl.map_or(family_ttl, |t| t.min(family_ttl)));
            }
            Err(Failure::Missing) => {}
            Err(failed) => return Err(failed),
        }
    }
    match ttl {
        Some(ttl) if !ips.is_empty() => Ok((ips, ttl)),
        _ => Err(Failure::Missing),
    }
}

/// The targets of the SRV records of `name`, each target's addresses on the
/// record's port with its weight (0 counts as 1; scaled down when the answer's
/// weights add up to more than `MAX_SRV_WEIGHT_SUM`) and priority. Each target
/// is looked up once, at most `MAX_ADDRESSES_PER_NAME` records are read, lowest
/// priority first.
async fn srv(resolver: &TokioResolver, name: &str) -> Result<(Vec<Resolved>, Duration), Failure> {
    let lookup = resolver.srv_lookup(name).await.map_err(classify)?;
    let mut ttl = smallest_ttl(&lookup);
    let mut records: Vec<_> = lookup
        .answers()
        .iter()
        .filter_map(|record| match &record.data {
            RData::SRV(srv) => Some(srv),
            _ => None,
        })
        .collect();
    records.sort_by_key(|srv| (srv.priority, srv.target.to_ascii()));
    records.truncate(MAX_ADDRESSES_PER_NAME);
    let sum: u64 = records.iter().map(|srv| u64::from(srv.weight.max(1))).sum();
    let scale = |weight: u16| {
        let weight = u64::from(weight.max(1));
        let scaled = if sum > MAX_SRV_WEIGHT_SUM {
            (weight * MAX_SRV_WEIGHT_SUM / sum).max(1)
        } else {
            weight
        };
        u32::try_from(scaled).unwrap_or(1)
    };
    // Each target's addresses and name, looked up once; `None`: it has none.
    type Target = Option<(Vec<IpAddr>, Arc<str>)>;
    let mut targets: HashMap<String, Target> = HashMap::new();
    let mut resolved = Vec::new();
    for srv in records {
        let target = srv.target.to_ascii();
        if !targets.contains_key(&target) {
            let found = match addresses(resolver, &target).await {
                Ok((ips, target_ttl)) => {
                    ttl = ttl.min(target_ttl);
                    Some((ips, Arc::from(target.trim_end_matches('.'))))
                }
                // A target without addresses is no backend; the others still are.
                Err(Failure::Missing) => None,
                Err(failed) => return Err(failed),
            };
            targets.insert(target.clone(), found);
        }
        let Some((ips, target)) = &targets[&target] else {
            continue;
        };
        resolved.extend(ips.iter().map(|ip| Resolved {
            address: SocketAddr::new(*ip, srv.port),
            weight: scale(srv.weight),
            priority: srv.priority,
            name: target.clone(),
        }));
    }
    if resolved.is_empty() {
        return Err(Failure::Missing);
    }
    Ok((resolved, ttl))
}

/// An address a backend can be at: not unspecified, multicast or broadcast.
fn routable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !(v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast()),
        IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_multicast()),
    }
}

fn smallest_ttl(lookup: &hickory_resolver::lookup::Lookup) -> Duration {
    let seconds = lookup.answers().iter().map(|record| record.ttl).min();
    Duration::from_secs(u64::from(seconds.unwrap_or(0)))
}

fn classify(err: NetError) -> Failure {
    if err.is_no_records_found() {
        Failure::Missing
    } else {
        Failure::Failed(err)
    }
}
