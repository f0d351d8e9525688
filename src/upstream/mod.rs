//! Upstreams: named groups of backends with their balancer, and the exchange of one
//! request with one backend over a pooled HTTP/1.1 or shared HTTP/2 connection.

mod backend;
mod error;
mod outlier;
mod pool;
mod request_body;
mod response_body;
mod retry;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::task::Poll;

use http::{Request, Response};

pub use backend::{Backend, BackendState};
pub use error::UpstreamError;
pub use pool::{Pool, Transport};
pub use request_body::{ClientBody, ClientBodyError, RequestBody};
pub use response_body::{InFlight, ResponseBody};
pub use retry::is_idempotent;
use retry::{Replay, RetryBudget, retryable_error, retryable_status};
use tracing::{debug, warn};

use crate::balance::{Balancer, RequestKey, Sticky};
use crate::config::{
    HealthCheckConfig, OutlierConfig, RetryPolicy, UpstreamConfig, UpstreamTimeouts,
};
use crate::metrics::{Metrics, UpstreamMetrics};
use crate::proxy_protocol;
use crate::tls::TlsError;

/// A named group of backends and the strategy that spreads requests over them.
#[derive(Debug)]
pub struct Upstream {
    pub name: String,
    pub backends: Vec<Backend>,
    pub balancer: Balancer,
    /// Cookie-based affinity, when configured.
    pub sticky: Option<Sticky>,
    pub health_check: Option<HealthCheckConfig>,
    pub outlier_detection: Option<OutlierConfig>,
    /// Percentage of usable backends under which every backend is used (0 = off).
    pub panic_threshold: u32,
    pub retries: RetryPolicy,
    /// `max_connections_per_backend`, when set.
    pub limit: Option<u32>,
    pub queue_timeout: Option<std::time::Duration>,
    /// The PROXY protocol header each backend connection starts with.
    pub send_proxy_protocol: Option<proxy_protocol::Version>,
    /// With `slow_start` on a strategy of fixed weights (round robin, random).
    slow_start_by_chance: bool,
    /// Present when the policy has a budget.
    retry_budget: Option<RetryBudget>,
    metrics: UpstreamMetrics,
    pub timeouts: UpstreamTimeouts,
    /// TLS or not, HTTP/1.1 or HTTP/2.
    pub transport: Transport,
}

/// Backend states of a running config, by upstream name and address: handed to the
/// next config so that backends present in both keep their state.
pub type BackendStates = HashMap<(String, SocketAddr), Arc<BackendState>>;

// === impl Upstream ===

impl Upstream {
    /// Builds the upstream of `config`, reusing the state of backends found in
    /// `previous`. Fails only on the files of its TLS settings.
    pub fn new(
        config: &UpstreamConfig,
        previous: &BackendStates,
        metrics: &Metrics,
    ) -> Result<Self, TlsError> {
        let transport = Transport::new(config.tls.as_ref(), config.protocol)?;
        if config
            .tls
            .as_ref()
            .is_some_and(|tls| tls.insecure_skip_verify)
        {
            warn!(upstream = %config.name, "tls.insecure_skip_verify is on: backend certificates are NOT verified, so anyone on the path can pose as a backend; use it for testing only");
        }
        // A backend new to weir starts as the health checks say (healthy without).
        let initially_healthy = config
            .health_check
            .as_ref()
            .is_none_or(|check| check.initially_healthy);
        // One queue per upstream, kept across configs like the backends' states.
        let slots = previous
            .iter()
            .find(|((upstream, _), _)| *upstream == config.name)
            .map(|(_, state)| state.slots().clone())
            .unwrap_or_default();
        let backends: Vec<Backend> = config
            .backends
            .iter()
            .map(|b| Backend {
                address: b.address,
                weight: b.weight.get(),
                slow_start: config.slow_start,
                metrics: metrics.backend(&config.name, &b.address.to_string()),
                state: previous
                    .get(&(config.name.clone(), b.address))
                    .cloned()
                    .unwrap_or_else(|| {
                        let state = BackendState::new(initially_healthy, slots.clone());
                        // Added by a reload: it warms up like a backend that came back.
                        if !previous.is_empty() {
                            state.start_warming();
                        }
                        Arc::new(state)
                    }),
            })
            .collect();
        let weights: Vec<u32> = backends.iter().map(|b| b.weight).collect();
        let names: Vec<String> = backends.iter().map(|b| b.address.to_string()).collect();
        let balancer = Balancer::new(
            &config.strategy,
            &names,
            &weights,
            config.hash_balance_percent,
        );
        Ok(Upstream {
            name: config.name.clone(),
            slow_start_by_chance: config.slow_start.is_some() && !balancer.reads_weights(),
            balancer,
            sticky: config
                .sticky
                .as_ref()
                .map(|sticky| Sticky::new(sticky, &config.name, &names)),
            backends,
            health_check: config.health_check.clone(),
            outlier_detection: config.outlier_detection,
            panic_threshold: config.panic_threshold,
            retries: config.retries,
            limit: (config.max_connections_per_backend > 0)
                .then_some(config.max_connections_per_backend),
            queue_timeout: config.queue_timeout,
            send_proxy_protocol: config.send_proxy_protocol,
            retry_budget: config.retries.budget.map(RetryBudget::new),
            metrics: metrics.upstream(&config.name),
            timeouts: config.timeouts,
            transport,
        })
    }

    /// Picks a usable (healthy, not ejected) backend for the request, if there is
    /// one: the one its affinity cookie names, else the strategy's choice. In panic
    /// mode every backend counts as usable.
    pub fn pick(&self, request: &RequestKey<'_>) -> Option<Pick<'_>> {
        self.pick_where(request, &|_| true)
    }

    /// [`Upstream::pick`] among the backends `allowed` admits.
    fn pick_where(
        &self,
        request: &RequestKey<'_>,
        allowed: &dyn Fn(usize) -> bool,
    ) -> Option<Pick<'_>> {
        let backends = &self.backends;
        let panic = self.in_panic();
        let usable = |i: usize| allowed(i) && (panic || backends[i].state.is_usable());
        let sticky = self.sticky.as_ref();
        if let Some(i) = sticky.and_then(|s| s.stuck(request)).filter(|&i| usable(i)) {
            return Some(Pick {
                index: i,
                backend: &backends[i],
                set_cookie: None,
            });
        }
        // Strategies with a fixed weight table see a warming backend's lower weight
        // as a chance to be passed over; the others read its weight live. A client
        // already stuck to it stays.
        let warm_enough = |i: usize| {
            let warmth = backends[i].warmth();
            warmth >= 1.0 || fastrand::f64() < warmth
        };
        let i = if self.slow_start_by_chance {
            self.balancer
                .pick(request, backends, &mut |i| usable(i) && warm_enough(i))
                .or_else(|| self.balancer.pick(request, backends, &mut |i| usable(i)))
        } else {
            self.balancer.pick(request, backends, &mut |i| usable(i))
        }?;
        Some(Pick {
            index: i,
            backend: &backends[i],
            set_cookie: sticky.map(|s| s.set_cookie(i)),
        })
    }

    /// True when too few backends are usable for them to carry the load alone
    /// (`panic_threshold`): spreading over all, failing ones included, then beats
    /// overloading the few. Costs a scan of the backends, only when configured.
    fn in_panic(&self) -> bool {
        if self.panic_threshold == 0 {
            return false;
        }
        let usable = self.backends.iter().filter(|b| b.state.is_usable()).count();
        usable * 100 < self.panic_threshold as usize * self.backends.len()
    }

    /// Sends `request` (origin-form URI, headers already rewritten) to the picked
    /// backend, and tries again where the retry policy allows: on another backend
    /// when there is one, after a backoff, within the budget and `timeouts.request`.
    /// Returns the response head (the body streams afterwards) and the backend
    /// that gave it. `name_backend` sets `Host` to each tried backend's address.
    pub async fn forward<'u>(
        &'u self,
        client: ClientEnds,
        mut pick: Pick<'u>,
        mut request: Request<RequestBody>,
        name_backend: bool,
        tries: &mut Tries,
    ) -> Result<(Response<ResponseBody>, Pick<'u>), UpstreamError> {
        let preamble = self
            .send_proxy_protocol
            .map(|version| proxy_protocol::encode(version, client.source, client.destination));
        let client = client.address;
        // One async fn for all tries, not one nested per layer: every layer of
        // futures copies the state of the ones inside it when it starts them.
        let deadline = self
            .timeouts
            .request
            .map(|limit| (tokio::time::Instant::now() + limit, limit));
        let policy = &self.retries;
        if let Some(budget) = &self.retry_budget {
            budget.record_request(std::time::Instant::now());
        }
        let replay = Replay::of(&request, policy);
        let mut tried: Vec<usize> = Vec::new();
        let mut retry = 0;
        let result = loop {
            match self.limit {
                None => pick.backend.state.start_request(),
                Some(limit) => {
                    if let Err(err) = self.admit(client, &mut pick, &request, &tried, limit).await {
                        break Err(err);
                    }
                }
            }
            if name_backend {
                request.headers_mut().insert(
                    http::header::HOST,
                    http::HeaderValue::from_str(&pick.backend.address.to_string())
                        .expect("a socket address is a valid header value"),
                );
            }
            let last = retry >= policy.attempts;
            tries.count = retry + 1;
            tries.backend = Some(pick.backend.address);
            let result = match deadline {
                None => self.send(pick.backend, request, preamble.as_deref()).await,
                Some((at, limit)) => {
                    let send = self.send(pick.backend, request, preamble.as_deref());
                    match tokio::time::timeout_at(at, send).await {
                        Ok(result) => result,
                        Err(_elapsed) => break Err(UpstreamError::RequestTimeout(limit)),
                    }
                }
            };
            retry += 1;
            // What to send again, if this try may be retried.
            let again = match result {
                Ok(response) if last || !retryable_status(response.status()) => {
                    break Ok(response);
                }
                Ok(response) => match &replay {
                    Some(replay) if self.may_retry(&pick, retry) => {
                        debug!(upstream = %self.name, backend = %pick.backend.address, status = response.status().as_u16(), "retrying after the backend's answer");
                        replay.request()
                    }
                    _ => break Ok(response),
                },
                Err(failure) if last => break Err(failure.error),
                Err(Failure {
                    error,
                    unsent: Some(unsent),
                }) => {
                    if !self.may_retry(&pick, retry) {
                        break Err(error);
                    }
                    debug!(upstream = %self.name, backend = %pick.backend.address, error = %error, "retrying a request that was not sent");
                    *unsent
                }
                Err(Failure {
                    error,
                    unsent: None,
                }) => match &replay {
                    Some(replay) if retryable_error(&error) && self.may_retry(&pick, retry) => {
                        debug!(upstream = %self.name, backend = %pick.backend.address, error = %error, "retrying after a failed exchange");
                        replay.request()
                    }
                    _ => break Err(error),
                },
            };
            self.metrics.retries.inc();
            tried.push(pick.index);
            let pause = retry::backoff(policy, retry);
            if !pause.is_zero() {
                let wake = tokio::time::Instant::now() + pause;
                match deadline {
                    Some((at, limit)) if at <= wake => {
                        tokio::time::sleep_until(at).await;
                        break Err(UpstreamError::RequestTimeout(limit));
                    }
                    _ => tokio::time::sleep_until(wake).await,
                }
            }
            pick = self.pick_retry(client, &again, &tried).unwrap_or(pick);
            request = again;
        };
        match result {
            Ok(response) => Ok((response, pick)),
            Err(err) => {
                warn!(upstream = %self.name, backend = %pick.backend.address, error = %err, "backend request failed");
                Err(err)
            }
        }
    }

    /// Whether the budget has room for one more retry (spending it if so).
    fn may_retry(&self, pick: &Pick<'_>, retry: u32) -> bool {
        let Some(budget) = &self.retry_budget else {
            return true;
        };
        if budget.try_retry(std::time::Instant::now()) {
            return true;
        }
        self.metrics.budget_exhausted.inc();
        warn!(upstream = %self.name, backend = %pick.backend.address, retry, "retry budget spent: not retrying");
        false
    }

    /// The backend for a retry of `request`: a usable one not tried yet, else any
    /// usable one (the same backend again beats no try at all).
    fn pick_retry(
        &self,
        client: IpAddr,
        request: &Request<RequestBody>,
        tried: &[usize],
    ) -> Option<Pick<'_>> {
        let key = RequestKey::of(client, request);
        self.pick_where(&key, &|i| !tried.contains(&i))
            .or_else(|| self.pick(&key))
    }

    /// Counts the request in on the picked backend, or on another one with room
    /// when it is at `limit`. When every usable backend is at its limit, waits up
    /// to `queue_timeout` for a slot, else fails at once.
    async fn admit<'u>(
        &'u self,
        client: IpAddr,
        pick: &mut Pick<'u>,
        request: &Request<RequestBody>,
        tried: &[usize],
        limit: u32,
    ) -> Result<(), UpstreamError> {
        let queue_until = self
            .queue_timeout
            .map(|timeout| tokio::time::Instant::now() + timeout);
        let room = |i: usize| self.backends[i].state.in_flight() < limit;
        loop {
            if pick.backend.state.try_start_request(limit) {
                return Ok(());
            }
            let key = RequestKey::of(client, request);
            let other = self
                .pick_where(&key, &|i| room(i) && !tried.contains(&i))
                .or_else(|| self.pick_where(&key, &room));
            if let Some(other) = other {
                *pick = other;
                continue;
            }
            let Some(until) = queue_until else {
                return Err(UpstreamError::AtCapacity);
            };
            let slots = pick.backend.state.slots();
            let freed = slots.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let _waiting = Waiting::register(slots);
            // A slot freed between the pick above and the registration is seen here.
            let missed = self.pick_where(&key, &room).is_some();
            let woken = missed || tokio::time::timeout_at(until, freed).await.is_ok();
            if !woken {
                return Err(UpstreamError::AtCapacity);
            }
        }
    }

    /// One try: sends `request` to `backend` and returns the response head. Keeps
    /// the backend's latency and failure record. The backend's in-flight count must
    /// have been raised for this request; it is lowered when the try ends or the
    /// response body is done.
    async fn send(
        &self,
        backend: &Backend,
        request: Request<RequestBody>,
        preamble: Option<&[u8]>,
    ) -> Result<Response<ResponseBody>, Failure> {
        let state = &backend.state;
        // Lowers the in-flight count if no response body takes over that duty.
        let mut guard = InFlightGuard(Some(state));
        // The clock is read only for strategies that use the latency.
        let started = std::time::Instant::now();
        let mut request = if self.transport.protocol.is_http2() {
            into_http2(request, self.transport.scheme(), backend.address)
        } else {
            request
        };
        let request_sent = request.body_mut().completion();
        let result = exchange(backend, request, &self.transport, &self.timeouts, preamble).await;
        let now = std::time::Instant::now();
        // The client's body breaking says nothing about the backend.
        let (failed, code) = match &result {
            Ok((response, _)) => (
                response.status().is_server_error(),
                response.status().as_u16(),
            ),
            Err(failure) => (
                !matches!(failure.error, UpstreamError::ClientBody(_)),
                failure.error.status_code(),
            ),
        };
        backend.metrics.requests.inc(code);
        backend
            .metrics
            .duration
            .observe((now - started).as_secs_f64());
        if let Some(outlier) = &self.outlier_detection {
            outlier::observe(outlier, &self.name, &self.backends, backend, failed);
        }
        if self.balancer.uses_latency() {
            let latency = if failed {
                // A failure (or a 5xx) counts as slow, so traffic moves away from it.
                (now - started).max(crate::balance::FAILURE_PENALTY)
            } else {
                now - started
            };
            state.latency().observe(latency, now);
        }
        let (response, connection) = result?;
        guard.0 = None;
        let (parts, incoming) = response.into_parts();
        // After a protocol switch the connection belongs to the tunnel, not the pool.
        let connection =
            connection.filter(|_| parts.status != http::StatusCode::SWITCHING_PROTOCOLS);
        // Pooled once both directions are complete: a request body still being
        // written (after an early answer) would hold up the next request.
        let connection = connection.map(|connection| (connection, request_sent));
        let body = ResponseBody::new(incoming, state.clone(), connection, self.timeouts.idle);
        Ok(Response::from_parts(parts, body))
    }
}

/// How one try ended without a response.
#[derive(Debug)]
struct Failure {
    error: UpstreamError,
    /// The request, when none of it reached the backend: it can go elsewhere as is.
    /// Boxed: results of every try carry this type, and the failure is rare.
    unsent: Option<Box<Request<RequestBody>>>,
}

impl Failure {
    fn sent(error: UpstreamError) -> Self {
        Failure {
            error,
            unsent: None,
        }
    }
}

/// Where a request comes from, as the balancing and the PROXY header need it.
#[derive(Debug, Clone, Copy)]
pub struct ClientEnds {
    /// The client address strategies hash (behind trusted proxies, the forwarded one).
    pub address: IpAddr,
    /// The client connection's source: the TCP peer, or what its PROXY header said.
    pub source: SocketAddr,
    /// The address the client connected to.
    pub destination: SocketAddr,
}

/// What the tries of one request came to, for its access log line.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tries {
    /// Tries sent (1 without retries).
    pub count: u32,
    /// The backend of the last try.
    pub backend: Option<SocketAddr>,
}

/// A backend chosen for one request.
#[derive(Debug, Clone, Copy)]
pub struct Pick<'a> {
    /// The backend's position in [`Upstream::backends`].
    pub index: usize,
    pub backend: &'a Backend,
    /// A `Set-Cookie` header for the response, when the request was not already
    /// stuck to this backend by its affinity cookie.
    pub set_cookie: Option<&'a http::HeaderValue>,
}

/// One health check: `GET path` to `address` on a fresh connection (closed after),
/// the whole exchange within `timeout`. Returns the response status.
pub async fn probe(
    address: SocketAddr,
    transport: &Transport,
    path: &str,
    host: &str,
    timeout: std::time::Duration,
    preamble: Option<&[u8]>,
) -> Result<http::StatusCode, UpstreamError> {
    let mut request = Request::get(path)
        .header(http::header::HOST, host)
        .header(http::header::USER_AGENT, "weir-health-check")
        .body(RequestBody::Empty)
        .map_err(|_| UpstreamError::ClosedBeforeSend)?;
    if transport.protocol.is_http2() {
        request = into_http2(request, transport.scheme(), address);
    } else {
        request.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    let exchange = async {
        let mut connection = pool::connect(address, transport, timeout, preamble).await?;
        match send_on(&mut connection, request, &probe_timeouts(timeout)).await {
            Ok(response) => Ok(response.status()),
            Err(SendFailure::NotSent(_)) => Err(UpstreamError::ClosedBeforeSend),
            Err(SendFailure::Failed(err)) => Err(err),
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or(Err(UpstreamError::ResponseTimeout(timeout)))
}

fn probe_timeouts(timeout: std::time::Duration) -> UpstreamTimeouts {
    UpstreamTimeouts {
        connect: timeout,
        response: timeout,
        idle: std::time::Duration::ZERO,
        request: None,
    }
}

/// Counts a request as queued for a slot while it lives (also when the request
/// is dropped mid-wait).
struct Waiting<'a>(&'a backend::SlotWaiters);

impl<'a> Waiting<'a> {
    fn register(slots: &'a backend::SlotWaiters) -> Self {
        slots
            .waiting
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Waiting(slots)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0
            .waiting
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

struct InFlightGuard<'a>(Option<&'a Arc<BackendState>>);

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        if let Some(state) = self.0 {
            state.finish_request();
        }
    }
}

/// One exchange on a pooled connection, or on a new one. A pooled connection may
/// have been closed by the backend while it sat idle; when that shows before the
/// request was written, the request goes out on a fresh connection instead.
///
/// Returns the connection to park once the response is read, if it is one of its
/// own (HTTP/1.1); a shared HTTP/2 connection stays parked meanwhile.
async fn exchange(
    backend: &Backend,
    mut request: Request<RequestBody>,
    transport: &Transport,
    timeouts: &UpstreamTimeouts,
    preamble: Option<&[u8]>,
) -> Result<(Response<hyper::body::Incoming>, Option<pool::Connection>), Failure> {
    // A connection that began with a client's PROXY header belongs to that client:
    // it is neither taken from the pool nor put back.
    if preamble.is_none()
        && let Some(mut connection) = reuse(backend, timeouts).await
    {
        match send_on(&mut connection, request, timeouts).await {
            Ok(response) => return Ok((response, own(connection))),
            Err(SendFailure::NotSent(returned)) => request = returned,
            Err(SendFailure::Failed(error)) => return Err(Failure::sent(error)),
        }
    }
    // Boxed: the connect future is large and rarely awaited with a warm pool, and
    // every future around this one would carry (and copy) its size otherwise.
    let connect = pool::connect(backend.address, transport, timeouts.connect, preamble);
    let mut connection = match Box::pin(connect).await {
        Ok(connection) => connection,
        Err(error) => {
            return Err(Failure {
                error,
                unsent: Some(Box::new(request)),
            });
        }
    };
    if preamble.is_none()
        && let Some(shared) = connection.share()
    {
        // Other requests to this backend may use it from now on.
        backend.state.pool().put(shared, timeouts.idle);
    }
    match send_on(&mut connection, request, timeouts).await {
        Ok(response) => Ok((
            response,
            preamble.is_none().then(|| own(connection)).flatten(),
        )),
        Err(SendFailure::NotSent(request)) => Err(Failure {
            error: UpstreamError::ClosedBeforeSend,
            unsent: Some(Box::new(request)),
        }),
        Err(SendFailure::Failed(error)) => Err(Failure::sent(error)),
    }
}

/// `connection`, when it is its request's own (HTTP/1.1) and goes back to the pool
/// after the response.
fn own(connection: pool::Connection) -> Option<pool::Connection> {
    connection.is_own().then_some(connection)
}

/// HTTP/2 carries the target in `:scheme`, `:authority` and `:path`: the
/// origin-form request and its `Host` become an absolute URI (the `Host` header
/// itself is dropped, as RFC 9113 prefers `:authority` alone). Without a `Host`,
/// the backend's address is the authority.
fn into_http2(
    mut request: Request<RequestBody>,
    scheme: http::uri::Scheme,
    backend: SocketAddr,
) -> Request<RequestBody> {
    let host = request.headers_mut().remove(http::header::HOST);
    let authority = host
        .and_then(|host| http::uri::Authority::try_from(host.as_bytes()).ok())
        .or_else(|| request.uri().authority().cloned())
        .or_else(|| http::uri::Authority::try_from(backend.to_string()).ok());
    let mut parts = std::mem::take(request.uri_mut()).into_parts();
    parts.scheme = Some(scheme);
    parts.authority = authority;
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    *request.uri_mut() = http::Uri::from_parts(parts).unwrap_or_default();
    *request.version_mut() = http::Version::HTTP_2;
    request
}

/// A pooled connection that is ready for a new request.
async fn reuse(backend: &Backend, timeouts: &UpstreamTimeouts) -> Option<pool::Connection> {
    while let Some(mut connection) = backend.state.pool().take(timeouts.idle) {
        // Ready at once unless the previous exchange is still being wound up,
        // which may take no longer than a connect would.
        let ready = std::future::poll_fn(|cx| Poll::Ready(connection.poll_ready(cx))).await;
        let ready = match ready {
            Poll::Ready(ready) => ready.is_ok(),
            Poll::Pending => tokio::time::timeout(timeouts.connect, connection.ready())
                .await
                .is_ok_and(|ready| ready.is_ok()),
        };
        if ready {
            return Some(connection);
        }
    }
    None
}

// Boxing the returned request would cost an allocation on a path that is taken only
// when a pooled connection turns out closed; the size is moved once at most.
#[allow(clippy::large_enum_variant)]
enum SendFailure {
    /// The connection refused the request before writing any of it.
    NotSent(Request<RequestBody>),
    Failed(UpstreamError),
}

async fn send_on(
    connection: &mut pool::Connection,
    request: Request<RequestBody>,
    timeouts: &UpstreamTimeouts,
) -> Result<Response<hyper::body::Incoming>, SendFailure> {
    match tokio::time::timeout(timeouts.response, connection.try_send_request(request)).await {
        Err(_elapsed) => Err(SendFailure::Failed(UpstreamError::ResponseTimeout(
            timeouts.response,
        ))),
        Ok(Ok(response)) => Ok(response),
        Ok(Err(mut err)) => match err.take_message() {
            Some(request) => Err(SendFailure::NotSent(request)),
            None => Err(SendFailure::Failed(UpstreamError::from_exchange(
                err.into_error(),
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use http::{HeaderMap, HeaderValue, header::COOKIE};

    use super::*;

    fn sticky_upstream() -> Upstream {
        let config = crate::config::parse(
            r#"
            [[listeners]]
            listen = "127.0.0.1:0"
            [[routes]]
            upstream = "app"
            [upstreams.app]
            sticky = { cookie = "srv" }
            backends = [{ address = "127.0.0.1:9001" }, { address = "127.0.0.1:9002" }]
            "#,
            "test.toml",
        )
        .unwrap();
        Upstream::new(&config.upstreams[0], &BackendStates::new(), &Metrics::new()).unwrap()
    }

    /// Picks for a request carrying `cookie`: (backend port, the cookie set if any).
    fn pick(upstream: &Upstream, cookie: Option<&str>) -> (u16, Option<String>) {
        let mut headers = HeaderMap::new();
        if let Some(cookie) = cookie {
            headers.insert(COOKIE, HeaderValue::from_str(cookie).unwrap());
        }
        let request = RequestKey {
            client: IpAddr::V4(Ipv4Addr::LOCALHOST),
            path: "/",
            query: None,
            headers: &headers,
        };
        let pick = upstream.pick(&request).unwrap();
        let set_cookie = pick
            .set_cookie
            .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned());
        (pick.backend.address.port(), set_cookie)
    }

    #[test]
    fn a_client_stuck_to_a_down_backend_is_moved_and_given_a_new_cookie() {
        let upstream = sticky_upstream();
        let (port, cookie) = pick(&upstream, None);
        let cookie = cookie.unwrap();
        assert_eq!(pick(&upstream, Some(&cookie)), (port, None));

        let stuck_to = upstream
            .backends
            .iter()
            .position(|b| b.address.port() == port);
        upstream.backends[stuck_to.unwrap()]
            .state
            .set_healthy(false);
        let (moved_to, fresh) = pick(&upstream, Some(&cookie));
        assert_ne!(moved_to, port);
        let fresh = fresh.expect("the moved client gets a cookie for its new backend");
        assert_eq!(pick(&upstream, Some(&fresh)), (moved_to, None));
    }
}
