//! The zero-setup demo: three small backends on loopback, and a config that puts
//! weir in front of them with weighted round robin.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tracing::debug;

use crate::config::{self, Config, ConfigError};

/// Starts one demo backend on an ephemeral loopback port. It answers every request
/// with its name and the request line, so the balancing is visible from curl.
pub async fn start_backend(name: String) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let name = name.clone();
            let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                let text = format!(
                    "hello from {name}: {} {}\n",
                    request.method(),
                    request.uri()
                );
                async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text)))) }
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

/// The demo's config: weir on `listen` in front of `backends`, weights 3, 1, 1.
pub fn config(listen: SocketAddr, backends: &[SocketAddr]) -> Result<Config, ConfigError> {
    let mut text = format!(
        "[runtime]\nshutdown_timeout = \"5s\"\n\n[[listeners]]\nname = \"demo\"\nlisten = \"{listen}\"\n\n\
         [[routes]]\nname = \"all\"\nupstream = \"demo\"\n\n[upstreams.demo]\nstrategy = \"round_robin\"\nbackends = [\n"
    );
    for (i, backend) in backends.iter().enumerate() {
        let weight = if i == 0 { 3 } else { 1 };
        text.push_str(&format!(
            "  {{ address = \"{backend}\", weight = {weight} }},\n"
        ));
    }
    text.push_str("]\n");
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
        let config = config("127.0.0.1:8080".parse().unwrap(), &backends).unwrap();
        assert_eq!(config.upstreams[0].backends.len(), 2);
        assert_eq!(config.upstreams[0].backends[0].weight.get(), 3);
    }
}
