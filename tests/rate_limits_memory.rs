//! Rate-limit counts stay bounded however many distinct keys come by: every
//! request from a new client address (behind a trusted proxy) is its own key,
//! and weir, a process of its own, keeps its memory while they pass.
//!
//! `WEIR_RATE_LIMIT_KEYS` sets how many distinct clients (50,000 by default;
//! the figure in docs/rate-limits.md was taken with 1,000,000 on a release
//! build: `WEIR_RATE_LIMIT_KEYS=1000000 cargo test --release --test
//! rate_limits_memory`).

mod support;

use std::net::Ipv4Addr;

use http::Request;
use http_body_util::BodyExt;
use support::process::WeirCommand;
use support::*;

const MIB: u64 = 1024 * 1024;
/// Requests in flight at once, on one HTTP/2 connection.
const IN_FLIGHT: u32 = 64;

/// Sends one request from each client address of `clients` (indices into
/// 10.0.0.0/8), all of which must pass.
async fn from_clients(addr: std::net::SocketAddr, clients: std::ops::Range<u32>) {
    let (sender, _connection) = h2c_connect(addr).await;
    let per_worker = clients.len() as u32 / IN_FLIGHT;
    let workers: Vec<_> = (0..IN_FLIGHT)
        .map(|worker| {
            let mut sender = sender.clone();
            let first = clients.start + worker * per_worker;
            let last = if worker == IN_FLIGHT - 1 {
                clients.end
            } else {
                first + per_worker
            };
            tokio::spawn(async move {
                for client in first..last {
                    let address = Ipv4Addr::from(0x0a00_0000 | client);
                    let request = Request::get(format!("http://{addr}/"))
                        .header("x-forwarded-for", address.to_string())
                        .body(empty())
                        .unwrap();
                    let response = sender.send_request(request).await.unwrap();
                    assert_eq!(response.status(), 200, "client {address}");
                    // Read to its end: a stream dropped early is reset, and
                    // too many resets end the connection.
                    response.into_body().collect().await.unwrap();
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distinct_clients_by_the_million_keep_memory_bounded() {
    let keys: u32 = std::env::var("WEIR_RATE_LIMIT_KEYS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(50_000);
    let backend = spawn_named_backend("a").await;
    let admin = free_addr().await;
    let text = format!(
        "[admin]\nlisten = \"{admin}\"\n\n[[listeners]]\nlisten = \"127.0.0.1:0\"\ntrusted_proxies = [\"127.0.0.1/32\"]\n\n\
         [rate_limits.per_client]\nrate = \"100/s\"\nburst = 10\n\n\
         [[routes]]\nupstream = \"app\"\nrate_limit = [\"per_client\"]\n\n\
         [upstreams.app]\nbackends = [{{ address = \"{}\" }}]\n",
        backend.addr
    );
    let weir = WeirCommand::new()
        .config_text("rate-limit-memory", &text)
        .start();
    let addr = weir.listening();
    // What serving needs anyway is in the baseline.
    within_for(
        std::time::Duration::from_secs(60),
        "the warm-up",
        from_clients(addr, 0..10_000),
    )
    .await;
    let before = proc_status(weir.id(), "VmRSS");
    within_for(
        std::time::Duration::from_secs(3_600),
        "requests from every client",
        from_clients(addr, 10_000..10_000 + keys),
    )
    .await;
    let after = proc_status(weir.id(), "VmRSS");
    eprintln!(
        "{keys} distinct clients: RSS {} KiB before, {} KiB after",
        before / 1024,
        after / 1024
    );
    // A key is back to a full burst 100 ms after its request and dropped
    // then: what is held follows the keys of the last moments, not all of
    // them.
    let metrics = get(&client(), &format!("http://{admin}/metrics"), None).await;
    let held = metrics::sample(
        &metrics.text(),
        "weir_rate_limit_keys",
        &[("policy", "per_client")],
    )
    .expect("the keys gauge");
    eprintln!("keys held at the end: {held}");
    assert!(
        held < f64::from(keys.min(100_000)) / 2.0,
        "{held} keys held"
    );
    // A million kept entries would be 16 MiB and more.
    assert!(
        after <= before + 16 * MIB,
        "RSS grew from {} KiB to {} KiB",
        before / 1024,
        after / 1024
    );
}
