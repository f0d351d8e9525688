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

    /// Follows the names of `config`: names new to it are looked up once before
    /// this returns (all at once, each within the resolver's timeout), then on
    /// their own; names it no longer has are dropped with their answers. Names
    /// that stay keep their answers, unless `[resolver]` changed: then every
    /// name is looked up anew.
    pub async fn sync(&mut self, config: &Config) {
        if config.resolver != self.config {
            self.config = config.resolver.clone();
            self.resolver = Arc::new(Resolver::new(&self.config));
            for (_, follow) in self.follows.drain() {
                follow.abort();
            }
        }
        let wanted: HashMap<Key, u32> = config
            .upstreams
            .iter()
            .flat_map(|upstream| {
                upstream.dns.iter().map(|entry| {
                    (
                        (upstream.name.clone(), entry.lookup.clone()),
                        entry.weight.get(),
                    )
                })
            })
            .collect();
        self.follows.retain(|key, follow| {
            let keep = wanted.contains_key(key);
            if !keep {
                follow.abort();
            }
            keep
        });
        lock(&self.answers).retain(|key, _| wanted.contains_key(key));

        let mut first = JoinSet::new();
        for (key, weight) in wanted {
            if self.follows.contains_key(&key) {
                continue;
            }
            let follow = Follow {
                metrics: self.metrics.dns(&key.0),
                key,
                weight,
                resolver: self.resolver.clone(),
                config: self.config.clone(),
                answers: self.answers.clone(),
                changed: self.changed.clone(),
                state: State::Unknown,
                missing_since: None,
            };
            first.spawn(async move {
                let mut follow = follow;
                let next = follow.look_up().await;
                (follow, next)
            });
        }
        while let Some(done) = first.join_next().await {
            let Ok((follow, next)) = done else { continue };
            let key = follow.key.clone();
            let task = tokio::spawn(follow.run(next));
            self.follows.insert(key, task.abort_handle());
        }
    }
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
    /// The weight of each address of an A/AAAA name.
    weight: u32,
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
        let outcome = self.resolver.resolve(lookup, self.weight).await;
        let now = Instant::now();
        match outcome {
            Ok((mut addresses, ttl)) => {
                self.metrics.success.inc();
                self.missing_since = None;
                addresses.sort();
                let found = addresses.len();
                addresses.truncate(MAX_ADDRESSES_PER_NAME);
                if self.state != State::Resolved {
                    if found > MAX_ADDRESSES_PER_NAME {
                        warn!(upstream, name = %lookup, found, kept = MAX_ADDRESSES_PER_NAME, "backend name has too many addresses; the first ones are kept");
                    }
                    let list: Vec<String> =
                        addresses.iter().map(|a| a.address.to_string()).collect();
                    info!(upstream, name = %lookup, addresses = %list.join(", "), "backend name resolved");
                }
                self.state = State::Resolved;
                self.store(Some(addresses));
                ttl.clamp(self.config.min_ttl, self.config.max_ttl)
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
    async fn resolve(
        &self,
        lookup: &DnsLookup,
        weight: u32,
    ) -> Result<(Vec<Resolved>, Duration), Failure> {
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
                        weight,
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
                ips.extend(lookup.answers().iter().filter_map(|r| r.data.ip_addr()));
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
/// record's port with its weight (0 counts as 1) and priority.
async fn srv(resolver: &TokioResolver, name: &str) -> Result<(Vec<Resolved>, Duration), Failure> {
    let lookup = resolver.srv_lookup(name).await.map_err(classify)?;
    let mut ttl = smallest_ttl(&lookup);
    let mut resolved = Vec::new();
    let mut records: Vec<_> = lookup
        .answers()
        .iter()
        .filter_map(|record| match &record.data {
            RData::SRV(srv) => Some(srv),
            _ => None,
        })
        .collect();
    // Lowest priority first: those are kept if the cap cuts the list.
    records.sort_by_key(|srv| srv.priority);
    for srv in records {
        if resolved.len() >= MAX_ADDRESSES_PER_NAME {
            break;
        }
        let target = srv.target.to_ascii();
        let (ips, target_ttl) = match addresses(resolver, &target).await {
            Ok(found) => found,
            // A target without addresses is no backend; the others still are.
            Err(Failure::Missing) => continue,
            Err(failed) => return Err(failed),
        };
        ttl = ttl.min(target_ttl);
        let target: Arc<str> = Arc::from(target.trim_end_matches('.'));
        resolved.extend(ips.into_iter().map(|ip| Resolved {
            address: SocketAddr::new(ip, srv.port),
            weight: u32::from(srv.weight.max(1)),
            priority: srv.priority,
            name: target.clone(),
        }));
    }
    if resolved.is_empty() {
        return Err(Failure::Missing);
    }
    Ok((resolved, ttl))
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
