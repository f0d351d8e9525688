//! Connections over real sockets: backend connections reused from one request to
//! the next, client connections kept alive (HTTP/1.0 too), pipelined, spoken as
//! h2c or handed over to an Upgrade tunnel, and the drain at shutdown.

mod support;

use std::sync::Arc;
use std::time::Duration;

use http::{Request, StatusCode, Version};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use support::*;

// === backend connections ===

#[tokio::test]
async fn sequential_requests_reuse_backend_connections() {
    let backend = spawn_named_backend("ok").await;
    let lb = start_lb(&one_upstream(&["app"], ""), &[("app", backend.addr)]).await;

    let stream = within("connect", TcpStream::connect(lb.addr))
        .await
        .unwrap();
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

// === client connections ===

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

/// A client that sends its requests and then closes its side gets at least the
/// first answer: requests already read are not abandoned for the close
/// behind them (the close counts once the next head is read).
#[tokio::test]
async fn pipelined_requests_then_a_half_close_still_get_the_first_answer() {
    let backend = spawn_backend(|request| async move {
        // The close arrives while the first request is served.
        tokio::time::sleep(Duration::from_millis(100)).await;
        text(200, request.uri().path().to_owned())
    })
    .await;
    let lb = start_lb(&one_upstream(&["app"], ""), &[("app", backend.addr)]).await;
    let mut conn = RawConn::connect(lb.addr).await;
    conn.send(b"GET /one HTTP/1.1\r\nHost: a\r\n\r\nGET /two HTTP/1.1\r\nHost: a\r\n\r\n")
        .await;
    conn.shutdown_write().await;
    let first = conn.read_response().await.expect("the first answer");
    assert_eq!((first.status, first.body.as_slice()), (200, &b"/one"[..]));
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
