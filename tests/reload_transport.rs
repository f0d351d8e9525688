//! Tries that outlive a reload: a request's retry keeps to the transport of
//! the config it started under, and never takes a pooled connection the new
//! config made (which may speak another protocol than the one the request
//! was shaped for).

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use support::*;

fn config(backend: std::net::SocketAddr, protocol: &str) -> String {
    format!(
        "[[listeners]]\nlisten = \"127.0.0.1:0\"\n\n[[routes]]\nupstream = \"app\"\n\n\
         [upstreams.app]\nbackends = [{{ address = \"{backend}\" }}]\n{protocol}\
         retries = {{ attempts = 1, backoff = \"1s\" }}\n"
    )
}

/// A backend speaking HTTP/1.1 and h2c that answers the first `/first` 503.
async fn backend() -> Backend {
    let firsts = Arc::new(AtomicUsize::new(0));
    spawn_backend_serving(
        Serving {
            http2: true,
            ..Serving::default()
        },
        move |request| {
            let firsts = firsts.clone();
            async move {
                if request.uri().path() == "/first" && firsts.fetch_add(1, Ordering::SeqCst) == 0 {
                    return text(503, "try again");
                }
                text(200, format!("{:?}", request.version()))
            }
        },
    )
    .await
}

/// Runs `/first` (503 on its first try, retried after a ~0.5-1.5 s backoff),
/// reloads to `to` during the backoff, and warms the pool with `/warm` on the
/// new config: returns the retried request's status.
async fn retry_across_reload(backend: &Backend, from: &str, to: &str) -> (Lb, u16) {
    let lb = start_lb(&config(backend.addr, from), &[]).await;
    let address = lb.addr;
    let first = tokio::spawn(async move { status_of_get(address, "/first").await });
    within("the first try", async {
        while backend.request_count() < 1 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    let reloaded = weir::config::parse(&config(backend.addr, to), "test.toml").unwrap();
    within("the reload", lb.running.control().apply(reloaded))
        .await
        .unwrap();
    // A request of the new config leaves a connection of the new transport
    // in the pool, well within the retry's backoff.
    assert_eq!(
        within("the warm-up", status_of_get(address, "/warm")).await,
        200
    );
    let status = within("the retried request", first).await.unwrap();
    (lb, status)
}

/// h2c -> HTTP/1.1: the retry of a request of the old config, shaped for
/// HTTP/2 (its `Host` made the `:authority`), must not go out on the new
/// config's HTTP/1.1 connection, where it would have no `Host` at all.
#[tokio::test]
async fn a_retry_across_a_reload_h2c_to_http1_keeps_its_host() {
    let backend = backend().await;
    let (_lb, status) = retry_across_reload(&backend, "protocol = \"h2c\"\n", "").await;
    let requests = backend.requests.lock().unwrap().clone();
    let retried = requests
        .iter()
        .filter(|r| r.uri.path() == "/first")
        .nth(1)
        .expect("the retry reached the backend");
    assert_eq!(status, 200);
    assert!(
        retried.headers.contains_key("host") || retried.uri.authority().is_some(),
        "the retried request reached the backend with no Host: {retried:?}"
    );
}

/// HTTP/1.1 -> h2c: the retry of a request read in place must not take the
/// new config's shared HTTP/2 connection (whose request would have no fields).
#[tokio::test]
async fn a_retry_across_a_reload_http1_to_h2c_is_answered() {
    let backend = backend().await;
    let (_lb, status) = retry_across_reload(&backend, "", "protocol = \"h2c\"\n").await;
    assert_eq!(status, 200, "the retried request was failed by weir");
    let versions: Vec<_> = backend
        .requests
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.version)
        .collect();
    assert_eq!(
        versions,
        [
            http::Version::HTTP_11,
            http::Version::HTTP_2,
            http::Version::HTTP_11
        ],
        "the first try and its retry as the old config says, the warm-up as the new"
    );
}
