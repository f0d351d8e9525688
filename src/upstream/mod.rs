//! Upstreams: named groups of backends with their balancer, and the exchange of one
//! request with one backend over a pooled HTTP/1.1 connection.

mod backend;
mod error;
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

use crate::balance::{Balancer, RequestKey};
use crate::config::{UpstreamConfig, UpstreamTimeouts};

/// A named group of backends and the strategy that spreads requests over them.
#[derive(Debug)]
pub struct Upstream {
    pub name: String,
    pub backends: Vec<Backend>,
    pub balancer: Balancer,
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
        let backends: Vec<Backend> = config
            .backends
            .iter()
            .map(|b| Backend {
                address: b.address,
                weight: b.weight.get(),
                state: previous
                    .get(&(config.name.clone(), b.address))
                    .cloned()
                    .unwrap_or_default(),
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
            backends,
            timeouts: config.timeouts,
        }
    }

    /// Picks a healthy backend for the request, if there is one.
    pub fn pick(&self, request: &RequestKey<'_>) -> Option<&Backend> {
        let backends = &self.backends;
        self.balancer
            .pick(request, backends, &mut |i| backends[i].state.is_healthy())
            .map(|i| &backends[i])
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
        if let Some(started) = started {
            let now = std::time::Instant::now();
            let failed = result
                .as_ref()
                .map_or(true, |(r, _)| r.status().is_server_error());
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
