//! The tries of one request on its upstream: the first pick and the re-picks,
//! admission under `max_connections_per_backend` and its queue, the retry budget,
//! the backoff, and the replay of what was sent, around one exchange per try
//! (`crate::upstream::exchange`). Each try's outcome goes on its backend's
//! record here, with the status the proxy's one table gives a failure.

mod admission;
mod pick;
mod replay;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use http::{Request, Response, StatusCode};
use tracing::{debug, warn};

pub use pick::{Pick, pick};
pub use replay::{Replay, is_idempotent, keeps_body};

use super::error;
use crate::config::RetryPolicy;
use crate::http1::request::ReceivedRequest;
use crate::proxy_protocol;
use crate::upstream::exchange::{self, Failure};
use crate::upstream::{Origin, RequestBody, ResponseBody, Retry, Upstream, UpstreamError};

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
pub struct Tried {
    /// Tries sent (1 without retries).
    pub count: u32,
    /// The backend of the last try.
    pub backend: Option<SocketAddr>,
}

/// Sends `request` (origin-form URI, headers already rewritten) to the picked
/// backend, and tries again where the retry policy allows: on another backend
/// when there is one, after a backoff, within the budget and `timeouts.request`.
/// Returns the response head (the body streams afterwards) and the backend
/// that gave it. `name_backend` sets `Host` to each tried backend's address.
/// A request read in place comes with its `received` head, rewritten for the
/// backend: every try sends that.
pub async fn forward<'u>(
    upstream: &'u Upstream,
    client: ClientEnds,
    mut pick: Pick<'u>,
    mut request: Request<RequestBody>,
    received: Option<&ReceivedRequest>,
    name_backend: bool,
    tried: &mut Tried,
) -> Result<(Response<ResponseBody>, Pick<'u>), UpstreamError> {
    let preamble = upstream
        .send_proxy_protocol
        .map(|version| proxy_protocol::encode(version, client.source, client.destination));
    let client = client.address;
    // One async fn for all tries, not one nested per layer: every layer of
    // futures copies the state of the ones inside it when it starts them.
    let deadline = upstream
        .timeouts
        .request
        .map(|limit| (tokio::time::Instant::now() + limit, limit));
    let policy = &upstream.retries;
    if let Some(budget) = &upstream.retry_budget {
        budget.record_request(Instant::now());
    }
    let replay = Replay::of(&request, policy);
    let mut tried_backends: Vec<usize> = Vec::new();
    let mut retry = 0;
    let result = loop {
        match upstream.limit {
            None => pick.backend.state.start_request(),
            Some(limit) => {
                let admitted = admission::admit(
                    upstream,
                    client,
                    &mut pick,
                    &request,
                    received,
                    &tried_backends,
                    limit,
                );
                if let Err(err) = admitted.await {
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
        tried.count = retry + 1;
        tried.backend = Some(pick.backend.address);
        let result = match deadline {
            None => try_once(upstream, &pick, request, received, preamble.as_deref()).await,
            Some((at, limit)) => {
                let send = try_once(upstream, &pick, request, received, preamble.as_deref());
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
                Some(replay) if may_retry(upstream, &pick, retry) => {
                    debug!(upstream = %upstream.name, backend = %pick.backend.address, status = response.status().as_u16(), "retrying after the backend's answer");
                    replay.request()
                }
                _ => break Ok(response),
            },
            Err(failure) if last => break Err(failure.error),
            Err(Failure {
                error,
                unsent: Some(unsent),
            }) => {
                if !may_retry(upstream, &pick, retry) {
                    break Err(error);
                }
                debug!(upstream = %upstream.name, backend = %pick.backend.address, error = %error, "retrying a request that was not sent");
                *unsent
            }
            Err(Failure {
                error,
                unsent: None,
            }) => match &replay {
                Some(replay)
                    if error.retry() == Retry::IfReplayable
                        && may_retry(upstream, &pick, retry) =>
                {
                    debug!(upstream = %upstream.name, backend = %pick.backend.address, error = %error, "retrying after a failed exchange");
                    replay.request()
                }
                _ => break Err(error),
            },
        };
        upstream.metrics.retries.inc();
        tried_backends.push(pick.index);
        let pause = backoff(policy, retry);
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
        pick =
            pick::pick_retry(upstream, client, &again, received, &tried_backends).unwrap_or(pick);
        request = again;
    };
    match result {
        Ok(response) => Ok((response, pick)),
        Err(err) => {
            warn!(upstream = %upstream.name, backend = %pick.backend.address, error = %err, "backend request failed");
            Err(err)
        }
    }
}

/// One try on the picked backend, kept on its record: metrics by the status the
/// client would get, the outlier detector, the latency estimate.
async fn try_once(
    upstream: &Upstream,
    pick: &Pick<'_>,
    request: Request<RequestBody>,
    received: Option<&ReceivedRequest>,
    preamble: Option<&[u8]>,
) -> Result<Response<ResponseBody>, Failure> {
    let backend = pick.backend;
    let started = Instant::now();
    let result = exchange::send(
        backend,
        &upstream.transport,
        &upstream.timeouts,
        request,
        received,
        preamble,
    )
    .await;
    let (code, failed) = match &result {
        Ok(response) => (
            response.status().as_u16(),
            response.status().is_server_error(),
        ),
        // The client's body breaking says nothing about the backend.
        Err(failure) => (
            error::upstream_status(&failure.error).as_u16(),
            failure.error.origin() == Origin::Backend,
        ),
    };
    upstream.record_try(backend, code, failed, started);
    result
}

/// Whether the budget has room for one more retry (spending it if so).
fn may_retry(upstream: &Upstream, pick: &Pick<'_>, retry: u32) -> bool {
    let Some(budget) = &upstream.retry_budget else {
        return true;
    };
    if budget.try_retry(Instant::now()) {
        return true;
    }
    upstream.metrics.budget_exhausted.inc();
    warn!(upstream = %upstream.name, backend = %pick.backend.address, retry, "retry budget spent: not retrying");
    false
}

/// Backend answers that say "try elsewhere".
fn retryable_status(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
    )
}

/// The pause before retry number `retry` (1-based): `backoff` doubling per retry,
/// capped at 1 s, times a random factor in [0.5, 1.5) so that clients retrying
/// together do not stay in step.
fn backoff(policy: &RetryPolicy, retry: u32) -> Duration {
    if policy.backoff.is_zero() {
        return Duration::ZERO;
    }
    let base = policy
        .backoff
        .saturating_mul(1 << retry.saturating_sub(1).min(16))
        .min(Duration::from_secs(1));
    base.mul_f64(0.5 + fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let policy = RetryPolicy {
            backoff: Duration::from_millis(100),
            ..RetryPolicy::UNSENT_ONLY
        };
        for (retry, base) in [(1, 100), (2, 200), (3, 400), (8, 1000)] {
            let pause = backoff(&policy, retry);
            assert!(
                pause >= Duration::from_millis(base / 2)
                    && pause < Duration::from_millis(base * 3 / 2),
                "retry {retry}: {pause:?}"
            );
        }
        assert_eq!(backoff(&RetryPolicy::UNSENT_ONLY, 1), Duration::ZERO);
    }
}
