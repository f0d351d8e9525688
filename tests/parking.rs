//! Quiet HTTP/1 keep-alive connections are parked: hyper's state is dropped and
//! only the socket kept until the client speaks again. Nothing of it may show to
//! clients. These tests let a connection stay quiet well past the park delay
//! (10 ms); that idle time is the behaviour under test, not a synchronisation.

mod support;

use std::time::Duration;

use http::{Request, StatusCode, Version};
use http_body_util::BodyExt;
use support::*;

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

    // All on the one client connection, each answered.
    assert_eq!(backend.paths(), ["/1", "/2", "/3", "/4"]);
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
    let (mut sender, connection) = h2c_connect(lb.addr).await;
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

#[tokio::test]
async fn a_body_still_arriving_after_an_early_response_is_never_read_as_a_request() {
    // The backend answers without waiting for the request body.
    let backend = spawn_named_backend("early").await;
    let lb = start_lb(&one_upstream(&["app"], ""), &[("app", backend.addr)]).await;
    let mut conn = RawConn::connect(lb.addr).await;
    let smuggled = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
        smuggled.len() + 4
    );
    conn.send(head.as_bytes()).await;
    conn.send(b"abcd").await;
    let _ = conn.read_response().await;
    // The rest of the body comes after a pause past the park delay.
    tokio::time::sleep(QUIET).await;
    conn.send(smuggled).await;
    tokio::time::sleep(QUIET).await;
    assert_eq!(backend.paths(), ["/upload"]);
}

#[tokio::test]
async fn a_partial_pipelined_head_survives_a_pause() {
    let backend = spawn_named_backend("ok").await;
    let lb = start_lb(&one_upstream(&["app"], ""), &[("app", backend.addr)]).await;
    let mut conn = RawConn::connect(lb.addr).await;
    conn.send(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHo")
        .await;
    assert_eq!(conn.read_response().await.expect("a response").status, 200);
    tokio::time::sleep(QUIET).await;
    conn.send(b"st: a\r\n\r\n").await;
    assert_eq!(conn.read_response().await.expect("a response").status, 200);
    assert_eq!(backend.request_count(), 2);
}

#[tokio::test]
async fn a_slow_reader_gets_the_whole_response() {
    const SIZE: usize = 4 * 1024 * 1024;
    let backend = spawn_backend(|_request| async move { text(200, vec![b'x'; SIZE]) }).await;
    let lb = start_lb(&one_upstream(&["app"], ""), &[("app", backend.addr)]).await;
    let mut conn = RawConn::connect(lb.addr).await;
    conn.send(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n").await;
    // Read a little, then let weir find the socket full for a while.
    let mut received = conn.read_some().await;
    tokio::time::sleep(QUIET).await;
    let wanted = |bytes: &[u8]| {
        let head = bytes.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        Some(head + SIZE)
    };
    within("the whole response", async {
        while wanted(&received).is_none_or(|total| received.len() < total) {
            let more = conn.read_some().await;
            assert!(!more.is_empty(), "closed after {} bytes", received.len());
            received.extend_from_slice(&more);
        }
    })
    .await;
    // And the connection still serves the next request.
    conn.send(b"GET /again HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert_eq!(conn.read_response().await.expect("a response").status, 200);
}
