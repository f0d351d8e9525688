//! Backend connections as weir's HTTP/1 client keeps them: reused when an
//! exchange ended cleanly, never when the backend sent more than its answer
//! (those bytes must not be read as the answer to the next request).

mod support;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use support::*;

/// Reads request heads off `stream` one after the other and answers each
/// with `answer`, until the client closes.
async fn answer_each(mut stream: tokio::net::TcpStream, answer: &'static [u8]) {
    // The first head was read by the harness.
    if stream.write_all(answer).await.is_err() {
        return;
    }
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
        if head.ends_with(b"\r\n\r\n") {
            head.clear();
            if stream.write_all(answer).await.is_err() {
                return;
            }
        }
    }
}

#[tokio::test]
async fn a_clean_exchange_leaves_its_connection_for_the_next() {
    let backend = spawn_raw_backend(|stream| {
        answer_each(stream, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    })
    .await;
    let lb = start_lb(&one_upstream(&["app"], ""), &[("app", backend.addr)]).await;
    let client = client();
    for _ in 0..5 {
        let reply = get(&client, &lb.url("/"), None).await;
        assert_eq!((reply.status.as_u16(), reply.text().as_str()), (200, "ok"));
    }
    assert_eq!(backend.connection_count(), 1);
}

#[tokio::test]
async fn bytes_after_an_answer_never_answer_the_next_request() {
    // Every answer carries a second, unasked-for one behind it.
    let backend = spawn_raw_backend(|stream| {
        answer_each(
            stream,
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled",
        )
    })
    .await;
    let lb = start_lb(&one_upstream(&["app"], ""), &[("app", backend.addr)]).await;
    let client = client();
    for _ in 0..5 {
        let reply = get(&client, &lb.url("/"), None).await;
        assert_eq!((reply.status.as_u16(), reply.text().as_str()), (200, "ok"));
    }
    // Each connection was spent by the bytes its answer dragged along.
    assert_eq!(backend.connection_count(), 5);
}

#[tokio::test]
async fn a_chunked_upload_reaches_the_backend_rechunked_whole() {
    use http_body_util::BodyExt;
    let backend = spawn_backend(|request| async move {
        let chunked = request
            .headers()
            .get("transfer-encoding")
            .is_some_and(|v| v == "chunked");
        let body = request.into_body().collect().await.unwrap().to_bytes();
        text(200, format!("{chunked} {}", String::from_utf8_lossy(&body)))
    })
    .await;
    let lb = start_lb(&one_upstream(&["app"], ""), &[("app", backend.addr)]).await;
    let mut conn = RawConn::connect(lb.addr).await;
    // Chunks of 5, 17 (0x11) and 300 (0x12c) bytes: size lines of one to
    // three hex digits on the way to the backend.
    let big = "z".repeat(300);
    let request = format!(
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
         5\r\nhello\r\n11\r\n-seventeen-bytes-\r\n12c\r\n{big}\r\n0\r\n\r\n"
    );
    conn.send(request.as_bytes()).await;
    let response = conn.read_response().await.expect("an answer");
    assert_eq!(response.status, 200);
    assert_eq!(
        String::from_utf8(response.body).unwrap(),
        format!("true hello-seventeen-bytes-{big}")
    );
}
