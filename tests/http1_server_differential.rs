//! weir's own HTTP/1 server side against hyper's, on the same client bytes
//! (generated): two weirs, one with each, each in front of its own recording
//! backend that answers alike. The backend must receive the same requests and
//! the client the same responses, connection ends included. Requests broken
//! on purpose must be refused by weir (400 or 431, then the connection
//! closes, nothing of them reaching the backend), whatever hyper makes of
//! them: there weir is the stricter.
//!
//! Normalised, because HTTP/1.1 lets a server choose: the `Date` value, field
//! names' case and the order of differently-named fields, chunk sizes (the
//! body is compared decoded, with its framing), and `100 Continue` (hyper
//! sends it even when the body came with the head; weir only when it waits
//! for the body), and hyper's `keep-alive` to an HTTP/1.0 client on a
//! response that closes (its body ends with the connection, or weir said
//! `close`), which weir leaves out: it would be untrue.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use support::*;

/// A request as the backend received it.
#[derive(Clone, PartialEq, Eq)]
struct Received {
    method: String,
    target: String,
    version: u8,
    fields: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

/// Bodies shown by their length and a digest: whole, they drown the rest.
fn digest(body: &[u8]) -> String {
    let hash = body.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    format!("{} bytes #{hash:016x}", body.len())
}

impl std::fmt::Debug for Received {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let fields: Vec<String> = self
            .fields
            .iter()
            .map(|(n, v)| format!("{n}: {}", String::from_utf8_lossy(v)))
            .collect();
        write!(
            f,
            "{} {} 1.{} {:?} body {}",
            self.method,
            self.target,
            self.version,
            fields,
            digest(&self.body)
        )
    }
}

/// What a recording backend answers, and what it received.
#[derive(Default)]
struct Recorder {
    answer: Mutex<Answer>,
    received: Mutex<Vec<Received>>,
}

#[derive(Clone, Default)]
struct Answer {
    status: u16,
    fields: Vec<(String, String)>,
    body: Vec<u8>,
    /// 0: `Content-Length`, 1: chunked, 2: to the close.
    framing: u8,
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {:?} framing={} body {}",
            self.status,
            self.fields,
            self.framing,
            digest(&self.body)
        )
    }
}

impl Answer {
    /// The answer's bytes to a request with `method`, and whether the
    /// connection closes after it.
    fn bytes(&self, method: &str) -> (Vec<u8>, bool) {
        let mut out = format!("HTTP/1.1 {} Whatever\r\n", self.status).into_bytes();
        for (name, value) in &self.fields {
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        let bodiless = self.status == 204 || self.status == 304;
        let sends_body = !bodiless && method != "HEAD";
        // A bodiless answer "to the close" still closes, and says so.
        let closes = self.framing == 2;
        if !bodiless {
            match self.framing {
                0 => out.extend_from_slice(
                    format!("Content-Length: {}\r\n", self.body.len()).as_bytes(),
                ),
                1 => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
                _ => {}
            }
        }
        if closes {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if sends_body {
            match self.framing {
                1 => {
                    for piece in self.body.chunks(777) {
                        out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                        out.extend_from_slice(piece);
                        out.extend_from_slice(b"\r\n");
                    }
                    out.extend_from_slice(b"0\r\n\r\n");
                }
                _ => out.extend_from_slice(&self.body),
            }
        }
        (out, closes)
    }
}

/// A keep-alive backend that records each request (head by httparse, body by
/// its framing) and answers with the recorder's current answer.
async fn recording_backend(recorder: Arc<Recorder>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(serve_recorded(socket, recorder.clone()));
        }
    });
    address
}

async fn read_more(socket: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 16 * 1024];
    let n = socket.read(&mut chunk).await.ok()?;
    (n > 0).then(|| buf.extend_from_slice(&chunk[..n]))
}

async fn serve_recorded(mut socket: TcpStream, recorder: Arc<Recorder>) -> Option<()> {
    let mut buf = Vec::new();
    loop {
        let (mut received, len) = loop {
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
                break (received, len);
            }
            read_more(&mut socket, &mut buf).await?;
        };
        buf.drain(..len);
        let field = |name: &str| {
            received
                .fields
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        if field("transfer-encoding").is_some() {
            let mut scanner = weir::http1::chunked::ChunkedScanner::default();
            loop {
                let decoded = scanner.decode(&buf).ok()?;
                received
                    .body
                    .extend_from_slice(&buf[decoded.framing..][..decoded.data]);
                buf.drain(..decoded.framing + decoded.data);
                if decoded.done {
                    break;
                }
                if decoded.framing + decoded.data == 0 {
                    read_more(&mut socket, &mut buf).await?;
                }
            }
        } else if let Some(length) = field("content-length") {
            let length: usize = std::str::from_utf8(&length).ok()?.parse().ok()?;
            while buf.len() < length {
                read_more(&mut socket, &mut buf).await?;
            }
            received.body = buf.drain(..length).collect();
        }
        let method = received.method.clone();
        recorder.received.lock().unwrap().push(received);
        let answer = recorder.answer.lock().unwrap().clone();
        let (bytes, closes) = answer.bytes(&method);
        socket.write_all(&bytes).await.ok()?;
        if closes {
            let _ = socket.shutdown().await;
            return Some(());
        }
    }
}

/// One client request, before it is written out.
#[derive(Clone)]
struct ClientRequest {
    method: &'static str,
    target: String,
    http10: bool,
    fields: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    /// The body goes chunked, cut at these sizes (else with its length).
    chunks: Option<Vec<usize>>,
    expect_continue: bool,
    keep_alive_10: bool,
    /// How the request is broken on purpose (`None`: it is not).
    breakage: Option<u8>,
}

impl std::fmt::Debug for ClientRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} http10={} fields={:?} body={:?} chunks={:?} expect={} keep_alive_10={} breakage={:?}",
            self.method,
            self.target,
            self.http10,
            self.fields,
            self.body.as_deref().map(digest),
            self.chunks,
            self.expect_continue,
            self.keep_alive_10,
            self.breakage
        )
    }
}

/// Ways to break a request that weir must refuse.
const BREAKAGES: u8 = 12;

impl ClientRequest {
    fn sends_chunked(&self) -> bool {
        self.body.is_some() && self.chunks.is_some() && !self.http10
    }

    fn sends_length(&self) -> bool {
        self.body.is_some() && !self.sends_chunked()
    }

    /// Its head carries both `Content-Length` and `Transfer-Encoding`.
    fn has_both_framings(&self) -> bool {
        match self.breakage {
            Some(6) => true,
            Some(7 | 9) => self.sends_chunked(),
            Some(8) => self.sends_length(),
            _ => false,
        }
    }

    fn bytes(&self, last: bool) -> Vec<u8> {
        let version = if self.http10 { "1.0" } else { "1.1" };
        let mut line = format!("{} {} HTTP/{version}", self.method, self.target);
        match self.breakage {
            Some(0) => line = format!("{}  {} HTTP/{version}", self.method, self.target),
            Some(1) => line = format!("{} {} HTTP/1.2", self.method, self.target),
            _ => {}
        }
        let mut head = format!("{line}\r\n");
        // Host on every request (HTTP/1.0 ones too, as most send) but the
        // HTTP/1.1 one broken by its absence.
        if self.breakage != Some(2) {
            head.push_str("Host: app.test\r\n");
        }
        for (name, value) in &self.fields {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        match self.breakage {
            Some(3) => head.push_str("X-Spaced : a\r\n"),
            Some(4) => head.push_str("X-Folded: a\r\n b\r\n"),
            Some(5) => head.push_str("X-Bare: a\nX-Next: b\r\n"),
            Some(6) => head.push_str("Content-Length: 3\r\nTransfer-Encoding: chunked\r\n"),
            Some(7) => head.push_str("Content-Length: 3\r\nContent-Length: 4\r\n"),
            Some(8) => head.push_str("Transfer-Encoding: gzip\r\n"),
            Some(9) => head.push_str("Content-Length: +3\r\n"),
            Some(10) => head.push_str(&format!("X-Long: {}\r\n", "a".repeat(9000))),
            Some(11) => head.push_str("X-Nul: a\0b\r\n"),
            _ => {}
        }
        if self.expect_continue && self.body.is_some() {
            head.push_str("Expect: 100-continue\r\n");
        }
        if self.http10 && self.keep_alive_10 && !last {
            head.push_str("Connection: keep-alive\r\n");
        }
        if last && !self.http10 {
            head.push_str("Connection: close\r\n");
        }
        let mut out = head.into_bytes();
        match (&self.body, &self.chunks) {
            (Some(body), Some(cuts)) if !self.http10 => {
                out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
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
                out.extend_from_slice(b"0\r\n\r\n");
            }
            (Some(body), _) => {
                out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
                out.extend_from_slice(body);
            }
            (None, _) => out.extend_from_slice(b"\r\n"),
        }
        out
    }
}

fn request_strategy() -> impl Strategy<Value = ClientRequest> {
    (
        prop::sample::select(vec!["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"]),
        "/[a-z0-9/._~-]{0,16}(\\?[a-z0-9=&%]{0,10})?",
        prop::bool::weighted(0.15),
        prop::collection::vec(("x-[a-z0-9-]{1,10}", "[!-~]([ -~]{0,16}[!-~])?"), 0..5),
        prop::option::of(prop::collection::vec(any::<u8>(), 0..3000)),
        prop::option::of(prop::collection::vec(1usize..900, 1..5)),
        prop::bool::weighted(0.2),
        any::<bool>(),
        prop::option::weighted(0.15, 0..BREAKAGES),
    )
        .prop_map(
            |(
                method,
                target,
                http10,
                fields,
                body,
                chunks,
                expect_continue,
                keep_alive_10,
                breakage,
            )| {
                ClientRequest {
                    method,
                    target,
                    // Without Host, only HTTP/1.1 is broken.
                    http10: http10 && breakage != Some(2),
                    fields,
                    body,
                    chunks,
                    expect_continue,
                    keep_alive_10,
                    breakage,
                }
            },
        )
}

fn answer_strategy() -> impl Strategy<Value = Answer> {
    (
        prop::sample::select(vec![200u16, 201, 204, 301, 304, 404, 500]),
        prop::collection::vec(("x-[a-z0-9-]{1,10}", "[!-~]([ -~]{0,16}[!-~])?"), 0..5),
        prop::collection::vec(any::<u8>(), 0..5000),
        0u8..3,
    )
        .prop_map(|(status, fields, body, framing)| Answer {
            status,
            fields,
            body,
            framing,
        })
}

/// A response as the client read it, normalised (see the top).
#[derive(Clone, PartialEq, Eq)]
struct Read {
    status_line: String,
    fields: Vec<(String, Vec<u8>)>,
    framing: &'static str,
    body: Vec<u8>,
}

impl std::fmt::Debug for Read {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let fields: Vec<String> = self
            .fields
            .iter()
            .map(|(n, v)| format!("{n}: {}", String::from_utf8_lossy(v)))
            .collect();
        write!(
            f,
            "{} {:?} {} body {}",
            self.status_line,
            fields,
            self.framing,
            digest(&self.body)
        )
    }
}

/// The responses on a connection, read to its end, to requests with
/// `methods` in order; `None` where the bytes make no sense.
fn read_responses(mut bytes: &[u8], methods: &[&str]) -> Result<Vec<Read>, String> {
    let mut out = Vec::new();
    let mut methods = methods.iter();
    while !bytes.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 128];
        let mut response = httparse::Response::new(&mut headers);
        let len = match response.parse(bytes) {
            Ok(httparse::Status::Complete(len)) => len,
            other => return Err(format!("unreadable response head: {other:?}")),
        };
        let status = response.code.unwrap_or(0);
        let status_line = format!(
            "HTTP/1.{} {} {}",
            response.version.unwrap_or(9),
            status,
            response.reason.unwrap_or("")
        );
        let mut fields: Vec<(String, Vec<u8>)> = response
            .headers
            .iter()
            .map(|h| {
                let name = h.name.to_ascii_lowercase();
                let value = if name == "date" {
                    Vec::new()
                } else {
                    h.value.to_vec()
                };
                (name, value)
            })
            .collect();
        bytes = &bytes[len..];
        if status == 100 {
            continue;
        }
        let method = methods.next().copied().unwrap_or("GET");
        let field = |name: &str| {
            fields
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        let (framing, body) = if method == "HEAD" || status == 204 || status == 304 {
            ("none", Vec::new())
        } else if field("transfer-encoding").is_some() {
            let mut scanner = weir::http1::chunked::ChunkedScanner::default();
            let mut body = Vec::new();
            loop {
                let decoded = scanner
                    .decode(bytes)
                    .map_err(|e| format!("bad chunks: {e:?}"))?;
                body.extend_from_slice(&bytes[decoded.framing..][..decoded.data]);
                bytes = &bytes[decoded.framing + decoded.data..];
                if decoded.done {
                    break;
                }
                if decoded.framing + decoded.data == 0 {
                    return Err("chunked body cut short".into());
                }
            }
            ("chunked", body)
        } else if let Some(length) = field("content-length") {
            let length: usize = std::str::from_utf8(&length)
                .ok()
                .and_then(|l| l.parse().ok())
                .ok_or("bad content-length")?;
            if bytes.len() < length {
                return Err("body shorter than its length".into());
            }
            let body = bytes[..length].to_vec();
            bytes = &bytes[length..];
            ("length", body)
        } else {
            let body = bytes.to_vec();
            bytes = &[];
            ("close", body)
        };
        // hyper says keep-alive to an HTTP/1.0 client that asked for it
        // even when the body then ends with the connection, or beside a
        // `close` of weir's (`close, keep-alive`); weir does not.
        for (name, value) in &mut fields {
            if name == "connection" && value.starts_with(b"close, keep-alive") {
                *value = b"close".to_vec();
            }
        }
        if framing == "close" {
            fields.retain(|(n, v)| !(n == "connection" && v.eq_ignore_ascii_case(b"keep-alive")));
        }
        fields.sort_by(|a, b| a.0.cmp(&b.0));
        out.push(Read {
            status_line,
            fields,
            framing,
            body,
        });
    }
    Ok(out)
}

/// Sends `bytes` on a new connection to `address` and reads until the
/// connection ends.
async fn exchange(address: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut socket = TcpStream::connect(address).await.unwrap();
    // The server may close before it has read everything (a refused head):
    // a failed write is part of the outcome, not the test's failure.
    let _ = socket.write_all(bytes).await;
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the connection did not end: {:?}",
        String::from_utf8_lossy(&out)
    );
    out
}

struct Side {
    lb: Lb,
    recorder: Arc<Recorder>,
}

async fn side(server: weir::config::Http1Server) -> Side {
    let recorder = Arc::new(Recorder::default());
    let backend = recording_backend(recorder.clone()).await;
    let text = format!(
        "{}{}",
        timed_listener("max_header_bytes = 8192"),
        one_upstream(&["b"], "")
    )
    .replace("{b}", &backend.to_string());
    let mut config = weir::config::parse(&text, "test.toml").unwrap();
    config.listeners[0].http1_server = server;
    Side {
        lb: start_lb_config(config).await,
        recorder,
    }
}

/// What one side made of a case: the responses and what the backend got.
async fn run_case(side: &Side, bytes: &[u8], answer: &Answer) -> (Vec<u8>, Vec<Received>) {
    *side.recorder.answer.lock().unwrap() = answer.clone();
    side.recorder.received.lock().unwrap().clear();
    let out = exchange(side.lb.addr, bytes).await;
    let received = std::mem::take(&mut *side.recorder.received.lock().unwrap());
    (out, received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weir_and_hyper_servers_agree() {
    let weir_side = side(weir::config::Http1Server::Weir).await;
    let hyper_side = side(weir::config::Http1Server::Hyper).await;
    let mut runner = TestRunner::new(Config {
        // 256 in the suite; more by PROPTEST_CASES.
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|cases| cases.parse().ok())
            .unwrap_or(256),
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        prop::collection::vec(request_strategy(), 1..4),
        answer_strategy(),
    );
    let handle = tokio::runtime::Handle::current();
    let result = runner.run(&strategy, |(requests, answer)| {
        let mut bytes = Vec::new();
        let last = requests.len() - 1;
        for (i, request) in requests.iter().enumerate() {
            bytes.extend_from_slice(&request.bytes(i == last));
        }
        let (weir_out, weir_received, hyper_out, hyper_received) =
            tokio::task::block_in_place(|| {
                handle.block_on(async {
                    let (weir_out, weir_received) = run_case(&weir_side, &bytes, &answer).await;
                    let (hyper_out, hyper_received) = run_case(&hyper_side, &bytes, &answer).await;
                    (weir_out, weir_received, hyper_out, hyper_received)
                })
            });
        let sent: Vec<&ClientRequest> = requests.iter().collect();
        // Up to the first request broken on purpose, both must agree; that
        // one weir refuses, and nothing after it is read. An HTTP/1.0 request
        // without keep-alive ends the connection before any later one.
        let closes_at = requests
            .iter()
            .position(|r| r.http10 && !r.keep_alive_10)
            .unwrap_or(last);
        let broken_at = requests[..=closes_at]
            .iter()
            .position(|r| r.breakage.is_some());
        let methods: Vec<&str> = requests.iter().map(|r| r.method).collect();
        let weir_read = read_responses(&weir_out, &methods).map_err(|e| {
            TestCaseError::fail(format!(
                "weir: {e}\nsent: {sent:?}\nread: {:?}",
                String::from_utf8_lossy(&weir_out[..weir_out.len().min(2000)])
            ))
        })?;
        let hyper_read = read_responses(&hyper_out, &methods).map_err(|e| {
            TestCaseError::fail(format!(
                "hyper: {e}\nsent: {sent:?}\nread: {:?}",
                String::from_utf8_lossy(&hyper_out[..hyper_out.len().min(2000)])
            ))
        })?;
        // hyper's path refuses a chunked request followed in the same read
        // by a head with both framing fields (the flag its raw scan sets is
        // taken by the first chunked head): no comparison then, only weir's
        // own rules.
        let hyper_misreads = requests.iter().enumerate().any(|(i, later)| {
            later.has_both_framings() && requests[..i].iter().any(ClientRequest::sends_chunked)
        });
        match broken_at {
            None if hyper_misreads => {}
            None => {
                prop_assert_eq!(&weir_received, &hyper_received, "backend; sent: {:?}", sent);
                prop_assert_eq!(&weir_read, &hyper_read, "responses; sent: {:?}", sent);
            }
            Some(at) => {
                // Nothing of the broken request reaches the backend; weir
                // refuses it, unless the connection ended before it (a
                // response to HTTP/1.0 whose body ends with the connection).
                prop_assert!(
                    weir_received.len() <= at,
                    "nothing broken reaches the backend; sent: {:?}",
                    sent
                );
                prop_assert!(
                    weir_read.len() <= at + 1,
                    "nothing after the broken request is answered; sent: {:?}",
                    sent
                );
                if weir_read.len() == at + 1 {
                    let refusal = &weir_read[at].status_line;
                    prop_assert!(
                        refusal.contains(" 400 ") || refusal.contains(" 431 "),
                        "weir refuses the broken request: {}; sent: {:?}",
                        refusal,
                        sent
                    );
                }
                let before = weir_read.len().min(at);
                if !hyper_misreads && hyper_read.len() >= before {
                    prop_assert_eq!(
                        &weir_received[..],
                        &hyper_received[..weir_received.len().min(hyper_received.len())],
                        "sent: {:?}",
                        sent
                    );
                    prop_assert_eq!(
                        &weir_read[..before],
                        &hyper_read[..before],
                        "sent: {:?}",
                        sent
                    );
                }
            }
        }
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
}
