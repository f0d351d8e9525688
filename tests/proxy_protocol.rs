//! The PROXY protocol over real sockets: read on a listener behind an L4 balancer
//! (v1 and v2, from trusted proxies only, else the connection is closed) and sent
//! to backends, by their health checks too.

mod support;

use std::sync::Arc;

use support::*;

fn proxy_protocol_lb_config(trusted: &str) -> String {
    format!(
        "[[listeners]]\nlisten = \"127.0.0.1:0\"\nproxy_protocol = true\n{trusted}\n\n{}",
        one_upstream(&["app"], "")
    )
}

#[tokio::test]
async fn proxy_protocol_gives_the_client_address_behind_an_l4_balancer() {
    let backend = spawn_named_backend("ok").await;
    let lb = start_lb(&proxy_protocol_lb_config(""), &[("app", backend.addr)]).await;
    // v1, then v2 (PROXY, TCP over IPv4), each followed by a request.
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    v2.extend_from_slice(&[198, 51, 100, 9, 127, 0, 0, 1, 0x04, 0xd2, 0x01, 0xbb]);
    for (header, client) in [
        (
            b"PROXY TCP4 203.0.113.7 127.0.0.1 56324 80\r\n".to_vec(),
            "203.0.113.7",
        ),
        (v2, "198.51.100.9"),
    ] {
        let mut conn = RawConn::connect(lb.addr).await;
        conn.send(&[header.as_slice(), b"GET / HTTP/1.1\r\nhost: t\r\n\r\n"].concat())
            .await;
        assert_eq!(conn.read_response().await.unwrap().status, 200);
        assert_eq!(backend.last_request().headers["x-forwarded-for"], client);
    }
}

#[tokio::test]
async fn without_a_valid_proxy_header_the_connection_is_closed() {
    let backend = spawn_named_backend("ok").await;
    let lb = start_lb(&proxy_protocol_lb_config(""), &[("app", backend.addr)]).await;
    for bytes in [
        b"GET / HTTP/1.1\r\nhost: t\r\n\r\n".as_slice(),
        b"PROXY TCP4 nonsense\r\nGET / HTTP/1.1\r\nhost: t\r\n\r\n".as_slice(),
    ] {
        let mut conn = RawConn::connect(lb.addr).await;
        conn.send(bytes).await;
        assert!(conn.closed_within_bound().await);
    }
    assert_eq!(backend.request_count(), 0);
}

#[tokio::test]
async fn a_proxy_header_from_outside_trusted_proxies_closes_the_connection() {
    let backend = spawn_named_backend("ok").await;
    let lb = start_lb(
        &proxy_protocol_lb_config("trusted_proxies = [\"10.0.0.0/8\"]"),
        &[("app", backend.addr)],
    )
    .await;
    let mut conn = RawConn::connect(lb.addr).await;
    conn.send(b"PROXY TCP4 203.0.113.7 127.0.0.1 56324 80\r\nGET / HTTP/1.1\r\nhost: t\r\n\r\n")
        .await;
    assert!(conn.closed_within_bound().await);
    assert_eq!(backend.request_count(), 0);
}

/// A backend that expects a PROXY header on every connection and answers each
/// request with the source address it carried ("none" for a LOCAL/UNKNOWN one).
async fn spawn_proxy_protocol_backend() -> Backend {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let accept = {
        let connections = connections.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                connections.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let Ok(source) = weir::proxy_protocol::read_header(&mut stream).await else {
                        return;
                    };
                    let said = source.map_or_else(|| "none".to_owned(), |s| s.to_string());
                    let service = hyper::service::service_fn(move |_request| {
                        let said = said.clone();
                        async move { Ok::<_, std::convert::Infallible>(text(200, said)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        })
    };
    Backend::from_parts(addr, connections, accept)
}

#[tokio::test]
async fn send_proxy_protocol_tells_the_backend_who_the_client_is() {
    for version in ["v1", "v2"] {
        let backend = spawn_proxy_protocol_backend().await;
        let lb = start_lb(
            &one_upstream(&["app"], &format!("send_proxy_protocol = \"{version}\"")),
            &[("app", backend.addr)],
        )
        .await;
        let mut conn = RawConn::connect(lb.addr).await;
        let client = conn.local_addr();
        for _ in 0..2 {
            conn.send(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n").await;
            let response = conn.read_response().await.unwrap();
            let said = String::from_utf8(response.body).unwrap();
            assert_eq!(
                (response.status, said),
                (200, client.to_string()),
                "{version}"
            );
        }
        // A backend connection belongs to one client: never pooled, one per request.
        assert_eq!(backend.connection_count(), 2, "{version}");
    }
}

#[tokio::test]
async fn health_checks_to_a_proxy_protocol_backend_send_a_local_header() {
    let backend = spawn_proxy_protocol_backend().await;
    let lb = start_lb(
        &one_upstream(
            &["app"],
            "send_proxy_protocol = \"v2\"\n\n[upstreams.app.health_check]\ninterval = \"20ms\"\nunhealthy_threshold = 1",
        ),
        &[("app", backend.addr)],
    )
    .await;
    // Checks open a connection each; wait for a few (polled: no event to await).
    within("three health checks", async {
        while backend.connection_count() < 3 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    // Had a check gone without its header, one failure would have taken the
    // backend down and this would be a 503.
    let reply = get(&client(), &lb.url("/"), None).await;
    assert_eq!(reply.status, 200);
}
