//! HTTP/1 heads relayed as they came, both ways, under attack: what reaches
//! the backend and the client, byte for byte, over raw sockets.

mod support;

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use support::*;

/// A raw backend recording every request (head and body bytes, as they came)
/// and answering each with `answer`. It reads the body by the framing it finds
/// in the head it got (a plain lower-case reading: `content-length` digits or
/// a `chunked` transfer-coding, as most servers do).
struct Recorder {
    addr: std::net::SocketAddr,
    seen: Arc<Mutex<Vec<Vec<u8>>>>,
}

async fn recorder(answer: &'static [u8]) -> Recorder {
    recorder_with(move |_| answer.to_vec()).await
}

async fn recorder_with<F>(answer: F) -> Recorder
where
    F: Fn(usize) -> Vec<u8> + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let answer = Arc::new(answer);
    {
        let seen = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let seen = seen.clone();
                let answer = answer.clone();
                tokio::spawn(serve_recorded(stream, seen, answer));
            }
        });
    }
    Recorder { addr, seen }
}

async fn serve_recorded<F: Fn(usize) -> Vec<u8>>(
    mut stream: TcpStream,
    seen: Arc<Mutex<Vec<Vec<u8>>>>,
    answer: Arc<F>,
) {
    let mut buf = Vec::new();
    loop {
        let end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let mut body_end = end;
        if let Some(line) = head.lines().find(|l| l.starts_with("content-length:")) {
            let n: usize = line[15..].trim().parse().unwrap_or(0);
            while buf.len() < end + n {
                let mut chunk = [0u8; 4096];
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(k) => buf.extend_from_slice(&chunk[..k]),
                }
            }
            body_end = end + n;
        } else if head.contains("transfer-encoding: chunked") {
            loop {
                if let Some(at) = buf[end..].windows(5).position(|w| w == b"0\r\n\r\n") {
                    body_end = end + at + 5;
                    break;
                }
                let mut chunk = [0u8; 4096];
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(k) => buf.extend_from_slice(&chunk[..k]),
                }
            }
        }
        let index = {
            let mut seen = seen.lock().unwrap();
            seen.push(buf[..body_end].to_vec());
            seen.len() - 1
        };
        buf.drain(..body_end);
        if stream.write_all(&answer(index)).await.is_err() {
            return;
        }
    }
}

impl Recorder {
    fn requests(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect()
    }
}

async fn weir_for(addr: std::net::SocketAddr, extra: &str) -> Lb {
    start_lb(&one_upstream(&["app"], extra), &[("app", addr)]).await
}

/// The head of a raw response, read up to its blank line (nothing after).
async fn raw_head(conn: &mut RawConn) -> String {
    let mut out = Vec::new();
    while !out.windows(4).any(|w| w == b"\r\n\r\n") {
        let more = conn.read_some().await;
        if more.is_empty() {
            break;
        }
        out.extend_from_slice(&more);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The backend is sent the framing weir relays the body with, in the one
/// spelling every server reads: weir decodes the client's chunks and chunks
/// them again, so the client's own spelling of the coding must not go on.
#[tokio::test]
async fn a_transfer_coding_spelled_oddly_reaches_the_backend_normalised() {
    let backend = recorder(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
    let lb = weir_for(backend.addr, "").await;
    let mut conn = RawConn::connect(lb.addr).await;
    conn.send(
        b"POST /up HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: ChUnKeD\r\n\r\n\
          5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    let response = conn.read_response().await.unwrap();
    assert_eq!(response.status, 200);
    let seen = backend.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(
        !seen[0].contains("ChUnKeD"),
        "the client's spelling of the coding reached the backend:\n{}",
        seen[0]
    );
}

/// Same for a length: `Content-Length: 0005` is five bytes to weir, which
/// relays five; the backend is told `5`, not the client's digits, which a
/// lenient parser might read otherwise.
#[tokio::test]
async fn a_length_with_leading_zeros_reaches_the_backend_normalised() {
    let backend = recorder(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
    let lb = weir_for(backend.addr, "").await;
    let mut conn = RawConn::connect(lb.addr).await;
    conn.send(b"POST /up HTTP/1.1\r\nHost: app.test\r\nContent-Length: 0005\r\n\r\nhello")
        .await;
    let response = conn.read_response().await.unwrap();
    assert_eq!(response.status, 200);
    let seen = backend.requests();
    assert!(
        !seen[0].contains("0005"),
        "the client's digits reached the backend:\n{}",
        seen[0]
    );
}

/// RFC 9110 §8.6 / RFC 9112 §6.1: no `Content-Length` and no
/// `Transfer-Encoding` in a 204.
#[tokio::test]
async fn a_204_reaches_an_http1_client_without_framing_fields() {
    for answer in [
        &b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"[..],
        &b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
    ] {
        let backend = spawn_raw_backend(move |mut socket| async move {
            let _ = socket.write_all(answer).await;
            // Held open until weir lets go: its end is not the answer's.
            let _ = socket.read(&mut [0u8; 1]).await;
        })
        .await;
        let lb = weir_for(backend.addr, "").await;
        let mut conn = RawConn::connect(lb.addr).await;
        conn.send(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n").await;
        let head = raw_head(&mut conn).await.to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 204"), "{head}");
        assert!(
            !head.contains("content-length") && !head.contains("transfer-encoding"),
            "framing fields on a 204:\n{head}"
        );
    }
}

/// The backend's transfer-coding spelled oddly reaches the client in weir's
/// spelling: weir decoded the body and chunks it again.
#[tokio::test]
async fn a_backends_transfer_coding_reaches_the_client_normalised() {
    let backend = spawn_raw_backend(|mut socket| async move {
        let _ = socket
            .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: CHUNKED\r\n\r\n2\r\nok\r\n0\r\n\r\n")
            .await;
        let _ = socket.read(&mut [0u8; 1]).await;
    })
    .await;
    let lb = weir_for(backend.addr, "").await;
    let mut conn = RawConn::connect(lb.addr).await;
    conn.send(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n").await;
    let head = raw_head(&mut conn).await;
    assert!(
        !head.contains("CHUNKED"),
        "relayed as the backend spelled it:\n{head}"
    );
}

/// Hop-by-hop fields and those `Connection` names go; `X-Forwarded-*` from an
/// untrusted client are replaced (For appended to); the body is re-framed.
#[tokio::test]
async fn hop_by_hop_and_forwarded_fields_from_an_untrusted_client() {
    let backend = recorder(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
    let lb = weir_for(backend.addr, "").await;
    let mut conn = RawConn::connect(lb.addr).await;
    conn.send(
        b"POST /x HTTP/1.1\r\nHost: app.test\r\nConnection: keep-alive, X-Secret, close\r\n\
          X-Secret: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\nProxy-Connection: x\r\n\
          Upgrade: h2c\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\n\
          X-Forwarded-Host: evil.test\r\nx-forwarded-host: evil2.test\r\n\
          Transfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n0\r\nX-T: 1\r\n\r\n",
    )
    .await;
    let response = conn.read_response().await.unwrap();
    assert_eq!(response.status, 200);
    let seen = backend.requests().remove(0);
    let lower = seen.to_ascii_lowercase();
    for gone in [
        "connection:",
        "x-secret",
        "keep-alive",
        "\r\nte:",
        "proxy-connection",
        "upgrade",
        "evil",
        "https",
        "ext=1",
        "x-t: 1",
    ] {
        assert!(!lower.contains(gone), "{gone} reached the backend:\n{seen}");
    }
    assert!(
        lower.contains("x-forwarded-for: 6.6.6.6, 127.0.0.1\r\n"),
        "{seen}"
    );
    assert!(lower.contains("x-forwarded-proto: http\r\n"), "{seen}");
    assert!(lower.contains("x-forwarded-host: app.test\r\n"), "{seen}");
    assert!(lower.ends_with("\r\n\r\n3\r\nabc\r\n0\r\n\r\n"), "{seen:?}");
}

/// An absolute-form target: Host is the target's authority, the target goes
/// in origin-form; a dot-segment path goes normalised; a request smuggled in a
/// length-framed body stays body.
#[tokio::test]
async fn absolute_targets_normalised_paths_and_pipelined_bodies() {
    let backend = recorder(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
    let lb = weir_for(backend.addr, "").await;
    let mut conn = RawConn::connect(lb.addr).await;
    conn.send(
        b"GET http://app.test?q HTTP/1.1\r\nHost: APP.test\r\n\r\n\
          GET /a/../b/./c HTTP/1.0\r\nHost: app.test\r\nConnection: keep-alive\r\n\r\n\
          POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 35\r\n\r\n\
          GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    for _ in 0..3 {
        assert_eq!(conn.read_response().await.unwrap().status, 200);
    }
    let seen = backend.requests();
    assert!(seen[0].starts_with("GET /?q HTTP/1.1\r\n"), "{:?}", seen[0]);
    let hosts = seen[0]
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("host:"));
    assert_eq!(hosts.count(), 1, "{:?}", seen[0]);
    assert!(seen[0].contains("Host: app.test\r\n"), "{:?}", seen[0]);
    assert!(
        seen[1].starts_with("GET /b/c HTTP/1.1\r\n"),
        "{:?}",
        seen[1]
    );
    assert!(seen[2].ends_with("\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"));
    assert_eq!(seen.len(), 3);
}

/// HTTP/1.0 clients: a chunked answer is decoded and the connection ends it;
/// a length keeps it open with `Connection: keep-alive`; HEAD has no body.
#[tokio::test]
async fn http10_clients_and_head() {
    let backend = recorder_with(|i| match i {
        0 => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: t\r\n\r\nok".to_vec(),
        1 => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
        _ => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n".to_vec(),
    })
    .await;
    let lb = weir_for(backend.addr, "").await;
    let mut conn = RawConn::connect(lb.addr).await;
    conn.send(b"GET / HTTP/1.0\r\nHost: app.test\r\nConnection: keep-alive\r\n\r\n")
        .await;
    let first = conn.read_response().await.unwrap();
    assert_eq!(first.version, "HTTP/1.0");
    assert_eq!(first.header("connection"), Some("keep-alive"));
    assert!(!first.has_header("x-hop") && !first.has_header("keep-alive"));
    conn.send(b"HEAD / HTTP/1.0\r\nHost: app.test\r\nConnection: keep-alive\r\n\r\n")
        .await;
    let head = raw_head(&mut conn).await;
    assert!(
        !head.to_ascii_lowercase().contains("transfer-encoding"),
        "{head}"
    );
    conn.send(b"GET / HTTP/1.0\r\nHost: app.test\r\nConnection: keep-alive\r\n\r\n")
        .await;
    let rest = String::from_utf8(conn.read_to_end().await).unwrap();
    assert!(rest.starts_with("HTTP/1.0 200 OK\r\n"), "{rest}");
    assert!(rest.contains("Connection: close\r\n"), "{rest}");
    assert!(
        !rest.to_ascii_lowercase().contains("transfer-encoding"),
        "{rest}"
    );
    assert!(rest.ends_with("\r\n\r\nok"), "{rest:?}");
}

/// A replayed request (503, then another backend) carries the rewritten head.
#[tokio::test]
async fn a_replayed_request_carries_its_rewritten_head() {
    let failing = recorder(b"HTTP/1.1 503 No\r\nContent-Length: 0\r\n\r\n").await;
    let good = recorder(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
    let lb = start_lb(
        &one_upstream(
            &["a", "b"],
            "retries = { attempts = 1 }\nstrategy = \"round_robin\"",
        ),
        &[("a", failing.addr), ("b", good.addr)],
    )
    .await;
    let mut conn = RawConn::connect(lb.addr).await;
    conn.send(b"PUT /r HTTP/1.1\r\nHost: app.test\r\nContent-Length: 3\r\nX-K: v\r\n\r\nabc")
        .await;
    assert_eq!(conn.read_response().await.unwrap().status, 200);
    let all: Vec<String> = failing
        .requests()
        .into_iter()
        .chain(good.requests())
        .collect();
    assert_eq!(all.len(), 2, "{all:?}");
    for seen in all {
        assert!(
            seen.starts_with(
                "PUT /r HTTP/1.1\r\nHost: app.test\r\nX-K: v\r\nContent-Length: 3\r\n"
            ),
            "{seen:?}"
        );
        assert!(seen.ends_with("\r\n\r\nabc"), "{seen:?}");
    }
}

/// A rate-limited route (the map path for the response) and a cached route
/// (the map path both ways) keep the backend's and the client's fields.
#[tokio::test]
async fn map_paths_keep_the_fields() {
    let backend = recorder(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-B: 1\r\nConnection: X-Hop\r\nX-Hop: 2\r\nCache-Control: max-age=60\r\n\r\nok",
    )
    .await;
    let text = format!(
        "[[routes]]\nupstream = \"app\"\nrate_limit = [\"p\"]\n\n\
         [rate_limits.p]\nrate = \"100/s\"\nburst = 10\nkey = \"header:x-k\"\n\n\
         [upstreams.app]\nbackends = [{{ address = \"{}\" }}]\n",
        backend.addr
    );
    let lb = start_lb(&text, &[]).await;
    let mut conn = RawConn::connect(lb.addr).await;
    conn.send(b"GET / HTTP/1.1\r\nHost: app.test\r\nX-K: me\r\n\r\n")
        .await;
    let response = conn.read_response().await.unwrap();
    assert_eq!(response.header("x-b"), Some("1"));
    assert!(!response.has_header("x-hop"));
    assert!(backend.requests()[0].contains("X-K: me\r\n"));

    let cached = format!(
        "[[routes]]\nupstream = \"app\"\ncache = true\n\n\
         [upstreams.app]\nbackends = [{{ address = \"{}\" }}]\n",
        backend.addr
    );
    let lb = start_lb(&cached, &[]).await;
    let mut conn = RawConn::connect(lb.addr).await;
    conn.send(b"GET /c HTTP/1.1\r\nHost: app.test\r\nX-K: cached\r\n\r\n")
        .await;
    let response = conn.read_response().await.unwrap();
    assert_eq!(response.header("x-b"), Some("1"));
    assert!(!response.has_header("x-hop"));
    let seen = backend.requests();
    assert!(
        seen.last()
            .unwrap()
            .to_ascii_lowercase()
            .contains("x-k: cached\r\n"),
        "{seen:?}"
    );
}

/// Behind a trusted proxy its `X-Forwarded-Proto`/`-Host` stand; `For` is
/// appended to. An HTTP/1.0 absolute-form request without Host gets the
/// target's. The affinity cookie comes after the backend's own Set-Cookie.
#[tokio::test]
async fn trusted_proxies_http10_absolute_form_and_the_affinity_cookie() {
    let backend =
        recorder(b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nContent-Length: 2\r\n\r\nok").await;
    let text = format!(
        "{}{}",
        timed_listener("trusted_proxies = [\"127.0.0.1/32\"]"),
        one_upstream(&["app"], "sticky = { cookie = \"srv\" }")
    );
    let lb = start_lb(&text, &[("app", backend.addr)]).await;
    let mut conn = RawConn::connect(lb.addr).await;
    conn.send(
        b"GET / HTTP/1.1\r\nHost: app.test\r\nX-Forwarded-For: 203.0.113.9\r\n\
          X-Forwarded-Proto: https\r\nX-Forwarded-Host: front.test\r\n\r\n\
          GET http://app.test:81/p HTTP/1.0\r\n\r\n",
    )
    .await;
    let first = conn.read_response().await.unwrap();
    let cookies: Vec<_> = first
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("set-cookie"))
        .map(|(_, v)| v.clone())
        .collect();
    assert_eq!(cookies.len(), 2, "{first:?}");
    assert_eq!(cookies[0], "a=1");
    assert!(cookies[1].starts_with("srv="), "{cookies:?}");
    let _ = conn.read_to_end().await;
    let seen = backend.requests();
    assert!(
        seen[0].contains("X-Forwarded-For: 203.0.113.9, 127.0.0.1\r\n"),
        "{}",
        seen[0]
    );
    assert!(
        seen[0].contains("X-Forwarded-Proto: https\r\n"),
        "{}",
        seen[0]
    );
    assert!(
        seen[0].contains("X-Forwarded-Host: front.test\r\n"),
        "{}",
        seen[0]
    );
    assert!(seen[1].starts_with("GET /p HTTP/1.1\r\n"), "{}", seen[1]);
    assert!(seen[1].contains("Host: app.test:81\r\n"), "{}", seen[1]);
}

/// RFC 9110 §7.6.1: a field the client's `Connection` names is hop-by-hop,
/// whatever its name.
#[tokio::test]
async fn a_field_connection_names_goes_even_when_weir_knows_its_name() {
    let backend = recorder(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
    let lb = weir_for(backend.addr, "").await;
    let mut conn = RawConn::connect(lb.addr).await;
    conn.send(
        b"POST / HTTP/1.1\r\nHost: app.test\r\nConnection: Expect\r\n\
          Expect: 100-continue\r\nContent-Length: 2\r\n\r\nhi",
    )
    .await;
    let mut response = conn.read_response().await.unwrap();
    if response.status == 100 {
        response = conn.read_response().await.unwrap();
    }
    assert_eq!(response.status, 200);
    let seen = backend.requests().remove(0);
    assert!(!seen.to_ascii_lowercase().contains("expect:"), "{seen}");
}

/// weir's own answers (and any head made from a map) tell an HTTP/1.0 client
/// whose connection ends so, as the relayed heads do.
#[tokio::test]
async fn weirs_own_answer_to_an_http10_client_says_its_connection_ends() {
    // A backend that closes at once: weir answers 502 itself.
    let backend = spawn_raw_backend(|socket| async move { drop(socket) }).await;
    let lb = weir_for(backend.addr, "").await;
    let mut conn = RawConn::connect(lb.addr).await;
    conn.send(b"GET / HTTP/1.0\r\nHost: app.test\r\n\r\n").await;
    let answer = String::from_utf8(conn.read_to_end().await).unwrap();
    assert!(answer.starts_with("HTTP/1.0 502 "), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("\r\nconnection: close\r\n"),
        "{answer}"
    );
}
