//! The request path, top to bottom: validate → route → rewrite (`validate`,
//! `forward`) → the tries on the upstream (`tries`, each try one exchange in
//! `crate::upstream::exchange`) → the response streams back (`body`). Every
//! failure becomes a response in exactly one place (`error`'s table).

mod body;
mod connection;
mod error;
// Public only for the micro-benchmarks (`benches/forward.rs`); not weir's API.
#[doc(hidden)]
pub mod forward;
mod origin;
// Public for the tests that drive tries on an upstream directly; not weir's API.
#[doc(hidden)]
pub mod tries;
mod tunnel;
mod validate;
mod view;

use std::sync::Arc;
use std::time::Instant;

use http::header;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Body;
use tracing::{debug, warn};

pub(crate) use body::{BodyError, Finish, ProxyBody, Relayed};
pub(crate) use connection::{Connection, RequestGuard};
pub(crate) use error::ProxyError;
pub(crate) use tunnel::{ClientIo, Http1Upgrade};

use crate::access_log;
use crate::balance::RequestKey;
use crate::http1::request::ReceivedRequest;
use crate::snapshot::Snapshot;
use crate::upstream::{ClientBody, ClientStream, RequestBody, UpstreamError};
use tries::{ClientEnds, Tried};

/// Serves one request of `connection` against the current snapshot; its
/// fields are read from `received` when its head is read in place.
pub(crate) async fn serve(
    connection: Arc<Connection>,
    request: Request<ClientStream>,
    received: Option<Box<ReceivedRequest>>,
) -> Response<ProxyBody> {
    let started = Instant::now();
    // One snapshot for the whole request, even if a reload happens meanwhile.
    let snapshot = connection.snapshots.load_full();
    // None only for a listener that a reload removed while this connection drains.
    let slot = snapshot
        .requests
        .iter()
        .position(|m| *m.listener == *connection.listener);
    // The access log's view of the request, taken before the request is consumed.
    let log = snapshot.access_log.as_ref().map(|_| {
        Box::new(access_log::Entry {
            time: std::time::SystemTime::now(),
            client: connection.peer.ip(),
            method: request.method().clone(),
            target: request
                .uri()
                .path_and_query()
                .map_or_else(|| request.uri().to_string(), |p| p.as_str().to_owned()),
            version: request.version(),
            status: 0,
            bytes: 0,
            upstream: None,
            backend: None,
            duration: std::time::Duration::ZERO,
            attempts: 0,
            referer: view::value(&request, received.as_deref(), &header::REFERER),
            user_agent: view::value(&request, received.as_deref(), &header::USER_AGENT),
        })
    });
    // gRPC is HTTP/2 only, which spares HTTP/1 requests the header look-up.
    let http2 = request.version() == http::Version::HTTP_2;
    let grpc = http2 && error::is_grpc(request.headers());
    let guard = RequestGuard::new(connection);
    let mut outcome = Outcome::default();
    let (mut response, code) = match proxy(&snapshot, &guard.0, request, received, &mut outcome)
        .await
    {
        Ok(response) => {
            let code = response.status().as_u16();
            (response.map(|body| ProxyBody::upstream(body, guard)), code)
        }
        Err(err) => {
            // Backend failures were logged where they happened, with their backend.
            if !matches!(err, ProxyError::Upstream(_)) {
                debug!(client.addr = %guard.0.peer, status = err.status().as_u16(), error = %err, "request answered by weir");
            }
            // A gRPC answer is a 200 whatever went wrong; metrics and the access
            // log keep the HTTP status it stands for.
            let mut response = err.response(grpc);
            if outcome.cached {
                // Every answer of a cached route says what the cache did.
                response.headers_mut().insert(
                    http::HeaderName::from_static("cache-status"),
                    http::HeaderValue::from_static("weir; fwd=miss; detail=error"),
                );
            }
            (response, err.status().as_u16())
        }
    };
    if let Some(limits) = outcome.limit_headers.take() {
        limits.apply(response.headers_mut());
    }
    if let Some(slot) = slot {
        let metrics = &snapshot.requests[slot];
        match outcome.routed {
            Some(Routed { route, .. }) => metrics.by_route[route].inc(code),
            None => metrics.unrouted.inc(code),
        }
    }
    let log = log.map(|mut entry| {
        entry.status = code;
        if let Some(client) = outcome.client {
            entry.client = client;
        }
        entry.upstream = outcome
            .routed
            .map(|r| snapshot.upstreams[r.upstream].name.clone());
        entry.backend = outcome.tried.backend;
        entry.attempts = outcome.tried.count;
        entry
    });
    if slot.is_some() || log.is_some() {
        response.body_mut().finish_with(Finish {
            upstream: outcome.routed.map(|r| r.upstream),
            snapshot,
            slot,
            started,
            bytes: 0,
            log,
        });
    }
    response
}

/// What became of a request, filled in as the proxy goes.
#[derive(Debug, Default)]
struct Outcome {
    routed: Option<Routed>,
    /// The client address as weir sees it (behind trusted proxies, the forwarded one).
    client: Option<std::net::IpAddr>,
    tried: Tried,
    /// Its route caches.
    cached: bool,
    /// Its route limits rates: what the answer tells of the limits.
    limit_headers: Option<crate::rate_limit::LimitHeaders>,
}

/// Where the router sent a request: indices into the snapshot.
#[derive(Debug, Clone, Copy)]
struct Routed {
    route: usize,
    upstream: usize,
}

async fn proxy(
    snapshot: &Arc<Snapshot>,
    connection: &Arc<Connection>,
    mut request: Request<ClientStream>,
    mut received: Option<Box<ReceivedRequest>>,
    outcome: &mut Outcome,
) -> Result<Response<Relayed>, ProxyError> {
    let http2_client = request.version() == http::Version::HTTP_2;
    let host = validate::check(&request, received.as_deref())?;
    // Routed, and forwarded, on its normalised path: the backend must not read
    // `/api/../admin` as another route's path.
    validate::normalise_target(&mut request)?;
    let host_str = host.as_ref().and_then(|h| h.to_str().ok());
    let route = snapshot
        .router
        .route(host_str, request.uri().path())
        .ok_or(ProxyError::NoRoute)?;
    let upstream_index = snapshot.router.get(route).upstream;
    outcome.routed = Some(Routed {
        route,
        upstream: upstream_index,
    });
    let upstream = &snapshot.upstreams[upstream_index];
    // Behind trusted proxies the client is read from X-Forwarded-For.
    let client = match &connection.facts.trusted_proxies {
        Some(trusted) => {
            let fields = crate::balance::Fields::of(request.headers(), received.as_deref());
            forward::forwarded_client(fields, trusted).unwrap_or(connection.peer.ip())
        }
        None => connection.peer.ip(),
    };
    outcome.client = Some(client);
    // Before anything is read or picked: a refused request costs no backend
    // anything.
    let limits = snapshot.rate_limits.route(route);
    if !limits.is_empty() {
        let key = RequestKey::of(client, &request, received.as_deref());
        let decision = limits.check(&key).await;
        outcome.limit_headers = Some(decision.headers);
        if decision.refused.is_some() {
            return Err(ProxyError::RateLimited);
        }
    }
    // A head read in place never asks for a tunnel: those take the map path.
    let upgrade = match &received {
        Some(_) => None,
        None => forward::requested_upgrade(request.version(), request.headers()),
    };
    // A tunnel is never cached; everything else of a cached route goes
    // through the cache, which picks a backend only when it needs one.
    let cache = match (&snapshot.router.get(route).cache, &snapshot.cache) {
        (Some(settings), Some(cache)) if upgrade.is_none() => Some((settings, cache)),
        _ => None,
    };
    outcome.cached = cache.is_some();
    let pick = match cache {
        Some(_) => None,
        None => {
            let key = RequestKey::of(client, &request, received.as_deref());
            Some(tries::pick(upstream, &key).ok_or(ProxyError::NoBackend)?)
        }
    };

    // An HTTP/2 backend and the cache read and change a `HeaderMap`.
    if cache.is_some() || upstream.transport.protocol.is_http2() {
        view::into_header_map(&mut request, &mut received)?;
    }
    let client_upgrade = upgrade
        .is_some()
        .then(|| tunnel::ClientSide::of(&mut request));
    let (mut parts, incoming) = request.into_parts();
    // HTTP/1.0 clients may omit Host; the backend speaks HTTP/1.1, which requires
    // one: name the backend, as nginx's default `proxy_set_header Host $proxy_host`.
    let no_host = host.is_none();
    let trailers =
        upstream.transport.protocol.is_http2() && forward::accepts_trailers(&parts.headers);
    match &mut received {
        Some(received) => {
            view::rewrite_received(received, &parts.uri, &connection.facts);
            parts.version = http::Version::HTTP_11;
        }
        None => forward::rewrite_request(
            &mut parts.uri,
            &mut parts.version,
            &mut parts.headers,
            host,
            &connection.facts,
        ),
    }
    if let Some(protocol) = &upgrade {
        forward::keep_upgrade(&mut parts.headers, protocol.clone());
    }
    if trailers {
        forward::keep_trailers(&mut parts.headers);
    }
    let body = if incoming.is_end_stream() {
        RequestBody::Empty
    } else if tries::keeps_body(&upstream.retries, &parts, received.as_deref()) {
        // Small enough to keep whole, so that a retry can send it again.
        RequestBody::Full(Some(
            ClientBody::new(incoming, connection.body_timeout)
                .collect()
                .await
                .map_err(UpstreamError::ClientBody)?
                .to_bytes(),
        ))
    } else {
        RequestBody::Streaming(Box::new(ClientBody::new(incoming, connection.body_timeout)))
    };
    let client_ends = ClientEnds {
        address: client,
        source: connection.peer,
        destination: connection.local,
    };
    let request = Request::from_parts(parts, body);
    if let Some((settings, cache)) = cache {
        let results = snapshot.cache_results[route]
            .as_ref()
            .expect("a cached route has its counters");
        let origin = Arc::new(origin::UpstreamOrigin {
            snapshot: snapshot.clone(),
            upstream: upstream_index,
            client: client_ends,
            name_backend: no_host,
            tried: Default::default(),
        });
        let view = crate::cache::RouteView { settings, results };
        let result = cache.serve(view, origin.clone(), request).await;
        outcome.tried = origin.tried();
        return result.map(|response| response.map(Relayed::Cache));
    }
    let pick = pick.expect("a request the cache does not take was picked for");
    let (mut response, pick) = tries::forward(
        upstream,
        client_ends,
        pick,
        request,
        received.as_deref(),
        no_host,
        &mut outcome.tried,
    )
    .await?;
    let backend = pick.backend;
    // An HTTP/1 client is sent the backend's head as edits over its bytes;
    // the rest read a `HeaderMap`.
    if http2_client || !limits.is_empty() {
        forward::take_received_fields(&mut response);
    }
    forward::rewrite_response(response.headers_mut());
    if let Some(cookie) = pick.set_cookie {
        response
            .headers_mut()
            .append(header::SET_COOKIE, cookie.clone());
    }
    if response.status() == http::StatusCode::SWITCHING_PROTOCOLS {
        // A switch the client did not ask for cannot be relayed.
        let (Some(client), Some(protocol)) = (client_upgrade, upgrade) else {
            warn!(upstream = %upstream.name, backend = %backend.address, "backend switched protocols unasked");
            return Err(ProxyError::Upstream(UpstreamError::UnaskedUpgrade));
        };
        forward::keep_upgrade(response.headers_mut(), protocol);
        let Some(backend_side) = response.body_mut().upgraded() else {
            return Err(ProxyError::Upstream(UpstreamError::UnaskedUpgrade));
        };
        tunnel::spawn(
            client,
            backend_side,
            RequestGuard::new(connection.clone()),
            response.body_mut().keep_in_flight(),
            connection.idle_timeout,
        );
    }
    Ok(response.map(Relayed::Upstream))
}
