//! TLS and HTTP/2 towards backends, over real sockets: h2c with one multiplexed
//! connection, TLS verified against a test CA (and refused when the name or the
//! roots are wrong), h2 over TLS by ALPN, trailers passed through, health checks
//! over the same transport, and a reload with a bad CA file.

mod support;

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, Version};
use http_body_util::BodyExt;
use support::pki::Pki;
use support::*;

/// A backend answering with its request's version and `:authority`/`Host` as the body.
async fn spawn_protocol_backend(serving: Serving) -> Backend {
    spawn_backend_serving(serving, |request| async move {
        let authority = request
            .uri()
            .authority()
            .map(|a| a.to_string())
            .or_else(|| {
                let host = request.headers().get("host")?;
                Some(host.to_str().ok()?.to_owned())
            })
            .unwrap_or_default();
        text(200, format!("{:?} {authority}", request.version()))
    })
    .await
}

fn upstream_config(backend: SocketAddr, extra: &str) -> String {
    one_upstream(&["app"], extra).replace("{app}", &backend.to_string())
}

#[tokio::test]
async fn h2c_upstream_multiplexes_requests_over_one_connection() {
    let backend = spawn_protocol_backend(Serving {
        http2: true,
        ..Serving::default()
    })
    .await;
    let lb = start_lb(&upstream_config(backend.addr, "protocol = \"h2c\""), &[]).await;
    let client = client();

    let reply = get(&client, &lb.url("/"), Some("api.test")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "HTTP/2.0 api.test");
    let seen = backend.last_request();
    assert!(
        !seen.headers.contains_key("host"),
        "HTTP/2 carries the host as :authority only"
    );
    assert_eq!(seen.headers["x-forwarded-host"], "api.test");

    // Many requests at once from several client connections: one backend connection.
    let requests = (0..40).map(|i| {
        let client = client.clone();
        let url = lb.url(&format!("/{i}"));
        async move { get(&client, &url, Some("api.test")).await.status }
    });
    let statuses = futures_util::future::join_all(requests).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    assert_eq!(backend.request_count(), 41);
    assert_eq!(backend.connection_count(), 1);
}

#[tokio::test]
async fn tls_upstream_verifies_the_backend_against_the_ca_and_sni() {
    let pki = Pki::new("upstream-verify");
    pki.issue("backend", &["backend.test"]);
    let backend = spawn_protocol_backend(Serving {
        tls: Some(pki.server_config("backend", &[b"http/1.1"])),
        http2: false,
    })
    .await;
    let ca = pki.path("ca.pem");
    let client = client();
    for (tls, expected) in [
        (format!("{{ sni = \"backend.test\", ca = \"{ca}\" }}"), 200),
        // The certificate names backend.test, not the address.
        (format!("{{ ca = \"{ca}\" }}"), 502),
        (format!("{{ sni = \"other.test\", ca = \"{ca}\" }}"), 502),
        // The test CA is not among the system's roots.
        ("{ sni = \"backend.test\" }".to_owned(), 502),
        ("{ insecure_skip_verify = true }".to_owned(), 200),
    ] {
        let lb = start_lb(&upstream_config(backend.addr, &format!("tls = {tls}")), &[]).await;
        let reply = get(&client, &lb.url("/"), Some("a.test")).await;
        assert_eq!(
            reply.status.as_u16(),
            expected,
            "tls = {tls}: {}",
            reply.text()
        );
        if expected == 200 {
            assert_eq!(reply.text(), "HTTP/1.1 a.test");
        }
    }
}

/// A body larger than the socket buffers reaches a TLS backend whole, through
/// weir's client and the TLS stream (which may hold back bytes it took until
/// it is flushed).
#[tokio::test]
async fn a_large_upload_reaches_a_tls_backend_whole() {
    let pki = Pki::new("upstream-upload");
    pki.issue("backend", &["backend.test"]);
    let backend = spawn_backend_serving(
        Serving {
            tls: Some(pki.server_config("backend", &[b"http/1.1"])),
            http2: false,
        },
        |request| async move {
            let mut body = request.into_body();
            let mut received = 0usize;
            while let Some(frame) = body.frame().await {
                received += frame.unwrap().data_ref().map_or(0, |d| d.len());
            }
            text(200, received.to_string())
        },
    )
    .await;
    let ca = pki.path("ca.pem");
    let tls = format!("tls = {{ sni = \"backend.test\", ca = \"{ca}\" }}");
    let lb = start_lb(&upstream_config(backend.addr, &tls), &[]).await;
    let upload = Bytes::from(vec![b'u'; 8 * 1024 * 1024 + 7]);
    let request = Request::post(lb.url("/upload"))
        .header("host", "a.test")
        .body(full(upload))
        .unwrap();
    let reply = send(&client(), request).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.text(), (8 * 1024 * 1024 + 7).to_string());
}

#[tokio::test]
async fn h2_upstream_speaks_http2_over_tls_by_alpn() {
    let pki = Pki::new("upstream-h2");
    pki.issue("backend", &["backend.test"]);
    let backend = spawn_protocol_backend(Serving {
        tls: Some(pki.server_config("backend", &[b"h2", b"http/1.1"])),
        http2: true,
    })
    .await;
    let extra = format!(
        "protocol = \"h2\"\ntls = {{ sni = \"backend.test\", ca = \"{}\" }}",
        pki.path("ca.pem")
    );
    let lb = start_lb(&upstream_config(backend.addr, &extra), &[]).await;
    let client = client();
    for _ in 0..5 {
        let reply = get(&client, &lb.url("/"), Some("a.test")).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.text(), "HTTP/2.0 a.test");
    }
    assert_eq!(backend.connection_count(), 1);
}

#[tokio::test]
async fn response_trailers_reach_an_http2_client() {
    let backend = spawn_backend_serving(
        Serving {
            http2: true,
            ..Serving::default()
        },
        |request| async move {
            // gRPC's handshake: the client says it takes trailers, and weir passes
            // that on to an HTTP/2 backend.
            let te = request.headers().get("te").cloned();
            let frames = futures_util::stream::iter([
                Ok::<_, BoxError>(hyper::body::Frame::data(Bytes::from_static(b"payload"))),
                Ok(hyper::body::Frame::trailers({
                    let mut trailers = HeaderMap::new();
                    trailers.insert("x-checksum", "1234".parse().unwrap());
                    if let Some(te) = te {
                        trailers.insert("x-te-seen", te);
                    }
                    trailers
                })),
            ]);
            http::Response::new(http_body_util::StreamBody::new(frames).boxed())
        },
    )
    .await;
    let lb = start_lb(&upstream_config(backend.addr, "protocol = \"h2c\""), &[]).await;

    let (mut sender, _connection) = h2c_connect(lb.addr).await;
    let request = Request::post("http://app.test/call")
        .header("te", "trailers")
        .body(full("question"))
        .unwrap();
    let (body, trailers) = within("a response with trailers", async {
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.version(), Version::HTTP_2);
        let collected = response.into_body().collect().await.unwrap();
        let trailers = collected.trailers().cloned();
        (collected.to_bytes(), trailers)
    })
    .await;
    assert_eq!(body, "payload");
    let trailers = trailers.expect("trailers were passed through");
    assert_eq!(trailers["x-checksum"], "1234");
    assert_eq!(trailers["x-te-seen"], "trailers");
}

#[tokio::test]
async fn health_checks_use_the_upstream_transport() {
    let pki = Pki::new("upstream-health");
    pki.issue("backend", &["backend.test"]);
    let (checked, mut checks) = tokio::sync::mpsc::unbounded_channel();
    let backend = spawn_backend_serving(
        Serving {
            tls: Some(pki.server_config("backend", &[b"h2"])),
            http2: true,
        },
        move |request| {
            if request.uri().path() == "/health" {
                let _ = checked.send(request.version());
            }
            async move { text(200, "up") }
        },
    )
    .await;
    let extra = format!(
        "protocol = \"h2\"\ntls = {{ sni = \"backend.test\", ca = \"{}\" }}\n\
         health_check = {{ path = \"/health\", interval = \"50ms\", initial_state = \"unhealthy\", healthy_threshold = 1 }}",
        pki.path("ca.pem")
    );
    let lb = start_lb(&upstream_config(backend.addr, &extra), &[]).await;
    let client = client();
    // Two checks seen: the first one's result is in force.
    for _ in 0..2 {
        let version = within("a health check", checks.recv()).await.unwrap();
        assert_eq!(version, Version::HTTP_2);
    }
    let reply = get(&client, &lb.url("/"), None).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "up");
}

#[tokio::test]
async fn a_bad_ca_file_fails_the_reload_and_the_old_upstream_stays() {
    let pki = Pki::new("upstream-reload");
    pki.issue("backend", &["backend.test"]);
    let backend = spawn_protocol_backend(Serving {
        tls: Some(pki.server_config("backend", &[b"http/1.1"])),
        http2: false,
    })
    .await;
    let good = format!(
        "tls = {{ sni = \"backend.test\", ca = \"{}\" }}",
        pki.path("ca.pem")
    );
    let lb = start_lb(&upstream_config(backend.addr, &good), &[]).await;
    let client = client();
    assert_eq!(
        get(&client, &lb.url("/"), None).await.status,
        StatusCode::OK
    );

    let missing = format!(
        "[[listeners]]\nlisten = \"{}\"\n\n{}",
        lb.addr,
        upstream_config(
            backend.addr,
            &format!("tls = {{ ca = \"{}\" }}", pki.path("missing.pem"))
        )
    );
    let config = weir::config::parse(&missing, "test.toml").unwrap();
    let err = within("the reload", lb.running.control().apply(config))
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("upstream app") && message.contains("missing.pem"),
        "{message}"
    );
    assert_eq!(
        get(&client, &lb.url("/"), None).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn after_a_reload_that_changes_the_protocol_no_old_connection_is_reused() {
    let arrived = std::sync::Arc::new(tokio::sync::Notify::new());
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let backend = {
        let (arrived, release) = (arrived.clone(), release.clone());
        spawn_backend_serving(
            Serving {
                http2: true,
                ..Serving::default()
            },
            move |request| {
                let (arrived, release) = (arrived.clone(), release.clone());
                async move {
                    if request.uri().path() == "/slow" {
                        arrived.notify_one();
                        release.notified().await;
                    }
                    text(200, format!("{:?}", request.version()))
                }
            },
        )
        .await
    };
    let config = |extra: &str| {
        format!(
            "[[listeners]]\nlisten = \"127.0.0.1:0\"\n\n{}",
            upstream_config(backend.addr, extra)
        )
    };
    let lb = start_lb(&config(""), &[]).await;
    let client = client();
    assert_eq!(get(&client, &lb.url("/"), None).await.text(), "HTTP/1.1");

    // A request in flight over HTTP/1.1 while the reload switches to h2c: its
    // connection comes back to the pool after the switch.
    let slow = {
        let (client, url) = (client.clone(), lb.url("/slow"));
        tokio::spawn(async move { get(&client, &url, None).await })
    };
    within("the slow request to arrive", arrived.notified()).await;
    // The same `listen` (127.0.0.1:0): the listener is kept.
    let reloaded = weir::config::parse(&config("protocol = \"h2c\""), "test.toml").unwrap();
    within("the reload", lb.running.control().apply(reloaded))
        .await
        .unwrap();
    release.notify_one();
    assert_eq!(
        within("the slow response", slow).await.unwrap().text(),
        "HTTP/1.1"
    );

    for _ in 0..3 {
        assert_eq!(get(&client, &lb.url("/"), None).await.text(), "HTTP/2.0");
    }
}
