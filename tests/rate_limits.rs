//! Rate limits on one instance: exact to the request, per key, with their
//! headers, never forwarding what they refuse, and kept across a reload.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use hyper::Request;
use support::*;

/// A route `app` limited by the policies `limits` (TOML of `[rate_limits.*]`
/// tables), listed in `names`.
fn limited(limits: &str, names: &[&str], extra_listener: &str) -> String {
    let list: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    format!(
        "{}{limits}\n{}",
        timed_listener(extra_listener),
        one_upstream(&["a"], "")
    )
    .replace(
        "upstream = \"app\"\n",
        &format!("upstream = \"app\"\nrate_limit = [{}]\n", list.join(", ")),
    )
}

async fn get_with(lb: &Lb, headers: &[(&str, &str)]) -> Reply {
    let mut request = Request::get(lb.url("/"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    send(&client(), request.body(empty()).unwrap()).await
}

fn limited_count(lb: &Lb, route: &str, policy: &str) -> f64 {
    metrics::sample(
        &lb.metrics(),
        "weir_rate_limited_total",
        &[("route", route), ("policy", policy)],
    )
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_twice_as_fast_as_the_rate_gets_rate_times_time_plus_burst() {
    let backend = spawn_named_backend("a").await;
    let text = limited(
        "[rate_limits.per_client]\nrate = \"100/s\"\nburst = 10\n",
        &["per_client"],
        "",
    );
    let lb = start_lb(&text, &[("a", backend.addr)]).await;
    let client = client();
    // 1,000 requests over 5 s, one every 5 ms on schedule: twice the rate.
    let start = tokio::time::Instant::now();
    let mut passed = 0;
    let mut refused = 0;
    for i in 0..1_000u32 {
        tokio::time::sleep_until(start + Duration::from_millis(5) * i).await;
        let reply = get(&client, &lb.url("/"), None).await;
        match reply.status.as_u16() {
            200 => passed += 1,
            429 => refused += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    // 100/s × 5 s + 10, within 2 %; never more than the time taken allows
    // (a stalled machine stretches the run).
    let allowed = 100.0 * start.elapsed().as_secs_f64() + 10.0;
    assert!(passed >= 500, "{passed} passed");
    assert!(
        passed as f64 <= allowed.max(520.0) + 1.0,
        "{passed} passed, {allowed} allowed"
    );
    assert_eq!(passed + refused, 1_000);
    assert_eq!(
        backend.request_count(),
        passed,
        "a refused request is never forwarded"
    );
    assert_eq!(limited_count(&lb, "route-0", "per_client"), refused as f64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_limited_apart_and_a_missing_key_is_one_shared_key() {
    let backend = spawn_named_backend("a").await;
    let text = limited(
        "[rate_limits.per_key]\nrate = \"1/h\"\nburst = 3\nkey = \"header:x-api-key\"\n",
        &["per_key"],
        "",
    );
    let lb = start_lb(&text, &[("a", backend.addr)]).await;
    let statuses = |key: Option<&'static str>| {
        let lb = &lb;
        async move {
            let mut statuses = Vec::new();
            for _ in 0..5 {
                let headers: Vec<(&str, &str)> =
                    key.map(|k| ("x-api-key", k)).into_iter().collect();
                statuses.push(get_with(lb, &headers).await.status.as_u16());
            }
            statuses
        }
    };
    let burst = vec![200, 200, 200, 429, 429];
    assert_eq!(statuses(Some("alice")).await, burst);
    assert_eq!(
        statuses(Some("bob")).await,
        burst,
        "another key has its own burst"
    );
    assert_eq!(statuses(None).await, burst);
    assert_eq!(
        statuses(None).await,
        vec![429; 5],
        "requests without the header share one key"
    );
    assert_eq!(backend.request_count(), 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_tell_the_policy_what_is_left_and_when_to_come_back() {
    let backend = spawn_named_backend("a").await;
    let text = limited(
        "[rate_limits.per_client]\nrate = \"2/m\"\nburst = 2\n",
        &["per_client"],
        "",
    );
    let lb = start_lb(&text, &[("a", backend.addr)]).await;
    let first = get_with(&lb, &[]).await;
    assert_eq!(first.status, 200);
    assert_eq!(
        first.header("ratelimit-policy"),
        Some("\"per_client\";q=2;w=60")
    );
    // One more may pass now; a full burst is back in 30 s.
    assert_eq!(first.header("ratelimit"), Some("\"per_client\";r=1;t=30"));
    assert_eq!(first.header("retry-after"), None);
    let second = get_with(&lb, &[]).await;
    assert_eq!(second.header("ratelimit"), Some("\"per_client\";r=0;t=60"));
    let refused = get_with(&lb, &[]).await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.text(), "429 too many requests\n");
    assert_eq!(refused.header("retry-after"), Some("30"));
    assert_eq!(refused.header("ratelimit"), Some("\"per_client\";r=0;t=30"));
    assert_eq!(
        refused.header("ratelimit-policy"),
        Some("\"per_client\";q=2;w=60")
    );
    assert_eq!(backend.request_count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_policy_must_allow_and_a_refusal_costs_the_others_nothing() {
    let backend = spawn_named_backend("a").await;
    let text = limited(
        "[rate_limits.per_client]\nrate = \"1/h\"\nburst = 5\n\n\
         [rate_limits.per_user]\nrate = \"1/h\"\nburst = 1\nkey = \"cookie:user\"\n",
        &["per_client", "per_user"],
        "",
    );
    let lb = start_lb(&text, &[("a", backend.addr)]).await;
    let lb = &lb;
    let as_user = move |user: &'static str| async move { get_with(lb, &[("cookie", user)]).await };
    assert_eq!(as_user("user=u1").await.status, 200);
    // u1 is over its own limit: refused, and the client's count is given back.
    for _ in 0..10 {
        let refused = as_user("user=u1").await;
        assert_eq!(refused.status, 429);
        assert_eq!(
            refused.header("ratelimit-policy"),
            Some("\"per_client\";q=1;w=3600, \"per_user\";q=1;w=3600")
        );
    }
    // So the client still has four of its five.
    for user in ["user=u2", "user=u3", "user=u4", "user=u5"] {
        assert_eq!(as_user(user).await.status, 200, "{user}");
    }
    let over = as_user("user=u6").await;
    assert_eq!(over.status, 429);
    assert_eq!(
        over.header("ratelimit")
            .map(|v| v.starts_with("\"per_client\";r=0;")),
        Some(true)
    );
    assert_eq!(backend.request_count(), 5);
    assert_eq!(limited_count(lb, "route-0", "per_user"), 10.0);
    assert_eq!(limited_count(lb, "route-0", "per_client"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_trusted_proxy_the_forwarded_client_is_the_key() {
    let backend = spawn_named_backend("a").await;
    let text = limited(
        "[rate_limits.per_client]\nrate = \"1/h\"\nburst = 1\n",
        &["per_client"],
        "trusted_proxies = [\"127.0.0.1/32\"]",
    );
    let lb = start_lb(&text, &[("a", backend.addr)]).await;
    let lb = &lb;
    let from = move |client: &'static str| async move {
        get_with(lb, &[("x-forwarded-for", client)]).await
    };
    assert_eq!(from("198.51.100.1").await.status, 200);
    assert_eq!(from("198.51.100.1").await.status, 429);
    assert_eq!(from("198.51.100.2").await.status, 200);
    // A client's own claim past the trusted hop does not make it another client.
    assert_eq!(from("203.0.113.9, 198.51.100.2").await.status, 429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_routes_and_their_answers_are_untouched() {
    let backend = spawn_named_backend("a").await;
    let text = "[rate_limits.strict]\nrate = \"1/h\"\n\n\
         [[routes]]\nname = \"open\"\npath_prefix = \"/open\"\nupstream = \"app\"\n\n\
         [[routes]]\nname = \"limited\"\nupstream = \"app\"\nrate_limit = [\"strict\"]\n\n\
         [upstreams.app]\nbackends = [{ address = \"{a}\" }]\n";
    let lb = start_lb(text, &[("a", backend.addr)]).await;
    let client = client();
    assert_eq!(get(&client, &lb.url("/x"), None).await.status, 200);
    assert_eq!(get(&client, &lb.url("/x"), None).await.status, 429);
    for _ in 0..5 {
        let open = get(&client, &lb.url("/open"), None).await;
        assert_eq!(open.status, 200);
        assert!(!open.headers.contains_key("ratelimit-policy"));
        assert!(!open.headers.contains_key("ratelimit"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_counts_of_a_policy_that_stays_and_applies_a_new_rate_at_once() {
    let backend = spawn_named_backend("a").await;
    let config = |rate: &str, addr: SocketAddr| {
        let text = format!(
            "[[listeners]]\nlisten = \"127.0.0.1:0\"\n\n\
             [rate_limits.kept]\nrate = \"1/h\"\nkey = \"header:x-k\"\n\n\
             [rate_limits.changed]\nrate = \"{rate}\"\nkey = \"header:x-c\"\n\n\
             [[routes]]\nname = \"k\"\npath_prefix = \"/k\"\nupstream = \"app\"\nrate_limit = [\"kept\"]\n\n\
             [[routes]]\nname = \"c\"\nupstream = \"app\"\nrate_limit = [\"changed\"]\n\n\
             [upstreams.app]\nbackends = [{{ address = \"{addr}\" }}]\n"
        );
        weir::config::parse(&text, "test.toml").unwrap()
    };
    let lb = start_lb_config(config("1/h", backend.addr)).await;
    let client = client();
    let status = |path: &'static str| {
        let client = &client;
        let lb = &lb;
        async move { get(client, &lb.url(path), None).await.status.as_u16() }
    };
    assert_eq!(status("/k").await, 200);
    assert_eq!(status("/k").await, 429);
    assert_eq!(status("/c").await, 200);
    assert_eq!(status("/c").await, 429);

    let control = lb.running.control();
    within("a reload", control.apply(config("1000/s", backend.addr)))
        .await
        .unwrap();
    assert_eq!(status("/k").await, 429, "the kept policy remembers its key");
    // An hour's wait under the old rate is one interval under the new one:
    // the key is as exhausted as 1000/s can make it, 1 ms from passing.
    assert_eq!(status("/c").await, 429);
    tokio::time::sleep(Duration::from_millis(2)).await;
    assert_eq!(status("/c").await, 200, "the new rate applies at once");
}
