//! Backends that fail, over real sockets: a refused connection (502), an answer
//! slower than `timeouts.response` (504), a head too large or not HTTP at all
//! (502), a response broken mid-body that must not reach the client as complete;
//! and `timeouts.response` covering the head only, not a slow body.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use support::*;

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

#[tokio::test]
async fn response_timeout_holds_for_every_exchange_on_a_pooled_connection() {
    // One backend connection carries every request: its response timer is
    // set again for each exchange, after it fired while the connection sat
    // idle in the pool.
    let backend = spawn_backend(|request| async move {
        match request.uri().path() {
            "/slower-than-timeout" => std::future::pending::<()>().await,
            // The slowness is the behaviour under test.
            "/within-timeout" => tokio::time::sleep(Duration::from_millis(100)).await,
            _ => {}
        }
        text(200, "ok")
    })
    .await;
    let lb = start_lb(
        &one_upstream(&["app"], r#"timeouts = { response = "200ms" }"#),
        &[("app", backend.addr)],
    )
    .await;
    let client = client();
    assert_eq!(get(&client, &lb.url("/at-once"), None).await.status, 200);
    // Idle in the pool past the first exchange's deadline.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        get(&client, &lb.url("/within-timeout"), None).await.status,
        200
    );
    assert_eq!(
        get(&client, &lb.url("/within-timeout"), None).await.status,
        200
    );
    assert_eq!(
        backend.connection_count(),
        1,
        "the pooled connection carried them"
    );
    let started = std::time::Instant::now();
    let reply = get(&client, &lb.url("/slower-than-timeout"), None).await;
    assert_eq!(reply.status, 504);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}
