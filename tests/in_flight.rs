//! A backend's in-flight count goes back down on every way a request can end:
//! finished, refused, timed out, cancelled before the answer, or abandoned while
//! the body streams. Strategies that read the count (least_connections, p2c) would
//! otherwise shun a backend forever.

mod support;

use bytes::Bytes;
use http::Request;
use support::*;
use tokio::sync::{Notify, mpsc};
use weir::balance::RequestKey;
use weir::proxy::tries::{self, ClientEnds};
use weir::upstream::{RequestBody, ResponseBody, Upstream, UpstreamError};

fn upstream(address: std::net::SocketAddr, response_timeout: &str) -> Upstream {
    let text = format!(
        "[[listeners]]\nlisten = \"127.0.0.1:0\"\n[[routes]]\nupstream = \"u\"\n\
         [upstreams.u]\nbackends = [{{ address = \"{address}\" }}]\ntimeouts = {{ response = \"{response_timeout}\" }}\n"
    );
    let config = weir::config::parse(&text, "test.toml").unwrap();
    Upstream::new(
        &config.upstreams[0],
        &Default::default(),
        &Default::default(),
        &weir::metrics::Metrics::new(),
    )
    .unwrap()
}

/// Picks the backend and forwards `request` to it, as the proxy does.
async fn send(
    upstream: &Upstream,
    request: Request<RequestBody>,
) -> Result<http::Response<ResponseBody>, UpstreamError> {
    let headers = http::HeaderMap::new();
    let client = std::net::IpAddr::from([127, 0, 0, 1]);
    let key = RequestKey {
        client,
        path: "/",
        query: None,
        headers: weir::balance::Fields::Map(&headers),
    };
    let pick = tries::pick(upstream, &key).expect("a usable backend");
    let client = ClientEnds {
        address: client,
        source: "127.0.0.1:1".parse().unwrap(),
        destination: "127.0.0.1:2".parse().unwrap(),
    };
    tries::forward(
        upstream,
        client,
        pick,
        request,
        None,
        false,
        &mut Default::default(),
    )
    .await
    .map(|(response, _)| response)
}

fn get() -> Request<RequestBody> {
    Request::builder()
        .uri("/")
        .header("host", "test")
        .body(RequestBody::Empty)
        .unwrap()
}

#[tokio::test]
async fn count_is_held_while_the_body_lives_and_released_after() {
    let backend = spawn_named_backend("ok").await;
    let upstream = upstream(backend.addr, "5s");
    let target = &upstream.backends[0];
    let response = within("a response", send(&upstream, get())).await.unwrap();
    assert_eq!(target.state.in_flight(), 1);
    let body = within("the body", response.into_body().collect_bytes())
        .await
        .unwrap();
    assert_eq!(body, Bytes::from_static(b"ok"));
    assert_eq!(target.state.in_flight(), 0);
}

#[tokio::test]
async fn refused_connection_releases_the_count() {
    let upstream = upstream(refused_addr().await, "5s");
    let target = &upstream.backends[0];
    assert!(within("a refusal", send(&upstream, get())).await.is_err());
    assert_eq!(target.state.in_flight(), 0);
}

#[tokio::test]
async fn response_timeout_releases_the_count() {
    let backend = spawn_backend(|_request| std::future::pending()).await;
    let upstream = upstream(backend.addr, "100ms");
    let target = &upstream.backends[0];
    assert!(within("a timeout", send(&upstream, get())).await.is_err());
    assert_eq!(target.state.in_flight(), 0);
}

#[tokio::test]
async fn cancelled_request_releases_the_count() {
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel();
    let backend = spawn_backend(move |_request| {
        let _ = arrived_tx.send(());
        std::future::pending()
    })
    .await;
    let upstream = upstream(backend.addr, "60s");
    let target = &upstream.backends[0];
    {
        let sending = send(&upstream, get());
        tokio::pin!(sending);
        // Drive the request until the backend has it, then drop it (client gone).
        within("the request to reach the backend", async {
            tokio::select! {
                _ = &mut sending => panic!("the backend never answers"),
                _ = arrived.recv() => {}
            }
        })
        .await;
        assert_eq!(target.state.in_flight(), 1);
    }
    assert_eq!(target.state.in_flight(), 0);
}

#[tokio::test]
async fn body_abandoned_mid_stream_releases_the_count() {
    let release = std::sync::Arc::new(Notify::new());
    let gate = release.clone();
    let backend = spawn_backend(move |_request| {
        let gate = gate.clone();
        async move {
            // A body that sends one chunk and then stalls.
            let (tx, rx) = mpsc::channel(1);
            tokio::spawn(async move {
                let _ = tx.send(Bytes::from_static(b"first")).await;
                gate.notified().await;
            });
            http::Response::new(channel_body(rx))
        }
    })
    .await;
    let upstream = upstream(backend.addr, "5s");
    let target = &upstream.backends[0];
    let response = within("a response", send(&upstream, get())).await.unwrap();
    assert_eq!(target.state.in_flight(), 1);
    drop(response);
    assert_eq!(target.state.in_flight(), 0);
    release.notify_one();
}
