//! The response cache (RFC 9111, shared): per route, GET and HEAD are answered
//! from stored responses while fresh, revalidated when stale, and concurrent
//! misses of one key coalesce into one request to the backend.
//!
//! - `directives`: `Cache-Control` of requests and responses;
//! - `freshness`: lifetime and age;
//! - `object`: a stored response and what it can do for a request;
//! - `store`: the in-process store, bounded by bytes;
//! - `fill`: coalescing, the shared body of one response as it streams in;
//! - this file: the way of one request through the cache.
//!
//! The cache does not know how a request reaches a backend: the proxy hands it
//! an [`Origin`].

mod directives;
mod fill;
mod freshness;
mod object;
mod range;
mod shared;
mod store;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use tracing::debug;

use crate::config::{CacheConfig, RouteCache};
use crate::metrics::{CacheResults, Metrics};
use crate::upstream::{RequestBody, ResponseBody};
use directives::{RequestDirectives, ResponseDirectives};
use fill::{FillBody, FillBroken, FillHead, Fills, Joined, Leader};
use object::{Stored, Usable, Vary};
use shared::{Dropped, SharedTier};
use store::MemoryStore;

use crate::redis_connection::Redis;

/// The `Cache-Status` field (RFC 9211).
static CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// Longest a background revalidation may take, body included.
const BACKGROUND_DEADLINE: Duration = Duration::from_secs(60);

/// A backend's answer to the cache's request, on its way.
pub type Sent<'a, E> = Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, E>> + Send + 'a>>;

/// How the cache reaches the backends of a route.
pub trait Origin: Send + Sync + 'static {
    type Error: Send + 'static;
    fn send(&self, request: Request<RequestBody>) -> Sent<'_, Self::Error>;
}

/// The cache of one weir process: its store, the shared tier in Redis when
/// configured, and the fills in progress. It outlives reloads that keep the
/// `[cache]` sizes and the `[redis]` settings.
#[derive(Debug)]
pub struct Cache {
    pub settings: CacheConfig,
    memory: MemoryStore,
    shared: Option<SharedTier>,
    fills: Arc<Fills>,
    /// Follows other instances' purges; ended with the cache.
    follower: Option<tokio::task::AbortHandle>,
}

impl Drop for Cache {
    fn drop(&mut self) {
        if let Some(follower) = &self.follower {
            follower.abort();
        }
    }
}

/// What a purge removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    /// Keys dropped from this instance's memory.
    pub memory: usize,
    /// Keys dropped from Redis; `None` without Redis, or when it did not answer.
    pub redis: Option<usize>,
}

/// A response body from the cache: stored bytes, a shared fill, or a backend's
/// body passed through.
#[derive(Debug)]
pub enum CacheBody {
    Stored(Option<Bytes>),
    Fill(Box<FillBody>),
    Upstream(ResponseBody),
}

/// A cached route's view of one request: what the cache needs to know of it.
pub struct RouteView<'a> {
    pub settings: &'a RouteCache,
    pub results: &'a CacheResults,
}

impl Cache {
    pub fn new(settings: CacheConfig, redis: Option<Arc<Redis>>, metrics: &Metrics) -> Arc<Self> {
        Arc::new_cyclic(|weak: &std::sync::Weak<Cache>| {
            let follower = redis.as_ref().map(|redis| {
                let weak = weak.clone();
                SharedTier::follow(
                    redis.clone(),
                    metrics.redis_errors("subscribe"),
                    move |dropped| {
                        if let Some(cache) = weak.upgrade() {
                            cache.drop_local(&dropped);
                        }
                    },
                )
                .abort_handle()
            });
            Cache {
                memory: MemoryStore::new(settings.memory, metrics.cache_store("memory")),
                shared: redis.map(|redis| SharedTier::new(redis, metrics)),
                fills: Arc::new(Fills::new(fill_budget(&settings))),
                settings,
                follower,
            }
        })
    }

    /// The cache `config` needs: none when no route caches; `previous` when
    /// its sizes stay (stored responses survive the reload); else a new one.
    pub fn for_config(
        config: &crate::config::Config,
        previous: Option<&Arc<Cache>>,
        metrics: &Metrics,
    ) -> Option<Arc<Cache>> {
        if config.routes.iter().all(|r| r.cache.is_none()) {
            return None;
        }
        let redis_config = config.redis.as_ref().filter(|_| {
            config
                .routes
                .iter()
                .any(|r| r.cache.as_ref().is_some_and(|c| c.store.redis()))
        });
        if let Some(previous) = previous
            && previous.settings == config.cache
            && previous.shared.as_ref().map(|s| &s.redis.config) == redis_config
        {
            return Some(previous.clone());
        }
        let redis = redis_config.and_then(|config| match Redis::new(config, "shared cache") {
            Ok(redis) => Some(redis),
            Err(err) => {
                // The URL was checked with the config; a client that still
                // cannot be made leaves the cache in memory alone.
                tracing::warn!(error = %err, "redis client not made; caching in memory only");
                None
            }
        });
        Some(Cache::new(config.cache.clone(), redis, metrics))
    }

    /// Keeps `object` where the route stores: in memory, and written through
    /// to Redis (aside: no request waits on the write).
    fn keep(self: &Arc<Self>, route: &RouteCache, key: &Arc<str>, object: Arc<Stored>) {
        if route.store.memory() {
            self.memory.insert(key, object.clone());
        }
        if route.store.redis() && self.shared.is_some() {
            let ttl =
                shared::time_to_keep(&object, route.stale_while_revalidate, route.stale_if_error);
            let cache = self.clone();
            let key = key.clone();
            tokio::spawn(async move {
                if let Some(shared) = &cache.shared {
                    shared.put(&key, &object, ttl).await;
                }
            });
        }
    }

    /// The stored response of `key` that `request` selects in Redis, within
    /// `redis.timeout` in all.
    async fn shared_get(&self, key: &str, request: &HeaderMap) -> Option<Stored> {
        let shared = self.shared.as_ref()?;
        if shared.redis.resting() {
            return None;
        }
        let limit = self.settings.max_object_size;
        match tokio::time::timeout(shared.redis.config.timeout, shared.get(key, request, limit))
            .await
        {
            Ok(found) => found,
            Err(_) => {
                shared.lookup_timed_out();
                None
            }
        }
    }

    /// Drops what another instance (or this one) asked every instance to drop.
    fn drop_local(&self, dropped: &Dropped) {
        match dropped {
            Dropped::Key { key } => self.memory.remove(key),
            Dropped::Purge { host, path, prefix } => {
                self.purge_memory(host, path.as_deref(), prefix.as_deref());
            }
        }
    }

    /// Answers `request` on a cached route: from the store, or through `origin`.
    pub async fn serve<O: Origin>(
        self: &Arc<Self>,
        route: RouteView<'_>,
        origin: Arc<O>,
        request: Request<RequestBody>,
    ) -> Result<Response<CacheBody>, O::Error> {
        let key = key_of(&request);
        let method = request.method().clone();
        if method != Method::GET && method != Method::HEAD {
            return self.pass_unsafe(route, origin, request, key).await;
        }
        let bypass = !matches!(request.body(), RequestBody::Empty)
            || request.headers().contains_key(header::UPGRADE);
        if bypass {
            route.results.bypass.inc();
            let response = origin.send(request).await?;
            return Ok(pass(response, "fwd=bypass"));
        }
        let now = SystemTime::now();
        let directives = RequestDirectives::of(request.headers());
        let mut stored = route
            .settings
            .store
            .memory()
            .then(|| self.memory.get(&key))
            .flatten()
            .and_then(|variants| variants.select(request.headers()).cloned());
        // Not fresh here: another instance may have a fresher copy in Redis.
        let mut usable = stored
            .as_ref()
            .map(|stored| stored.usable(&directives, now, route.settings));
        if usable != Some(Usable::Fresh)
            && route.settings.store.redis()
            && let Some(found) = self.shared_get(&key, request.headers()).await
            && stored
                .as_ref()
                .is_none_or(|s| found.response_time > s.response_time)
        {
            let found = Arc::new(found);
            if route.settings.store.memory() {
                self.memory.insert(&key, found.clone());
            }
            usable = Some(found.usable(&directives, now, route.settings));
            stored = Some(found);
        }
        match (stored, usable) {
            (Some(stored), Some(Usable::Fresh | Usable::StaleAccepted)) => {
                let stale = usable == Some(Usable::StaleAccepted);
                if stale {
                    route.results.stale.inc();
                } else {
                    route.results.hit.inc();
                }
                let status = if stale { "hit; detail=stale" } else { "hit" };
                Ok(from_stored(
                    &stored,
                    request.headers(),
                    &method,
                    now,
                    status,
                ))
            }
            (Some(stored), Some(Usable::StaleWhileRevalidate)) => {
                route.results.stale.inc();
                self.revalidate_aside(route.settings, origin, &request, key, stored.clone());
                Ok(from_stored(
                    &stored,
                    request.headers(),
                    &method,
                    now,
                    "hit; detail=stale-while-revalidate",
                ))
            }
            (_, _) if directives.only_if_cached => {
                route.results.miss.inc();
                let mut response = Response::new(CacheBody::Stored(None));
                *response.status_mut() = StatusCode::GATEWAY_TIMEOUT;
                add_status(response.headers_mut(), "detail=only-if-cached");
                Ok(response)
            }
            (_, _) if request.headers().contains_key(header::RANGE) => {
                // Parts are served from whole stored responses only; a range
                // the store cannot give goes to the backend and is not stored.
                route.results.bypass.inc();
                let response = origin.send(request).await?;
                Ok(pass(response, "fwd=bypass; detail=range"))
            }
            (stored, usable) => {
                let stale_if_error = matches!(
                    usable,
                    Some(Usable::Revalidate {
                        stale_if_error: true
                    })
                );
                self.fetch(route, origin, request, key, stored, stale_if_error)
                    .await
            }
        }
    }

    /// An unsafe method goes to the backend; its success invalidates what is
    /// stored for its URL and the URLs its `Location` and `Content-Location`
    /// name on the same host (RFC 9111 §4.4).
    async fn pass_unsafe<O: Origin>(
        self: &Arc<Self>,
        route: RouteView<'_>,
        origin: Arc<O>,
        request: Request<RequestBody>,
        key: Arc<str>,
    ) -> Result<Response<CacheBody>, O::Error> {
        let safe = matches!(*request.method(), Method::OPTIONS | Method::TRACE);
        let scheme_host = scheme_host(request.headers());
        route.results.bypass.inc();
        let response = origin.send(request).await?;
        let status = response.status();
        if !safe && (status.is_success() || status.is_redirection()) {
            self.invalidate(route.settings, &key);
            for name in [header::LOCATION, header::CONTENT_LOCATION] {
                if let Some(target) = response.headers().get(name)
                    && let Some(key) = same_origin_key(&scheme_host, target)
                {
                    self.invalidate(route.settings, &key);
                }
            }
        }
        Ok(pass(response, "fwd=method"))
    }

    /// Drops `key` here, and with Redis from Redis and every instance's memory.
    fn invalidate(self: &Arc<Self>, route: &RouteCache, key: &str) {
        self.memory.remove(key);
        if route.store.redis() && self.shared.is_some() {
            let cache = self.clone();
            let key = key.to_owned();
            tokio::spawn(async move {
                if let Some(shared) = &cache.shared {
                    shared.invalidate(&key).await;
                }
            });
        }
    }

    /// Drops every stored response of `host` whose path is `path` (any query)
    /// or starts with `prefix`: here, in Redis, and (told over Redis) in every
    /// other instance.
    pub async fn purge(&self, host: &str, path: Option<&str>, prefix: Option<&str>) -> Purged {
        let memory = self.purge_memory(host, path, prefix);
        let redis = match &self.shared {
            Some(shared) => {
                let message = Dropped::Purge {
                    host: host.to_ascii_lowercase(),
                    path: path.map(str::to_owned),
                    prefix: prefix.map(str::to_owned),
                };
                let host = host.to_ascii_lowercase();
                shared
                    .purge(&message, |key| purge_matches(key, &host, path, prefix))
                    .await
            }
            None => None,
        };
        Purged { memory, redis }
    }

    fn purge_memory(&self, host: &str, path: Option<&str>, prefix: Option<&str>) -> usize {
        let host = host.to_ascii_lowercase();
        self.memory
            .remove_where(|key| purge_matches(key, &host, path, prefix))
    }

    /// A miss, or a stored response that needs the backend's word: one request
    /// for all who ask at once.
    async fn fetch<O: Origin>(
        self: &Arc<Self>,
        route: RouteView<'_>,
        origin: Arc<O>,
        request: Request<RequestBody>,
        key: Arc<str>,
        stored: Option<Arc<Stored>>,
        stale_if_error: bool,
    ) -> Result<Response<CacheBody>, O::Error> {
        let method = request.method().clone();
        if method == Method::HEAD {
            // A HEAD's answer has no body to share or store.
            route.results.miss.inc();
            let response = origin.send(request).await?;
            return Ok(pass(response, "fwd=miss"));
        }
        let leader = match self.fills.join(&key, self.settings.max_object_size) {
            Joined::Lead(leader) => Some(leader),
            Joined::Wait(fill) => {
                if let Some(head) = fill.head(route.settings.lock_timeout).await
                    && head.vary.matches(request.headers())
                    && let Some(reader) = fill.reader()
                {
                    route.results.coalesced.inc();
                    return Ok(from_fill(
                        &head,
                        reader,
                        request.headers(),
                        "fwd=miss; collapsed",
                    ));
                }
                // The leader gave up, took too long or got another variant:
                // this request goes on its own.
                None
            }
        };
        let request_headers = request.headers().clone();
        let (mut parts, body) = request.into_parts();
        let validated = stored.as_ref().filter(|s| s.has_validators());
        if let Some(stored) = validated {
            parts.headers.remove(header::IF_NONE_MATCH);
            parts.headers.remove(header::IF_MODIFIED_SINCE);
            stored.add_validators(&mut parts.headers);
        }
        let fwd = if stored.is_some() {
            "fwd=stale"
        } else {
            "fwd=miss"
        };
        let request_time = SystemTime::now();
        let result = origin.send(Request::from_parts(parts, body)).await;
        let response_time = SystemTime::now();
        let stale = stored.as_ref().filter(|_| stale_if_error);
        let response = match result {
            Err(error) => {
                return match stale {
                    Some(stale) => {
                        route.results.stale.inc();
                        Ok(from_stored(
                            stale,
                            &request_headers,
                            &method,
                            response_time,
                            "hit; detail=stale-if-error",
                        ))
                    }
                    None => Err(error),
                };
            }
            Ok(response) => response,
        };
        let status = response.status();
        // RFC 5861 §4: an error is a 500, 502, 503 or 504.
        if let Some(stale) = stale
            && matches!(status.as_u16(), 500 | 502 | 503 | 504)
        {
            route.results.stale.inc();
            let detail = format!(
                "{fwd}; fwd-status={}; detail=stale-if-error",
                status.as_u16()
            );
            return Ok(from_stored(
                stale,
                &request_headers,
                &method,
                response_time,
                &detail,
            ));
        }
        if let (Some(stored), StatusCode::NOT_MODIFIED) = (validated, status) {
            route.results.revalidated.inc();
            let refreshed = Arc::new(stored.refreshed(
                response.headers(),
                &request_headers,
                request_time,
                response_time,
                route.settings.default_ttl,
            ));
            drop(response);
            if !refreshed.still_storable() {
                self.invalidate(route.settings, &key);
            } else {
                self.keep(route.settings, &key, refreshed.clone());
            }
            let detail = "fwd=stale; fwd-status=304";
            let Some(leader) = leader else {
                return Ok(from_stored(
                    &refreshed,
                    &request_headers,
                    &method,
                    response_time,
                    detail,
                ));
            };
            let head = FillHead {
                status: refreshed.status,
                headers: refreshed.head(response_time),
                vary: refreshed.vary.clone(),
            };
            let reader = leader.publish_whole(head, refreshed.body.clone());
            let head = FillHead {
                status: refreshed.status,
                headers: refreshed.head(response_time),
                vary: Vary::default(),
            };
            return Ok(from_fill(&head, reader, &request_headers, detail));
        }
        route.results.miss.inc();
        Ok(self.store_and_stream(
            route.settings,
            leader,
            response,
            &request_headers,
            request_time,
            response_time,
            key,
            fwd,
        ))
    }

    /// The backend's response to a fetch: streamed to the client and, when it
    /// may be stored, shared with waiters and stored once whole.
    #[allow(clippy::too_many_arguments)]
    fn store_and_stream(
        self: &Arc<Self>,
        route: &RouteCache,
        leader: Option<Leader>,
        response: Response<ResponseBody>,
        request_headers: &HeaderMap,
        request_time: SystemTime,
        response_time: SystemTime,
        key: Arc<str>,
        fwd: &str,
    ) -> Response<CacheBody> {
        let plan = storage_plan(
            request_headers,
            &response,
            response_time,
            route.default_ttl,
            self.settings.max_object_size,
        );
        let (Some(leader), Some(vary)) = (leader, plan) else {
            // Not stored: waiters, if any, were released by the leader's drop.
            return pass(response, fwd);
        };
        let (parts, body) = response.into_parts();
        let status = parts.status;
        let stored_headers = parts.headers.clone();
        let request_for_store = request_headers.clone();
        let cache = Arc::downgrade(self);
        let route_settings = route.clone();
        let on_complete: fill::OnComplete = Box::new(move |body: Bytes| {
            let Some(cache) = cache.upgrade() else { return };
            let object = Stored::new(
                status,
                stored_headers,
                body,
                &request_for_store,
                request_time,
                response_time,
                route_settings.default_ttl,
            );
            cache.keep(&route_settings, &key, Arc::new(object));
        });
        let mut client_headers = parts.headers.clone();
        add_status(&mut client_headers, &format!("{fwd}; stored"));
        let head = FillHead {
            status,
            headers: parts.headers,
            vary,
        };
        let reader = leader.publish(head, body, Some(on_complete));
        let mut response = Response::new(CacheBody::Fill(Box::new(reader)));
        *response.status_mut() = status;
        *response.version_mut() = parts.version;
        *response.headers_mut() = client_headers;
        response
    }

    /// Revalidates `stored` aside while it answers (stale-while-revalidate):
    /// one such request per key at a time, bounded in time.
    fn revalidate_aside<O: Origin>(
        self: &Arc<Self>,
        route: &RouteCache,
        origin: Arc<O>,
        request: &Request<RequestBody>,
        key: Arc<str>,
        stored: Arc<Stored>,
    ) {
        let Some(mark) = self.fills.revalidation(&key) else {
            return;
        };
        let mut headers = request.headers().clone();
        headers.remove(header::IF_NONE_MATCH);
        headers.remove(header::IF_MODIFIED_SINCE);
        stored.add_validators(&mut headers);
        let mut revalidation = Request::new(RequestBody::Empty);
        *revalidation.uri_mut() = request.uri().clone();
        *revalidation.version_mut() = request.version();
        *revalidation.headers_mut() = headers;
        let cache = self.clone();
        let route = route.clone();
        tokio::spawn(async move {
            let work = cache.revalidate(&route, origin, revalidation, key, stored);
            if tokio::time::timeout(BACKGROUND_DEADLINE, work)
                .await
                .is_err()
            {
                debug!("background revalidation timed out");
            }
            drop(mark);
        });
    }

    async fn revalidate<O: Origin>(
        self: &Arc<Self>,
        route: &RouteCache,
        origin: Arc<O>,
        request: Request<RequestBody>,
        key: Arc<str>,
        stored: Arc<Stored>,
    ) {
        let request_headers = request.headers().clone();
        let request_time = SystemTime::now();
        let Ok(response) = origin.send(request).await else {
            return;
        };
        let response_time = SystemTime::now();
        if response.status() == StatusCode::NOT_MODIFIED && stored.has_validators() {
            let refreshed = stored.refreshed(
                response.headers(),
                &request_headers,
                request_time,
                response_time,
                route.default_ttl,
            );
            if refreshed.still_storable() {
                self.keep(route, &key, Arc::new(refreshed));
            } else {
                self.invalidate(route, &key);
            }
            return;
        }
        if storage_plan(
            &request_headers,
            &response,
            response_time,
            route.default_ttl,
            self.settings.max_object_size,
        )
        .is_none()
        {
            return;
        }
        let (parts, body) = response.into_parts();
        let limit = usize::try_from(self.settings.max_object_size).unwrap_or(usize::MAX);
        let Ok(body) = http_body_util::Limited::new(body, limit).collect().await else {
            return;
        };
        let object = Stored::new(
            parts.status,
            parts.headers,
            body.to_bytes(),
            &request_headers,
            request_time,
            response_time,
            route.default_ttl,
        );
        self.keep(route, &key, Arc::new(object));
    }

    /// Finishes the store's pending bookkeeping (tests observe a settled store).
    pub fn settle(&self) {
        self.memory.settle();
    }
}

/// Bytes all fills in progress may keep to store: a quarter of the store's
/// size, and at least one object.
fn fill_budget(settings: &CacheConfig) -> u64 {
    (settings.memory / 4).max(settings.max_object_size)
}

/// Whether a purge of `host` (lowercase) with `path` or `prefix` takes `key`.
fn purge_matches(key: &str, host: &str, path: Option<&str>, prefix: Option<&str>) -> bool {
    let Some((_, rest)) = key.split_once("://") else {
        return false;
    };
    let Some(target) = rest.strip_prefix(host) else {
        return false;
    };
    if !target.starts_with('/') {
        return false;
    }
    let target_path = target.split_once('?').map_or(target, |(p, _)| p);
    path.is_some_and(|p| target_path == p) || prefix.is_some_and(|p| target.starts_with(p))
}

/// The key of a request: scheme, host (lowercase, port included) and target.
/// HEAD shares GET's key.
fn key_of(request: &Request<RequestBody>) -> Arc<str> {
    let target = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let mut key = String::with_capacity(64 + target.len());
    push_scheme_host(&mut key, request.headers());
    key.push_str(target);
    Arc::from(key)
}

/// `scheme://host` of a request as the proxy rewrote it (`X-Forwarded-Proto`
/// set, `Host` passed through).
fn scheme_host(headers: &HeaderMap) -> String {
    let mut out = String::with_capacity(64);
    push_scheme_host(&mut out, headers);
    out
}

fn push_scheme_host(out: &mut String, headers: &HeaderMap) {
    let scheme = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("http");
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    out.push_str(scheme);
    out.push_str("://");
    out.extend(host.chars().map(|c| c.to_ascii_lowercase()));
}

/// The key of a `Location` / `Content-Location` target, when it is on the
/// request's own scheme and host (an invalidation never reaches another host).
fn same_origin_key(scheme_host: &str, target: &HeaderValue) -> Option<Arc<str>> {
    let target = target.to_str().ok()?.trim();
    if target.starts_with('/') && !target.starts_with("//") {
        return Some(Arc::from(format!("{scheme_host}{target}")));
    }
    let (scheme, rest) = target.split_once("://")?;
    let (host, path) = rest.find('/').map_or((rest, "/"), |i| rest.split_at(i));
    let candidate = format!(
        "{}://{}",
        scheme.to_ascii_lowercase(),
        host.to_ascii_lowercase()
    );
    (candidate == scheme_host).then(|| Arc::from(format!("{candidate}{path}")))
}

/// Statuses whose meaning weir knows (for `must-understand`).
fn understood(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200..=206 | 300..=305 | 307 | 308 | 400..=417 | 421..=426 | 428 | 429 | 431 | 451 | 500..=505 | 511
    )
}

/// Whether `response` to a GET with `request_headers` may be stored (RFC 9111
/// §3, shared cache; weir also never stores a response that sets a cookie),
/// and worth it; if so, the fields its variants differ by.
fn storage_plan(
    request_headers: &HeaderMap,
    response: &Response<ResponseBody>,
    response_time: SystemTime,
    default_ttl: Duration,
    max_object_size: u64,
) -> Option<Vary> {
    let status = response.status();
    let headers = response.headers();
    let request = RequestDirectives::of(request_headers);
    let directives = ResponseDirectives::of(headers);
    if request.no_store || status.is_informational() {
        return None;
    }
    if directives.must_understand {
        if !understood(status) {
            return None;
        }
    } else if directives.no_store {
        return None;
    }
    // Answers to this request's own preconditions or shape, which another
    // request must never get: a 412 for an If-Match, a 416 for a Range, a 431
    // for its headers (cache-poisoning denial of service otherwise).
    if matches!(
        status,
        StatusCode::PARTIAL_CONTENT
            | StatusCode::NOT_MODIFIED
            | StatusCode::PRECONDITION_FAILED
            | StatusCode::RANGE_NOT_SATISFIABLE
            | StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    ) || [
        header::IF_MATCH,
        header::IF_UNMODIFIED_SINCE,
        header::IF_RANGE,
    ]
    .iter()
    .any(|name| request_headers.contains_key(name))
        || directives.private
        || object::has_set_cookie(headers)
    {
        return None;
    }
    if request_headers.contains_key(header::AUTHORIZATION)
        && !(directives.public || directives.must_revalidate || directives.s_maxage.is_some())
    {
        return None;
    }
    let explicit = headers.contains_key(header::EXPIRES)
        || directives.max_age.is_some()
        || directives.s_maxage.is_some()
        || directives.public;
    if !explicit && !freshness::cacheable_by_default(status) {
        return None;
    }
    if response.body().size_hint().lower() > max_object_size {
        return None;
    }
    // An HTTP/1.0 body ends when the connection does: a cut could not be told
    // from the end, so only one with a length is stored.
    if response.version() == http::Version::HTTP_10 && !headers.contains_key(header::CONTENT_LENGTH)
    {
        return None;
    }
    // A response never fresh, without validators and without a stale window
    // could never answer anything: not worth its room.
    let lifetime = freshness::lifetime(status, headers, &directives, response_time, default_ttl);
    let validators =
        headers.contains_key(header::ETAG) || headers.contains_key(header::LAST_MODIFIED);
    if lifetime.is_zero() && !validators {
        return None;
    }
    Vary::of(headers, request_headers)
}

/// A backend's response passed through, with the cache's word on it.
fn pass(response: Response<ResponseBody>, status: &str) -> Response<CacheBody> {
    let mut response = response.map(CacheBody::Upstream);
    add_status(response.headers_mut(), status);
    response
}

/// Appends weir's entry to `Cache-Status`, after those of caches nearer the
/// origin (RFC 9211 §2).
fn add_status(headers: &mut HeaderMap, status: &str) {
    let before = headers
        .get(&CACHE_STATUS)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|b| !b.is_empty());
    let value = match (before, status) {
        // The answers of every hit and miss, without formatting.
        (None, "hit") => HeaderValue::from_static("weir; hit"),
        (None, "fwd=miss; stored") => HeaderValue::from_static("weir; fwd=miss; stored"),
        (None, "fwd=miss; collapsed") => HeaderValue::from_static("weir; fwd=miss; collapsed"),
        (before, status) => {
            let mut value = String::with_capacity(64);
            if let Some(before) = before {
                value.push_str(before);
                value.push_str(", ");
            }
            value.push_str("weir; ");
            value.push_str(status);
            match HeaderValue::from_str(&value) {
                Ok(value) => value,
                Err(_) => return,
            }
        }
    };
    headers.insert(CACHE_STATUS.clone(), value);
}

/// An answer from a stored response: the whole of it, its head for a HEAD, or
/// a 304 when the request's own condition holds.
fn from_stored(
    stored: &Stored,
    request_headers: &HeaderMap,
    method: &Method,
    now: SystemTime,
    status: &str,
) -> Response<CacheBody> {
    let mut headers = stored.head(now);
    add_status(&mut headers, status);
    let not_modified = object::is_conditional(request_headers)
        && stored.status == StatusCode::OK
        && object::not_modified_for(request_headers, &stored.headers);
    let range = (stored.status == StatusCode::OK
        && !request_headers.contains_key(header::IF_RANGE))
    .then(|| request_headers.get(header::RANGE))
    .flatten()
    .and_then(|range| range::single(range, stored.body.len() as u64));
    let mut response = if not_modified {
        headers.remove(header::CONTENT_LENGTH);
        let mut response = Response::new(CacheBody::Stored(None));
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response
    } else if let Some(range) = range {
        let length = stored.body.len();
        let (status, body) = match range {
            Some((first, last)) => {
                let content_range = format!("bytes {first}-{last}/{length}");
                headers.insert(
                    header::CONTENT_RANGE,
                    HeaderValue::from_str(&content_range).expect("digits"),
                );
                let part = stored.body.slice(first as usize..=last as usize);
                (StatusCode::PARTIAL_CONTENT, part)
            }
            None => {
                let content_range = format!("bytes */{length}");
                headers.insert(
                    header::CONTENT_RANGE,
                    HeaderValue::from_str(&content_range).expect("digits"),
                );
                (StatusCode::RANGE_NOT_SATISFIABLE, Bytes::new())
            }
        };
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        let body = (*method != Method::HEAD && !body.is_empty()).then_some(body);
        let mut response = Response::new(CacheBody::Stored(body));
        *response.status_mut() = status;
        response
    } else {
        let body =
            (*method != Method::HEAD && !stored.body.is_empty()).then(|| stored.body.clone());
        let mut response = Response::new(CacheBody::Stored(body));
        *response.status_mut() = stored.status;
        response
    };
    *response.headers_mut() = headers;
    response
}

/// An answer read from a fill another request leads.
fn from_fill(
    head: &FillHead,
    reader: FillBody,
    request_headers: &HeaderMap,
    status: &str,
) -> Response<CacheBody> {
    let mut headers = head.headers.clone();
    add_status(&mut headers, status);
    let not_modified = object::is_conditional(request_headers)
        && head.status == StatusCode::OK
        && object::not_modified_for(request_headers, &head.headers);
    let mut response = if not_modified {
        headers.remove(header::CONTENT_LENGTH);
        drop(reader);
        let mut response = Response::new(CacheBody::Stored(None));
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response
    } else {
        let reader = reader.with_size(&head.headers);
        let mut response = Response::new(CacheBody::Fill(Box::new(reader)));
        *response.status_mut() = head.status;
        response
    };
    *response.headers_mut() = headers;
    response
}

/// What a cache body's reader can fail with.
#[derive(Debug, thiserror::Error)]
pub enum CacheBodyError {
    #[error(transparent)]
    Upstream(#[from] crate::upstream::ResponseBodyError),
    #[error(transparent)]
    Fill(#[from] FillBroken),
}

impl CacheBody {
    /// The request counted in flight on its backend, for a tunnel (never from
    /// the cache: only passed-through bodies have one).
    pub fn upstream_mut(&mut self) -> Option<&mut ResponseBody> {
        match self {
            CacheBody::Upstream(body) => Some(body),
            _ => None,
        }
    }
}

impl Body for CacheBody {
    type Data = Bytes;
    type Error = CacheBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, CacheBodyError>>> {
        match self.get_mut() {
            CacheBody::Stored(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            CacheBody::Fill(fill) => Pin::new(fill.as_mut())
                .poll_frame(cx)
                .map_err(CacheBodyError::from),
            CacheBody::Upstream(body) => {
                Pin::new(body).poll_frame(cx).map_err(CacheBodyError::from)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            CacheBody::Stored(bytes) => bytes.is_none(),
            CacheBody::Fill(fill) => fill.is_end_stream(),
            CacheBody::Upstream(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            CacheBody::Stored(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            CacheBody::Fill(fill) => fill.size_hint(),
            CacheBody::Upstream(body) => body.size_hint(),
        }
    }
}
