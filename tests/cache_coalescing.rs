//! Concurrent misses of one key over real sockets: one request reaches the
//! backend and every other client reads its body as it streams in; a body that
//! breaks reaches every client broken and is not stored; the first client going
//! away leaves the others their whole body; a waiter gives up on a leader slower
//! than `lock_timeout`.
//!
//! The backends hold their answers until the test has seen, in weir's metrics,
//! that every client joined the fill in progress (`coalesced`), so no client can
//! come late and be answered from the store instead.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};

use support::metrics::sample;
use support::*;

/// The body every held backend answers with: `BODY_LEN` bytes, sent in two halves.
const BODY_LEN: usize = 64 * 1024;

fn body_bytes() -> Bytes {
    Generator::new(3).chunk(BODY_LEN)
}

/// weir with one cached route, named `site`, in front of `backend`;
/// `cache` is the route's `cache` value.
async fn start_cached(cache: &str, backend: &Backend) -> Lb {
    let text = format!(
        "[[routes]]\nname = \"site\"\nupstream = \"app\"\ncache = {cache}\n\n\
         [upstreams.app]\nbackends = [{{ address = \"{{app}}\" }}]\n"
    );
    start_lb(&text, &[("app", backend.addr)]).await
}

/// Waits until `count` requests joined a fill led by another.
async fn until_coalesced(lb: &Lb, count: usize) {
    let what = format!("{count} requests to join the fill in progress");
    within(&what, async {
        while lb.cache_results("site", "coalesced") < count as f64 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert_eq!(lb.cache_results("site", "coalesced"), count as f64);
}

/// Waits until `count` client responses were finished or abandoned (their
/// durations observed when weir dropped their bodies).
async fn until_finished(lb: &Lb, count: usize) {
    let what = format!("{count} responses to be done");
    within(&what, async {
        loop {
            let done =
                sample(&lb.metrics(), "weir_request_duration_seconds_count", &[]).unwrap_or(0.0);
            if done >= count as f64 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

/// A backend that answers `cache-control: max-age=60` with `body` whose head
/// and first half go out once `head` is true, and the rest once `rest` is.
/// `arrived` hears of each request.
async fn held_backend(
    body: Bytes,
    head: watch::Receiver<bool>,
    rest: watch::Receiver<bool>,
    arrived: mpsc::UnboundedSender<()>,
) -> Backend {
    spawn_backend(move |_| {
        let (body, mut head, mut rest) = (body.clone(), head.clone(), rest.clone());
        let arrived = arrived.clone();
        async move {
            let _ = arrived.send(());
            let _ = head.wait_for(|go| *go).await;
            let (tx, rx) = mpsc::channel::<Bytes>(2);
            let length = body.len();
            tokio::spawn(async move {
                let half = body.len() / 2;
                if tx.send(body.slice(..half)).await.is_err() {
                    return;
                }
                let _ = rest.wait_for(|go| *go).await;
                let _ = tx.send(body.slice(half..)).await;
            });
            Response::builder()
                .header("cache-control", "max-age=60")
                .header("content-length", length)
                .body(channel_body(rx))
                .unwrap()
        }
    })
    .await
}

const GET_COLD: &[u8] = b"GET /cold HTTP/1.1\r\nHost: cache.test\r\n\r\n";

#[tokio::test]
async fn a_hundred_concurrent_misses_reach_the_backend_once() {
    const CLIENTS: usize = 100;
    let body = body_bytes();
    let (head_tx, head_rx) = watch::channel(false);
    let (rest_tx, rest_rx) = watch::channel(false);
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel();
    let backend = held_backend(body.clone(), head_rx, rest_rx, arrived_tx).await;
    let lb = start_cached("true", &backend).await;

    let mut conns = Vec::new();
    for _ in 0..CLIENTS {
        conns.push(RawConn::connect(lb.addr).await);
    }
    for conn in &mut conns {
        conn.send(GET_COLD).await;
    }
    within("the leader's request", arrived.recv())
        .await
        .unwrap();
    // Every request is out; the head goes back only now, and the end of the
    // body only once all others joined the fill.
    head_tx.send(true).unwrap();
    let readers: Vec<_> = conns
        .into_iter()
        .map(|mut conn| tokio::spawn(async move { conn.read_response().await }))
        .collect();
    until_coalesced(&lb, CLIENTS - 1).await;
    rest_tx.send(true).unwrap();

    let mut stored = 0;
    let mut collapsed = 0;
    for reader in readers {
        let response = within("a client's response", reader)
            .await
            .unwrap()
            .expect("a response");
        assert_eq!(response.status, 200);
        assert_eq!(response.header("content-length"), Some("65536"));
        assert!(response.body == body, "a client got another body");
        match response.header("cache-status") {
            Some("weir; fwd=miss; stored") => stored += 1,
            Some("weir; fwd=miss; collapsed") => collapsed += 1,
            other => panic!("Cache-Status {other:?}"),
        }
    }
    assert_eq!((stored, collapsed), (1, CLIENTS - 1));
    assert_eq!(backend.request_count(), 1);
    assert!(arrived.try_recv().is_err());
    assert_eq!(lb.cache_results("site", "miss"), 1.0);
    assert_eq!(lb.cache_results("site", "coalesced"), (CLIENTS - 1) as f64);

    let after = get(&client(), &lb.url("/cold"), Some("cache.test")).await;
    assert_eq!(after.header("cache-status"), Some("weir; hit"));
    assert_eq!(after.body, body);
    assert_eq!(backend.request_count(), 1);
}

/// What one client read of a response, up to the close of its connection.
struct Broken {
    head: String,
    body: Vec<u8>,
    closed: bool,
}

async fn read_until_closed(mut conn: RawConn) -> Broken {
    let closed = conn.closed_within_bound().await;
    let raw = conn.read_some().await;
    let at = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    Broken {
        head: String::from_utf8_lossy(&raw[..at]).to_ascii_lowercase(),
        body: raw[at + 4..].to_vec(),
        closed,
    }
}

/// A backend that sends the head and half of a 100,000-byte body (chunked, or
/// with a `Content-Length` of the whole), then, on its first connection, drops
/// it once `cut` says so; later connections get the whole response.
async fn breaking_backend(
    chunked: bool,
    cut: watch::Receiver<bool>,
    half_sent: mpsc::UnboundedSender<()>,
) -> Backend {
    let connections = Arc::new(AtomicUsize::new(0));
    spawn_raw_backend(move |mut stream| {
        let first = connections.fetch_add(1, Ordering::SeqCst) == 0;
        let (mut cut, half_sent) = (cut.clone(), half_sent.clone());
        async move {
            let body = Generator::new(5).chunk(100_000);
            let framing = if chunked {
                "transfer-encoding: chunked".to_owned()
            } else {
                format!("content-length: {}", body.len())
            };
            let head = format!("HTTP/1.1 200 OK\r\ncache-control: max-age=60\r\n{framing}\r\n\r\n");
            let frame = |part: &[u8]| -> Vec<u8> {
                if chunked {
                    [format!("{:x}\r\n", part.len()).as_bytes(), part, b"\r\n"].concat()
                } else {
                    part.to_vec()
                }
            };
            let end: &[u8] = if chunked { b"0\r\n\r\n" } else { b"" };
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(&frame(&body[..50_000])).await;
            if first {
                let _ = half_sent.send(());
                let _ = cut.wait_for(|go| *go).await;
                // Dropped here: the rest never comes.
                return;
            }
            let _ = stream.write_all(&frame(&body[50_000..])).await;
            let _ = stream.write_all(end).await;
            let _ = stream.flush().await;
        }
    })
    .await
}

async fn a_broken_fill_reaches_every_client_broken(chunked: bool) {
    const CLIENTS: usize = 10;
    let (cut_tx, cut_rx) = watch::channel(false);
    let (half_tx, mut half_sent) = mpsc::unbounded_channel();
    let backend = breaking_backend(chunked, cut_rx, half_tx).await;
    let lb = start_cached("true", &backend).await;
    let expected = Generator::new(5).chunk(100_000);

    let mut leader = RawConn::connect(lb.addr).await;
    leader.send(GET_COLD).await;
    within("the first half", half_sent.recv()).await.unwrap();
    let mut conns = vec![leader];
    for _ in 1..CLIENTS {
        let mut conn = RawConn::connect(lb.addr).await;
        conn.send(GET_COLD).await;
        conns.push(conn);
    }
    let readers: Vec<_> = conns
        .into_iter()
        .map(|conn| tokio::spawn(read_until_closed(conn)))
        .collect();
    until_coalesced(&lb, CLIENTS - 1).await;
    cut_tx.send(true).unwrap();

    for (i, reader) in readers.into_iter().enumerate() {
        let seen = within("a client's broken response", reader).await.unwrap();
        assert!(seen.head.starts_with("http/1.1 200"), "{}", seen.head);
        assert!(seen.closed, "client {i}: the connection stayed open");
        if chunked {
            assert!(seen.head.contains("transfer-encoding: chunked"));
            assert!(
                !seen.body.ends_with(b"0\r\n\r\n"),
                "client {i}: a chunked body ended as if whole"
            );
        } else {
            assert!(
                seen.head.contains("content-length: 100000"),
                "{}",
                seen.head
            );
            assert!(
                seen.body.len() < expected.len(),
                "client {i}: a whole body from a broken response"
            );
            assert!(expected.starts_with(&seen.body), "client {i}: wrong bytes");
        }
    }

    // Nothing was stored: the next request goes to the backend, whole this time.
    let next = get(&client(), &lb.url("/cold"), Some("cache.test")).await;
    assert_eq!(next.header("cache-status"), Some("weir; fwd=miss; stored"));
    assert_eq!(next.body, expected);
    assert_eq!(backend.connection_count(), 2);
}

#[tokio::test]
async fn a_fill_broken_mid_body_reaches_every_client_short() {
    a_broken_fill_reaches_every_client_broken(false).await;
}

#[tokio::test]
async fn a_chunked_fill_broken_mid_body_never_ends_cleanly() {
    a_broken_fill_reaches_every_client_broken(true).await;
}

#[tokio::test]
async fn a_miss_streams_to_its_client_while_it_is_stored() {
    let body = body_bytes();
    let (_head_tx, head_rx) = watch::channel(true);
    let (rest_tx, rest_rx) = watch::channel(false);
    let (arrived_tx, _arrived) = mpsc::unbounded_channel();
    let backend = held_backend(body.clone(), head_rx, rest_rx, arrived_tx).await;
    let lb = start_cached("true", &backend).await;

    let mut conn = RawConn::connect(lb.addr).await;
    conn.send(GET_COLD).await;
    // The first half reaches the client while the backend holds the second.
    let mut raw = Vec::new();
    let half = &body[..BODY_LEN / 2];
    within("the first half before the rest is sent", async {
        while !raw.ends_with(half) {
            let more = conn.read_some().await;
            assert!(!more.is_empty(), "closed early");
            raw.extend(more);
        }
    })
    .await;
    rest_tx.send(true).unwrap();
    let rest = within("the second half", async {
        let mut rest = Vec::new();
        while rest.len() < BODY_LEN / 2 {
            let more = conn.read_some().await;
            assert!(!more.is_empty(), "closed early");
            rest.extend(more);
        }
        rest
    })
    .await;
    assert_eq!(rest, body[BODY_LEN / 2..]);
    let after = get(&client(), &lb.url("/cold"), Some("cache.test")).await;
    assert_eq!(after.header("cache-status"), Some("weir; hit"));
    assert_eq!(after.body, body);
}

#[tokio::test]
async fn waiters_get_the_whole_body_when_the_first_client_goes_away() {
    const CLIENTS: usize = 10;
    let body = body_bytes();
    let (_head_tx, head_rx) = watch::channel(true);
    let (rest_tx, rest_rx) = watch::channel(false);
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel();
    let backend = held_backend(body.clone(), head_rx, rest_rx, arrived_tx).await;
    let lb = start_cached("true", &backend).await;

    let mut leader = RawConn::connect(lb.addr).await;
    leader.send(GET_COLD).await;
    within("the leader's request", arrived.recv())
        .await
        .unwrap();
    let first_bytes = leader.read_some().await;
    assert!(first_bytes.starts_with(b"HTTP/1.1 200"));
    let mut readers = Vec::new();
    for _ in 1..CLIENTS {
        let mut conn = RawConn::connect(lb.addr).await;
        conn.send(GET_COLD).await;
        readers.push(tokio::spawn(async move { conn.read_response().await }));
    }
    until_coalesced(&lb, CLIENTS - 1).await;

    // The first client hangs up before the end; weir drops its response.
    drop(leader);
    until_finished(&lb, 1).await;
    rest_tx.send(true).unwrap();

    for reader in readers {
        let response = within("a waiter's response", reader)
            .await
            .unwrap()
            .expect("a response");
        assert_eq!(response.status, 200);
        assert_eq!(
            response.header("cache-status"),
            Some("weir; fwd=miss; collapsed")
        );
        assert!(response.body == body, "a waiter got a partial body");
    }
    let after = get(&client(), &lb.url("/cold"), Some("cache.test")).await;
    assert_eq!(after.header("cache-status"), Some("weir; hit"));
    assert_eq!(after.body, body);
    assert_eq!(backend.request_count(), 1);
}

#[tokio::test]
async fn a_waiter_goes_on_its_own_after_lock_timeout() {
    let body = body_bytes();
    let (head_tx, head_rx) = watch::channel(false);
    let (_rest_tx, rest_rx) = watch::channel(true);
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel();
    let backend = held_backend(body.clone(), head_rx, rest_rx, arrived_tx).await;
    let lb = start_cached(r#"{ lock_timeout = "200ms" }"#, &backend).await;

    let mut leader = RawConn::connect(lb.addr).await;
    leader.send(GET_COLD).await;
    within("the leader's request", arrived.recv())
        .await
        .unwrap();
    let mut waiter = RawConn::connect(lb.addr).await;
    waiter.send(GET_COLD).await;
    // The leader's answer is held; the waiter gives up on it and asks itself.
    within("the waiter's own request", arrived.recv())
        .await
        .unwrap();
    assert_eq!(backend.request_count(), 2);
    head_tx.send(true).unwrap();
    for mut conn in [leader, waiter] {
        let response = conn.read_response().await.expect("a response");
        assert_eq!(response.status, 200);
        assert!(response.body == body);
    }
    assert_eq!(lb.cache_results("site", "coalesced"), 0.0);
}
