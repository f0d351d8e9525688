//! Upstreams: named groups of backends with their balancer, and the exchange of one
//! request with one backend over a pooled HTTP/1.1 connection.

mod backend;
mod error;
mod outlier;
mod pool;
mod request_body;
mod response_body;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response};

pub use backend::{Backend, BackendState};
pub use error::UpstreamError;
pub use pool::Pool;
pub use request_body::{ClientBodyError, RequestBody};
pub use response_body::ResponseBody;

use crate::balance::{Balancer, RequestKey, Sticky};
use crate::config::{HealthCheckConfig, OutlierConfig, UpstreamConfig, UpstreamTimeouts};

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
    pub timeouts: UpstreamTimeouts,
}

/// Backend states of a running config, by upstream name and address: handed to the
/// next config so that backends present in both keep their state.
pub type BackendStates = HashMap<(String, SocketAddr), Arc<BackendState>>;

// === impl Upstream ===

impl Upstream {
    /// Builds the upstream of `config`, reusing the state of backends found in
    /// `previous`.
    pub fn new(config: &UpstreamConfig, previous: &BackendStates) -> Self {
        // A backend new to weir starts as the health checks say (healthy without).
        let initially_healthy = config
            .health_check
            .as_ref()
            .is_none_or(|check| check.initially_healthy);
        let backends: Vec<Backend> = config
            .backends
            .iter()
            .map(|b| Backend {
                address: b.address,
                weight: b.weight.get(),
                state: previous
                    .get(&(config.name.clone(), b.address))
                    .cloned()
                    .unwrap_or_else(|| Arc::new(BackendState::new(initially_healthy))),
            })
            .collect();
        let weights: Vec<u32> = backends.iter().map(|b| b.weight).collect();
        let names: Vec<String> = backends.iter().map(|b| b.address.to_string()).collect();
        Upstream {
            name: config.name.clone(),
            balancer: Balancer::new(
                &config.strategy,
                &names,
                &weights,
                config.hash_balance_percent,
            ),
            sticky: config
                .sticky
                .as_ref()
                .map(|sticky| Sticky::new(sticky, &config.name, &names)),
            backends,
            health_check: config.health_check.clone(),
            outlier_detection: config.outlier_detection,
            panic_threshold: config.panic_threshold,
            timeouts: config.timeouts,
        }
    }

    /// Picks a usable (healthy, not ejected) backend for the request, if there is
    /// one: the one its affinity cookie names, else the strategy's choice. In panic
    /// mode every backend counts as usable.
    pub fn pick(&self, request: &RequestKey<'_>) -> Option<Pick<'_>> {
        let backends = &self.backends;
        let panic = self.in_panic();
        let usable = |i: usize| panic || backends[i].state.is_usable();
        let sticky = self.sticky.as_ref();
        if let Some(i) = sticky.and_then(|s| s.stuck(request)).filter(|&i| usable(i)) {
            return Some(Pick {
                backend: &backends[i],
                set_cookie: None,
            });
        }
        let i = self.balancer.pick(request, backends, &mut |i| usable(i))?;
        Some(Pick {
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

    /// Sends `request` (origin-form URI, headers already rewritten) to `backend`
    /// and returns the response head; the body streams afterwards.
    pub async fn send(
        &self,
        backend: &Backend,
        request: Request<RequestBody>,
    ) -> Result<Response<ResponseBody>, UpstreamError> {
        let state = &backend.state;
        state.start_request();
        // Lowers the in-flight count if no response body takes over that duty.
        let mut guard = InFlightGuard(Some(state));
        // The clock is read only for strategies that use the latency.
        let started = self.balancer.uses_latency().then(std::time::Instant::now);
        let result = exchange(backend, request, &self.timeouts).await;
        // The client's body breaking says nothing about the backend.
        let failed = match &result {
            Ok((response, _)) => response.status().is_server_error(),
            Err(err) => !matches!(err, UpstreamError::ClientBody(_)),
        };
        if let Some(outlier) = &self.outlier_detection {
            outlier::observe(outlier, &self.name, &self.backends, backend, failed);
        }
        if let Some(started) = started {
            let now = std::time::Instant::now();
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
        let body = ResponseBody::new(incoming, state.clone(), connection, self.timeouts.idle);
        Ok(Response::from_parts(parts, body))
    }
}

/// A backend chosen for one request.
#[derive(Debug, Clone, Copy)]
pub struct Pick<'a> {
    pub backend: &'a Backend,
    /// A `Set-Cookie` header for the response, when the request was not already
    /// stuck to this backend by its affinity cookie.
    pub set_cookie: Option<&'a http::HeaderValue>,
}

/// One health check: `GET path` to `address` on a fresh connection (closed after),
/// the whole exchange within `timeout`. Returns the response status.
pub async fn probe(
    address: SocketAddr,
    path: &str,
    host: &str,
    timeout: std::time::Duration,
) -> Result<http::StatusCode, UpstreamError> {
    let request = Request::get(path)
        .header(http::header::HOST, host)
        .header(http::header::USER_AGENT, "weir-health-check")
        .header(http::header::CONNECTION, "close")
        .body(RequestBody::Empty)
        .map_err(|_| UpstreamError::ClosedBeforeSend)?;
    let exchange = async {
        let mut connection = pool::connect(address, timeout).await?;
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
async fn exchange(
    backend: &Backend,
    mut request: Request<RequestBody>,
    timeouts: &UpstreamTimeouts,
) -> Result<(Response<hyper::body::Incoming>, Option<pool::Connection>), UpstreamError> {
    if let Some(mut connection) = reuse(backend, timeouts).await {
        match send_on(&mut connection, request, timeouts).await {
            Ok(response) => return Ok((response, Some(connection))),
            Err(SendFailure::NotSent(returned)) => request = returned,
            Err(SendFailure::Failed(err)) => return Err(err),
        }
    }
    let mut connection = pool::connect(backend.address, timeouts.connect).await?;
    match send_on(&mut connection, request, timeouts).await {
        Ok(response) => Ok((response, Some(connection))),
        Err(SendFailure::NotSent(_)) => Err(UpstreamError::ClosedBeforeSend),
        Err(SendFailure::Failed(err)) => Err(err),
    }
}

/// A pooled connection that is ready for a new request.
async fn reuse(backend: &Backend, timeouts: &UpstreamTimeouts) -> Option<pool::Connection> {
    while let Some(mut connection) = backend.state.pool().take(timeouts.idle) {
        // Ready at once unless the previous response is still being wound up.
        if connection.ready().await.is_ok() {
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
        Upstream::new(&config.upstreams[0], &BackendStates::new())
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
