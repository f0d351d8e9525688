//! Backends by name, against a real name server on loopback whose records the
//! tests change while weir runs: addresses that come and go, a failing server,
//! a name that disappears, SRV weights and priorities, IPv6.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use http::StatusCode;
use support::dns::{Answer, DnsServer, SrvRecord};
use support::*;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// A port free on 127.0.0.1, for backends that share it on other loopback
/// addresses (a name's addresses all get the entry's port).
async fn shared_port() -> u16 {
    free_addr().await.port()
}

/// A backend answering its name, at `ip:port`.
async fn named_backend_at(ip: &str, port: u16, name: &'static str) -> Backend {
    let addr = SocketAddr::new(self::ip(ip), port);
    spawn_backend_at(addr, move |_request| async move { text(200, name) }).await
}

/// weir with one upstream `app` whose `backends` are given, asking `dns` only.
async fn start_with(dns: &DnsServer, backends: &str, resolver: &str) -> Lb {
    start_lb(
        &format!(
            "[[routes]]\nupstream = \"app\"\n\n[upstreams.app]\nbackends = [{backends}]\n\n\
             [resolver]\nnameservers = [\"{}\"]\ntimeout = \"500ms\"\n{resolver}\n",
            dns.addr()
        ),
        &[],
    )
    .await
}

/// Sends GETs until one is answered by `name`, failing if any request fails
/// meanwhile or none comes within `bound`. Returns the requests it took.
async fn until_answered_by(lb: &Lb, name: &str, bound: Duration) -> usize {
    let client = client();
    within_for(bound, &format!("an answer from {name}"), async {
        let mut sent = 0;
        loop {
            let reply = get(&client, &lb.url("/"), None).await;
            sent += 1;
            assert_eq!(reply.status, StatusCode::OK, "request {sent} failed");
            if reply.text() == name {
                return sent;
            }
        }
    })
    .await
}

/// The answers of `n` GETs, counted by body.
async fn answers(lb: &Lb, n: usize) -> std::collections::BTreeMap<String, usize> {
    let client = client();
    let mut counts = std::collections::BTreeMap::new();
    for _ in 0..n {
        let reply = get(&client, &lb.url("/"), None).await;
        let key = if reply.status == StatusCode::OK {
            reply.text()
        } else {
            reply.status.as_str().to_owned()
        };
        *counts.entry(key).or_default() += 1;
    }
    counts
}

#[tokio::test]
async fn addresses_that_come_and_go_are_followed_without_a_failed_request() {
    let dns = DnsServer::start().await;
    let port = shared_port().await;
    let _a = named_backend_at("127.0.0.2", port, "a").await;
    let _b = named_backend_at("127.0.0.3", port, "b").await;
    dns.set("app.test", Answer::Addresses(vec![ip("127.0.0.2")]), 1);
    let lb = start_with(&dns, &format!("{{ address = \"app.test:{port}\" }}"), "").await;
    assert_eq!(answers(&lb, 10).await, [("a".to_owned(), 10)].into());

    // An address added: reached once the TTL (1 s, min_ttl 1 s) has run out.
    dns.set(
        "app.test",
        Answer::Addresses(vec![ip("127.0.0.2"), ip("127.0.0.3")]),
        1,
    );
    until_answered_by(&lb, "b", Duration::from_secs(3)).await;
    let both = answers(&lb, 20).await;
    assert_eq!(both.get("a"), Some(&10), "{both:?}");
    assert_eq!(both.get("b"), Some(&10), "{both:?}");
    // The added backend keeps its connections alive like any other.
    assert!(
        _b.connection_count() <= 2,
        "{} connections",
        _b.connection_count()
    );

    // An address removed: its requests move to the other, none fails.
    dns.set("app.test", Answer::Addresses(vec![ip("127.0.0.3")]), 1);
    let seen = dns.queries("app.test");
    dns.wait_queries("app.test", seen).await;
    within_for(Duration::from_secs(3), "a to leave", async {
        while answers(&lb, 10).await != [("b".to_owned(), 10)].into() {}
    })
    .await;
}

#[tokio::test]
async fn a_failing_name_server_changes_nothing() {
    let dns = DnsServer::start().await;
    let port = shared_port().await;
    let _a = named_backend_at("127.0.0.2", port, "a").await;
    dns.set("app.test", Answer::Addresses(vec![ip("127.0.0.2")]), 1);
    let lb = start_with(&dns, &format!("{{ address = \"app.test:{port}\" }}"), "").await;
    assert_eq!(answers(&lb, 5).await, [("a".to_owned(), 5)].into());

    for failure in [Answer::ServFail, Answer::Silent] {
        dns.set("app.test", failure, 1);
        // Two lookups fail (each min_ttl apart) while requests go on.
        let seen = dns.queries("app.test");
        let after_one = dns.wait_queries("app.test", seen).await;
        dns.wait_queries("app.test", after_one).await;
        assert_eq!(answers(&lb, 5).await, [("a".to_owned(), 5)].into());
    }
    let metrics = lb.running.control().metrics().encode();
    assert!(
        metrics.contains("weir_dns_resolutions_total{result=\"failure\",upstream=\"app\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_name_gone_keeps_its_backends_for_hold_missing_then_503() {
    let dns = DnsServer::start().await;
    let port = shared_port().await;
    let _a = named_backend_at("127.0.0.2", port, "a").await;
    dns.set("app.test", Answer::Addresses(vec![ip("127.0.0.2")]), 1);
    let lb = start_with(
        &dns,
        &format!("{{ address = \"app.test:{port}\" }}"),
        "hold_missing = \"2s\"",
    )
    .await;
    dns.set("app.test", Answer::NxDomain, 1);
    let seen = dns.queries("app.test");
    dns.wait_queries("app.test", seen).await;
    let gone = std::time::Instant::now();
    // Held: still answered.
    assert_eq!(answers(&lb, 5).await, [("a".to_owned(), 5)].into());
    within_for(
        Duration::from_secs(5),
        "503 once hold_missing is over",
        async { while answers(&lb, 1).await != [("503".to_owned(), 1)].into() {} },
    )
    .await;
    assert!(
        gone.elapsed() >= Duration::from_millis(1500),
        "dropped after {:?}",
        gone.elapsed()
    );
    // Back: answered again.
    dns.set("app.test", Answer::Addresses(vec![ip("127.0.0.2")]), 1);
    until_answered_by_after_503(&lb, "a").await;
}

/// Like [`until_answered_by`], for an upstream that answers 503 meanwhile.
async fn until_answered_by_after_503(lb: &Lb, name: &str) {
    within_for(Duration::from_secs(3), "the name to resolve again", async {
        loop {
            let counts = answers(lb, 1).await;
            if counts.contains_key(name) {
                return;
            }
            assert!(counts.contains_key("503"), "{counts:?}");
        }
    })
    .await;
}

#[tokio::test]
async fn a_name_that_does_not_resolve_at_start_answers_503_until_it_does() {
    let dns = DnsServer::start().await;
    let port = shared_port().await;
    let _a = named_backend_at("127.0.0.2", port, "a").await;
    let admin = free_addr().await;
    let lb = start_lb(
        &format!(
            "[admin]\nlisten = \"{admin}\"\n\n[[listeners]]\nlisten = \"127.0.0.1:0\"\n\n\
             [[routes]]\nupstream = \"app\"\n\n[upstreams.app]\n\
             backends = [{{ address = \"later.test:{port}\" }}]\n\n\
             [resolver]\nnameservers = [\"{}\"]\n",
            dns.addr()
        ),
        &[],
    )
    .await;
    let scrape = || async {
        get(&client(), &format!("http://{admin}/metrics"), None)
            .await
            .text()
    };
    assert!(
        scrape()
            .await
            .contains("weir_upstream_backends{upstream=\"app\"} 0")
    );
    assert_eq!(answers(&lb, 3).await, [("503".to_owned(), 3)].into());
    dns.set("later.test", Answer::Addresses(vec![ip("127.0.0.2")]), 1);
    until_answered_by_after_503(&lb, "a").await;
    let metrics = scrape().await;
    assert!(
        metrics.contains("weir_upstream_backends{upstream=\"app\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("weir_dns_resolutions_total{result=\"nxdomain\",upstream=\"app\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn srv_weights_and_priorities_are_honoured() {
    let dns = DnsServer::start().await;
    let a = named_backend_at("127.0.0.2", 0, "a").await;
    let b = named_backend_at("127.0.0.3", 0, "b").await;
    let c = named_backend_at("127.0.0.4", 0, "c").await;
    for (name, backend) in [("a.test", &a), ("b.test", &b), ("c.test", &c)] {
        dns.set(name, Answer::Addresses(vec![backend.addr.ip()]), 30);
    }
    dns.set(
        "_http._tcp.app.test",
        Answer::Srv(vec![
            SrvRecord::new(10, 3, a.addr.port(), "a.test"),
            SrvRecord::new(10, 1, b.addr.port(), "b.test"),
            SrvRecord::new(20, 1, c.addr.port(), "c.test"),
        ]),
        1,
    );
    let lb = start_with(&dns, "{ srv = \"_http._tcp.app.test\" }", "").await;
    // Smooth weighted round robin: exactly 3 to 1 over whole periods.
    let counts = answers(&lb, 400).await;
    assert_eq!(counts.get("a"), Some(&300), "{counts:?}");
    assert_eq!(counts.get("b"), Some(&100), "{counts:?}");
    assert_eq!(counts.get("c"), None, "{counts:?}");

    // The lower priority value without a backend left: the next one is used.
    dns.set(
        "_http._tcp.app.test",
        Answer::Srv(vec![SrvRecord::new(20, 1, c.addr.port(), "c.test")]),
        1,
    );
    until_answered_by(&lb, "c", Duration::from_secs(3)).await;
}

#[tokio::test]
async fn an_srv_backend_of_a_higher_priority_value_serves_only_while_the_lower_has_none_usable() {
    let dns = DnsServer::start().await;
    let a = named_backend_at("127.0.0.2", 0, "a").await;
    let c = named_backend_at("127.0.0.4", 0, "c").await;
    dns.set("a.test", Answer::Addresses(vec![a.addr.ip()]), 30);
    dns.set("c.test", Answer::Addresses(vec![c.addr.ip()]), 30);
    dns.set(
        "_http._tcp.app.test",
        Answer::Srv(vec![
            SrvRecord::new(10, 1, a.addr.port(), "a.test"),
            SrvRecord::new(20, 1, c.addr.port(), "c.test"),
        ]),
        30,
    );
    let text = format!(
        "[[routes]]\nupstream = \"app\"\n\n[upstreams.app]\nbackends = [{{ srv = \"_http._tcp.app.test\" }}]\n\
         health_check = {{ path = \"/\", interval = \"100ms\", timeout = \"100ms\", unhealthy_threshold = 1, healthy_threshold = 1 }}\n\n\
         [resolver]\nnameservers = [\"{}\"]\n",
        dns.addr()
    );
    let lb = start_lb(&text, &[]).await;
    assert_eq!(answers(&lb, 10).await, [("a".to_owned(), 10)].into());
    a.kill();
    within_for(Duration::from_secs(3), "c to take over", async {
        while answers(&lb, 1).await != [("c".to_owned(), 1)].into() {}
    })
    .await;
    assert_eq!(answers(&lb, 10).await, [("c".to_owned(), 10)].into());
}

#[tokio::test]
async fn an_ipv6_name_reaches_its_backend_on_loopback() {
    let dns = DnsServer::start().await;
    let backend = named_backend_at("::1", 0, "six").await;
    dns.set("six.test", Answer::Addresses(vec![ip("::1")]), 30);
    let lb = start_with(
        &dns,
        &format!("{{ address = \"six.test:{}\" }}", backend.addr.port()),
        "",
    )
    .await;
    assert_eq!(answers(&lb, 3).await, [("six".to_owned(), 3)].into());
}

#[tokio::test]
async fn health_checks_name_the_backend_in_their_host() {
    let dns = DnsServer::start().await;
    let port = shared_port().await;
    let (hosts, mut checked) = tokio::sync::mpsc::unbounded_channel();
    let _backend = spawn_backend_at(SocketAddr::new(ip("127.0.0.2"), port), move |request| {
        let host = request.headers().get("host").cloned();
        let _ = hosts.send(host);
        async move { text(200, "ok") }
    })
    .await;
    dns.set("app.test", Answer::Addresses(vec![ip("127.0.0.2")]), 30);
    let text = format!(
        "[[routes]]\nupstream = \"app\"\n\n[upstreams.app]\nbackends = [{{ address = \"app.test:{port}\" }}]\n\
         health_check = {{ path = \"/health\", interval = \"100ms\" }}\n\n\
         [resolver]\nnameservers = [\"{}\"]\n",
        dns.addr()
    );
    let _lb = start_lb(&text, &[]).await;
    let host = within("a health check", checked.recv()).await.unwrap();
    assert_eq!(
        host.expect("a Host header"),
        format!("app.test:{port}").as_str()
    );
}

#[tokio::test]
async fn a_reload_keeps_the_answers_of_names_that_stay() {
    let dns = DnsServer::start().await;
    let port = shared_port().await;
    let _a = named_backend_at("127.0.0.2", port, "a").await;
    dns.set("app.test", Answer::Addresses(vec![ip("127.0.0.2")]), 300);
    let text = |strategy: &str| {
        format!(
            "[[listeners]]\nlisten = \"127.0.0.1:0\"\n\n[[routes]]\nupstream = \"app\"\n\n\
             [upstreams.app]\nstrategy = \"{strategy}\"\nbackends = [{{ address = \"app.test:{port}\" }}]\n\n\
             [resolver]\nnameservers = [\"{}\"]\n",
            dns.addr()
        )
    };
    let lb = start_lb(&text("round_robin"), &[]).await;
    assert_eq!(answers(&lb, 3).await, [("a".to_owned(), 3)].into());
    let asked = dns.queries("app.test");
    // The name server fails from now on: only a kept answer can serve.
    dns.set("app.test", Answer::ServFail, 300);
    let config = weir::config::parse(&text("least_connections"), "test.toml").unwrap();
    within("the reload", lb.running.control().apply(config))
        .await
        .unwrap();
    assert_eq!(dns.queries("app.test"), asked, "looked up again on reload");
    assert_eq!(answers(&lb, 3).await, [("a".to_owned(), 3)].into());
}

/// About 1,000 requests a second from 8 clients through a whole sequence of
/// changes (an address added, one removed, the server failing, then back):
/// none may fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_fails_under_load_while_the_records_change() {
    let dns = DnsServer::start().await;
    let port = shared_port().await;
    let _a = named_backend_at("127.0.0.2", port, "a").await;
    let _b = named_backend_at("127.0.0.3", port, "b").await;
    dns.set("app.test", Answer::Addresses(vec![ip("127.0.0.2")]), 1);
    let lb = start_with(&dns, &format!("{{ address = \"app.test:{port}\" }}"), "").await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (url, stop) = (lb.url("/"), stop.clone());
        load.spawn(async move {
            let client = client();
            let mut tick = tokio::time::interval(Duration::from_millis(8));
            let (mut sent, mut failed) = (0u32, 0u32);
            // Bounded: at most 20 s of load.
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && sent < 2_500 {
                tick.tick().await;
                sent += 1;
                if get(&client, &url, None).await.status != StatusCode::OK {
                    failed += 1;
                }
            }
            (sent, failed)
        });
    }
    for answer in [
        Answer::Addresses(vec![ip("127.0.0.2"), ip("127.0.0.3")]),
        Answer::Addresses(vec![ip("127.0.0.3")]),
        Answer::ServFail,
        Answer::Addresses(vec![ip("127.0.0.2")]),
    ] {
        dns.set("app.test", answer, 1);
        // Two lookups past the change: the first may have been under way.
        let seen = dns.queries("app.test");
        let first = dns.wait_queries("app.test", seen).await;
        dns.wait_queries("app.test", first).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut sent, mut failed) = (0, 0);
    while let Some(result) = within("the load to stop", load.join_next()).await {
        let (s, f) = result.unwrap();
        sent += s;
        failed += f;
    }
    assert_eq!(failed, 0, "{failed} of {sent} requests failed");
    assert!(sent > 1_000, "only {sent} requests sent");
}

#[tokio::test]
async fn tls_to_a_backend_found_by_name_verifies_that_name() {
    let pki = support::pki::Pki::new("discovery-sni");
    pki.issue("backend", &["app.test"]);
    let backend = spawn_backend_serving(
        Serving {
            tls: Some(pki.server_config("backend", &[b"http/1.1"])),
            http2: false,
        },
        |_request| async { text(200, "secure") },
    )
    .await;
    let dns = DnsServer::start().await;
    dns.set("app.test", Answer::Addresses(vec![backend.addr.ip()]), 30);
    dns.set("other.test", Answer::Addresses(vec![backend.addr.ip()]), 30);
    let ca = pki.path("ca.pem");
    for (name, expected) in [("app.test", 200), ("other.test", 502)] {
        let text = format!(
            "[[routes]]\nupstream = \"app\"\n\n[upstreams.app]\ntls = {{ ca = \"{ca}\" }}\n\
             backends = [{{ address = \"{name}:{}\" }}]\n\n[resolver]\nnameservers = [\"{}\"]\n",
            backend.addr.port(),
            dns.addr()
        );
        let lb = start_lb(&text, &[]).await;
        let reply = get(&client(), &lb.url("/"), None).await;
        assert_eq!(reply.status.as_u16(), expected, "{name}: {}", reply.text());
    }
}

#[tokio::test]
async fn a_failed_reload_leaves_the_running_names_alone() {
    let dns = DnsServer::start().await;
    let port = shared_port().await;
    let _a = named_backend_at("127.0.0.2", port, "a").await;
    dns.set("app.test", Answer::Addresses(vec![ip("127.0.0.2")]), 1);
    dns.set("other.test", Answer::Addresses(vec![ip("127.0.0.2")]), 300);
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let text = |name: &str, extra_listener: &str| {
        format!(
            "[[listeners]]\nlisten = \"127.0.0.1:0\"\n{extra_listener}\n[[routes]]\nupstream = \"app\"\n\n\
             [upstreams.app]\nbackends = [{{ address = \"{name}:{port}\" }}]\n\n\
             [resolver]\nnameservers = [\"{}\"]\n",
            dns.addr()
        )
    };
    let lb = start_lb(&text("app.test", ""), &[]).await;
    // Another name, and a listener that cannot be bound: the reload fails.
    let busy_listener = format!(
        "[[listeners]]\nlisten = \"{}\"\n",
        busy.local_addr().unwrap()
    );
    let config = weir::config::parse(&text("other.test", &busy_listener), "test.toml").unwrap();
    let reload = within("the reload", lb.running.control().apply(config)).await;
    assert!(reload.is_err(), "{reload:?}");
    // The running config's name is still followed and served.
    let seen = dns.queries("app.test");
    assert_eq!(answers(&lb, 5).await, [("a".to_owned(), 5)].into());
    within(
        "app.test still followed",
        dns.wait_queries("app.test", seen),
    )
    .await;
    assert_eq!(answers(&lb, 5).await, [("a".to_owned(), 5)].into());
}

#[tokio::test]
async fn panic_mode_does_not_hold_traffic_on_a_priority_that_is_down() {
    let dns = DnsServer::start().await;
    let backup = named_backend_at("127.0.0.4", 0, "backup").await;
    let dead = refused_addr().await;
    dns.set("dead.test", Answer::Addresses(vec![dead.ip()]), 30);
    dns.set("backup.test", Answer::Addresses(vec![backup.addr.ip()]), 30);
    dns.set(
        "_http._tcp.app.test",
        Answer::Srv(vec![
            SrvRecord::new(0, 1, dead.port(), "dead.test"),
            SrvRecord::new(10, 1, backup.addr.port(), "backup.test"),
        ]),
        30,
    );
    let text = format!(
        "[[routes]]\nupstream = \"app\"\n\n[upstreams.app]\npanic_threshold = 60\n\
         backends = [{{ srv = \"_http._tcp.app.test\" }}]\n\
         health_check = {{ path = \"/\", interval = \"100ms\", timeout = \"100ms\", unhealthy_threshold = 1, healthy_threshold = 1 }}\n\n\
         [resolver]\nnameservers = [\"{}\"]\n",
        dns.addr()
    );
    let lb = start_lb(&text, &[]).await;
    within_for(Duration::from_secs(3), "the backup to take over", async {
        while answers(&lb, 1).await != [("backup".to_owned(), 1)].into() {}
    })
    .await;
    assert_eq!(answers(&lb, 10).await, [("backup".to_owned(), 10)].into());
}
