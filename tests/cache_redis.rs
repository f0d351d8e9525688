//! The cache shared through a real Redis: two weir instances in front of one
//! backend and one `redis-server` — what one stores the other answers, a purge
//! on one is seen by the other, and Redis going away loses no request.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hyper::Request;
use support::redis::RedisServer;
use support::*;

/// The host every request names, so both instances use the same keys.
const HOST: &str = "site.example";

/// A backend whose answers are fresh for a minute and carry its request count.
async fn counting_backend() -> (Backend, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    let backend = spawn_backend(move |request| {
        let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
        let path = request.uri().path().to_owned();
        async move {
            let mut response = text(200, format!("{path} #{n}"));
            response
                .headers_mut()
                .insert("cache-control", "max-age=60".parse().unwrap());
            response
        }
    })
    .await;
    (backend, count)
}

/// One weir instance with an admin listener, caching through `redis_url`.
async fn instance(backend: SocketAddr, redis_url: &str, extra: &str) -> (Lb, SocketAddr) {
    let admin = free_addr().await;
    let text = format!(
        "[admin]\nlisten = \"{admin}\"\n\n[redis]\nurl = \"{redis_url}\"\ntimeout = \"200ms\"\n\n{extra}\n{}",
        one_upstream(&["a"], "")
    )
    .replace("upstream = \"app\"\n", "upstream = \"app\"\ncache = true\n");
    (start_lb(&text, &[("a", backend)]).await, admin)
}

async fn fetch(lb: &Lb, path: &str) -> Reply {
    get(&client(), &lb.url(path), Some(HOST)).await
}

fn cache_status(reply: &Reply) -> String {
    reply
        .headers
        .get("cache-status")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// Waits until Redis holds a key matching `pattern`.
async fn until_redis_has(redis: &RedisServer, pattern: &str) {
    within("the object to reach redis", async {
        while redis.command(&["KEYS", pattern]).is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_on_one_instance_is_a_hit_on_the_other() {
    let redis = RedisServer::start();
    let (backend, count) = counting_backend().await;
    let (first, _) = instance(backend.addr, &redis.url(), "").await;
    let (second, _) = instance(backend.addr, &redis.url(), "").await;

    let miss = fetch(&first, "/page").await;
    assert_eq!(miss.text(), "/page #1");
    assert_eq!(cache_status(&miss), "weir; fwd=miss; stored");
    until_redis_has(&redis, "weir:c:*").await;

    let hit = fetch(&second, "/page").await;
    assert_eq!(
        hit.text(),
        "/page #1",
        "the second instance answers what the first stored"
    );
    assert_eq!(cache_status(&hit), "weir; hit");
    assert!(hit.headers.contains_key("age"));
    assert_eq!(count.load(Ordering::SeqCst), 1);
    // Now in the second's memory too: a hit without Redis.
    redis.command(&["FLUSHALL"]);
    assert_eq!(fetch(&second, "/page").await.text(), "/page #1");
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_are_shared_in_chunks() {
    let redis = RedisServer::start();
    let body: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
    let served = Arc::new(body.clone());
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    let backend = spawn_backend(move |_| {
        seen.fetch_add(1, Ordering::SeqCst);
        let body = served.clone();
        async move {
            let mut response = hyper::Response::new(full(body.as_ref().clone()));
            response
                .headers_mut()
                .insert("cache-control", "max-age=60".parse().unwrap());
            response
        }
    })
    .await;
    let (first, _) = instance(backend.addr, &redis.url(), "").await;
    let (second, _) = instance(backend.addr, &redis.url(), "").await;
    assert_eq!(fetch(&first, "/big").await.body.as_ref(), body.as_slice());
    until_redis_has(&redis, "weir:b:*").await;
    // The body past the first chunk is in chunks of its own, none huge.
    let chunks = redis.command(&["KEYS", "weir:b:*"]);
    assert_eq!(chunks.lines().count(), 2, "{chunks}");
    let hit = fetch(&second, "/big").await;
    assert_eq!(cache_status(&hit), "weir; hit");
    assert_eq!(hit.body.as_ref(), body.as_slice());
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_on_one_instance_empties_every_instance() {
    let redis = RedisServer::start();
    let (backend, count) = counting_backend().await;
    let (first, _) = instance(backend.addr, &redis.url(), "").await;
    let (second, second_admin) = instance(backend.addr, &redis.url(), "").await;

    assert_eq!(fetch(&first, "/img/a?size=1").await.text(), "/img/a #1");
    assert_eq!(fetch(&first, "/other").await.text(), "/other #2");
    until_redis_has(&redis, "weir:c:*/other").await;
    until_redis_has(&redis, "weir:c:*/img/a*").await;
    // Both in the first's memory now; the second has them through Redis.
    assert_eq!(fetch(&second, "/img/a?size=1").await.text(), "/img/a #1");

    let purge = Request::post(format!("http://{second_admin}/cache/purge"))
        .body(full(format!(
            "{{\"host\": \"{HOST}\", \"prefix\": \"/img/\"}}"
        )))
        .unwrap();
    let answer = send(&client(), purge).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let purged: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(purged["purged"]["memory"], 1);
    assert_eq!(purged["purged"]["redis"], 1);
    assert!(redis.command(&["KEYS", "weir:c:*/img/*"]).is_empty());
    assert!(!redis.command(&["KEYS", "weir:c:*/other"]).is_empty());

    // The first drops its memory copy once the purge reaches it over pub/sub.
    within("the purge to reach the first instance", async {
        loop {
            let reply = fetch(&first, "/img/a?size=1").await;
            if reply.text() != "/img/a #1" {
                assert_eq!(cache_status(&reply), "weir; fwd=miss; stored");
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // What the purge did not name stays.
    assert_eq!(fetch(&first, "/other").await.text(), "/other #2");
    assert_eq!(count.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_going_away_mid_load_loses_no_request() {
    let mut redis = RedisServer::start();
    let (backend, _count) = counting_backend().await;
    let (first, first_admin) = instance(backend.addr, &redis.url(), "").await;
    let (second, _) = instance(backend.addr, &redis.url(), "").await;
    let instances = Arc::new([first, second]);
    let load = {
        let instances = instances.clone();
        tokio::spawn(async move {
            let mut failures = Vec::new();
            // Bounded: 600 requests over 60 paths, both instances.
            for i in 0..600usize {
                let lb = &instances[i % 2];
                let reply = fetch(lb, &format!("/p{}", i % 60)).await;
                if reply.status != 200 {
                    failures.push((i, reply.status));
                }
            }
            failures
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    redis.stop();
    let failures = within("the load to finish", load).await.unwrap();
    assert!(
        failures.is_empty(),
        "requests failed while Redis went away: {failures:?}"
    );
    // Counted and still serving.
    let metrics = get(&client(), &format!("http://{first_admin}/metrics"), None)
        .await
        .text();
    let errors: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("weir_redis_errors_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(errors >= 1.0, "redis errors are counted:\n{metrics}");
    // Back: the shared tier is used again.
    redis.restart();
    within("the cache to write to redis again", async {
        let mut n = 0;
        loop {
            n += 1;
            fetch(&instances[0], &format!("/after{n}")).await;
            if !redis.command(&["KEYS", "weir:c:*"]).is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weir_starts_and_serves_while_redis_is_down() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    redis.stop();
    let (backend, count) = counting_backend().await;
    let (lb, _) = instance(backend.addr, &url, "").await;
    let started = std::time::Instant::now();
    assert_eq!(fetch(&lb, "/x").await.text(), "/x #1");
    // From memory, whatever Redis does.
    assert_eq!(fetch(&lb, "/x").await.text(), "/x #1");
    assert_eq!(count.load(Ordering::SeqCst), 1);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_never_answers_costs_at_most_its_timeout() {
    // Accepts connections and never says a word.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("redis://{}/0", silent.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            open.push(stream);
        }
    });
    let (backend, count) = counting_backend().await;
    let (lb, _) = instance(backend.addr, &url, "").await;
    for n in 1..=5 {
        let started = std::time::Instant::now();
        let reply = fetch(&lb, &format!("/slow{n}")).await;
        assert_eq!(reply.status, 200);
        // The lookup waits out `redis.timeout` (200ms) at most, then weir
        // leaves Redis alone for a moment.
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "request {n} took {:?}",
            started.elapsed()
        );
    }
    assert_eq!(count.load(Ordering::SeqCst), 5);
    held.abort();
}

/// A backend whose answers vary on `Accept-Language` and carry it, fresh for a
/// minute; a POST answers 204.
async fn varying_backend() -> (Backend, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    let backend = spawn_backend(move |request| {
        let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
        let language = request
            .headers()
            .get("accept-language")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let post = request.method() == hyper::Method::POST;
        async move {
            if post {
                return text(204, "");
            }
            let mut response = text(200, format!("{language} #{n}"));
            response
                .headers_mut()
                .insert("cache-control", "max-age=60".parse().unwrap());
            response
                .headers_mut()
                .insert("vary", "accept-language".parse().unwrap());
            response
        }
    })
    .await;
    (backend, count)
}

async fn fetch_in(lb: &Lb, path: &str, language: &str) -> Reply {
    let request = Request::get(lb.url(path))
        .header("host", HOST)
        .header("accept-language", language)
        .body(empty())
        .unwrap();
    send(&client(), request).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn variants_are_shared_and_an_invalidation_ends_them_all() {
    let redis = RedisServer::start();
    let (backend, count) = varying_backend().await;
    let (first, _) = instance(backend.addr, &redis.url(), "").await;
    let (second, _) = instance(backend.addr, &redis.url(), "").await;
    assert_eq!(fetch_in(&first, "/v", "en").await.text(), "en #1");
    until_redis_has(&redis, "weir:v:*").await;
    assert_eq!(fetch_in(&first, "/v", "de").await.text(), "de #2");
    within("both variants in redis", async {
        while redis.command(&["KEYS", "weir:v:*"]).lines().count() < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let en = fetch_in(&second, "/v", "en").await;
    assert_eq!(
        (en.text(), cache_status(&en)),
        ("en #1".into(), "weir; hit".into())
    );
    let de = fetch_in(&second, "/v", "de").await;
    assert_eq!(
        (de.text(), cache_status(&de)),
        ("de #2".into(), "weir; hit".into())
    );

    // A successful POST on the first ends every variant, in Redis and in the
    // second's memory.
    let post = Request::post(first.url("/v"))
        .header("host", HOST)
        .body(empty())
        .unwrap();
    assert_eq!(send(&client(), post).await.status, 204);
    within("the invalidation to reach the second instance", async {
        loop {
            let reply = fetch_in(&second, "/v", "de").await;
            if reply.text() != "de #2" {
                assert_eq!(cache_status(&reply), "weir; fwd=miss; stored");
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    // The other variant is gone too: the old one is not found again in Redis.
    let third = instance(backend.addr, &redis.url(), "").await.0;
    let en = fetch_in(&third, "/v", "en").await;
    assert_ne!(
        en.text(),
        "en #1",
        "an invalidated variant came back from Redis"
    );
    assert!(count.load(Ordering::SeqCst) >= 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_in_redis_is_a_miss_not_a_crash() {
    let redis = RedisServer::start();
    let (backend, count) = counting_backend().await;
    let (lb, _) = instance(backend.addr, &redis.url(), "").await;
    // Not weir's encoding; weir's magic with nonsense after it; a body length
    // far beyond max_object_size.
    let mut huge = b"WCO1".to_vec();
    huge.extend_from_slice(&200u16.to_be_bytes());
    huge.extend_from_slice(&[0u8; 24]);
    huge.extend_from_slice(&0u32.to_be_bytes());
    huge.extend_from_slice(&0u32.to_be_bytes());
    huge.extend_from_slice(&(1u64 << 40).to_be_bytes());
    let huge = String::from_utf8_lossy(&huge).into_owned();
    let values = ["hello", "WCO1\u{1}\u{2}", "WCV1", huge.as_str()];
    for (n, value) in values.iter().enumerate() {
        // A path of its own each: nothing in memory, so Redis is read.
        let path = format!("/g{n}");
        redis.command(&["SET", &format!("weir:c:http://{HOST}{path}"), value]);
        let reply = fetch(&lb, &path).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.text(), format!("{path} #{}", n + 1));
    }
    assert_eq!(count.load(Ordering::SeqCst), values.len());
}
