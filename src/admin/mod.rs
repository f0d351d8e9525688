//! The admin API, on its own listener (`admin.listen`) and never on a proxy
//! listener: `/metrics`, `/healthz`, `/readyz`, `/status`, `POST /reload` and
//! `POST /cache/purge`; who may use it is `guard`'s.
//! Its requests are not proxied and not counted in `weir_requests_total`.

mod guard;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use crate::control::{Control, ReloadError};
use crate::history::History;
use crate::metrics::BackendReading;
use crate::shutdown::Shutdown;

/// Admin connections open at once; past it the listener stops accepting and
/// the kernel's backlog holds the rest, so a crowd of idle connections can
/// hold the admin API and nothing else.
const MAX_CONNECTIONS: usize = 64;
/// A request head must arrive whole within this, the first and each next
/// one; so must a request body.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// An admin connection is asked to close after this, whatever it does.
const MAX_CONNECTION_LIFE: Duration = Duration::from_secs(60);
const ACCEPT_BACKOFF_START: Duration = Duration::from_millis(5);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Serves the admin API on `listener` until `shutdown` fires.
pub async fn serve(listener: TcpListener, control: Arc<Control>, mut shutdown: Shutdown) {
    if let Ok(address) = listener.local_addr() {
        info!(address = %address, "admin API listening");
        let open = control
            .snapshot()
            .config
            .admin
            .as_ref()
            .is_none_or(|a| a.token.is_none());
        if open && !address.ip().is_loopback() {
            warn!(address = %address, "the admin API listens beyond loopback without admin.token: anyone who reaches it can reload the config and purge the cache");
        }
    }
    // Sampled only while there is an admin API to show it.
    let history = History::follow(control.clone());
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut backoff = ACCEPT_BACKOFF_START;
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = shutdown.wait() => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    backoff = ACCEPT_BACKOFF_START;
                    stream
                }
                Err(err) => {
                    warn!(error = %err, "admin accept failed; retrying in {backoff:?}");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = shutdown.wait() => break,
                    }
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                    continue;
                }
            },
            () = shutdown.wait() => break,
        };
        let control = control.clone();
        let history = history.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = service_fn(move |request| {
                let control = control.clone();
                let history = history.clone();
                async move { Ok::<_, Infallible>(guarded(&control, &history, request).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            // However it spends its time (idle between requests, a body or a
            // read of the answer that stalls), a connection holds its permit
            // for a bounded while: then it is asked to finish, and closed if
            // it does not. A browser simply connects again.
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = tokio::time::sleep(MAX_CONNECTION_LIFE) => {
                    connection.as_mut().graceful_shutdown();
                    tokio::time::timeout(HEADER_TIMEOUT, connection.as_mut())
                        .await
                        .unwrap_or(Ok(()))
                }
            };
            if let Err(err) = result {
                debug!(error = %err, "admin connection ended with an error");
            }
        });
    }
}

/// The status page, served from the binary: no file to install, nothing
/// fetched from elsewhere.
const PAGE_HTML: &str = include_str!("page/index.html");
const PAGE_JS: &str = include_str!("page/page.js");

/// A part of the status page, with the headers that keep it to itself: its
/// own scripts only, never framed by another site.
fn page(content_type: &'static str, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        http::HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
        ),
    );
    headers.insert(
        header::X_FRAME_OPTIONS,
        http::HeaderValue::from_static("DENY"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache"),
    );
    response
}

/// Answers a request that passes the guard: the right `Host`, and the token
/// for what changes something.
async fn guarded(
    control: &Control,
    history: &History,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let snapshot = control.snapshot();
    let changes = request.method() == Method::POST;
    match guard::check(snapshot.config.admin.as_ref(), request.headers(), changes) {
        Ok(()) => match (request.method(), request.uri().path()) {
            (&Method::GET | &Method::HEAD, "/") => page("text/html; charset=utf-8", PAGE_HTML),
            (&Method::GET | &Method::HEAD, "/status/page.js") => {
                page("text/javascript; charset=utf-8", PAGE_JS)
            }
            (&Method::GET | &Method::HEAD, "/status/history") => {
                json_response(StatusCode::OK, &history.to_json())
            }
            _ => answer(control, request).await,
        },
        Err(guard::Refusal::Host) => plain(
            StatusCode::MISDIRECTED_REQUEST,
            "421 misdirected request: the admin API answers Host: an IP address, localhost or an admin.allowed_hosts name\n",
        ),
        Err(guard::Refusal::Token) => {
            let mut response = plain(
                StatusCode::UNAUTHORIZED,
                "401 unauthorized: send Authorization: Bearer <admin.token>\n",
            );
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer realm=\"weir admin\""),
            );
            response
        }
    }
}

async fn answer(control: &Control, request: Request<Incoming>) -> Response<Full<Bytes>> {
    match (request.method(), request.uri().path()) {
        (&Method::GET | &Method::HEAD, "/metrics") => {
            let snapshot = control.snapshot();
            let readings: Vec<BackendReading<'_>> = snapshot
                .upstreams
                .iter()
                .flat_map(|upstream| {
                    upstream.backends.iter().map(|backend| BackendReading {
                        upstream: &upstream.name,
                        backend: backend.address.to_string(),
                        in_flight: backend.state.in_flight(),
                        usable: backend.state.is_usable(),
                    })
                })
                .collect();
            let upstreams: Vec<&str> = snapshot.upstreams.iter().map(|u| u.name.as_str()).collect();
            control.metrics().refresh(&upstreams, &readings);
            text(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                control.metrics().encode(),
            )
        }
        (&Method::GET | &Method::HEAD, "/healthz") => plain(StatusCode::OK, "ok\n"),
        (&Method::GET | &Method::HEAD, "/readyz") => {
            if control.draining() {
                plain(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
            } else if !control.first_checks_done() {
                plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "waiting for the first health checks\n",
                )
            } else {
                plain(StatusCode::OK, "ready\n")
            }
        }
        (&Method::GET | &Method::HEAD, "/status") => {
            json_response(StatusCode::OK, &status(control).await)
        }
        (&Method::POST, "/reload") => match control.reload_from_file().await {
            Ok(summary) => json_response(
                StatusCode::OK,
                &json!({
                    "result": "success",
                    "listeners_added": summary.listeners_added,
                    "listeners_kept": summary.listeners_kept,
                    "listeners_removed": summary.listeners_removed,
                    "upstreams": summary.upstreams,
                    "backends": summary.backends,
                }),
            ),
            Err(err) => {
                let status = match err {
                    ReloadError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
                    _ => StatusCode::BAD_REQUEST,
                };
                json_response(
                    status,
                    &json!({ "result": "failure", "error": err.to_string() }),
                )
            }
        },
        (&Method::POST, "/cache/purge") => purge(control, request).await,
        (
            _,
            "/" | "/metrics" | "/healthz" | "/readyz" | "/status" | "/status/history"
            | "/status/page.js" | "/reload" | "/cache/purge",
        ) => plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
        _ => plain(
            StatusCode::NOT_FOUND,
            "not found: try / (the status page), /metrics, /healthz, /readyz, /status, /status/history, POST /reload or POST /cache/purge\n",
        ),
    }
}

/// Largest purge request body: a host and a path, not a document.
const MAX_PURGE_BODY: usize = 16 * 1024;

/// `POST /cache/purge` with `{"host": "…", "path": "/x"}` (every variant and
/// query of that path) or `{"host": "…", "prefix": "/img/"}`.
async fn purge(control: &Control, request: Request<Incoming>) -> Response<Full<Bytes>> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Purge {
        host: String,
        path: Option<String>,
        prefix: Option<String>,
    }
    let bad = |why: String| {
        json_response(
            StatusCode::BAD_REQUEST,
            &json!({ "result": "failure", "error": why }),
        )
    };
    let body = http_body_util::Limited::new(request.into_body(), MAX_PURGE_BODY).collect();
    let body = match tokio::time::timeout(HEADER_TIMEOUT, body).await {
        Ok(Ok(body)) => body.to_bytes(),
        Ok(Err(err)) => return bad(format!("unreadable body: {err}")),
        Err(_) => {
            return plain(
                StatusCode::REQUEST_TIMEOUT,
                "408 the request body did not arrive in time\n",
            );
        }
    };
    let purge: Purge = match serde_json::from_slice(&body) {
        Ok(purge) => purge,
        Err(err) => {
            return bad(format!(
                "{err}; expected {{\"host\": \"example.com\", \"path\": \"/x\"}} or {{\"host\": \"example.com\", \"prefix\": \"/img/\"}}"
            ));
        }
    };
    let starts_with_slash = |p: &Option<String>| p.as_ref().is_none_or(|p| p.starts_with('/'));
    if purge.host.is_empty()
        || purge.path.is_some() == purge.prefix.is_some()
        || !starts_with_slash(&purge.path)
        || !starts_with_slash(&purge.prefix)
    {
        return bad("give a host and exactly one of path or prefix, starting with '/'".to_owned());
    }
    let Some(cache) = control.snapshot().cache.clone() else {
        return json_response(
            StatusCode::OK,
            &json!({ "result": "success", "purged": { "memory": 0, "redis": null } }),
        );
    };
    let purged = cache
        .purge(&purge.host, purge.path.as_deref(), purge.prefix.as_deref())
        .await;
    info!(host = %purge.host, path = ?purge.path, prefix = ?purge.prefix, memory = purged.memory, redis = ?purged.redis, "cache purged");
    json_response(
        StatusCode::OK,
        &json!({ "result": "success", "purged": { "memory": purged.memory, "redis": purged.redis } }),
    )
}

/// `/status`: listeners, routes, upstreams and their backends, as documented in
/// `docs/observability.md`.
async fn status(control: &Control) -> Value {
    let snapshot = control.snapshot();
    let addresses = control.addresses().await;
    let config = &snapshot.config;
    let listeners: Vec<Value> = config
        .listeners
        .iter()
        .zip(addresses.iter().map(Some).chain(std::iter::repeat(None)))
        .map(|(listener, bound)| {
            json!({
                "name": listener.name,
                "listen": listener.listen.to_string(),
                "address": bound.map(ToString::to_string),
                "max_connections": listener.max_connections,
            })
        })
        .collect();
    let routes: Vec<Value> = config
        .routes
        .iter()
        .map(|route| {
            json!({
                "name": route.name,
                "host": route.host.as_ref().map(|h| h.to_string()),
                "path_prefix": route.path_prefix,
                "upstream": config.upstreams[route.upstream].name,
            })
        })
        .collect();
    let upstreams: Vec<Value> = snapshot
        .upstreams
        .iter()
        .zip(&config.upstreams)
        .map(|(upstream, upstream_config)| {
            let backends: Vec<Value> = upstream
                .backends
                .iter()
                .map(|backend| {
                    let state = &backend.state;
                    json!({
                        "address": backend.address.to_string(),
                        "name": backend.dns_name.as_deref(),
                        "priority": backend.priority,
                        "weight": backend.weight,
                        "effective_weight": f64::from(backend.weight) * backend.warmth(),
                        "healthy": state.is_healthy(),
                        "ejected": state.is_ejected(),
                        "usable": state.is_usable(),
                        "active_requests": state.in_flight(),
                    })
                })
                .collect();
            json!({
                "name": upstream.name,
                "strategy": upstream_config.strategy.name(),
                "usable_backends": upstream.backends.iter().filter(|b| b.state.is_usable()).count(),
                "backends": backends,
            })
        })
        .collect();
    json!({
        "draining": control.draining(),
        "listeners": listeners,
        "routes": routes,
        "upstreams": upstreams,
    })
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    text(status, "text/plain; charset=utf-8", body.to_owned())
}

fn json_response(status: StatusCode, value: &Value) -> Response<Full<Bytes>> {
    let mut body = value.to_string();
    body.push('\n');
    text(status, "application/json", body)
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}
