//! Bodies through the proxy over real sockets: 64 MiB each way, streamed rather than
//! buffered; `Expect: 100-continue` end to end; and a body of unknown length to an
//! HTTP/1.0 client, ended by the close instead of chunked.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;
use tokio::sync::{Notify, mpsc};

use support::*;

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

// === framing ===

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
