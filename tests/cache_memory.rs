//! The cache's memory bound over real sockets: 40 MiB, and 100 MiB, of distinct
//! objects through a 4 MiB store keep the stored bytes within the bound
//! (evicting) and the process small; an object over `max_object_size` streams through whole and is neither
//! stored nor held. weir runs as a process of its own where its memory is read
//! from /proc.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use tokio::sync::mpsc;

use support::metrics::sample;
use support::*;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// The weir binary with an admin listener, `[cache]` set to `cache`, and one
/// cached route to `backend`; returns it with its listener and admin addresses.
async fn start_weir(
    name: &str,
    cache: &str,
    backend: SocketAddr,
) -> (WeirProcess, SocketAddr, SocketAddr) {
    let admin = free_addr().await;
    let text = format!(
        "[admin]\nlisten = \"{admin}\"\n\n[[listeners]]\nlisten = \"127.0.0.1:0\"\n\n\
         [cache]\n{cache}\n\n[[routes]]\nname = \"site\"\nupstream = \"app\"\ncache = true\n\n\
         [upstreams.app]\nbackends = [{{ address = \"{backend}\" }}]\n"
    );
    let weir = WeirCommand::new().config_text(name, &text).start();
    let addr = weir.listening();
    (weir, addr, admin)
}

async fn metric(admin: SocketAddr, name: &str, labels: &[(&str, &str)]) -> f64 {
    let exposition = get(&client(), &format!("http://{admin}/metrics"), None).await;
    sample(&exposition.text(), name, labels).unwrap_or(0.0)
}

const OBJECT: usize = 256 * 1024;
const STORE: &str = "memory = \"4MiB\"";

/// A backend answering every path with the same `OBJECT` bytes, fresh for
/// ten minutes: each path is an object of its own in the store.
async fn object_backend(body: Bytes) -> Backend {
    spawn_backend(move |_| {
        let body = body.clone();
        async move {
            Response::builder()
                .header("cache-control", "max-age=600")
                .body(full(body))
                .unwrap()
        }
    })
    .await
}

/// Fetches `count` distinct objects through weir at `addr`, checking each
/// body; with `admin`, reads the stored bytes after each one and returns them.
async fn fill_store(
    addr: SocketAddr,
    body: &Bytes,
    count: usize,
    admin: Option<SocketAddr>,
) -> Vec<f64> {
    let client = client();
    let mut stored = Vec::new();
    within_for(
        Duration::from_secs(90),
        "distinct objects through weir",
        async {
            for i in 0..count {
                let reply = get(&client, &format!("http://{addr}/object/{i}"), None).await;
                assert_eq!(reply.status, 200);
                assert!(reply.body == *body, "object {i} came back altered");
                if let Some(admin) = admin {
                    stored.push(
                        metric(admin, "weir_cache_stored_bytes", &[("store", "memory")]).await,
                    );
                }
            }
        },
    )
    .await;
    stored
}

/// More than `memory` + 64 MiB: a store that kept them all would show in the RSS.
const MANY: usize = 400;

#[tokio::test]
async fn a_hundred_mib_of_objects_through_a_four_mib_store_evict_and_keep_the_process_small() {
    let body = Generator::new(9).chunk(OBJECT);
    let backend = object_backend(body.clone()).await;
    let (weir, addr, admin) = start_weir("cache-memory", STORE, backend.addr).await;
    let client = client();
    // One object through before the baseline, so that what every request
    // needs anyway is in it.
    get(&client, &format!("http://{addr}/warm"), None).await;
    let start_rss = proc_status(weir.id(), "VmRSS");

    fill_store(addr, &body, MANY, None).await;

    let evictions = metric(admin, "weir_cache_evictions_total", &[("store", "memory")]).await;
    assert!(evictions > 0.0, "no eviction after 100 MiB through 4 MiB");
    let rss = proc_status(weir.id(), "VmRSS");
    assert!(
        rss <= start_rss + 4 * MIB + 64 * MIB,
        "RSS grew from {} KiB to {} KiB",
        start_rss / KIB,
        rss / KIB
    );
    // The store still answers. Admission keeps one-off objects from pushing
    // out others (TinyLFU): an object asked for again gets in, then hits.
    let mut answers = Vec::new();
    for _ in 0..6 {
        let reply = get(&client, &format!("http://{addr}/object/hot"), None).await;
        assert_eq!(reply.body, body);
        answers.push(reply.header("cache-status").unwrap_or_default().to_owned());
    }
    assert_eq!(
        answers.last().map(String::as_str),
        Some("weir; hit"),
        "{answers:?}"
    );
}

#[tokio::test]
async fn the_store_never_holds_more_than_memory() {
    // 40 MiB of distinct objects, the stored bytes read after each.
    const OBJECTS: usize = 160;
    let body = Generator::new(9).chunk(OBJECT);
    let backend = object_backend(body.clone()).await;
    let (_weir, addr, admin) = start_weir("cache-bound", STORE, backend.addr).await;
    let stored = fill_store(addr, &body, OBJECTS, Some(admin)).await;
    let over: Vec<(usize, f64)> = stored
        .into_iter()
        .enumerate()
        .filter(|(_, bytes)| *bytes > (4 * MIB) as f64)
        .collect();
    let evictions = metric(admin, "weir_cache_evictions_total", &[("store", "memory")]).await;
    assert!(evictions > 0.0, "no eviction after 40 MiB through 4 MiB");
    assert!(
        over.is_empty(),
        "{} of {OBJECTS} objects in, the store held more than 4 MiB ({} bytes); \
         first over after object {:?}",
        over.len(),
        over.iter().map(|(_, b)| *b).fold(0.0, f64::max),
        over.first().map(|(i, _)| i)
    );
}

/// A backend answering `size` bytes of the generator's stream, in 64 KiB
/// chunks: with a `Content-Length` at `/sized`, chunked anywhere else.
async fn large_backend(size: usize) -> Backend {
    spawn_backend(move |request| async move {
        const CHUNK: usize = 64 * 1024;
        let (tx, rx) = mpsc::channel::<Bytes>(4);
        tokio::spawn(async move {
            let mut generator = Generator::new(21);
            for _ in 0..size / CHUNK {
                if tx.send(generator.chunk(CHUNK)).await.is_err() {
                    return;
                }
            }
        });
        let mut response = Response::builder().header("cache-control", "max-age=600");
        if request.uri().path() == "/sized" {
            response = response.header("content-length", size);
        }
        response.body(channel_body(rx)).unwrap()
    })
    .await
}

fn expected_checksum(size: usize) -> Checksum {
    let mut generator = Generator::new(21);
    let mut sum = Checksum::default();
    for _ in 0..size / (64 * 1024) {
        sum.update(&generator.chunk(64 * 1024));
    }
    sum
}

#[tokio::test]
async fn an_object_over_max_object_size_streams_through_and_is_not_stored() {
    const SIZE: usize = 2 * 1024 * 1024;
    let backend = large_backend(SIZE).await;
    let lb = start_lb(
        r#"
[cache]
max_object_size = "1MiB"

[[routes]]
name = "site"
upstream = "app"
cache = true

[upstreams.app]
backends = [{ address = "{app}" }]
"#,
        &[("app", backend.addr)],
    )
    .await;
    let client = client();
    let expected = expected_checksum(SIZE);
    for path in ["/sized", "/chunked"] {
        for round in 0..2 {
            let reply = get(&client, &lb.url(path), None).await;
            assert_eq!(reply.status, 200);
            let mut sum = Checksum::default();
            sum.update(&reply.body);
            assert_eq!(sum, expected, "{path}, request {round}");
            let status = reply.header("cache-status").unwrap_or("");
            assert!(status.starts_with("weir; fwd=miss"), "{path}: {status}");
        }
        assert_eq!(
            backend.paths().iter().filter(|p| *p == path).count(),
            2,
            "{path} was stored"
        );
    }
    let stored = sample(
        &lb.metrics(),
        "weir_cache_stored_bytes",
        &[("store", "memory")],
    )
    .unwrap_or(0.0);
    assert_eq!(stored, 0.0);
}

#[tokio::test]
async fn an_object_over_max_object_size_is_not_held_in_memory() {
    const SIZE: usize = 128 * 1024 * 1024;
    let backend = large_backend(SIZE).await;
    let (weir, addr, _admin) = start_weir(
        "cache-large",
        "memory = \"4MiB\"\nmax_object_size = \"1MiB\"",
        backend.addr,
    )
    .await;
    let client = client();
    let start_peak = proc_status(weir.id(), "VmHWM");
    let response = within(
        "the large response's head",
        client.request(
            Request::get(format!("http://{addr}/chunked"))
                .body(empty())
                .unwrap(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut sum = Checksum::default();
    within_for(
        Duration::from_secs(60),
        "128 MiB through the cache",
        async {
            while let Some(frame) = body.frame().await {
                if let Some(data) = frame.expect("the body broke").data_ref() {
                    sum.update(data);
                }
            }
        },
    )
    .await;
    assert_eq!(sum, expected_checksum(SIZE));
    let peak = proc_status(weir.id(), "VmHWM");
    assert!(
        peak <= start_peak + 64 * MIB,
        "peak RSS grew from {} KiB to {} KiB for a 128 MiB object",
        start_peak / KIB,
        peak / KIB
    );
}
