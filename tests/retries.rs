//! Retries over real sockets: what is tried again (and where), what never is, the
//! budget, the overall deadline, and a backend killed under load.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use hyper::Request;
use support::*;
use tokio::io::AsyncReadExt;

/// A backend that reads a request head and `body_len` bytes of body, counts the
/// request, then resets the connection without answering.
async fn spawn_resetting_backend(body_len: usize, seen: Arc<AtomicUsize>) -> Backend {
    spawn_raw_backend(move |mut stream| {
        let seen = seen.clone();
        async move {
            let mut body = vec![0u8; body_len];
            if stream.read_exact(&mut body).await.is_ok() {
                seen.fetch_add(1, Ordering::SeqCst);
            }
            let _ = stream.set_zero_linger();
        }
    })
    .await
}

fn with_retries(names: &[&str], retries: &str) -> String {
    one_upstream(names, &format!("retries = {{ {retries} }}"))
}

async fn request(lb: &Lb, method: &str, body: &'static [u8]) -> Reply {
    let request = Request::builder()
        .method(method)
        .uri(lb.url("/"))
        .body(full(Bytes::from_static(body)))
        .unwrap();
    send(&client(), request).await
}

#[tokio::test]
async fn a_refused_connection_is_retried_on_another_backend_by_default() {
    let good = spawn_named_backend("good").await;
    let refused = refused_addr().await;
    let lb = start_lb(
        &one_upstream(&["refused", "good"], ""),
        &[("refused", refused), ("good", good.addr)],
    )
    .await;
    // Round robin sends every other request to the refusing port first.
    for _ in 0..6 {
        let reply = request(&lb, "POST", b"data").await;
        assert_eq!((reply.status.as_u16(), reply.text()), (200, "good".into()));
    }
    assert_eq!(good.request_count(), 6);
}

#[tokio::test]
async fn a_post_whose_body_reached_the_backend_is_never_retried() {
    let seen = Arc::new(AtomicUsize::new(0));
    let a = spawn_resetting_backend(4, seen.clone()).await;
    let b = spawn_resetting_backend(4, seen.clone()).await;
    let lb = start_lb(
        &with_retries(&["a", "b"], "attempts = 3"),
        &[("a", a.addr), ("b", b.addr)],
    )
    .await;
    let reply = request(&lb, "POST", b"data").await;
    assert_eq!(reply.status, 502);
    assert_eq!(seen.load(Ordering::SeqCst), 1, "the POST was sent twice");
}

#[tokio::test]
async fn an_idempotent_request_is_replayed_on_another_backend_with_its_body() {
    let seen = Arc::new(AtomicUsize::new(0));
    let resetting = spawn_resetting_backend(4, seen.clone()).await;
    let good = spawn_backend(|request| async move {
        use http_body_util::BodyExt;
        let body = request.into_body().collect().await.unwrap().to_bytes();
        text(200, body)
    })
    .await;
    let lb = start_lb(
        &with_retries(&["resetting", "good"], "attempts = 1"),
        &[("resetting", resetting.addr), ("good", good.addr)],
    )
    .await;
    for _ in 0..4 {
        let reply = request(&lb, "PUT", b"data").await;
        assert_eq!((reply.status.as_u16(), reply.text()), (200, "data".into()));
    }
    // Some started on the resetting backend (the retry's pick advances round
    // robin too, so it may be all of them); every one ended on the good one.
    assert!(seen.load(Ordering::SeqCst) >= 1);
    assert_eq!(good.request_count(), 4);
}

#[tokio::test]
async fn a_body_over_max_body_bytes_is_not_retried_once_sent() {
    let seen = Arc::new(AtomicUsize::new(0));
    let a = spawn_resetting_backend(4, seen.clone()).await;
    let b = spawn_resetting_backend(4, seen.clone()).await;
    let lb = start_lb(
        &with_retries(&["a", "b"], "attempts = 2, max_body_bytes = 3"),
        &[("a", a.addr), ("b", b.addr)],
    )
    .await;
    assert_eq!(request(&lb, "PUT", b"data").await.status, 502);
    assert_eq!(seen.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_503_from_one_backend_is_retried_on_another() {
    let unavailable = spawn_backend(|_| async { text(503, "busy") }).await;
    let good = spawn_named_backend("good").await;
    let lb = start_lb(
        &with_retries(&["unavailable", "good"], "attempts = 1"),
        &[("unavailable", unavailable.addr), ("good", good.addr)],
    )
    .await;
    for _ in 0..4 {
        let reply = request(&lb, "GET", b"").await;
        assert_eq!((reply.status.as_u16(), reply.text()), (200, "good".into()));
    }
    assert!(unavailable.request_count() >= 1);
    assert_eq!(good.request_count(), 4);
    // A POST is not idempotent: its 503 is the answer.
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(request(&lb, "POST", b"x").await.status.as_u16());
    }
    got.sort();
    assert_eq!(got, [200, 503]);
}

#[tokio::test]
async fn the_budget_caps_retries_when_every_backend_fails() {
    let a = spawn_backend(|_| async { text(503, "a") }).await;
    let b = spawn_backend(|_| async { text(503, "b") }).await;
    let lb = start_lb(
        &with_retries(
            &["a", "b"],
            "attempts = 2, budget = 0.2, min_retries_per_second = 0, backoff = \"0ms\"",
        ),
        &[("a", a.addr), ("b", b.addr)],
    )
    .await;
    for _ in 0..100 {
        assert_eq!(request(&lb, "GET", b"").await.status, 503);
    }
    // 100 requests: at most 20 % more tries, and the budget was used.
    let tries = a.request_count() + b.request_count();
    assert!(
        (101..=120).contains(&tries),
        "{tries} tries for 100 requests"
    );
}

#[tokio::test]
async fn the_request_deadline_caps_all_tries() {
    let slow = spawn_backend(|_| async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        text(200, "late")
    })
    .await;
    let lb = start_lb(
        &one_upstream(
            &["slow"],
            "timeouts = { response = \"20s\", request = \"200ms\" }\nretries = { attempts = 3 }",
        ),
        &[("slow", slow.addr)],
    )
    .await;
    let reply = within_for(
        Duration::from_secs(5),
        "the deadline",
        request(&lb, "GET", b""),
    )
    .await;
    assert_eq!(reply.status, 504);
}

#[tokio::test]
async fn a_backend_killed_under_load_costs_no_request_and_comes_back() {
    let a = spawn_named_backend("a").await;
    let b = spawn_named_backend("b").await;
    let c = spawn_named_backend("c").await;
    let config = [
        &with_retries(&["a", "b", "c"], "attempts = 2, budget = 0.5") as &str,
        "\n[upstreams.app.health_check]\ninterval = \"100ms\"\nhealthy_threshold = 2\nunhealthy_threshold = 2\n",
    ]
    .concat();
    let lb = start_lb(&config, &[("a", a.addr), ("b", b.addr), ("c", c.addr)]).await;

    // 4 clients × 500 GETs; b is killed once 400 have been answered.
    let answered = Arc::new(AtomicUsize::new(0));
    let halfway = Arc::new(tokio::sync::Notify::new());
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (url, answered, halfway) = (lb.url("/"), answered.clone(), halfway.clone());
        clients.spawn(async move {
            let client = client();
            let mut failures = Vec::new();
            for _ in 0..500 {
                let reply = get(&client, &url, None).await;
                if reply.status != 200 {
                    failures.push((reply.status, reply.text()));
                }
                if answered.fetch_add(1, Ordering::SeqCst) + 1 == 400 {
                    halfway.notify_one();
                }
            }
            failures
        });
    }
    within("400 answers", halfway.notified()).await;
    b.kill();
    let b_served = b.request_count();
    // The checks mark it down within unhealthy_threshold × interval + 1 s. Health
    // has no event to await from outside: its state is polled every 10 ms.
    let snapshot = lb.running.control().snapshot();
    let b_state = snapshot.upstreams[0].backends[1].state.clone();
    within_for(
        Duration::from_millis(2 * 100 + 1000),
        "b marked down",
        async {
            while b_state.is_healthy() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        },
    )
    .await;
    let mut failures = Vec::new();
    while let Some(result) =
        within_for(Duration::from_secs(60), "the load", clients.join_next()).await
    {
        failures.extend(result.unwrap());
    }
    assert_eq!(failures, [], "requests failed while a backend died");
    assert!(a.request_count() + c.request_count() + b_served >= 2000);

    // b comes back on its address: the checks bring it into rotation again.
    let back = spawn_backend_at(b.addr, |_| async { text(200, "b again") }).await;
    let client = client();
    within("b back in rotation", async {
        while get(&client, &lb.url("/"), None).await.text() != "b again" {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(back.request_count() >= 2, "checks, then traffic");
}
