//! weir's HTTP/1 client against hyper's, on the same requests and the same
//! backend answers (generated): what the backend receives must mean the same,
//! and what comes back must be the same answer. Where weir refuses an answer
//! hyper takes (weir is the stricter), that is recorded, not a mismatch; the
//! other way round is one.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::http1::{BackendIo, Http1Connection};
use super::request_body::RequestBody;

/// What a backend received, in terms both clients must agree on: method,
/// target, fields (names lower-cased, in order) and the decoded body.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Received {
    method: String,
    target: String,
    version: u8,
    fields: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

/// What a client made of the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Answer {
        status: u16,
        fields: Vec<(String, Vec<u8>)>,
        body: Vec<u8>,
    },
    /// The head was refused, or the body broke.
    Failed,
}

/// Reads one request off `socket` (head by httparse, body by its framing),
/// answers `answer`, and closes.
async fn serve_one(listener: TcpListener, answer: Vec<u8>) -> Option<Received> {
    let (mut socket, _) = listener.accept().await.ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let (received, mut rest) = loop {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut request = httparse::Request::new(&mut headers);
        if let httparse::Status::Complete(len) = request.parse(&buf).ok()? {
            let received = Received {
                method: request.method?.to_owned(),
                target: request.path?.to_owned(),
                version: request.version?,
                fields: request
                    .headers
                    .iter()
                    .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
                    .collect(),
                body: Vec::new(),
            };
            break (received, buf[len..].to_vec());
        }
    };
    let mut received = received;
    let length = received
        .fields
        .iter()
        .find(|(name, _)| name == "content-length")
        .and_then(|(_, v)| std::str::from_utf8(v).ok()?.parse::<usize>().ok());
    let chunked = received
        .fields
        .iter()
        .any(|(name, v)| name == "transfer-encoding" && v.eq_ignore_ascii_case(b"chunked"));
    if chunked {
        // Read to the end of the chunked body, then decode it.
        while !rest.ends_with(b"0\r\n\r\n") {
            let n = socket.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            rest.extend_from_slice(&chunk[..n]);
        }
        let mut scanner = crate::http1::chunked::ChunkedScanner::default();
        let mut at = 0;
        loop {
            let decoded = scanner.decode(&rest[at..]).ok()?;
            received
                .body
                .extend_from_slice(&rest[at + decoded.framing..][..decoded.data]);
            at += decoded.framing + decoded.data;
            if decoded.done {
                break;
            }
        }
    } else if let Some(length) = length {
        while rest.len() < length {
            let n = socket.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            rest.extend_from_slice(&chunk[..n]);
        }
        received.body = rest[..length].to_vec();
    }
    socket.write_all(&answer).await.ok()?;
    let _ = socket.shutdown().await;
    Some(received)
}

async fn backend(answer: Vec<u8>) -> (SocketAddr, tokio::task::JoinHandle<Option<Received>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    (address, tokio::spawn(serve_one(listener, answer)))
}

fn fields_of(headers: &http::HeaderMap) -> Vec<(String, Vec<u8>)> {
    headers
        .iter()
        .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
        .collect()
}

async fn collect<B>(status: u16, headers: &http::HeaderMap, body: B) -> Outcome
where
    B: hyper::body::Body,
{
    match body.collect().await {
        Ok(body) => Outcome::Answer {
            status,
            fields: fields_of(headers),
            body: body.to_bytes().to_vec(),
        },
        Err(_) => Outcome::Failed,
    }
}

async fn through_weir(
    request: http::Request<RequestBody>,
    answer: Vec<u8>,
) -> (Option<Received>, Outcome) {
    let (address, server) = backend(answer).await;
    let stream = TcpStream::connect(address).await.unwrap();
    let connection = Http1Connection::new(BackendIo::Plain(stream));
    let outcome = match connection
        .send(request, None, std::time::Duration::from_secs(5))
        .await
    {
        Ok(response) => {
            let status = response.status().as_u16();
            let (parts, mut body) = response.into_parts();
            let headers = body
                .take_received_head()
                .map_or(parts.headers, |received| received.header_map());
            collect(status, &headers, body).await
        }
        Err(_) => Outcome::Failed,
    };
    (server.await.unwrap(), outcome)
}

async fn through_hyper(
    request: http::Request<RequestBody>,
    answer: Vec<u8>,
) -> (Option<Received>, Outcome) {
    let (address, server) = backend(answer).await;
    let stream = TcpStream::connect(address).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::Builder::new()
        .max_header_size(super::http1::MAX_RESPONSE_HEAD_BYTES)
        .handshake::<_, RequestBody>(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let outcome = match sender.send_request(request).await {
        Ok(response) => {
            let status = response.status().as_u16();
            let (parts, body) = response.into_parts();
            collect(status, &parts.headers, body).await
        }
        Err(_) => Outcome::Failed,
    };
    (server.await.unwrap(), outcome)
}

/// Method, target, fields, the body if any, and whether it is sent with its
/// `Content-Length`.
type RequestSpec = (String, String, Vec<(String, String)>, Option<Vec<u8>>, bool);

/// A request as the proxy hands it to a backend: origin-form target, a
/// `Host`, fields of its own, and a body whole or none.
fn request_strategy() -> impl Strategy<Value = RequestSpec> {
    (
        prop::sample::select(vec![
            "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH",
        ]),
        "/[a-z0-9/._~-]{0,20}(\\?[a-z0-9=&%]{0,12})?",
        prop::collection::vec(("x-[a-z0-9-]{1,12}", "[ -~]{0,24}"), 0..6),
        prop::option::of(prop::collection::vec(any::<u8>(), 0..3000)),
        any::<bool>(),
    )
        .prop_map(|(method, target, fields, body, with_length)| {
            (method.to_owned(), target, fields, body, with_length)
        })
}

fn build((method, target, fields, body, with_length): &RequestSpec) -> http::Request<RequestBody> {
    let mut builder = http::Request::builder()
        .method(method.as_str())
        .uri(target.as_str())
        .header("host", "backend.test");
    for (name, value) in fields {
        builder = builder.header(name.as_str(), value.trim());
    }
    if let (Some(body), true) = (body, with_length) {
        builder = builder.header("content-length", body.len());
    }
    let body = match body {
        Some(body) => RequestBody::Full(Some(Bytes::from(body.clone()))),
        None => RequestBody::Empty,
    };
    builder.body(body).unwrap()
}

/// A backend's answer: a status, fields, a body framed by length, by chunks
/// (cut where the input says), or by the close; sometimes broken on purpose.
/// How an answer was broken on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Broken {
    Not,
    /// Its head is ambiguous: weir must refuse it.
    Head,
    /// Its body is cut or misframed: neither client may take it as whole.
    Body,
}

fn answer_strategy() -> impl Strategy<Value = (Vec<u8>, Broken)> {
    (
        prop::sample::select(vec![200u16, 201, 204, 301, 304, 404, 500, 503]),
        prop::collection::vec(("x-[a-z0-9-]{1,12}", "[!-~]([ -~]{0,20}[!-~])?"), 0..6),
        prop::collection::vec(any::<u8>(), 0..5000),
        0u8..3,
        prop::collection::vec(1usize..700, 1..6),
        prop::option::of(0u8..6),
    )
        .prop_map(|(status, fields, body, framing, cuts, breakage)| {
            let mut out = format!("HTTP/1.1 {status} Whatever\r\n").into_bytes();
            for (name, value) in &fields {
                out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
            }
            let bodiless = status == 204 || status == 304;
            match (framing, breakage) {
                (_, Some(0)) => {
                    out.extend_from_slice(b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n")
                }
                (_, Some(1)) => {
                    out.extend_from_slice(b"Content-Length: 3\r\nContent-Length: 4\r\n")
                }
                (_, Some(2)) => out.extend_from_slice(b"X-Folded: a\r\n b\r\n"),
                (0, _) => {
                    out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes())
                }
                (1, _) => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
                _ => {}
            }
            out.extend_from_slice(b"\r\n");
            let broken = match breakage {
                Some(0..=2) => Broken::Head,
                Some(3) if framing == 1 && !bodiless => Broken::Body,
                Some(4) if framing == 1 && !bodiless => Broken::Body,
                Some(4) if framing == 0 && !bodiless && !body.is_empty() => Broken::Body,
                _ => Broken::Not,
            };
            if bodiless {
                return (out, broken);
            }
            match framing {
                1 => {
                    let mut at = 0;
                    for cut in cuts.iter().cycle() {
                        if at >= body.len() {
                            break;
                        }
                        let end = (at + cut).min(body.len());
                        out.extend_from_slice(format!("{:x}\r\n", end - at).as_bytes());
                        out.extend_from_slice(&body[at..end]);
                        out.extend_from_slice(b"\r\n");
                        at = end;
                    }
                    match breakage {
                        // A bad chunk size, or a body cut before its last chunk.
                        Some(3) => out.extend_from_slice(b"zz\r\n"),
                        Some(4) => {}
                        _ => out.extend_from_slice(b"0\r\n\r\n"),
                    }
                }
                _ => {
                    out.extend_from_slice(&body);
                    if breakage == Some(4) && framing == 0 && !body.is_empty() {
                        // Shorter than its length.
                        out.pop();
                    }
                }
            }
            (out, broken)
        })
}

/// hyper adds nothing weir does not and the other way round, except where
/// HTTP/1.1 lets the two choose differently: noted and normalised here.
fn normalised(mut received: Received) -> Received {
    received.fields.sort();
    received
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn weir_and_hyper_clients_agree(request in request_strategy(), (answer, broken) in answer_strategy()) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (weir_received, weir_outcome) = runtime.block_on(through_weir(build(&request), answer.clone()));
        let (hyper_received, hyper_outcome) = runtime.block_on(through_hyper(build(&request), answer.clone()));
        prop_assert_eq!(
            weir_received.map(normalised),
            hyper_received.map(normalised),
            "the backend received different requests"
        );
        let text = String::from_utf8_lossy(&answer);
        // The answer to HEAD has no body, broken or not.
        let broken = if request.0 == "HEAD" && broken == Broken::Body { Broken::Not } else { broken };
        match broken {
            Broken::Not => prop_assert_eq!(weir_outcome, hyper_outcome, "answer {:?}", text),
            // Ambiguous heads are weir's to refuse, whatever hyper makes of them.
            Broken::Head => prop_assert_eq!(weir_outcome, Outcome::Failed, "answer {:?}", text),
            Broken::Body => {
                prop_assert_eq!(&weir_outcome, &Outcome::Failed, "answer {:?}", text);
                prop_assert_eq!(&hyper_outcome, &Outcome::Failed, "answer {:?}", text);
            }
        }
    }
}
