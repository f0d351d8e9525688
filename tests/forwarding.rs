//! Where a request goes and what reaches the backend, over real sockets: host and
//! path routes, weighted round robin, the X-Forwarded headers, hop-by-hop headers
//! removed both ways, the target in origin form and a Host line for an HTTP/1.0
//! request that had none.

mod support;

use http::Version;

use support::*;

// === balancing and routing ===

#[tokio::test]
async fn weighted_round_robin_follows_the_smooth_sequence() {
    let a = spawn_named_backend("a").await;
    let b = spawn_named_backend("b").await;
    let c = spawn_named_backend("c").await;
    let lb = start_lb(
        r#"
[[routes]]
upstream = "app"

[upstreams.app]
strategy = "round_robin"
backends = [
  { address = "{a}", weight = 5 },
  { address = "{b}", weight = 1 },
  { address = "{c}", weight = 1 },
]
"#,
        &[("a", a.addr), ("b", b.addr), ("c", c.addr)],
    )
    .await;
    let client = client();
    let mut order = String::new();
    for _ in 0..7 {
        let reply = get(&client, &lb.url("/"), None).await;
        assert_eq!(reply.status, 200);
        order.push_str(&reply.text());
    }
    assert_eq!(order, "aabacaa");
}

#[tokio::test]
async fn path_prefix_matches_whole_segments_else_404() {
    let api = spawn_path_backend().await;
    let lb = start_lb(
        r#"
[[routes]]
path_prefix = "/api"
upstream = "api"

[upstreams.api]
backends = [{ address = "{api}" }]
"#,
        &[("api", api.addr)],
    )
    .await;
    let client = client();
    for (path, status) in [
        ("/other", 404),
        ("/apix", 404),
        ("/", 404),
        ("/api", 200),
        ("/api/x", 200),
    ] {
        let reply = get(&client, &lb.url(path), None).await;
        assert_eq!(reply.status, status, "GET {path}");
        if status == 404 {
            assert!(reply.text().starts_with("404"), "body {:?}", reply.text());
            assert!(
                reply.headers["content-type"]
                    .to_str()
                    .unwrap()
                    .starts_with("text/plain")
            );
        } else {
            assert_eq!(reply.text(), path);
        }
    }
    assert_eq!(api.request_count(), 2, "404s must not reach the backend");
}

#[tokio::test]
async fn host_routes_match_exact_and_wildcard_ignoring_case_and_port() {
    let a = spawn_named_backend("a").await;
    let b = spawn_named_backend("b").await;
    let lb = start_lb(
        r#"
[[routes]]
host = "a.test"
upstream = "a"

[[routes]]
host = "*.b.test"
upstream = "b"

[upstreams.a]
backends = [{ address = "{a}" }]

[upstreams.b]
backends = [{ address = "{b}" }]
"#,
        &[("a", a.addr), ("b", b.addr)],
    )
    .await;
    let client = client();
    for (host, expected) in [
        ("a.test", Some("a")),
        ("A.TEST:8080", Some("a")),
        ("x.b.test", Some("b")),
        ("X.y.B.Test:1234", Some("b")),
        ("b.test", None),
        ("c.test", None),
        ("xa.test", None),
    ] {
        let reply = get(&client, &lb.url("/"), Some(host)).await;
        match expected {
            Some(name) => {
                assert_eq!(reply.status, 200, "Host: {host}");
                assert_eq!(reply.text(), name, "Host: {host}");
            }
            None => assert_eq!(reply.status, 404, "Host: {host}"),
        }
    }
}

// === headers ===

#[tokio::test]
async fn forwarded_headers_are_set_and_hop_by_hop_removed_both_ways() {
    let backend = spawn_backend(|_request| async move {
        http::Response::builder()
            .status(200)
            .header("connection", "keep-alive, x-backend-hop")
            .header("x-backend-hop", "1")
            .header("keep-alive", "timeout=5")
            .header("proxy-connection", "keep-alive")
            .header("x-backend-kept", "yes")
            .body(full("ok"))
            .unwrap()
    })
    .await;
    let lb = start_lb(&one_upstream(&["app"], ""), &[("app", backend.addr)]).await;

    let mut conn = RawConn::connect(lb.addr).await;
    conn.send(
        b"GET /h?q=1 HTTP/1.1\r\n\
          Host: site.test:8080\r\n\
          Connection: keep-alive, x-secret\r\n\
          X-Secret: 1\r\n\
          Keep-Alive: timeout=5\r\n\
          TE: trailers\r\n\
          Proxy-Connection: keep-alive\r\n\
          X-Forwarded-Proto: https\r\n\
          X-Forwarded-Host: evil.test\r\n\
          X-Kept: yes\r\n\r\n",
    )
    .await;
    let response = conn.read_response().await.expect("a response");
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"ok");

    let seen = backend.last_request();
    assert_eq!(seen.uri, "/h?q=1");
    assert_eq!(seen.headers["host"], "site.test:8080");
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(seen.headers["x-forwarded-host"], "site.test:8080");
    assert_eq!(seen.headers["x-kept"], "yes");
    for hop in ["x-secret", "keep-alive", "te", "proxy-connection"] {
        assert!(
            !seen.headers.contains_key(hop),
            "{hop} reached the backend: {:?}",
            seen.headers
        );
    }
    if let Some(connection) = seen.headers.get("connection") {
        assert!(
            !connection
                .to_str()
                .unwrap()
                .to_ascii_lowercase()
                .contains("x-secret"),
            "connection: {connection:?}"
        );
    }

    assert_eq!(response.header("x-backend-kept"), Some("yes"));
    for hop in ["x-backend-hop", "keep-alive", "proxy-connection"] {
        assert!(
            !response.has_header(hop),
            "{hop} reached the client: {:?}",
            response.headers
        );
    }
    if let Some(connection) = response.header("connection") {
        assert!(
            !connection.to_ascii_lowercase().contains("x-backend-hop"),
            "connection: {connection}"
        );
    }
}

#[tokio::test]
async fn forwarded_for_is_appended_to_what_the_client_sent() {
    let backend = spawn_named_backend("ok").await;
    let lb = start_lb(&one_upstream(&["app"], ""), &[("app", backend.addr)]).await;
    let mut conn = RawConn::connect(lb.addr).await;
    conn.send(b"GET / HTTP/1.1\r\nHost: site.test\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n")
        .await;
    let response = conn.read_response().await.expect("a response");
    assert_eq!(response.status, 200);
    let seen = backend.last_request();
    assert_eq!(seen.headers["x-forwarded-for"], "1.2.3.4, 127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-host"], "site.test");
}

#[tokio::test]
async fn absolute_form_target_is_sent_in_origin_form() {
    let backend = spawn_path_backend().await;
    let lb = start_lb(&one_upstream(&["app"], ""), &[("app", backend.addr)]).await;
    let mut conn = RawConn::connect(lb.addr).await;
    conn.send(b"GET http://site.test:8080/p/q?x=1 HTTP/1.1\r\nHost: site.test:8080\r\n\r\n")
        .await;
    let response = conn.read_response().await.expect("a response");
    assert_eq!(response.status, 200);
    let seen = backend.last_request();
    assert_eq!(seen.uri, "/p/q?x=1");
    assert_eq!(seen.headers["host"], "site.test:8080");
    assert_eq!(seen.headers["x-forwarded-host"], "site.test:8080");
}

#[tokio::test]
async fn http10_request_without_host_reaches_the_backend_with_a_host_header() {
    // weir speaks HTTP/1.1 to backends, where RFC 9112 §3.2 requires a Host line
    // (empty when the target has no authority); nginx answers 400 without one.
    let backend = spawn_path_backend().await;
    let lb = start_lb(&one_upstream(&["app"], ""), &[("app", backend.addr)]).await;
    let mut conn = RawConn::connect(lb.addr).await;
    conn.send(b"GET /old HTTP/1.0\r\n\r\n").await;
    let response = conn.read_response().await.expect("a response");
    assert_eq!(response.status, 200);
    let seen = backend.last_request();
    assert_eq!(seen.version, Version::HTTP_11);
    assert!(
        seen.headers.contains_key("host"),
        "HTTP/1.1 request without Host sent to the backend: {:?}",
        seen.headers
    );
}
