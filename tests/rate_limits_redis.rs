//! Global rate limits through a real Redis: two weir instances together
//! admit what one would, and when Redis goes away each policy does what its
//! `on_redis_error` says — never a 500, never a wait past `redis.timeout`.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::redis::RedisServer;
use support::*;

/// Policies `per_client` (20/s, burst 10) on `/`, and `local`, `deny`,
/// `allow` (1/h, burst 3, each its `on_redis_error`) on their paths.
fn config(redis_url: &str) -> String {
    let mut text = format!(
        "[redis]\nurl = \"{redis_url}\"\ntimeout = \"100ms\"\n\n\
         [rate_limits.per_client]\nrate = \"20/s\"\nburst = 10\nscope = \"global\"\n\n"
    );
    for choice in ["local", "deny", "allow"] {
        text.push_str(&format!(
            "[rate_limits.{choice}]\nrate = \"1/h\"\nburst = 3\nscope = \"global\"\non_redis_error = \"{choice}\"\n\n\
             [[routes]]\nname = \"{choice}\"\npath_prefix = \"/{choice}\"\nupstream = \"app\"\nrate_limit = [\"{choice}\"]\n\n"
        ));
    }
    text.push_str(
        "[[routes]]\nname = \"main\"\nupstream = \"app\"\nrate_limit = [\"per_client\"]\n\n\
         [upstreams.app]\nbackends = [{ address = \"{a}\" }]\n",
    );
    text
}

async fn instance(backend: SocketAddr, redis_url: &str) -> Lb {
    start_lb(&config(redis_url), &[("a", backend)]).await
}

async fn statuses(lb: &Lb, path: &str, count: usize) -> Vec<u16> {
    let client = client();
    let mut statuses = Vec::new();
    for _ in 0..count {
        statuses.push(get(&client, &lb.url(path), None).await.status.as_u16());
    }
    statuses
}

fn passed(statuses: &[u16]) -> usize {
    statuses.iter().filter(|&&s| s == 200).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_together_admit_what_one_would() {
    let redis = RedisServer::start();
    let backend = spawn_named_backend("a").await;
    let first = instance(backend.addr, &redis.url()).await;
    let second = instance(backend.addr, &redis.url()).await;
    // Four clients, two on each instance, each at the policy's rate: four
    // times the rate in all, for 5 s.
    let start = tokio::time::Instant::now();
    let clients = [&first, &second, &first, &second].map(|lb| {
        let url = lb.url("/");
        tokio::spawn(async move {
            let client = client();
            let mut passed = 0;
            for i in 0..100u32 {
                tokio::time::sleep_until(start + Duration::from_millis(50) * i).await;
                match get(&client, &url, None).await.status.as_u16() {
                    200 => passed += 1,
                    429 => {}
                    other => panic!("unexpected status {other}"),
                }
            }
            passed
        })
    });
    let mut total = 0;
    for handle in clients {
        total += handle.await.unwrap();
    }
    // 20/s × 5 s + 10, within 3 %; never more than the time taken allows
    // (a stalled machine stretches the run).
    let allowed = 20.0 * start.elapsed().as_secs_f64() + 10.0;
    assert!(total >= 107, "{total} passed");
    assert!(
        total as f64 <= allowed.max(113.0) + 1.0,
        "{total} passed, {allowed} allowed"
    );
    assert_eq!(backend.request_count(), total);
    let limited = |lb: &Lb| {
        metrics::sample(
            &lb.metrics(),
            "weir_rate_limited_total",
            &[("route", "main"), ("policy", "per_client")],
        )
        .unwrap_or(0.0)
    };
    assert_eq!(limited(&first) + limited(&second), (400 - total) as f64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_in_redis_are_hash_tagged_digests_that_expire() {
    let redis = RedisServer::start();
    let backend = spawn_named_backend("a").await;
    let lb = instance(backend.addr, &redis.url()).await;
    assert_eq!(statuses(&lb, "/deny", 1).await, vec![200]);
    let keys = redis.command(&["KEYS", "weir:rl:*"]);
    let key = keys.lines().next().expect("a key in redis");
    let digest = key
        .strip_prefix("weir:rl:{deny:")
        .and_then(|rest| rest.strip_suffix('}'))
        .unwrap_or_else(|| panic!("unexpected key {key}"));
    assert_eq!(digest.len(), 32);
    assert!(digest.bytes().all(|b| b.is_ascii_hexdigit()));
    // One request of a 1/h policy: back to a full burst in an hour, and
    // expired then.
    let ttl: u64 = redis.command(&["PTTL", key]).parse().unwrap();
    assert!(ttl > 3_590_000 && ttl <= 3_601_000, "{ttl} ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_each_policy_does_what_on_redis_error_says() {
    let mut redis = RedisServer::start();
    let backend = spawn_named_backend("a").await;
    let first = instance(backend.addr, &redis.url()).await;
    let second = instance(backend.addr, &redis.url()).await;
    // Global while Redis answers: three in all, whichever instance.
    for path in ["/local", "/deny", "/allow"] {
        assert_eq!(passed(&statuses(&first, path, 2).await), 2, "{path}");
        assert_eq!(statuses(&second, path, 2).await, vec![200, 429], "{path}");
    }

    redis.stop();
    for lb in [&first, &second] {
        // Each instance alone: its own burst of three.
        assert_eq!(
            statuses(lb, "/local", 5).await,
            vec![200, 200, 200, 429, 429]
        );
        assert_eq!(statuses(lb, "/deny", 5).await, vec![429; 5]);
        assert_eq!(statuses(lb, "/allow", 5).await, vec![200; 5]);
    }
    let errors = metrics::sample(
        &first.metrics(),
        "weir_redis_errors_total",
        &[("use", "rate_limit")],
    )
    .unwrap_or(0.0);
    assert!(errors >= 1.0, "failures are counted");

    // Back to global once Redis answers (empty: every key starts afresh).
    // A 200 on /deny can only come from Redis: each instance takes one.
    redis.restart();
    for lb in [&first, &second] {
        within("the limits to be global again", async {
            while statuses(lb, "/deny", 1).await != [200] {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
    }
    // And they count together: one left of the three.
    assert_eq!(statuses(&second, "/deny", 2).await, vec![200, 429]);
    assert_eq!(statuses(&first, "/deny", 1).await, vec![429]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_never_answers_costs_at_most_its_timeout() {
    // Accepts connections and never says a word.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            connections.push(stream);
        }
    });
    let backend = spawn_named_backend("a").await;
    let lb = instance(backend.addr, &format!("redis://{address}/0")).await;
    let started = std::time::Instant::now();
    assert_eq!(
        statuses(&lb, "/local", 5).await,
        vec![200, 200, 200, 429, 429]
    );
    // The first waits out the 100 ms timeout; the others find Redis resting.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(statuses(&lb, "/allow", 3).await, vec![200; 3]);
    held.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_under_load_turns_no_request_into_an_error() {
    let mut redis = RedisServer::start();
    let backend = spawn_named_backend("a").await;
    let first = instance(backend.addr, &redis.url()).await;
    let second = instance(backend.addr, &redis.url()).await;
    let (killed_tx, killed_rx) = tokio::sync::watch::channel(false);
    // Clients on every route of both instances, until each has sent 100
    // requests after the kill.
    let loads: Vec<_> = [&first, &second]
        .into_iter()
        .flat_map(|lb| ["/", "/local", "/deny", "/allow"].map(|path| lb.url(path)))
        .map(|url| {
            let mut killed = killed_rx.clone();
            tokio::spawn(async move {
                let client = client();
                let mut after_kill = Vec::new();
                while after_kill.len() < 100 {
                    let status = get(&client, &url, None).await.status.as_u16();
                    assert!(status == 200 || status == 429, "{url}: {status}");
                    if *killed.borrow_and_update() {
                        after_kill.push(status);
                    }
                }
                (url, after_kill)
            })
        })
        .collect();
    // Let the load run a moment against Redis, then kill it.
    within("requests to reach redis", async {
        while redis.command(&["DBSIZE"]) == "0" {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    redis.stop();
    killed_tx.send(true).unwrap();
    for load in loads {
        let (url, statuses) = load.await.unwrap();
        if url.ends_with("/deny") {
            // A request already on its way when Redis died may still have
            // been answered by it; after that, every one is refused.
            assert!(
                statuses[2..].iter().all(|&s| s == 429),
                "{url}: {statuses:?}"
            );
        } else if url.ends_with("/allow") {
            assert!(
                statuses[2..].iter().all(|&s| s == 200),
                "{url}: {statuses:?}"
            );
        } else if url.ends_with("/local") {
            // Each instance alone lets at most its burst of three through
            // (after the request that may have been on its way).
            assert!(passed(&statuses[1..]) <= 3, "{url}: {statuses:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_global_policy_tells_exactly_what_is_left() {
    let redis = RedisServer::start();
    let backend = spawn_named_backend("a").await;
    // 3/s: an interval of 333,333.3 µs, not a whole number of microseconds.
    let text = format!(
        "[redis]\nurl = \"{}\"\n\n\
         [rate_limits.odd]\nrate = \"3/s\"\nburst = 2\nscope = \"global\"\n\n\
         [[routes]]\nupstream = \"app\"\nrate_limit = [\"odd\"]\n\n\
         [upstreams.app]\nbackends = [{{ address = \"{{a}}\" }}]\n",
        redis.url()
    );
    let lb = start_lb(&text, &[("a", backend.addr)]).await;
    let client = client();
    let first = get(&client, &lb.url("/"), None).await;
    assert_eq!(first.header("ratelimit"), Some("\"odd\";r=1;t=1"));
    let second = get(&client, &lb.url("/"), None).await;
    assert_eq!(second.status, 200);
    assert_eq!(second.header("ratelimit"), Some("\"odd\";r=0;t=1"));
    assert_eq!(get(&client, &lb.url("/"), None).await.status, 429);
}
