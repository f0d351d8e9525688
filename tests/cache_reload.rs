//! The response cache across reloads: stored responses stay while `[cache]`
//! keeps its sizes, and go with a store of another size (or a reload without
//! caching), whose stored bytes then count only what it holds.

mod support;

use std::net::SocketAddr;

use http::Response;

use support::metrics::sample;
use support::*;

/// One cached route (uncached when `memory` is empty) with a store of `memory`.
fn config(memory: &str, backend: SocketAddr) -> weir::config::Config {
    let cache = if memory.is_empty() {
        String::new()
    } else {
        format!("[cache]\nmemory = \"{memory}\"\n\n")
    };
    let route_cache = !memory.is_empty();
    let text = format!(
        "[[listeners]]\nlisten = \"127.0.0.1:0\"\n\n{cache}\
         [[routes]]\nname = \"site\"\nupstream = \"app\"\ncache = {route_cache}\n\n\
         [upstreams.app]\nbackends = [{{ address = \"{backend}\" }}]\n"
    );
    weir::config::parse(&text, "test.toml").unwrap()
}

fn stored_bytes(lb: &Lb) -> f64 {
    sample(
        &lb.metrics(),
        "weir_cache_stored_bytes",
        &[("store", "memory")],
    )
    .unwrap_or(0.0)
}

#[tokio::test]
async fn stored_responses_outlive_a_reload_that_keeps_the_sizes_only() {
    let backend = spawn_backend(|_| async {
        Response::builder()
            .header("cache-control", "max-age=600")
            .body(full(vec![b'x'; 10_000]))
            .unwrap()
    })
    .await;
    let lb = start_lb_config(config("4MiB", backend.addr)).await;
    let client = client();
    for path in ["/a", "/b"] {
        get(&client, &lb.url(path), None).await;
    }
    let two = stored_bytes(&lb);
    assert!(two > 20_000.0, "{two}");

    let control = lb.running.control();
    within("a reload", control.apply(config("4MiB", backend.addr)))
        .await
        .unwrap();
    let kept = get(&client, &lb.url("/a"), None).await;
    assert_eq!(kept.header("cache-status"), Some("weir; hit"));
    assert_eq!(stored_bytes(&lb), two);

    within("a reload", control.apply(config("8MiB", backend.addr)))
        .await
        .unwrap();
    let dropped = get(&client, &lb.url("/a"), None).await;
    assert_eq!(
        dropped.header("cache-status"),
        Some("weir; fwd=miss; stored")
    );
    assert_eq!(
        stored_bytes(&lb),
        two / 2.0,
        "the new store holds one object"
    );
    assert_eq!(backend.request_count(), 3);

    // Caching off, then on again: a new, empty store.
    within("a reload", control.apply(config("", backend.addr)))
        .await
        .unwrap();
    let plain = get(&client, &lb.url("/a"), None).await;
    assert_eq!(plain.header("cache-status"), None);
    within("a reload", control.apply(config("8MiB", backend.addr)))
        .await
        .unwrap();
    let fresh = get(&client, &lb.url("/a"), None).await;
    assert_eq!(fresh.header("cache-status"), Some("weir; fwd=miss; stored"));
    assert_eq!(stored_bytes(&lb), two / 2.0);
    assert_eq!(backend.request_count(), 5);
}
