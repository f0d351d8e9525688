//! Requests weir refuses itself, forwarding nothing, over real sockets: malformed
//! or ambiguous heads and bodies (400: no or two Host lines, Content-Length with
//! Transfer-Encoding or twice, bad chunk sizes, control characters, obs-fold),
//! alone, on a keep-alive connection or pipelined; and heads over
//! `max_header_bytes` (431).

mod support;

use http_body_util::BodyExt;

use support::*;

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
