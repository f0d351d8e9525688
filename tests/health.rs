//! Health checks, outlier ejection and panic mode over real sockets: backends that
//! fail their checks or their requests, and where traffic goes meanwhile.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use support::*;
use tokio::sync::mpsc;

/// A backend whose health endpoint and request handling can be broken and mended.
struct Controlled {
    backend: Backend,
    /// `/healthz` answers 200 while set, 503 otherwise.
    passes_checks: Arc<AtomicBool>,
    /// Other paths answer 500 while set, 200 with the name otherwise.
    fails_requests: Arc<AtomicBool>,
    /// One message per `/healthz` request received.
    checks: mpsc::UnboundedReceiver<()>,
}

impl Controlled {
    async fn spawn(name: &'static str) -> Self {
        let passes_checks = Arc::new(AtomicBool::new(true));
        let fails_requests = Arc::new(AtomicBool::new(false));
        let (checked, checks) = mpsc::unbounded_channel();
        let backend = {
            let (passes_checks, fails_requests) = (passes_checks.clone(), fails_requests.clone());
            spawn_backend(move |request| {
                let health = request.uri().path() == "/healthz";
                let passes = passes_checks.load(Ordering::SeqCst);
                let fails = fails_requests.load(Ordering::SeqCst);
                if health {
                    let _ = checked.send(());
                }
                async move {
                    match (health, passes, fails) {
                        (true, true, _) => text(200, "ok"),
                        (true, false, _) => text(503, "sick"),
                        (false, _, true) => text(500, "broken"),
                        (false, _, false) => text(200, name),
                    }
                }
            })
            .await
        };
        Controlled {
            backend,
            passes_checks,
            fails_requests,
            checks,
        }
    }

    /// Waits for `n` health checks that arrive from now on (earlier ones still in
    /// the channel are dropped). The loop probes one at a time, so once check k+1
    /// arrives, the verdict of check k has been applied; one check may have read
    /// the endpoint's state just before it was changed, so callers wait for
    /// threshold + 2.
    async fn await_checks(&mut self, n: usize) {
        while self.checks.try_recv().is_ok() {}
        for _ in 0..n {
            within("a health check", self.checks.recv()).await.unwrap();
        }
    }
}

const CHECKS: &str = "[upstreams.app.health_check]\npath = \"/healthz\"\ninterval = \"50ms\"\ntimeout = \"1s\"\nhealthy_threshold = 2\nunhealthy_threshold = 2\n";

/// Sends `n` sequential GETs; returns the bodies (backend names, or error texts).
async fn bodies(lb: &Lb, n: usize) -> Vec<(u16, String)> {
    let client = client();
    let mut seen = Vec::with_capacity(n);
    for _ in 0..n {
        let reply = get(&client, &lb.url("/"), None).await;
        seen.push((reply.status.as_u16(), reply.text()));
    }
    seen
}

#[tokio::test]
async fn a_backend_failing_its_checks_gets_no_traffic_until_it_passes_again() {
    let mut a = Controlled::spawn("a").await;
    let b = Controlled::spawn("b").await;
    let config = [&one_upstream(&["a", "b"], "") as &str, CHECKS].concat();
    let lb = start_lb(&config, &[("a", a.backend.addr), ("b", b.backend.addr)]).await;
    assert!(bodies(&lb, 4).await.contains(&(200, "a".into())));

    a.passes_checks.store(false, Ordering::SeqCst);
    // Two failed checks mark it down; two more show they were applied.
    a.await_checks(4).await;
    let before = a.backend.request_count();
    assert!(
        bodies(&lb, 10)
            .await
            .iter()
            .all(|r| *r == (200, "b".into()))
    );
    // Only health checks reached it meanwhile.
    let requests = a.backend.requests.lock().unwrap()[before..].to_vec();
    assert!(
        requests.iter().all(|r| r.uri.path() == "/healthz"),
        "{requests:?}"
    );

    a.passes_checks.store(true, Ordering::SeqCst);
    a.await_checks(4).await;
    assert!(bodies(&lb, 4).await.contains(&(200, "a".into())));
}

#[tokio::test]
async fn checks_send_the_configured_host_and_path() {
    let mut a = Controlled::spawn("a").await;
    let config = [
        &one_upstream(&["a"], "") as &str,
        &CHECKS.replace(
            "path = \"/healthz\"",
            "path = \"/healthz\"\nhost = \"app.internal\"",
        ),
    ]
    .concat();
    let _lb = start_lb(&config, &[("a", a.backend.addr)]).await;
    a.await_checks(1).await;
    let check = a.backend.last_request();
    assert_eq!(check.uri.path(), "/healthz");
    assert_eq!(check.headers["host"], "app.internal");
    assert_eq!(check.headers["user-agent"], "weir-health-check");
}

#[tokio::test]
async fn an_initially_unhealthy_backend_waits_for_its_checks() {
    let mut a = Controlled::spawn("a").await;
    a.passes_checks.store(false, Ordering::SeqCst);
    let config = [
        &one_upstream(&["a"], "") as &str,
        CHECKS,
        "initial_state = \"unhealthy\"\n",
    ]
    .concat();
    let lb = start_lb(&config, &[("a", a.backend.addr)]).await;
    // No backend is usable: 503 at once, and the backend never sees the request.
    assert_eq!(bodies(&lb, 3).await[0].0, 503);
    assert!(
        a.backend
            .requests
            .lock()
            .unwrap()
            .iter()
            .all(|r| r.uri.path() == "/healthz")
    );

    a.passes_checks.store(true, Ordering::SeqCst);
    a.await_checks(4).await;
    assert_eq!(bodies(&lb, 3).await, vec![(200, "a".into()); 3]);
}

#[tokio::test]
async fn when_all_are_down_panic_mode_spreads_over_all_of_them() {
    let mut a = Controlled::spawn("a").await;
    let mut b = Controlled::spawn("b").await;
    for extra in ["", "panic_threshold = 50\n"] {
        let config = [&one_upstream(&["a", "b"], extra) as &str, CHECKS].concat();
        let lb = start_lb(&config, &[("a", a.backend.addr), ("b", b.backend.addr)]).await;
        a.passes_checks.store(false, Ordering::SeqCst);
        b.passes_checks.store(false, Ordering::SeqCst);
        a.await_checks(4).await;
        b.await_checks(4).await;
        let seen = bodies(&lb, 4).await;
        if extra.is_empty() {
            assert!(seen.iter().all(|(status, _)| *status == 503), "{seen:?}");
        } else {
            // Round robin over both, failing checks or not.
            assert!(
                seen.contains(&(200, "a".into())) && seen.contains(&(200, "b".into())),
                "{seen:?}"
            );
        }
        a.passes_checks.store(true, Ordering::SeqCst);
        b.passes_checks.store(true, Ordering::SeqCst);
        lb.trigger.trigger();
        within("weir finishes draining", lb.running.wait()).await;
    }
}

#[tokio::test]
async fn a_backend_answering_500_is_ejected_and_comes_back() {
    let a = Controlled::spawn("a").await;
    let b = Controlled::spawn("b").await;
    let config = one_upstream(
        &["a", "b"],
        "outlier_detection = { consecutive_failures = 3, base_ejection_time = \"300ms\" }",
    );
    let lb = start_lb(&config, &[("a", a.backend.addr), ("b", b.backend.addr)]).await;
    a.fails_requests.store(true, Ordering::SeqCst);

    // Round robin sends every other request to a: three 500s in a row eject it.
    let seen = bodies(&lb, 6).await;
    assert_eq!(
        seen.iter().filter(|(s, _)| *s == 500).count(),
        3,
        "{seen:?}"
    );
    let before = a.backend.request_count();
    assert_eq!(bodies(&lb, 10).await, vec![(200, "b".into()); 10]);
    assert_eq!(
        a.backend.request_count(),
        before,
        "an ejected backend got traffic"
    );

    // Mended, it gets traffic again once its ejection is over.
    a.fails_requests.store(false, Ordering::SeqCst);
    within("the ejected backend to return", async {
        while !bodies(&lb, 2).await.contains(&(200, "a".into())) {
            tokio::task::yield_now().await;
        }
    })
    .await;
}

#[tokio::test]
async fn outlier_detection_keeps_the_last_backend_in_rotation() {
    let a = Controlled::spawn("a").await;
    let config = one_upstream(&["a"], "outlier_detection = { consecutive_failures = 1 }");
    let lb = start_lb(&config, &[("a", a.backend.addr)]).await;
    a.fails_requests.store(true, Ordering::SeqCst);
    // With the default 50 % cap a pool of one is never emptied: the backend's own
    // 500 reaches the client every time, never a 503 from weir.
    assert_eq!(bodies(&lb, 5).await, vec![(500, "broken".into()); 5]);
}

#[tokio::test]
async fn a_client_stuck_to_a_backend_that_goes_down_is_moved_with_a_new_cookie() {
    let mut a = Controlled::spawn("a").await;
    let b = Controlled::spawn("b").await;
    let config = [
        &one_upstream(&["a", "b"], "sticky = { cookie = \"srv\" }") as &str,
        CHECKS,
    ]
    .concat();
    let lb = start_lb(&config, &[("a", a.backend.addr), ("b", b.backend.addr)]).await;
    let client = client();
    let get_with = |cookie: Option<String>| {
        let (client, url) = (client.clone(), lb.url("/"));
        async move {
            let mut request = hyper::Request::get(url);
            if let Some(cookie) = cookie {
                request = request.header("cookie", cookie);
            }
            let reply = send(&client, request.body(empty()).unwrap()).await;
            let cookie = reply
                .headers
                .get("set-cookie")
                .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned());
            (reply.text(), cookie)
        }
    };
    // Find a cookie for backend a.
    let cookie_for_a = within("a cookie for a", async {
        loop {
            if let (name, Some(cookie)) = get_with(None).await
                && name == "a"
            {
                return cookie;
            }
        }
    })
    .await;
    assert_eq!(
        get_with(Some(cookie_for_a.clone())).await,
        ("a".into(), None)
    );

    a.passes_checks.store(false, Ordering::SeqCst);
    a.await_checks(4).await;
    let (moved_to, fresh) = get_with(Some(cookie_for_a)).await;
    assert_eq!(moved_to, "b");
    let fresh = fresh.expect("a new cookie for the new backend");
    assert_eq!(get_with(Some(fresh)).await, ("b".into(), None));
}

#[tokio::test]
async fn a_backend_that_comes_back_ramps_up_over_slow_start() {
    let mut a = Controlled::spawn("a").await;
    let b = Controlled::spawn("b").await;
    let config = [
        &one_upstream(&["a", "b"], "slow_start = \"3s\"") as &str,
        CHECKS,
    ]
    .concat();
    let lb = start_lb(&config, &[("a", a.backend.addr), ("b", b.backend.addr)]).await;
    let share_of_a = |seen: &[(u16, String)]| {
        seen.iter().filter(|r| r.1 == "a").count() as f64 / seen.len() as f64
    };
    // At start nothing warms up: round robin halves the traffic exactly.
    assert_eq!(share_of_a(&bodies(&lb, 100).await), 0.5);

    a.passes_checks.store(false, Ordering::SeqCst);
    a.await_checks(4).await;
    a.passes_checks.store(true, Ordering::SeqCst);
    a.await_checks(4).await;
    // Back, at about a tenth of its weight: well under its half.
    let early = share_of_a(&bodies(&lb, 200).await);
    assert!(
        early > 0.0 && early < 0.35,
        "share right after coming back: {early}"
    );
    // The ramp is a matter of time, so time passes here.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(share_of_a(&bodies(&lb, 100).await), 0.5, "warm again");
}
