//! Clients that stall: a request body that stops coming (`body_timeout`) and a
//! client that stops reading its response (`send_timeout`). Neither may hold a
//! connection, a backend connection or a backend's in-flight slot for good.
//!
//! The tokio clock is paused: the timeouts are the input, and time jumps to the
//! next deadline whenever every task is waiting.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, StreamBody};
use support::*;

fn listener_config(extra: &str) -> String {
    format!(
        "[[listeners]]\nlisten = \"127.0.0.1:0\"\nbody_timeout = \"1s\"\nsend_timeout = \"1s\"\n{extra}\n"
    )
}

/// A backend that reads each request body to its end, then answers with its length.
async fn spawn_reading_backend() -> Backend {
    spawn_backend(|request| async move {
        match request.into_body().collect().await {
            Ok(body) => text(200, body.to_bytes().len().to_string()),
            Err(_) => text(400, "broken body"),
        }
    })
    .await
}

async fn a_stalled_body_is_answered_408_and_closed(upstream_extra: &str) {
    let backend = spawn_reading_backend().await;
    let config = listener_config("") + &one_upstream(&["app"], upstream_extra);
    let lb = start_lb(&config, &[("app", backend.addr)]).await;
    let mut conn = RawConn::connect(lb.addr).await;
    conn.send(b"PUT /x HTTP/1.1\r\nHost: a\r\nContent-Length: 65536\r\n\r\nx")
        .await;
    let response = conn.read_response().await.expect("an answer");
    assert_eq!(response.status, 408);
    assert_eq!(response.header("connection"), Some("close"));
    assert!(
        conn.closed_within_bound().await,
        "the connection stayed open"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stalled_streamed_body_is_answered_408() {
    a_stalled_body_is_answered_408_and_closed("").await;
}

#[tokio::test(start_paused = true)]
async fn a_stalled_body_kept_for_retries_is_answered_408() {
    // PUT is idempotent: with retries its body is read whole before it goes out.
    a_stalled_body_is_answered_408_and_closed("[upstreams.app.retries]\nattempts = 2\n").await;
}

#[tokio::test(start_paused = true)]
async fn a_slow_body_that_keeps_coming_is_not_cut() {
    let backend = spawn_reading_backend().await;
    let config = listener_config("") + &one_upstream(&["app"], "");
    let lb = start_lb(&config, &[("app", backend.addr)]).await;
    let mut conn = RawConn::connect(lb.addr).await;
    conn.send(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n")
        .await;
    // Five pauses, each under body_timeout, together well over it.
    for byte in b"hello" {
        tokio::time::sleep(Duration::from_millis(600)).await;
        conn.send(std::slice::from_ref(byte)).await;
    }
    let response = conn.read_response().await.expect("an answer");
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"5");
}

#[tokio::test(start_paused = true)]
async fn a_stalled_http2_body_is_answered_408() {
    let backend = spawn_reading_backend().await;
    let config = listener_config("") + &one_upstream(&["app"], "");
    let lb = start_lb(&config, &[("app", backend.addr)]).await;
    let (mut sender, _connection) = h2c_connect(lb.addr).await;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(Bytes::from_static(b"the start")).await.unwrap();
    let request = Request::post("http://app.test/x")
        .body(channel_body(rx))
        .unwrap();
    let response = within("an answer", sender.send_request(request))
        .await
        .unwrap();
    assert_eq!(response.status(), 408);
    drop(tx);
}

/// A backend whose `/big` answer never ends (a chunk whenever it can send one,
/// up to 1 GiB), and that answers anything else with "ok".
async fn spawn_endless_backend() -> Backend {
    spawn_backend(|request| async move {
        if request.uri().path() != "/big" {
            return text(200, "ok");
        }
        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
        let frames = futures_util::stream::iter(
            std::iter::repeat_n(chunk, 16 * 1024)
                .map(|chunk| Ok::<_, BoxError>(hyper::body::Frame::data(chunk))),
        );
        http::Response::new(StreamBody::new(frames).boxed())
    })
    .await
}

/// Waits until a request to the one-slot backend gets through: 503 while a
/// stuck client holds the slot, then "ok".
async fn served_once_the_backend_is_free(lb: &Lb) {
    let client = client();
    let next = within("a request once the stuck one is gone", async {
        loop {
            let reply = get(&client, &lb.url("/next"), None).await;
            if reply.status == 200 {
                return reply;
            }
            assert_eq!(reply.status, 503, "{}", reply.text());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!(next.text(), "ok");
}

#[tokio::test(start_paused = true)]
async fn a_client_that_never_reads_is_closed_and_frees_its_backend() {
    let backend = spawn_endless_backend().await;
    // One request at a time per backend: the stuck one must give its slot back.
    let config = listener_config("") + &one_upstream(&["app"], "max_connections_per_backend = 1\n");
    let lb = start_lb(&config, &[("app", backend.addr)]).await;
    let mut stuck = RawConn::connect(lb.addr).await;
    stuck.send(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n").await;
    // Never read: weir fills the socket, then waits send_timeout, then closes.
    served_once_the_backend_is_free(&lb).await;
    assert!(stuck.closed_within_bound().await);
}

#[tokio::test(start_paused = true)]
async fn an_http2_client_that_never_reads_is_closed() {
    let backend = spawn_endless_backend().await;
    let config = listener_config("") + &one_upstream(&["app"], "max_connections_per_backend = 1\n");
    let lb = start_lb(&config, &[("app", backend.addr)]).await;
    // A raw h2c client: the preface, its settings, one request on stream 1, then
    // nothing read.
    let mut stuck = RawConn::connect(lb.addr).await;
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    // SETTINGS: INITIAL_WINDOW_SIZE = 2^31-1, so flow control never stops weir.
    bytes.extend_from_slice(&[0, 0, 6, 0x4, 0, 0, 0, 0, 0, 0, 0x4, 0x7f, 0xff, 0xff, 0xff]);
    // WINDOW_UPDATE on the connection: +2^31-1-65535.
    let increment: u32 = 0x7fff_ffff - 65_535;
    bytes.extend_from_slice(&[0, 0, 4, 0x8, 0, 0, 0, 0, 0]);
    bytes.extend_from_slice(&increment.to_be_bytes());
    // HEADERS, END_STREAM | END_HEADERS, stream 1: GET http://a/big, literal
    // fields without indexing.
    let mut block = vec![0x82, 0x86]; // :method GET, :scheme http
    block.extend_from_slice(&[0x04, 4]); // :path, literal
    block.extend_from_slice(b"/big");
    block.extend_from_slice(&[0x01, 1, b'a']); // :authority
    bytes.extend_from_slice(&[0, 0, block.len() as u8, 0x1, 0x5, 0, 0, 0, 1]);
    bytes.extend_from_slice(&block);
    stuck.send(&bytes).await;
    served_once_the_backend_is_free(&lb).await;
}

#[tokio::test(start_paused = true)]
async fn a_tunnel_whose_client_never_reads_is_closed() {
    // The backend switches protocols, then sends as fast as it can until its
    // connection breaks (at most 1 GiB).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    let (broken_tx, broken_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        stream
            .write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n")
            .await
            .unwrap();
        let chunk = vec![b'x'; 64 * 1024];
        let mut sent = 0;
        while sent < 16 * 1024 && stream.write_all(&chunk).await.is_ok() {
            sent += 1;
        }
        let _ = broken_tx.send(sent);
    });
    let config = listener_config("") + &one_upstream(&["app"], "");
    let lb = start_lb(&config, &[("app", backend)]).await;
    let mut conn = RawConn::connect(lb.addr).await;
    conn.send(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n")
        .await;
    // Never read (not even the 101): weir fills the socket, waits send_timeout,
    // and closes the tunnel, which breaks the backend's side too.
    let sent = within("the tunnel closed", broken_rx).await.unwrap();
    assert!(
        sent < 16 * 1024,
        "the backend sent 1 GiB into a stuck tunnel"
    );
}
