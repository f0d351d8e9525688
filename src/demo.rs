//! The zero-setup demo: three small backends on loopback, and a config that puts
//! weir in front of them with weighted round robin, health checks, outlier
//! ejection, retries and the admin listener. One backend is slow and one fails
//! now and then, so the status page shows balancing, ejection and retries at
//! work within a minute.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tracing::debug;

use crate::config::{self, Config, ConfigError};

/// How a demo backend behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Answers at once.
    Quick,
    /// Takes 20 to 150 ms to answer.
    Slow,
    /// Answers 503 to the last three of every twenty requests: enough failures
    /// in a row to be ejected for a while, its requests retried elsewhere.
    Flaky,
}

/// Starts one demo backend on an ephemeral loopback port. It answers every request
/// with its name and the request line, so the balancing is visible from curl;
/// `/healthz` (its health check) always answers 200.
pub async fn start_backend(name: String, behaviour: Behaviour) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let served = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let name = name.clone();
            let served = served.clone();
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let text = format!(
                    "hello from {name}: {} {}\n",
                    request.method(),
                    request.uri()
                );
                let health = request.uri().path() == "/healthz";
                let n = if health {
                    0
                } else {
                    served.fetch_add(1, Ordering::Relaxed)
                };
                async move {
                    if health {
                        return Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("ok\n"))));
                    }
                    match behaviour {
                        Behaviour::Quick => {}
                        Behaviour::Slow => {
                            let millis = 20 + fastrand::u64(0..130);
                            tokio::time::sleep(Duration::from_millis(millis)).await;
                        }
                        Behaviour::Flaky if n % 20 >= 17 => {
                            let mut response =
                                Response::new(Full::new(Bytes::from("503 having a bad moment\n")));
                            *response.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                            return Ok(response);
                        }
                        Behaviour::Flaky => {}
                    }
                    Ok(Response::new(Full::new(Bytes::from(text))))
                }
            });
            tokio::spawn(async move {
                if let Err(err) = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    debug!(error = %err, "demo backend connection failed");
                }
            });
        }
    });
    Ok(address)
}

/// The demo's config: weir on `listen` in front of `backends`, weights 3, 1, 1,
/// with health checks, outlier ejection and retries, and the admin API on
/// `admin`.
pub fn config(
    listen: SocketAddr,
    admin: SocketAddr,
    backends: &[SocketAddr],
) -> Result<Config, ConfigError> {
    let mut text = format!(
        "[runtime]\nshutdown_timeout = \"5s\"\n\n[admin]\nlisten = \"{admin}\"\n\n\
         [[listeners]]\nname = \"demo\"\nlisten = \"{listen}\"\n\n\
         [[routes]]\nname = \"all\"\nupstream = \"demo\"\n\n[upstreams.demo]\nstrategy = \"round_robin\"\nbackends = [\n"
    );
    for (i, backend) in backends.iter().enumerate() {
        let weight = if i == 0 { 3 } else { 1 };
        text.push_str(&format!(
            "  {{ address = \"{backend}\", weight = {weight} }},\n"
        ));
    }
    text.push_str(
        "]\n\n[upstreams.demo.health_check]\npath = \"/healthz\"\ninterval = \"2s\"\n\n\
         [upstreams.demo.outlier_detection]\nconsecutive_failures = 3\nbase_ejection_time = \"10s\"\n\n\
         [upstreams.demo.retries]\nattempts = 1\n",
    );
    config::parse(&text, "demo.toml")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_config_is_valid() {
        let backends: Vec<SocketAddr> = vec![
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
        ];
        let config = config(
            "127.0.0.1:8080".parse().unwrap(),
            "127.0.0.1:9901".parse().unwrap(),
            &backends,
        )
        .unwrap();
        assert!(config.admin.is_some());
        assert!(config.upstreams[0].outlier_detection.is_some());
        assert_eq!(config.upstreams[0].backends.len(), 2);
        assert_eq!(config.upstreams[0].backends[0].weight.get(), 3);
    }
}
