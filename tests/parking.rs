//! Quiet HTTP/1 keep-alive connections are parked: hyper's state is dropped and
//! only the socket kept until the client speaks again. Nothing of it may show to
//! clients. These tests let a connection stay quiet well past the park delay
//! (10 ms); that idle time is the behaviour under test, not a synchronisation.

mod support;

use std::time::Duration;

use http::{Request, StatusCode, Version};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;
use tokio::net::TcpStream;

/// Well past the park delay.
const QUIET: Duration = Duration::from_millis(100);

#[tokio::test]
async fn a_parked_connection_serves_what_comes_next() {
    let backend = spawn_named_backend("ok").await;
    let lb = start_lb(&one_upstream(&["app"], ""), &[("app", backend.addr)]).await;
    let mut conn = RawConn::connect(lb.addr).await;
    conn.send(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert_eq!(conn.read_response().await.expect("a response").status, 200);

    // Two pipelined requests wake it.
    tokio::time::sleep(QUIET).await;
    conn.send(b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\nGET /3 HTTP/1.1\r\nHost: a\r\n\r\n")
        .await;
    for _ in 0..2 {
        assert_eq!(conn.read_response().await.expect("a response").status, 200);
    }

    // A head that arrives in two parts, the first waking it.
    tokio::time::sleep(QUIET).await;
    conn.send(b"POST /4 HTTP/1.1\r\nHost: a\r\nContent-Le")
        .await;
    tokio::time::sleep(QUIET).await;
    conn.send(b"ngth: 5\r\n\r\nhello").await;
    assert_eq!(conn.read_response().await.expect("a response").status, 200);

    let paths: Vec<String> = backend
        .requests
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.uri.path().to_owned())
        .collect();
    // All on the one client connection, each answered.
    assert_eq!(paths, ["/1", "/2", "/3", "/4"]);
}

#[tokio::test]
async fn the_drain_closes_a_parked_connection_at_once() {
    let backend = spawn_named_backend("ok").await;
    let config = "[runtime]\nshutdown_timeout = \"60s\"\n".to_owned() + &one_upstream(&["app"], "");
    let lb = start_lb(&config, &[("app", backend.addr)]).await;
    let mut conn = RawConn::connect(lb.addr).await;
    conn.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert_eq!(conn.read_response().await.expect("a response").status, 200);
    tokio::time::sleep(QUIET).await;

    lb.trigger.trigger();
    assert!(
        conn.closed_within_bound().await,
        "a parked connection stayed open during the drain"
    );
    // Nothing else is open: the drain is over long before shutdown_timeout.
    within("weir finishes draining", lb.running.wait()).await;
}

#[tokio::test]
async fn quiet_http2_connections_are_not_parked() {
    let backend = spawn_named_backend("ok").await;
    let lb = start_lb(&one_upstream(&["app"], ""), &[("app", backend.addr)]).await;
    let stream = TcpStream::connect(lb.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let connection = tokio::spawn(connection);
    for _ in 0..3 {
        let request = Request::get("http://app.test/").body(empty()).unwrap();
        let response = within("an h2 request", sender.send_request(request))
            .await
            .expect("the HTTP/2 connection is still up");
        assert_eq!(response.version(), Version::HTTP_2);
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "ok");
        tokio::time::sleep(QUIET).await;
    }
    assert!(!connection.is_finished());
}
