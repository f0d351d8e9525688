//! A listener's `header_timeout` and `idle_timeout` over real sockets: a head that
//! does not arrive in time is cut, trickled in or on a keep-alive connection; a
//! quiet keep-alive connection is closed; neither cuts an idle connection early,
//! a slow backend or a slow response body.

mod support;

use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use support::*;

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
    let stream = within("connect", TcpStream::connect(lb.addr))
        .await
        .unwrap();
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
