//! Quiet HTTP/1 keep-alive connections are parked: the serving loop's state is dropped and
//! only the socket kept until the client speaks again. Nothing of it may show to
//! clients. These tests let a connection stay quiet well past the park delay
//! (10 ms); that idle time is the behaviour under test, not a synchronisation.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, StatusCode, Version};
use http_body_util::BodyExt;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing_subscriber::layer::{Context, SubscriberExt};

/// Well past the park delay.
const QUIET: Duration = Duration::from_millis(100);

/// Counts weir's `parked` trace events: a connection task says it when the loop's
/// part of its connection has ended and been dropped, only the socket kept.
struct ParkedEvents(watch::Sender<usize>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for ParkedEvents {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        struct Message(bool);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0 |= field.name() == "message" && format!("{value:?}") == "parked";
            }
        }
        if event.metadata().target() != "weir::listener" {
            return;
        }
        let mut parked = Message(false);
        event.record(&mut parked);
        if parked.0 {
            self.0.send_modify(|count| *count += 1);
        }
    }
}

/// The connections parked on this thread from now on, while the guard lives.
/// A `#[tokio::test]` runs weir's tasks on its one thread, so what other tests
/// park is not counted.
fn count_parked() -> (watch::Receiver<usize>, tracing::subscriber::DefaultGuard) {
    let (count, parked) = watch::channel(0);
    let subscriber = tracing_subscriber::registry().with(ParkedEvents(count));
    (parked, tracing::subscriber::set_default(subscriber))
}

/// The observable side of parking: a keep-alive connection quiet after a
/// complete request is parked (the serving loop and its buffers dropped),
/// then picked up by the client's next request, served on the same socket, and
/// parked again. Waits for the events themselves; with parking off, none comes
/// and the first wait fails.
#[tokio::test]
async fn a_quiet_connection_is_parked_then_picked_up_by_its_next_request() {
    let (mut parked, _counting) = count_parked();
    let backend = spawn_named_backend("ok").await;
    let lb = start_lb(&one_upstream(&["app"], ""), &[("app", backend.addr)]).await;
    let mut conn = RawConn::connect(lb.addr).await;
    for (done, path) in ["/1", "/2"].into_iter().enumerate() {
        conn.send(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
            .await;
        let response = conn.read_response().await.expect("a response");
        assert_eq!((response.status, &response.body[..]), (200, &b"ok"[..]));
        let waited = within(
            "the quiet connection to be parked",
            parked.wait_for(|&count| count > done),
        )
        .await;
        assert_eq!(*waited.expect("counting"), done + 1);
    }
    assert_eq!(backend.paths(), ["/1", "/2"]);
}

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

/// A backend that answers every request at once, before reading its body, and
/// keeps the connection open without reading further: the request line of each
/// connection's one request is recorded.
async fn early_answering_backend() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let recorded = lines.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let lines = lines.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match stream.read(&mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                lines
                    .lock()
                    .unwrap()
                    .push(head.lines().next().unwrap_or_default().to_owned());
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nearly")
                    .await;
                // Open, never read: the rest of the request stays on the wire.
                std::future::pending::<()>().await;
                drop(stream);
            });
        }
    });
    (addr, recorded)
}

#[tokio::test]
async fn a_body_that_follows_an_early_answer_after_a_pause_is_never_a_request() {
    let (backend, lines) = early_answering_backend().await;
    let lb = start_lb(&one_upstream(&["app"], ""), &[("app", backend)]).await;
    let mut conn = RawConn::connect(lb.addr).await;
    let smuggled = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
    let head = format!(
        "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
        smuggled.len()
    );
    conn.send(head.as_bytes()).await;
    let answer = conn.read_response().await.expect("the early answer");
    assert_eq!(answer.body, b"early");
    // The body comes well after the answer, past the park delay. weir may have
    // closed the connection meanwhile (the backend dropped the body); if not,
    // the next request proper is answered, and is the only other one forwarded.
    tokio::time::sleep(QUIET).await;
    if conn.try_send(smuggled).await
        && conn
            .try_send(b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
        && let Some(response) = conn.read_response().await
    {
        assert_eq!(response.status, 200);
    }
    let seen = lines.lock().unwrap().clone();
    assert!(
        !seen.iter().any(|line| line.contains("/smuggled")),
        "body bytes were forwarded as a request: {seen:?}"
    );
}

#[tokio::test]
async fn a_pipelined_head_split_after_a_body_survives_a_pause() {
    let backend = spawn_named_backend("ok").await;
    let lb = start_lb(&one_upstream(&["app"], ""), &[("app", backend.addr)]).await;
    let mut conn = RawConn::connect(lb.addr).await;
    conn.send(
        b"POST /post HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /get HTTP/1.1\r\nHo",
    )
    .await;
    assert_eq!(conn.read_response().await.expect("a response").status, 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    conn.send(b"st: a\r\n\r\n").await;
    assert_eq!(conn.read_response().await.expect("a response").status, 200);
    assert_eq!(backend.paths(), ["/post", "/get"]);
}

#[tokio::test]
async fn a_chunked_body_then_a_split_pipelined_head_survives_a_pause() {
    let backend = spawn_named_backend("ok").await;
    let lb = start_lb(&one_upstream(&["app"], ""), &[("app", backend.addr)]).await;
    let mut conn = RawConn::connect(lb.addr).await;
    conn.send(b"POST /post HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nX-T: 1\r\n\r\nGET /get HTTP/1.1\r\nHo")
        .await;
    assert_eq!(conn.read_response().await.expect("a response").status, 200);
    tokio::time::sleep(QUIET).await;
    conn.send(b"st: a\r\n\r\n").await;
    assert_eq!(conn.read_response().await.expect("a response").status, 200);
    // And, quiet again with nothing pending, it parks and serves the next one.
    tokio::time::sleep(QUIET).await;
    conn.send(b"GET /last HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert_eq!(conn.read_response().await.expect("a response").status, 200);
    assert_eq!(backend.paths(), ["/post", "/get", "/last"]);
}

#[tokio::test]
async fn a_backend_connection_still_taking_a_body_is_not_handed_to_the_next_request() {
    // The backend answers at once and never reads the body; the client sends only
    // part of it. The next request must not wait behind that body.
    let (backend, lines) = early_answering_backend().await;
    // A connect timeout past the test's bound: only the pool's rule, not the
    // bounded wait for a busy connection, can make this pass.
    let upstream = one_upstream(&["app"], "timeouts = { connect = \"30s\" }\n");
    let lb = start_lb(&upstream, &[("app", backend)]).await;
    let mut uploading = RawConn::connect(lb.addr).await;
    uploading
        .send(b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\npart")
        .await;
    let answer = uploading.read_response().await.expect("the early answer");
    assert_eq!(answer.body, b"early");
    let reply = get(&client(), &lb.url("/next"), None).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        *lines.lock().unwrap(),
        ["POST /upload HTTP/1.1", "GET /next HTTP/1.1"]
    );
}

#[tokio::test]
async fn a_body_nobody_reads_after_an_early_answer_ends_the_connection() {
    // The backend answers at once and never reads; the client goes on sending a
    // large body. weir stops forwarding it and closes the client's connection
    // after the answer, instead of both connections waiting for good.
    let (backend, _lines) = early_answering_backend().await;
    let lb = start_lb(&one_upstream(&["app"], ""), &[("app", backend)]).await;
    let stream = tokio::net::TcpStream::connect(lb.addr).await.unwrap();
    let (mut reading, mut writing) = stream.into_split();
    const SIZE: usize = 256 * 1024 * 1024;
    let sender = tokio::spawn(async move {
        let head = format!("POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: {SIZE}\r\n\r\n");
        writing.write_all(head.as_bytes()).await?;
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..SIZE / chunk.len() {
            writing.write_all(&chunk).await?;
        }
        Ok::<_, std::io::Error>(())
    });
    let mut received = Vec::new();
    within("the answer, then the close", async {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = reading.read(&mut buf).await {
            received.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert!(
        received.ends_with(b"early"),
        "{:?}",
        String::from_utf8_lossy(&received)
    );
    let sent = within("the sender to stop", sender).await.unwrap();
    assert!(sent.is_err(), "the whole body went somewhere");
}
