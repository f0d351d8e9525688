//! The proxy's behaviour over real sockets: balancing, routing, errors, header
//! rewriting, streaming, connection reuse, drain, malformed requests, client
//! timeouts and protocol variants (SPEC "Proxy behaviour").

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Version};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc};

use support::*;

/// A backend answering 200 with the request's path as the body.
async fn spawn_path_backend() -> Backend {
    spawn_backend(|request| async move { text(200, request.uri().path().to_owned()) }).await
}

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

// === upstream failures ===

#[tokio::test]
async fn refused_backend_is_502() {
    let dead = refused_addr().await;
    let lb = start_lb(&one_upstream(&["dead"], ""), &[("dead", dead)]).await;
    let reply = get(&client(), &lb.url("/"), None).await;
    assert_eq!(reply.status, 502);
    assert!(reply.text().starts_with("502"), "body {:?}", reply.text());
}

#[tokio::test]
async fn backend_slower_than_response_timeout_is_504() {
    let slow = spawn_backend(|_request| async move {
        std::future::pending::<()>().await;
        unreachable!()
    })
    .await;
    let lb = start_lb(
        &one_upstream(&["slow"], r#"timeouts = { response = "200ms" }"#),
        &[("slow", slow.addr)],
    )
    .await;
    let reply = get(&client(), &lb.url("/"), None).await;
    assert_eq!(reply.status, 504);
    assert!(reply.text().starts_with("504"), "body {:?}", reply.text());
    assert_eq!(slow.request_count(), 1);
}

/// Requests `url` and reads the body: the error, or how many bytes arrived.
async fn body_outcome(url: String) -> Result<usize, BoxError> {
    within("the client sees the end of the response", async {
        let response = client()
            .request(Request::get(url).body(empty()).unwrap())
            .await?;
        let body = response.into_body().collect().await?.to_bytes();
        Ok(body.len())
    })
    .await
}

#[tokio::test]
async fn response_broken_mid_body_never_reaches_the_client_complete() {
    // Announces 100000 bytes, sends 1000 and hangs up.
    let backend = spawn_raw_backend(|mut socket| async move {
        let mut response = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n".to_vec();
        response.extend_from_slice(&[b'x'; 1000]);
        let _ = socket.write_all(&response).await;
        let _ = socket.shutdown().await;
    })
    .await;
    let lb = start_lb(&one_upstream(&["broken"], ""), &[("broken", backend.addr)]).await;
    if let Ok(len) = body_outcome(lb.url("/")).await {
        assert!(
            len < 100_000,
            "the client got a complete body of {len} bytes"
        );
    }

    // Over raw TCP: the announced length is never reached and the connection closes.
    let mut conn = RawConn::connect(lb.addr).await;
    conn.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let raw = within("weir closes the broken response", conn.read_to_end()).await;
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n");
    if let Some(at) = head_end {
        assert!(raw.len() - (at + 4) < 100_000, "a complete body arrived");
    }
}

#[tokio::test]
async fn chunked_response_broken_mid_body_gets_no_final_chunk() {
    // A chunked body that stops after one chunk, without the terminating 0-chunk.
    let backend = spawn_raw_backend(|mut socket| async move {
        let _ = socket
            .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
            .await;
        let _ = socket.shutdown().await;
    })
    .await;
    let lb = start_lb(&one_upstream(&["broken"], ""), &[("broken", backend.addr)]).await;
    assert!(
        body_outcome(lb.url("/")).await.is_err(),
        "the client took a truncated chunked body for a complete one"
    );
}

#[tokio::test]
async fn backend_response_head_over_64_kib_is_502() {
    let backend = spawn_raw_backend(|mut socket| async move {
        let mut response = b"HTTP/1.1 200 OK\r\nX-Huge: ".to_vec();
        response.extend(std::iter::repeat_n(b'h', 100 * 1024));
        response.extend_from_slice(b"\r\nContent-Length: 2\r\n\r\nok");
        let _ = socket.write_all(&response).await;
        let _ = socket.shutdown().await;
    })
    .await;
    let lb = start_lb(&one_upstream(&["huge"], ""), &[("huge", backend.addr)]).await;
    let reply = get(&client(), &lb.url("/"), None).await;
    assert_eq!(reply.status, 502);
}

#[tokio::test]
async fn backend_response_that_is_not_http_is_502() {
    let backend = spawn_raw_backend(|mut socket| async move {
        let _ = socket.write_all(b"SSH-2.0-OpenSSH_9.6\r\n\r\n").await;
        let _ = socket.shutdown().await;
    })
    .await;
    let lb = start_lb(
        &one_upstream(&["garbage"], ""),
        &[("garbage", backend.addr)],
    )
    .await;
    let reply = get(&client(), &lb.url("/"), None).await;
    assert_eq!(reply.status, 502);
}

#[tokio::test]
async fn response_timeout_covers_the_head_not_the_body() {
    // Head at once, then a body slower than `timeouts.response` in total.
    let backend = spawn_backend(|_request| async move {
        let (tx, rx) = mpsc::channel::<Bytes>(1);
        tokio::spawn(async move {
            for part in ["one ", "two ", "three"] {
                // The slowness is the behaviour under test.
                tokio::time::sleep(Duration::from_millis(150)).await;
                if tx.send(Bytes::from_static(part.as_bytes())).await.is_err() {
                    return;
                }
            }
        });
        http::Response::new(channel_body(rx))
    })
    .await;
    let lb = start_lb(
        &one_upstream(&["app"], r#"timeouts = { response = "200ms" }"#),
        &[("app", backend.addr)],
    )
    .await;
    let reply = get(&client(), &lb.url("/"), None).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "one two three");
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

// === streaming ===

const BULK_BYTES: usize = 64 * 1024 * 1024;
const BULK_CHUNK: usize = 64 * 1024;
const BULK_BOUND: Duration = Duration::from_secs(25);

#[tokio::test]
async fn upload_of_64_mib_streams_to_the_backend() {
    let first_chunk_seen = Arc::new(Notify::new());
    let backend = {
        let first_chunk_seen = first_chunk_seen.clone();
        spawn_backend(move |request| {
            let first_chunk_seen = first_chunk_seen.clone();
            async move {
                let mut body = request.into_body();
                let mut sum = Checksum::default();
                while let Some(frame) = body.frame().await {
                    let frame = match frame {
                        Ok(frame) => frame,
                        Err(err) => return text(500, format!("body error: {err}")),
                    };
                    if let Some(data) = frame.data_ref() {
                        if sum.bytes == 0 && !data.is_empty() {
                            first_chunk_seen.notify_one();
                        }
                        sum.update(data);
                    }
                }
                text(200, sum.to_string())
            }
        })
        .await
    };
    let lb = start_lb(&one_upstream(&["app"], ""), &[("app", backend.addr)]).await;

    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let request = Request::post(lb.url("/upload"))
        .body(channel_body(rx))
        .unwrap();
    let client = client();
    let response = tokio::spawn(async move { send_within(BULK_BOUND, &client, request).await });

    let mut generator = Generator::new(7);
    let mut sent = Checksum::default();
    let first = generator.chunk(BULK_CHUNK);
    sent.update(&first);
    tx.send(first).await.unwrap();
    within(
        "the backend receives the first chunk before the upload is finished",
        first_chunk_seen.notified(),
    )
    .await;
    within_for(BULK_BOUND, "upload the rest", async {
        while (sent.bytes as usize) < BULK_BYTES {
            let chunk = generator.chunk(BULK_CHUNK);
            sent.update(&chunk);
            tx.send(chunk).await.unwrap();
        }
    })
    .await;
    drop(tx);

    let reply = within_for(BULK_BOUND, "upload response", response)
        .await
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), sent.to_string());
}

#[tokio::test]
async fn download_of_64_mib_streams_to_the_client() {
    let first_chunk_received = Arc::new(Notify::new());
    let backend = {
        let first_chunk_received = first_chunk_received.clone();
        spawn_backend(move |_request| {
            let first_chunk_received = first_chunk_received.clone();
            async move {
                let (tx, rx) = mpsc::channel::<Bytes>(4);
                tokio::spawn(async move {
                    let mut generator = Generator::new(11);
                    if tx.send(generator.chunk(BULK_CHUNK)).await.is_err() {
                        return;
                    }
                    // The rest only once the client has the first chunk: a proxy
                    // that buffered the whole body would never deliver it.
                    let waited = tokio::time::timeout(BOUND, first_chunk_received.notified()).await;
                    if waited.is_err() {
                        return;
                    }
                    for _ in 1..BULK_BYTES / BULK_CHUNK {
                        if tx.send(generator.chunk(BULK_CHUNK)).await.is_err() {
                            return;
                        }
                    }
                });
                http::Response::new(channel_body(rx))
            }
        })
        .await
    };
    let lb = start_lb(&one_upstream(&["app"], ""), &[("app", backend.addr)]).await;

    let response = within(
        "download response head",
        client().request(Request::get(lb.url("/download")).body(empty()).unwrap()),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut received = Checksum::default();
    within_for(BULK_BOUND, "download body", async {
        while let Some(frame) = body.frame().await {
            let frame = frame.expect("download body broke");
            if let Some(data) = frame.data_ref() {
                if received.bytes == 0 && !data.is_empty() {
                    first_chunk_received.notify_one();
                }
                received.update(data);
            }
        }
    })
    .await;

    let mut generator = Generator::new(11);
    let mut expected = Checksum::default();
    for _ in 0..BULK_BYTES / BULK_CHUNK {
        expected.update(&generator.chunk(BULK_CHUNK));
    }
    assert_eq!(received.bytes as usize, BULK_BYTES);
    assert_eq!(received, expected);
}

// === backend connections ===

#[tokio::test]
async fn sequential_requests_reuse_backend_connections() {
    let backend = spawn_named_backend("ok").await;
    let lb = start_lb(&one_upstream(&["app"], ""), &[("app", backend.addr)]).await;

    let stream = TcpStream::connect(lb.addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    for i in 0..200 {
        let request = Request::get(format!("/r{i}"))
            .header("host", "site.test")
            .body(empty())
            .unwrap();
        let body = within("one request", async {
            sender.ready().await.unwrap();
            let response = sender.send_request(request).await.unwrap();
            assert_eq!(response.status(), 200);
            response.into_body().collect().await.unwrap().to_bytes()
        })
        .await;
        assert_eq!(body, "ok");
    }
    assert_eq!(backend.request_count(), 200);
    let opened = backend.connection_count();
    assert!(
        opened <= 2,
        "200 sequential requests opened {opened} backend connections"
    );
}

#[tokio::test]
async fn head_requests_and_posts_with_bodies_reuse_backend_connections() {
    let backend = spawn_backend(|request| async move {
        let body = request.into_body().collect().await.unwrap().to_bytes();
        text(200, body)
    })
    .await;
    let lb = start_lb(&one_upstream(&["app"], ""), &[("app", backend.addr)]).await;
    let client = client();
    for i in 0..50 {
        let head = Request::head(lb.url("/")).body(empty()).unwrap();
        assert_eq!(send(&client, head).await.status, 200);
        let post = Request::post(lb.url("/"))
            .body(full(format!("body {i}")))
            .unwrap();
        let reply = send(&client, post).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.text(), format!("body {i}"));
    }
    let opened = backend.connection_count();
    assert!(
        opened <= 2,
        "100 sequential HEAD/POST requests opened {opened} backend connections"
    );
}

#[tokio::test]
async fn backend_closing_after_each_response_costs_no_request() {
    // Announces nothing and closes right after each response, as a backend with a
    // short keep-alive timeout does.
    let backend = spawn_raw_backend(|mut socket| async move {
        let _ = socket
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .await;
        let _ = socket.shutdown().await;
    })
    .await;
    let lb = start_lb(&one_upstream(&["app"], ""), &[("app", backend.addr)]).await;
    let client = client();
    for i in 0..50 {
        let reply = get(&client, &lb.url("/"), None).await;
        assert_eq!(reply.status, 200, "request {i}: {}", reply.text());
    }
}

// === drain ===

#[tokio::test]
async fn drain_finishes_in_flight_requests_and_refuses_new_connections() {
    let arrived = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let backend = {
        let (arrived, release) = (arrived.clone(), release.clone());
        spawn_backend(move |_request| {
            let (arrived, release) = (arrived.clone(), release.clone());
            async move {
                arrived.notify_one();
                release.notified().await;
                text(200, "finished")
            }
        })
        .await
    };
    let lb = start_lb(
        &format!(
            "[runtime]\nshutdown_timeout = \"30s\"\n\n{}",
            one_upstream(&["app"], "")
        ),
        &[("app", backend.addr)],
    )
    .await;
    let Lb {
        addr,
        trigger,
        running,
    } = lb;

    let client = client();
    let in_flight = tokio::spawn(async move {
        let request = Request::get(format!("http://{addr}/slow"))
            .body(empty())
            .unwrap();
        send(&client, request).await
    });
    within("the request reaches the backend", arrived.notified()).await;

    trigger.trigger();
    within("the listener stops accepting", async {
        // Nothing outside weir can await the listener's close: poll for it.
        while TcpStream::connect(addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;

    release.notify_one();
    let reply = within("the in-flight request finishes", in_flight)
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "finished");
    within("weir finishes draining", running.wait()).await;
}

#[tokio::test]
async fn drain_closes_idle_keep_alive_connections_at_once() {
    let arrived = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let backend = {
        let (arrived, release) = (arrived.clone(), release.clone());
        spawn_backend(move |request| {
            let (arrived, release) = (arrived.clone(), release.clone());
            async move {
                if request.uri().path() == "/slow" {
                    arrived.notify_one();
                    release.notified().await;
                }
                text(200, "ok")
            }
        })
        .await
    };
    let lb = start_lb(&one_upstream(&["app"], ""), &[("app", backend.addr)]).await;

    let mut idle = RawConn::connect(lb.addr).await;
    idle.send(b"GET /fast HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert_eq!(idle.read_response().await.expect("a response").status, 200);

    // Keep a request in flight so that the drain cannot be over yet.
    let mut busy = RawConn::connect(lb.addr).await;
    busy.send(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n").await;
    within("the slow request reaches the backend", arrived.notified()).await;

    lb.trigger.trigger();
    assert!(
        idle.closed_within_bound().await,
        "an idle keep-alive connection stayed open during the drain"
    );
    release.notify_one();
    let response = busy.read_response().await.expect("the in-flight response");
    assert_eq!(response.status, 200);
    within("weir finishes draining", lb.running.wait()).await;
}

// === malformed requests ===

/// A recorded request in one line: method, target and header names.
fn describe(request: &Recorded) -> String {
    let names: Vec<&str> = request.headers.keys().map(|n| n.as_str()).collect();
    format!(
        "{} {} with headers {}",
        request.method,
        request.uri,
        names.join(", ")
    )
}

/// Sends `raw` on a new connection and expects a 400 and a closed connection,
/// with nothing forwarded to the backend. Reports every expectation missed.
async fn assert_rejected(raw: &[u8]) {
    let backend = spawn_named_backend("forwarded").await;
    let lb = start_lb(&one_upstream(&["app"], ""), &[("app", backend.addr)]).await;
    let mut conn = RawConn::connect(lb.addr).await;
    conn.send(raw).await;
    let mut missed = Vec::new();
    match conn.read_response().await {
        None => missed.push("weir closed the connection without an answer".to_owned()),
        Some(response) if response.status != 400 => missed.push(format!(
            "answer {} {:?} instead of 400",
            response.status,
            String::from_utf8_lossy(&response.body)
        )),
        Some(_) => {}
    }
    if !conn.closed_within_bound().await {
        missed.push("the connection stayed open".to_owned());
    }
    if backend.request_count() > 0 {
        missed.push(format!(
            "the request was forwarded: {}",
            describe(&backend.last_request())
        ));
    }
    assert!(missed.is_empty(), "{}", missed.join("; "));
}

#[tokio::test]
async fn missing_host_on_http11_is_400() {
    assert_rejected(b"GET / HTTP/1.1\r\n\r\n").await;
}

#[tokio::test]
async fn two_host_headers_are_400() {
    assert_rejected(b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n").await;
}

#[tokio::test]
async fn content_length_with_transfer_encoding_is_400() {
    assert_rejected(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .await;
}

#[tokio::test]
async fn content_length_with_transfer_encoding_in_a_long_head_is_400() {
    // The two lines 5 KiB apart, so that no single read of the head holds both.
    let mut head = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nX-Pad: ".to_vec();
    head.extend(std::iter::repeat_n(b'p', 5 * 1024));
    head.extend_from_slice(b"\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    assert_rejected(&head).await;
}

/// Sends a valid request, then `second` on the same connection (pipelined when
/// `pipelined`, else after the first response), and expects 200 then 400, with
/// only the first request forwarded.
async fn assert_second_rejected(second: &[u8], pipelined: bool) {
    let backend = spawn_named_backend("forwarded").await;
    let lb = start_lb(&one_upstream(&["app"], ""), &[("app", backend.addr)]).await;
    let mut conn = RawConn::connect(lb.addr).await;
    let first = b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n";
    if pipelined {
        conn.send(&[&first[..], second].concat()).await;
    } else {
        conn.send(first).await;
    }
    let response = conn.read_response().await.expect("the first answer");
    assert_eq!(response.status, 200);
    if !pipelined {
        conn.send(second).await;
    }
    let response = conn.read_response().await.expect("the second answer");
    assert_eq!(
        response.status,
        400,
        "second answer {} {:?}",
        response.status,
        String::from_utf8_lossy(&response.body)
    );
    assert_eq!(
        backend.request_count(),
        1,
        "forwarded: {}",
        describe(&backend.last_request())
    );
}

const CL_AND_TE: &[u8] =
    b"POST /second HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";

#[tokio::test]
async fn content_length_with_transfer_encoding_on_a_keep_alive_connection_is_400() {
    assert_second_rejected(CL_AND_TE, false).await;
}

#[tokio::test]
async fn content_length_with_transfer_encoding_in_a_pipelined_request_is_400() {
    assert_second_rejected(CL_AND_TE, true).await;
}

#[tokio::test]
async fn differing_content_lengths_are_400() {
    assert_rejected(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    )
    .await;
}

#[tokio::test]
async fn transfer_encoding_on_http10_is_400() {
    assert_rejected(
        b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
}

#[tokio::test]
async fn bad_chunk_size_after_a_good_chunk_is_400() {
    // The head and the first chunk may already be on their way to the backend
    // (bodies stream), but the client is the one at fault: 400, not 502.
    let backend = spawn_backend(|request| async move {
        match request.into_body().collect().await {
            Ok(body) => text(200, body.to_bytes()),
            Err(_) => text(500, "broken body"),
        }
    })
    .await;
    let lb = start_lb(&one_upstream(&["app"], ""), &[("app", backend.addr)]).await;
    let mut conn = RawConn::connect(lb.addr).await;
    conn.send(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n\r\n",
    )
    .await;
    let response = conn.read_response().await.expect("an answer");
    assert_eq!(
        response.status,
        400,
        "answer {} {:?}",
        response.status,
        String::from_utf8_lossy(&response.body)
    );
    assert!(
        conn.closed_within_bound().await,
        "the connection stayed open"
    );
}

#[tokio::test]
async fn control_character_in_header_value_is_400() {
    assert_rejected(b"GET / HTTP/1.1\r\nHost: a\r\nX-Bad: a\x01b\r\n\r\n").await;
}

#[tokio::test]
async fn obs_fold_is_400() {
    assert_rejected(b"GET / HTTP/1.1\r\nHost: a\r\nX-Folded: a\r\n b\r\n\r\n").await;
}

#[tokio::test]
async fn invalid_header_name_is_400() {
    assert_rejected(b"GET / HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n").await;
}

#[tokio::test]
async fn bad_chunk_size_is_400() {
    assert_rejected(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n\r\n")
        .await;
}

// === client timeouts ===

fn timed_listener(keys: &str) -> String {
    format!("[[listeners]]\nlisten = \"127.0.0.1:0\"\n{keys}\n\n")
}

#[tokio::test]
async fn half_a_request_head_is_cut_after_header_timeout() {
    let backend = spawn_named_backend("ok").await;
    let config = timed_listener("header_timeout = \"300ms\"") + &one_upstream(&["app"], "");
    let lb = start_lb(&config, &[("app", backend.addr)]).await;
    let mut conn = RawConn::connect(lb.addr).await;
    conn.send(b"GET / HTTP/1.1\r\nHost: a\r\n").await;
    let rest = within("header_timeout closes the connection", conn.read_to_end()).await;
    let answer = String::from_utf8_lossy(&rest);
    assert!(
        rest.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "answer {answer:?}"
    );
    assert_eq!(backend.request_count(), 0);
}

#[tokio::test]
async fn header_timeout_is_total_not_per_read() {
    let backend = spawn_named_backend("ok").await;
    let config = timed_listener("header_timeout = \"300ms\"") + &one_upstream(&["app"], "");
    let lb = start_lb(&config, &[("app", backend.addr)]).await;
    let stream = TcpStream::connect(lb.addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    // Slowloris: a byte every 50 ms, well inside any per-read timeout, never a
    // complete head.
    let trickle = tokio::spawn(async move {
        writer.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n").await?;
        loop {
            writer.write_all(b"x").await?;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        #[allow(unreachable_code)]
        Ok::<(), std::io::Error>(())
    });
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(BOUND, reader.read_to_end(&mut rest)).await;
    trickle.abort();
    assert!(
        closed.is_ok(),
        "a head trickling in for {BOUND:?} was not cut by header_timeout = 300ms"
    );
    assert_eq!(backend.request_count(), 0);
}

#[tokio::test]
async fn second_head_on_keep_alive_connection_is_cut_after_header_timeout() {
    let backend = spawn_named_backend("ok").await;
    let config = timed_listener("header_timeout = \"300ms\"") + &one_upstream(&["app"], "");
    let lb = start_lb(&config, &[("app", backend.addr)]).await;
    let mut conn = RawConn::connect(lb.addr).await;
    conn.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert_eq!(conn.read_response().await.expect("a response").status, 200);
    conn.send(b"GET / HTTP/1.1\r\nHost: a\r\n").await;
    assert!(
        conn.closed_within_bound().await,
        "half a second head was not cut"
    );
    assert_eq!(backend.request_count(), 1);
}

#[tokio::test]
async fn header_timeout_does_not_cut_an_idle_keep_alive_connection() {
    let backend = spawn_named_backend("ok").await;
    let config = timed_listener("header_timeout = \"300ms\"\nidle_timeout = \"60s\"")
        + &one_upstream(&["app"], "");
    let lb = start_lb(&config, &[("app", backend.addr)]).await;
    let mut conn = RawConn::connect(lb.addr).await;
    conn.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert_eq!(conn.read_response().await.expect("a response").status, 200);
    // Idle for three header timeouts, far inside the idle timeout: the idle time is
    // the behaviour under test.
    tokio::time::sleep(Duration::from_millis(900)).await;
    conn.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let second = conn
        .read_response()
        .await
        .expect("the idle connection was closed before idle_timeout");
    assert_eq!(second.status, 200);
}

#[tokio::test]
async fn idle_keep_alive_connection_is_closed_after_idle_timeout() {
    let backend = spawn_named_backend("ok").await;
    let config = timed_listener("idle_timeout = \"300ms\"") + &one_upstream(&["app"], "");
    let lb = start_lb(&config, &[("app", backend.addr)]).await;
    let mut conn = RawConn::connect(lb.addr).await;
    conn.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let response = conn.read_response().await.expect("a response");
    assert_eq!(response.status, 200);
    assert!(
        conn.closed_within_bound().await,
        "an idle keep-alive connection outlived idle_timeout = 300ms"
    );
}

#[tokio::test]
async fn idle_timeout_does_not_cut_a_slow_backend() {
    let backend = spawn_backend(|_request| async move {
        // The slowness is the behaviour under test: three idle timeouts long.
        tokio::time::sleep(Duration::from_millis(900)).await;
        text(200, "slow but fine")
    })
    .await;
    let config = timed_listener("idle_timeout = \"300ms\"") + &one_upstream(&["app"], "");
    let lb = start_lb(&config, &[("app", backend.addr)]).await;
    let mut conn = RawConn::connect(lb.addr).await;
    conn.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let response = conn
        .read_response()
        .await
        .expect("the connection was closed while its request was in flight");
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"slow but fine");
}

#[tokio::test]
async fn header_timeout_does_not_cut_a_slow_backend() {
    let backend = spawn_backend(|request| async move {
        if request.uri().path() == "/slow" {
            // The slowness is the behaviour under test: three header timeouts long.
            tokio::time::sleep(Duration::from_millis(900)).await;
        }
        text(200, "done")
    })
    .await;
    let config = timed_listener("header_timeout = \"300ms\"") + &one_upstream(&["app"], "");
    let lb = start_lb(&config, &[("app", backend.addr)]).await;
    let mut conn = RawConn::connect(lb.addr).await;
    conn.send(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let response = conn
        .read_response()
        .await
        .expect("the connection was closed while its request was in flight");
    assert_eq!(response.status, 200);
    // The connection is still good for the next request.
    conn.send(b"GET /fast HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let next = conn
        .read_response()
        .await
        .expect("the keep-alive connection was closed after a slow request");
    assert_eq!(next.status, 200);
}

#[tokio::test]
async fn idle_timeout_does_not_cut_a_slow_response_body() {
    let backend = spawn_backend(|_request| async move {
        let (tx, rx) = mpsc::channel::<Bytes>(1);
        tokio::spawn(async move {
            for part in ["one ", "two ", "three"] {
                if tx.send(Bytes::from_static(part.as_bytes())).await.is_err() {
                    return;
                }
                // The slowness is the behaviour under test.
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
        });
        http::Response::new(channel_body(rx))
    })
    .await;
    let config = timed_listener("idle_timeout = \"300ms\"") + &one_upstream(&["app"], "");
    let lb = start_lb(&config, &[("app", backend.addr)]).await;
    let mut conn = RawConn::connect(lb.addr).await;
    conn.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let response = conn.read_response().await.expect("a response");
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"one two three");
}

// === request head size ===

#[tokio::test]
async fn request_head_over_max_header_bytes_is_431() {
    let backend = spawn_named_backend("ok").await;
    let config = timed_listener("max_header_bytes = 8192") + &one_upstream(&["app"], "");
    let lb = start_lb(&config, &[("app", backend.addr)]).await;

    let mut request = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: ".to_vec();
    request.extend(std::iter::repeat_n(b'a', 20 * 1024));
    request.extend_from_slice(b"\r\n\r\n");
    let mut conn = RawConn::connect(lb.addr).await;
    conn.send(&request).await;
    let response = conn.read_response().await.expect("an answer");
    assert_eq!(response.status, 431);
    assert_eq!(backend.request_count(), 0);

    // A head under the limit still passes.
    let mut conn = RawConn::connect(lb.addr).await;
    let mut request = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: ".to_vec();
    request.extend(std::iter::repeat_n(b'a', 4 * 1024));
    request.extend_from_slice(b"\r\n\r\n");
    conn.send(&request).await;
    assert_eq!(conn.read_response().await.expect("an answer").status, 200);
}

#[tokio::test]
async fn max_header_bytes_is_the_exact_limit() {
    // Just over and just under a 16 KiB limit: the limit must not round up to
    // whatever the read buffer happens to hold.
    let backend = spawn_named_backend("ok").await;
    let config = timed_listener("max_header_bytes = 16384") + &one_upstream(&["app"], "");
    let lb = start_lb(&config, &[("app", backend.addr)]).await;
    for (pad, status) in [(17 * 1024, 431), (15 * 1024, 200)] {
        let mut request = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: ".to_vec();
        request.extend(std::iter::repeat_n(b'a', pad));
        request.extend_from_slice(b"\r\n\r\n");
        let mut conn = RawConn::connect(lb.addr).await;
        conn.send(&request).await;
        let response = conn.read_response().await.expect("an answer");
        assert_eq!(response.status, status, "head of {} bytes", request.len());
    }
    assert_eq!(backend.request_count(), 1);
}

// === protocol variants ===

#[tokio::test]
async fn h2c_prior_knowledge_is_proxied() {
    let backend = spawn_path_backend().await;
    let lb = start_lb(&one_upstream(&["app"], ""), &[("app", backend.addr)]).await;
    let (mut sender, _connection) = h2c_connect(lb.addr).await;
    let request = Request::get("http://app.test/h2").body(empty()).unwrap();
    let (status, version, body) = within("h2 request", async {
        let response = sender.send_request(request).await.unwrap();
        let version = response.version();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, version, body)
    })
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(version, Version::HTTP_2);
    assert_eq!(body, "/h2");
    let seen = backend.last_request();
    assert_eq!(seen.version, Version::HTTP_11);
    assert_eq!(seen.headers["host"], "app.test");
}

#[tokio::test]
async fn http10_client_gets_an_http10_response_without_chunking() {
    // The backend streams a body of unknown length (chunked to weir).
    let backend = spawn_backend(|_request| async move {
        let (tx, rx) = mpsc::channel::<Bytes>(4);
        tokio::spawn(async move {
            for part in ["hello ", "from ", "a stream"] {
                let _ = tx.send(Bytes::from_static(part.as_bytes())).await;
            }
        });
        http::Response::new(channel_body(rx))
    })
    .await;
    let lb = start_lb(&one_upstream(&["app"], ""), &[("app", backend.addr)]).await;
    let mut conn = RawConn::connect(lb.addr).await;
    conn.send(b"GET / HTTP/1.0\r\nHost: a\r\n\r\n").await;
    let raw = conn.read_to_end().await;
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.0 200"), "response {text:?}");
    assert!(
        !text.to_ascii_lowercase().contains("transfer-encoding"),
        "response {text:?}"
    );
    assert!(
        text.ends_with("\r\n\r\nhello from a stream"),
        "response {text:?}"
    );
}

#[tokio::test]
async fn http10_keep_alive_is_honoured() {
    let backend = spawn_path_backend().await;
    let lb = start_lb(&one_upstream(&["app"], ""), &[("app", backend.addr)]).await;
    let mut conn = RawConn::connect(lb.addr).await;
    for path in ["/one", "/two"] {
        conn.send(
            format!("GET {path} HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n").as_bytes(),
        )
        .await;
        let response = conn
            .read_response()
            .await
            .expect("the connection was closed despite keep-alive");
        assert_eq!(response.version, "HTTP/1.0");
        assert_eq!(response.status, 200);
        assert!(!response.has_header("transfer-encoding"));
        assert_eq!(response.body, path.as_bytes());
    }
}

#[tokio::test]
async fn pipelined_requests_get_responses_in_order() {
    let backend = spawn_backend(|request| async move {
        let path = request.uri().path().to_owned();
        if path == "/one" {
            // A slower first answer must still come first.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        text(200, path)
    })
    .await;
    let lb = start_lb(&one_upstream(&["app"], ""), &[("app", backend.addr)]).await;
    let mut conn = RawConn::connect(lb.addr).await;
    conn.send(b"GET /one HTTP/1.1\r\nHost: a\r\n\r\nGET /two HTTP/1.1\r\nHost: a\r\n\r\n")
        .await;
    let first = conn.read_response().await.expect("first response");
    let second = conn.read_response().await.expect("second response");
    assert_eq!((first.status, first.body.as_slice()), (200, &b"/one"[..]));
    assert_eq!((second.status, second.body.as_slice()), (200, &b"/two"[..]));
}

#[tokio::test]
async fn expect_100_continue_works_end_to_end() {
    let backend = spawn_backend(|request| async move {
        let body = request.into_body().collect().await.unwrap().to_bytes();
        text(200, body)
    })
    .await;
    let lb = start_lb(&one_upstream(&["app"], ""), &[("app", backend.addr)]).await;
    let mut conn = RawConn::connect(lb.addr).await;
    conn.send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        .await;
    let interim = conn.read_response().await.expect("an interim response");
    assert_eq!(interim.status, 100);
    conn.send(b"hello").await;
    let response = conn.read_response().await.expect("the final response");
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"hello");
}

#[tokio::test]
async fn upgrade_requests_are_tunnelled() {
    let backend = spawn_backend(|request| async move {
        if !request.headers().contains_key("upgrade") {
            return text(426, "upgrade required");
        }
        tokio::spawn(async move {
            let Ok(upgraded) = hyper::upgrade::on(request).await else {
                return;
            };
            let mut io = TokioIo::new(upgraded);
            let mut buf = [0u8; 64];
            while let Ok(n @ 1..) = io.read(&mut buf).await {
                if io.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        });
        http::Response::builder()
            .status(101)
            .header("connection", "upgrade")
            .header("upgrade", "echo")
            .body(empty())
            .unwrap()
    })
    .await;
    let lb = start_lb(&one_upstream(&["app"], ""), &[("app", backend.addr)]).await;
    let mut conn = RawConn::connect(lb.addr).await;
    conn.send(b"GET /tunnel HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
        .await;
    let response = conn.read_response().await.expect("an answer");
    assert_eq!(
        response.status,
        101,
        "answer {} {:?}",
        response.status,
        String::from_utf8_lossy(&response.body)
    );
    conn.send(b"ping").await;
    let mut echoed = Vec::new();
    while echoed.len() < 4 {
        let mut more = conn.read_some().await;
        assert!(!more.is_empty(), "the tunnel closed");
        echoed.append(&mut more);
    }
    assert_eq!(echoed, b"ping");
}

// === PROXY protocol ===

fn proxy_protocol_lb_config(trusted: &str) -> String {
    format!(
        "[[listeners]]\nlisten = \"127.0.0.1:0\"\nproxy_protocol = true\n{trusted}\n\n{}",
        one_upstream(&["app"], "")
    )
}

#[tokio::test]
async fn proxy_protocol_gives_the_client_address_behind_an_l4_balancer() {
    let backend = spawn_named_backend("ok").await;
    let lb = start_lb(&proxy_protocol_lb_config(""), &[("app", backend.addr)]).await;
    // v1, then v2 (PROXY, TCP over IPv4), each followed by a request.
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    v2.extend_from_slice(&[198, 51, 100, 9, 127, 0, 0, 1, 0x04, 0xd2, 0x01, 0xbb]);
    for (header, client) in [
        (
            b"PROXY TCP4 203.0.113.7 127.0.0.1 56324 80\r\n".to_vec(),
            "203.0.113.7",
        ),
        (v2, "198.51.100.9"),
    ] {
        let mut conn = RawConn::connect(lb.addr).await;
        conn.send(&[header.as_slice(), b"GET / HTTP/1.1\r\nhost: t\r\n\r\n"].concat())
            .await;
        assert_eq!(conn.read_response().await.unwrap().status, 200);
        assert_eq!(backend.last_request().headers["x-forwarded-for"], client);
    }
}

#[tokio::test]
async fn without_a_valid_proxy_header_the_connection_is_closed() {
    let backend = spawn_named_backend("ok").await;
    let lb = start_lb(&proxy_protocol_lb_config(""), &[("app", backend.addr)]).await;
    for bytes in [
        b"GET / HTTP/1.1\r\nhost: t\r\n\r\n".as_slice(),
        b"PROXY TCP4 nonsense\r\nGET / HTTP/1.1\r\nhost: t\r\n\r\n".as_slice(),
    ] {
        let mut conn = RawConn::connect(lb.addr).await;
        conn.send(bytes).await;
        assert!(conn.closed_within_bound().await);
    }
    assert_eq!(backend.request_count(), 0);
}

#[tokio::test]
async fn a_proxy_header_from_outside_trusted_proxies_closes_the_connection() {
    let backend = spawn_named_backend("ok").await;
    let lb = start_lb(
        &proxy_protocol_lb_config("trusted_proxies = [\"10.0.0.0/8\"]"),
        &[("app", backend.addr)],
    )
    .await;
    let mut conn = RawConn::connect(lb.addr).await;
    conn.send(b"PROXY TCP4 203.0.113.7 127.0.0.1 56324 80\r\nGET / HTTP/1.1\r\nhost: t\r\n\r\n")
        .await;
    assert!(conn.closed_within_bound().await);
    assert_eq!(backend.request_count(), 0);
}

/// A backend that expects a PROXY header on every connection and answers each
/// request with the source address it carried ("none" for a LOCAL/UNKNOWN one).
async fn spawn_proxy_protocol_backend() -> Backend {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let accept = {
        let connections = connections.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                connections.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let Ok(source) = weir::proxy_protocol::read_header(&mut stream).await else {
                        return;
                    };
                    let said = source.map_or_else(|| "none".to_owned(), |s| s.to_string());
                    let service = hyper::service::service_fn(move |_request| {
                        let said = said.clone();
                        async move { Ok::<_, std::convert::Infallible>(text(200, said)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        })
    };
    Backend::from_parts(addr, connections, accept)
}

#[tokio::test]
async fn send_proxy_protocol_tells_the_backend_who_the_client_is() {
    for version in ["v1", "v2"] {
        let backend = spawn_proxy_protocol_backend().await;
        let lb = start_lb(
            &one_upstream(&["app"], &format!("send_proxy_protocol = \"{version}\"")),
            &[("app", backend.addr)],
        )
        .await;
        let mut conn = RawConn::connect(lb.addr).await;
        let client = conn.local_addr();
        for _ in 0..2 {
            conn.send(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n").await;
            let response = conn.read_response().await.unwrap();
            let said = String::from_utf8(response.body).unwrap();
            assert_eq!(
                (response.status, said),
                (200, client.to_string()),
                "{version}"
            );
        }
        // A backend connection belongs to one client: never pooled, one per request.
        assert_eq!(backend.connection_count(), 2, "{version}");
    }
}

#[tokio::test]
async fn health_checks_to_a_proxy_protocol_backend_send_a_local_header() {
    let backend = spawn_proxy_protocol_backend().await;
    let lb = start_lb(
        &one_upstream(
            &["app"],
            "send_proxy_protocol = \"v2\"\n\n[upstreams.app.health_check]\ninterval = \"20ms\"\nunhealthy_threshold = 1",
        ),
        &[("app", backend.addr)],
    )
    .await;
    // Checks open a connection each; wait for a few (polled: no event to await).
    within("three health checks", async {
        while backend.connection_count() < 3 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    // Had a check gone without its header, one failure would have taken the
    // backend down and this would be a 503.
    let reply = get(&client(), &lb.url("/"), None).await;
    assert_eq!(reply.status, 200);
}
