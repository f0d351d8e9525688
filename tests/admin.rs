//! The admin API over real sockets: health and readiness, `/status`, `POST /reload`,
//! and `/metrics` — parsed by promtool, with exact counts after known traffic.

mod support;

use std::net::SocketAddr;

use hyper::Request;
use support::*;

/// weir with an admin listener, in front of `backends` (placeholders as in
/// `start_lb`); returns the admin address too.
async fn start_with_admin(extra: &str, backends: &[(&str, SocketAddr)]) -> (Lb, SocketAddr) {
    let admin = free_addr().await;
    let names: Vec<&str> = backends.iter().map(|(name, _)| *name).collect();
    let text = format!(
        "[admin]\nlisten = \"{admin}\"\n\n[[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n{}",
        one_upstream(&names, extra)
    );
    (start_lb(&text, backends).await, admin)
}

async fn admin_get(admin: SocketAddr, path: &str) -> Reply {
    get(&client(), &format!("http://{admin}{path}"), None).await
}

/// The value of the sample whose line starts with `series` (name and labels).
fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test]
async fn health_readiness_and_unknown_paths() {
    let backend = spawn_named_backend("a").await;
    let (lb, admin) = start_with_admin("", &[("a", backend.addr)]).await;
    assert_eq!(admin_get(admin, "/healthz").await.status, 200);
    let ready = admin_get(admin, "/readyz").await;
    assert_eq!(
        (ready.status.as_u16(), ready.text()),
        (200, "ready\n".into())
    );
    assert_eq!(admin_get(admin, "/nothing").await.status, 404);
    let post = Request::post(format!("http://{admin}/metrics"))
        .body(empty())
        .unwrap();
    assert_eq!(send(&client(), post).await.status, 405);

    // Admin paths on the public listener are proxied like any other path.
    let reply = get(&client(), &lb.url("/metrics"), None).await;
    assert_eq!(reply.text(), "a");
    assert_eq!(backend.last_request().uri.path(), "/metrics");
}

#[tokio::test]
async fn readiness_is_503_while_draining() {
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let (held_tx, mut held) = tokio::sync::mpsc::unbounded_channel();
    let backend = {
        let release = release.clone();
        spawn_backend(move |_| {
            let (release, held_tx) = (release.clone(), held_tx.clone());
            async move {
                let _ = held_tx.send(());
                release.notified().await;
                text(200, "late")
            }
        })
        .await
    };
    let (lb, admin) = start_with_admin("", &[("a", backend.addr)]).await;
    let url = lb.url("/");
    let parked = tokio::spawn(async move { get(&client(), &url, None).await });
    within("the held request", held.recv()).await.unwrap();
    lb.trigger.trigger();
    // The drain waits for the held request; meanwhile readiness says so.
    let ready = admin_get(admin, "/readyz").await;
    assert_eq!(
        (ready.status.as_u16(), ready.text()),
        (503, "draining\n".into())
    );
    release.notify_one();
    assert_eq!(
        within("the held request", parked).await.unwrap().status,
        200
    );
    within("weir finishes draining", lb.running.wait()).await;
}

#[tokio::test]
async fn readiness_waits_for_the_first_checks_of_backends_that_start_unhealthy() {
    let (checked_tx, mut checked) = tokio::sync::mpsc::unbounded_channel();
    let gate = std::sync::Arc::new(tokio::sync::Notify::new());
    let backend = {
        let gate = gate.clone();
        spawn_backend(move |_| {
            let (gate, checked_tx) = (gate.clone(), checked_tx.clone());
            async move {
                // The first check is held until the test has seen readiness wait.
                gate.notified().await;
                let _ = checked_tx.send(());
                text(200, "ok")
            }
        })
        .await
    };
    let (_lb, admin) = start_with_admin(
        "[upstreams.app.health_check]\ninitial_state = \"unhealthy\"\ninterval = \"50ms\"\n",
        &[("a", backend.addr)],
    )
    .await;
    assert_eq!(admin_get(admin, "/readyz").await.status, 503);
    gate.notify_one();
    within("the first check", checked.recv()).await.unwrap();
    within("readiness", async {
        while admin_get(admin, "/readyz").await.status != 200 {
            gate.notify_one();
            tokio::task::yield_now().await;
        }
    })
    .await;
}

#[tokio::test]
async fn status_describes_listeners_routes_and_backends() {
    let a = spawn_named_backend("a").await;
    let b = spawn_named_backend("b").await;
    let (lb, admin) = start_with_admin(
        "strategy = \"least_connections\"",
        &[("a", a.addr), ("b", b.addr)],
    )
    .await;
    let reply = admin_get(admin, "/status").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.headers["content-type"], "application/json");
    let status: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(status["draining"], false);
    assert_eq!(status["listeners"][0]["name"], "public");
    assert_eq!(status["listeners"][0]["address"], lb.addr.to_string());
    assert_eq!(status["routes"][0]["upstream"], "app");
    let upstream = &status["upstreams"][0];
    assert_eq!(
        (upstream["name"].as_str(), upstream["strategy"].as_str()),
        (Some("app"), Some("least_connections"))
    );
    assert_eq!(upstream["usable_backends"], 2);
    let backend = &upstream["backends"][0];
    assert_eq!(backend["address"], a.addr.to_string());
    for (field, value) in [
        ("weight", serde_json::json!(1)),
        ("effective_weight", serde_json::json!(1.0)),
        ("healthy", serde_json::json!(true)),
        ("ejected", serde_json::json!(false)),
        ("usable", serde_json::json!(true)),
        ("active_requests", serde_json::json!(0)),
    ] {
        assert_eq!(backend[field], value, "{field}");
    }
}

#[tokio::test]
async fn post_reload_applies_the_file_or_answers_400_with_the_problem() {
    let a = spawn_named_backend("a").await;
    let b = spawn_named_backend("b").await;
    let admin = free_addr().await;
    let dir = std::env::temp_dir().join(format!("weir-admin-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("weir.toml");
    let text = |backend: SocketAddr, strategy: &str| {
        format!(
            "[admin]\nlisten = \"{admin}\"\n\n[[listeners]]\nlisten = \"127.0.0.1:0\"\n\n[[routes]]\nupstream = \"app\"\n\n\
             [upstreams.app]\nstrategy = \"{strategy}\"\nbackends = [{{ address = \"{backend}\" }}]\n"
        )
    };
    std::fs::write(&path, text(a.addr, "round_robin")).unwrap();
    let config = weir::config::load(&path).unwrap();
    let (trigger, shutdown) = weir::shutdown::channel();
    let running = within(
        "weir to start",
        weir::start_from(config, Some(path.clone()), shutdown),
    )
    .await
    .unwrap();
    let url = format!("http://{}/", running.addresses[0]);
    let reload = || async {
        send(
            &client(),
            Request::post(format!("http://{admin}/reload"))
                .body(empty())
                .unwrap(),
        )
        .await
    };

    std::fs::write(&path, text(b.addr, "round_robin")).unwrap();
    let reply = reload().await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let summary: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(
        (
            summary["result"].as_str(),
            summary["listeners_kept"].as_u64()
        ),
        (Some("success"), Some(1))
    );
    assert_eq!(get(&client(), &url, None).await.text(), "b");

    std::fs::write(&path, text(a.addr, "fastest")).unwrap();
    let reply = reload().await;
    assert_eq!(reply.status, 400);
    let failure: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    let error = failure["error"].as_str().unwrap();
    assert!(
        error.contains(&format!("{}:11:12: `strategy`", path.display())),
        "{error}"
    );
    assert_eq!(
        get(&client(), &url, None).await.text(),
        "b",
        "a failed reload changed the config"
    );

    let metrics = admin_get(admin, "/metrics").await.text();
    assert_eq!(
        sample(&metrics, "weir_config_reloads_total{result=\"success\"}"),
        Some(2.0),
        "the start and one reload"
    );
    assert_eq!(
        sample(&metrics, "weir_config_reloads_total{result=\"failure\"}"),
        Some(1.0)
    );
    assert!(
        sample(
            &metrics,
            "weir_config_last_reload_success_timestamp_seconds"
        )
        .unwrap()
            > 1.7e9
    );
    trigger.trigger();
    within("weir finishes draining", running.wait()).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn metrics_count_known_traffic_exactly_and_pass_promtool() {
    let a = spawn_named_backend("a").await;
    let failing = spawn_backend(|_| async { text(503, "no") }).await;
    let text = format!(
        "[admin]\nlisten = \"{}\"\n\n[[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n\
         [[routes]]\nname = \"api\"\npath_prefix = \"/api\"\nupstream = \"app\"\n\n\
         [[routes]]\nname = \"broken\"\npath_prefix = \"/broken\"\nupstream = \"bad\"\n\n\
         [upstreams.app]\nbackends = [{{ address = \"{}\" }}]\n\n\
         [upstreams.bad]\nbackends = [{{ address = \"{}\" }}]\n",
        free_addr().await,
        a.addr,
        failing.addr
    );
    let config = weir::config::parse(&text, "metrics.toml").unwrap();
    let admin = config.admin.as_ref().unwrap().listen;
    let lb = start_lb_config(config).await;
    let client = client();
    for _ in 0..5 {
        assert_eq!(get(&client, &lb.url("/api/x"), None).await.status, 200);
    }
    for _ in 0..2 {
        assert_eq!(get(&client, &lb.url("/broken"), None).await.status, 503);
    }
    for _ in 0..3 {
        assert_eq!(get(&client, &lb.url("/elsewhere"), None).await.status, 404);
    }
    // Admin requests are not counted.
    assert_eq!(admin_get(admin, "/healthz").await.status, 200);

    let reply = admin_get(admin, "/metrics").await;
    assert_eq!(reply.status, 200);
    assert!(
        reply.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let metrics = reply.text();
    let app = a.addr.to_string();
    let bad = failing.addr.to_string();
    let expected = [
        ("weir_requests_total{code=\"200\",listener=\"public\",route=\"api\",upstream=\"app\"}".to_owned(), 5.0),
        ("weir_requests_total{code=\"503\",listener=\"public\",route=\"broken\",upstream=\"bad\"}".to_owned(), 2.0),
        ("weir_requests_total{code=\"404\",listener=\"public\",route=\"\",upstream=\"\"}".to_owned(), 3.0),
        ("weir_request_duration_seconds_count{listener=\"public\",upstream=\"app\"}".to_owned(), 5.0),
        ("weir_request_duration_seconds_count{listener=\"public\",upstream=\"\"}".to_owned(), 3.0),
        (format!("weir_upstream_requests_total{{backend=\"{app}\",code=\"200\",upstream=\"app\"}}"), 5.0),
        (format!("weir_upstream_requests_total{{backend=\"{bad}\",code=\"503\",upstream=\"bad\"}}"), 2.0),
        (format!("weir_upstream_request_duration_seconds_count{{backend=\"{app}\",upstream=\"app\"}}"), 5.0),
        (format!("weir_upstream_active_requests{{backend=\"{app}\",upstream=\"app\"}}"), 0.0),
        (format!("weir_backend_healthy{{backend=\"{app}\",upstream=\"app\"}}"), 1.0),
        ("weir_upstream_healthy_backends{upstream=\"app\"}".to_owned(), 1.0),
        ("weir_connections_total{listener=\"public\"}".to_owned(), 1.0),
        ("weir_connections_active{listener=\"public\"}".to_owned(), 1.0),
    ];
    for (series, value) in expected {
        assert_eq!(
            sample(&metrics, &series),
            Some(value),
            "{series}\n--- exposition ---\n{metrics}"
        );
    }
    for name in [
        "weir_retries_total",
        "weir_retry_budget_exhausted_total",
        "weir_backend_ejections_total",
        "weir_backend_health_transitions_total",
        "process_resident_memory_bytes",
        "process_open_fds",
    ] {
        assert!(
            metrics.contains(&format!("# TYPE {name} ")),
            "{name} missing"
        );
    }
    // No path, client address or header value ever becomes a label value.
    assert!(!metrics.contains("/api/x") && !metrics.contains("/elsewhere"));

    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; scripts/test installs it)");
    use std::io::Write;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let output = promtool.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
