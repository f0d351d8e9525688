//! The status page and its history over real sockets: the page and its
//! script come from the binary with headers that keep them to themselves;
//! `/status/history` has a ring per backend, and a backend that goes down
//! becomes an event.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::*;

async fn start_with_admin(backends: &[(&str, SocketAddr)]) -> (Lb, SocketAddr) {
    let admin = free_addr().await;
    let names: Vec<&str> = backends.iter().map(|(name, _)| *name).collect();
    let text = format!(
        "[admin]\nlisten = \"{admin}\"\n\n{}",
        one_upstream(
            &names,
            "[upstreams.app.health_check]\npath = \"/\"\ninterval = \"200ms\"\nunhealthy_threshold = 1\n"
        )
    );
    (start_lb(&text, backends).await, admin)
}

async fn history(admin: SocketAddr) -> serde_json::Value {
    let reply = get(&client(), &format!("http://{admin}/status/history"), None).await;
    assert_eq!(reply.status, 200);
    serde_json::from_slice(&reply.body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_comes_from_the_binary_and_keeps_to_itself() {
    let backend = spawn_named_backend("a").await;
    let (_lb, admin) = start_with_admin(&[("a", backend.addr)]).await;
    let page = get(&client(), &format!("http://{admin}/"), None).await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let csp = page.header("content-security-policy").unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert_eq!(page.header("x-frame-options"), Some("DENY"));
    let html = page.text();
    assert!(html.contains("<script src=\"/status/page.js\">"));
    // Nothing from elsewhere.
    assert!(!html.contains("http://") && !html.contains("https://"));
    let script = get(&client(), &format!("http://{admin}/status/page.js"), None).await;
    assert_eq!(
        script.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert!(script.text().contains("/status/history"));
    assert!(!script.text().contains("https://"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_counts_each_second_and_tells_when_a_backend_goes_down() {
    let a = spawn_named_backend("a").await;
    let b = spawn_named_backend("b").await;
    let (lb, admin) = start_with_admin(&[("a", a.addr), ("b", b.addr)]).await;
    let client = client();
    // Traffic for a few seconds, and samples of it.
    let seen = within_for(Duration::from_secs(20), "samples with traffic", async {
        loop {
            for _ in 0..20 {
                get(&client, &lb.url("/"), None).await;
            }
            let history = history(admin).await;
            let busy =
                history["backends"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|s| {
                        s["samples"].as_array().unwrap().iter().any(|sample| {
                            sample[1].as_f64().unwrap() > 0.0 && sample[3].is_number()
                        })
                    })
                    .count();
            if busy == 2 {
                break history;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert_eq!(seen["columns"][1], "requests_per_second");

    b.kill();
    let event = format!("app {}: unhealthy", b.addr);
    within_for(
        Duration::from_secs(20),
        "the event of b going down",
        async {
            loop {
                let history = history(admin).await;
                let events = history["events"].as_array().unwrap();
                if events.iter().any(|e| e["text"] == event.as_str()) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        },
    )
    .await;
}
