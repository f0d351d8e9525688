//! Limits over real sockets: requests per backend (`max_connections_per_backend`,
//! `queue_timeout`) and client connections per listener (`max_connections`).

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use support::*;
use tokio::sync::{Semaphore, mpsc};

/// A backend that holds every request until the test hands out a permit, and
/// records how many it held at once.
struct Holding {
    backend: Backend,
    most_at_once: Arc<AtomicUsize>,
}

async fn spawn_holding(
    name: &'static str,
    release: Arc<Semaphore>,
    held: mpsc::UnboundedSender<&'static str>,
) -> Holding {
    let now = Arc::new(AtomicUsize::new(0));
    let most_at_once = Arc::new(AtomicUsize::new(0));
    let backend = {
        let most_at_once = most_at_once.clone();
        spawn_backend(move |_request| {
            let (now, most_at_once, release, held) = (
                now.clone(),
                most_at_once.clone(),
                release.clone(),
                held.clone(),
            );
            async move {
                let at_once = now.fetch_add(1, Ordering::SeqCst) + 1;
                most_at_once.fetch_max(at_once, Ordering::SeqCst);
                let _ = held.send(name);
                release.acquire().await.unwrap().forget();
                now.fetch_sub(1, Ordering::SeqCst);
                text(200, name)
            }
        })
        .await
    };
    Holding {
        backend,
        most_at_once,
    }
}

async fn two_holding_backends(
    extra: &str,
) -> (
    Lb,
    [Holding; 2],
    Arc<Semaphore>,
    mpsc::UnboundedReceiver<&'static str>,
) {
    let release = Arc::new(Semaphore::new(0));
    let (held_tx, held) = mpsc::unbounded_channel();
    let a = spawn_holding("a", release.clone(), held_tx.clone()).await;
    let b = spawn_holding("b", release.clone(), held_tx).await;
    let config = one_upstream(
        &["a", "b"],
        &format!("max_connections_per_backend = 2\n{extra}"),
    );
    let lb = start_lb(&config, &[("a", a.backend.addr), ("b", b.backend.addr)]).await;
    (lb, [a, b], release, held)
}

fn spawn_get(lb: &Lb) -> tokio::task::JoinHandle<Reply> {
    let url = lb.url("/");
    tokio::spawn(async move { get(&client(), &url, None).await })
}

#[tokio::test]
async fn past_the_limit_on_every_backend_weir_answers_503_at_once() {
    let (lb, backends, release, mut held) = two_holding_backends("").await;
    let parked: Vec<_> = (0..4).map(|_| spawn_get(&lb)).collect();
    for _ in 0..4 {
        within("four held requests", held.recv()).await.unwrap();
    }
    // Both backends are full: no wait, and nothing reaches them.
    for _ in 0..3 {
        let reply = get(&client(), &lb.url("/"), None).await;
        assert_eq!(reply.status, 503);
        assert_eq!(
            reply.text(),
            "503 every backend is at its connection limit\n"
        );
    }
    assert_eq!(
        backends[0].backend.request_count() + backends[1].backend.request_count(),
        4
    );

    release.add_permits(4);
    for request in parked {
        assert_eq!(within("a held request", request).await.unwrap().status, 200);
    }
    for holding in &backends {
        assert_eq!(holding.most_at_once.load(Ordering::SeqCst), 2);
    }
}

#[tokio::test]
async fn a_burst_never_puts_more_than_the_limit_on_a_backend() {
    let (lb, backends, release, mut held) = two_holding_backends("queue_timeout = \"30s\"").await;
    // 20 at once over a capacity of 4: the rest queue for a slot.
    let burst: Vec<_> = (0..20).map(|_| spawn_get(&lb)).collect();
    for _ in 0..4 {
        within("four held requests", held.recv()).await.unwrap();
    }
    release.add_permits(20);
    for request in burst {
        assert_eq!(
            within("a queued request", request).await.unwrap().status,
            200
        );
    }
    for holding in &backends {
        assert!(holding.most_at_once.load(Ordering::SeqCst) <= 2);
    }
    assert_eq!(
        backends[0].backend.request_count() + backends[1].backend.request_count(),
        20
    );
}

#[tokio::test]
async fn a_queued_request_gets_the_first_slot_freed_or_503_after_queue_timeout() {
    let (lb, _backends, release, mut held) =
        two_holding_backends("queue_timeout = \"200ms\"").await;
    let parked: Vec<_> = (0..4).map(|_| spawn_get(&lb)).collect();
    for _ in 0..4 {
        within("four held requests", held.recv()).await.unwrap();
    }
    // Nothing frees a slot: the queued request gives up after its queue_timeout.
    assert_eq!(get(&client(), &lb.url("/"), None).await.status, 503);

    // One slot frees while a request waits: it takes it.
    let queued = spawn_get(&lb);
    release.add_permits(1);
    within("the queued request to reach a backend", held.recv())
        .await
        .unwrap();
    release.add_permits(4);
    assert_eq!(
        within("the queued request", queued).await.unwrap().status,
        200
    );
    for request in parked {
        assert_eq!(within("a held request", request).await.unwrap().status, 200);
    }
}

#[tokio::test]
async fn past_max_connections_new_clients_wait_until_one_leaves() {
    let backend = spawn_named_backend("ok").await;
    let config = format!(
        "[[listeners]]\nlisten = \"127.0.0.1:0\"\nmax_connections = 2\n\n{}",
        one_upstream(&["ok"], "")
    );
    let lb = start_lb(&config, &[("ok", backend.addr)]).await;
    let request = b"GET / HTTP/1.1\r\nhost: test\r\n\r\n";
    let mut first = RawConn::connect(lb.addr).await;
    let mut second = RawConn::connect(lb.addr).await;
    for conn in [&mut first, &mut second] {
        conn.send(request).await;
        assert_eq!(conn.read_response().await.unwrap().status, 200);
    }
    // The third connects (the kernel's backlog takes it) but is not served.
    let mut third = RawConn::connect(lb.addr).await;
    third.send(request).await;
    let early = tokio::time::timeout(Duration::from_millis(300), third.read_some()).await;
    assert!(early.is_err(), "served past max_connections: {early:?}");
    drop(first);
    let reply = within("the third client's response", third.read_response())
        .await
        .unwrap();
    assert_eq!(reply.status, 200);
}
