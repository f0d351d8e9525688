//! TLS termination over real sockets: certificates made at test time by a test CA,
//! a rustls client checking which certificate SNI picked, ALPN h2 and http/1.1,
//! client certificates, bad key files, and certificates renewed by a reload.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use support::pki::Pki;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// weir with one TLS listener, `tls` being the inline table's contents.
fn tls_config(tls: &str, backend: SocketAddr) -> weir::config::Config {
    let text = format!(
        "[[listeners]]\nlisten = \"127.0.0.1:0\"\ntls = {{ {tls} }}\n\n{}",
        one_upstream(&["app"], "").replace("{app}", &backend.to_string())
    );
    weir::config::parse(&text, "tls.toml").unwrap()
}

/// A TLS connection to weir with `sni` (an IP address sends none).
async fn connect(
    address: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    sni: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    within("a TLS handshake", async {
        let tcp = TcpStream::connect(address).await?;
        let name = ServerName::try_from(sni.to_owned()).unwrap();
        tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
    })
    .await
}

async fn get_over(mut tls: tokio_rustls::client::TlsStream<TcpStream>) -> String {
    within("a response over TLS", async {
        tls.write_all(b"GET /who HTTP/1.1\r\nhost: a.test\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        tls.read_to_string(&mut response).await.unwrap();
        response
    })
    .await
}

#[tokio::test]
async fn sni_picks_the_certificate_and_requests_go_through() {
    let pki = Pki::new("sni");
    let a = pki.issue("a", &["a.test"]);
    let b = pki.issue("b", &["*.b.test"]);
    let backend = spawn_named_backend("hello").await;
    let certs = format!(
        "certs = [{{ cert = \"{}\", key = \"{}\" }}, {{ cert = \"{}\", key = \"{}\" }}]",
        pki.path("a.pem"),
        pki.path("a.key"),
        pki.path("b.pem"),
        pki.path("b.key")
    );
    let lb = start_lb_config(tls_config(&certs, backend.addr)).await;
    let client = pki.client_config(&[b"http/1.1"], None);

    for (sni, expected) in [("a.test", &a), ("x.b.test", &b), ("A.TEST", &a)] {
        let tls = within("a handshake", connect(lb.addr, client.clone(), sni))
            .await
            .unwrap();
        assert_eq!(
            tls.get_ref().1.peer_certificates().unwrap()[0],
            *expected,
            "{sni}"
        );
        let response = get_over(tls).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.ends_with("hello"), "{response}");
    }
    assert_eq!(backend.last_request().headers["x-forwarded-proto"], "https");
    // An unknown name gets the first certificate, which the client then refuses.
    assert!(connect(lb.addr, client.clone(), "c.test").await.is_err());
    // Plain HTTP to the TLS port costs a closed connection, and weir goes on.
    let mut plain = RawConn::connect(lb.addr).await;
    plain.send(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n").await;
    assert!(plain.closed_within_bound().await);
    assert!(connect(lb.addr, client, "a.test").await.is_ok());
}

#[tokio::test]
async fn alpn_h2_gives_http2_over_tls() {
    let pki = Pki::new("alpn");
    pki.issue("a", &["a.test"]);
    let backend = spawn_named_backend("over h2").await;
    let tls = format!(
        "cert = \"{}\", key = \"{}\"",
        pki.path("a.pem"),
        pki.path("a.key")
    );
    let lb = start_lb_config(tls_config(&tls, backend.addr)).await;
    let stream = connect(
        lb.addr,
        pki.client_config(&[b"h2", b"http/1.1"], None),
        "a.test",
    )
    .await
    .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(b"h2".as_slice()));
    let (mut sender, connection) = within(
        "the h2 handshake",
        hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        ),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    for _ in 0..3 {
        let request = hyper::Request::get("https://a.test/")
            .body(empty())
            .unwrap();
        let response = within("an h2 response", sender.send_request(request))
            .await
            .unwrap();
        assert_eq!(
            (response.status(), response.version()),
            (hyper::StatusCode::OK, hyper::Version::HTTP_2)
        );
        use http_body_util::BodyExt;
        assert_eq!(
            within("an h2 body", response.into_body().collect())
                .await
                .unwrap()
                .to_bytes(),
            "over h2"
        );
    }
}

#[tokio::test]
async fn client_certificates_are_required_with_client_ca() {
    let pki = Pki::new("mtls");
    pki.issue("a", &["a.test"]);
    pki.issue("client", &["client.test"]);
    let backend = spawn_named_backend("ok").await;
    let tls = format!(
        "cert = \"{}\", key = \"{}\", client_ca = \"{}\"",
        pki.path("a.pem"),
        pki.path("a.key"),
        pki.path("ca.pem")
    );
    let lb = start_lb_config(tls_config(&tls, backend.addr)).await;
    let with_cert = connect(lb.addr, pki.client_config(&[], Some("client")), "a.test")
        .await
        .unwrap();
    assert!(get_over(with_cert).await.starts_with("HTTP/1.1 200"));
    // Without one, the handshake (or the first read after it, in TLS 1.3) fails.
    let refused = match connect(lb.addr, pki.client_config(&[], None), "a.test").await {
        Err(_) => true,
        Ok(mut tls) => {
            let _ = tls.write_all(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n").await;
            let mut buf = Vec::new();
            within("weir to end the connection", tls.read_to_end(&mut buf))
                .await
                .is_err()
                || buf.is_empty()
        }
    };
    assert!(refused);
    assert_eq!(backend.request_count(), 1);
}

#[tokio::test]
async fn bad_files_are_refused_at_start_and_on_reload_the_old_certificates_stay() {
    let pki = Pki::new("bad");
    let first = pki.issue("a", &["a.test"]);
    pki.issue("other", &["other.test"]);
    let backend = spawn_named_backend("ok").await;
    let mismatched = format!(
        "cert = \"{}\", key = \"{}\"",
        pki.path("a.pem"),
        pki.path("other.key")
    );
    let missing = format!(
        "cert = \"{}\", key = \"{}\"",
        pki.path("none.pem"),
        pki.path("a.key")
    );
    for (tls, message) in [
        (&mismatched, "does not belong"),
        (&missing, "none.pem: cannot read the certificate"),
    ] {
        let (_trigger, shutdown) = weir::shutdown::channel();
        let Err(err) = within(
            "weir to refuse to start",
            weir::start(tls_config(tls, backend.addr), shutdown),
        )
        .await
        else {
            panic!("weir started with {tls}");
        };
        assert!(err.to_string().contains(message), "{err}");
    }

    let good = format!(
        "cert = \"{}\", key = \"{}\"",
        pki.path("a.pem"),
        pki.path("a.key")
    );
    let lb = start_lb_config(tls_config(&good, backend.addr)).await;
    let control = lb.running.control();
    let client = pki.client_config(&[], None);
    // A connection open across reloads.
    let open = connect(lb.addr, client.clone(), "a.test").await.unwrap();
    let err = within(
        "the reload",
        control.apply(tls_config(&mismatched, backend.addr)),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("does not belong"), "{err}");
    let tls = connect(lb.addr, client.clone(), "a.test").await.unwrap();
    assert_eq!(
        tls.get_ref().1.peer_certificates().unwrap()[0],
        first,
        "the old certificate stays"
    );

    // Renewed files, same paths: a reload serves the new certificate to new clients.
    let renewed = pki.issue("a", &["a.test"]);
    within("the reload", control.apply(tls_config(&good, backend.addr)))
        .await
        .unwrap();
    let tls = connect(lb.addr, client, "a.test").await.unwrap();
    assert_eq!(tls.get_ref().1.peer_certificates().unwrap()[0], renewed);
    assert!(
        get_over(open).await.starts_with("HTTP/1.1 200"),
        "the open connection was cut"
    );
}
