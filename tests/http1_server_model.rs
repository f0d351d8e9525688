//! weir's HTTP/1 server side held to a model, on generated client streams:
//! pipelined requests (HTTP/1.1 and 1.0, keep-alive or not), bodies by length
//! or cut in chunks, `Expect: 100-continue`, and requests broken twelve ways,
//! through weir in front of a recording backend whose answers are generated
//! too (statuses, fields, bodies by length, chunks or to the close).
//!
//! Every request before the first broken one must reach the backend as the
//! client sent it (method, target, fields in order, body) plus weir's
//! forwarding fields and minus hop-by-hop ones; every answer must reach the
//! client as the backend gave it, framed for the client's version, and the
//! connection must end exactly where HTTP/1 says it does. The broken request
//! is refused (400 or 431), nothing of it reaches the backend, and nothing
//! after it is read. (Before hyper's HTTP/1 server was removed, the same
//! streams were run through both and compared: 20,000 cases agreed.)

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
        // No dot segments or empty ones: weir normalises those (tested
        // apart), and the model forwards targets as they came.
        "/([a-z0-9_~-]{1,8}/){0,2}[a-z0-9_~-]{0,8}(\\?[a-z0-9=&]{0,10})?",
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
        let fields: Vec<(String, Vec<u8>)> = response
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

async fn side() -> Side {
    let recorder = Arc::new(Recorder::default());
    let backend = recording_backend(recorder.clone()).await;
    let text = format!(
        "{}{}",
        timed_listener("max_header_bytes = 8192"),
        one_upstream(&["b"], "")
    )
    .replace("{b}", &backend.to_string());
    let config = weir::config::parse(&text, "test.toml").unwrap();
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

/// Whether the connection ends after `request`'s response to `answer`.
fn ends_after(request: &ClientRequest, answer: &Answer, last: bool) -> bool {
    let sends_body = request.method != "HEAD" && answer.status != 204 && answer.status != 304;
    last || (request.http10 && (!request.keep_alive_10 || (sends_body && answer.framing != 0)))
}

fn field<'a>(fields: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_slice())
}

/// `wanted` are in `fields`: for each name, its values in the same order
/// (fields of different names may come in another order, as RFC 9110 §5.3
/// allows: weir's request view groups them by name).
fn in_order(fields: &[(String, Vec<u8>)], wanted: &[(String, String)]) -> bool {
    let values = |list: Vec<(&str, &[u8])>, name: &str| -> Vec<Vec<u8>> {
        list.into_iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.to_vec())
            .collect()
    };
    wanted.iter().all(|(name, _)| {
        let want = values(
            wanted
                .iter()
                .map(|(n, v)| (n.as_str(), v.trim().as_bytes()))
                .collect(),
            name,
        );
        let got = values(
            fields
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_slice()))
                .collect(),
            name,
        );
        want == got
    })
}

/// What the backend must have received for `request`.
fn check_forwarded(request: &ClientRequest, got: &Received) -> Result<(), String> {
    let mut problems = Vec::new();
    if got.method != request.method || got.target != request.target || got.version != 1 {
        problems.push("request line");
    }
    if !in_order(&got.fields, &request.fields) {
        problems.push("the client's fields, in order");
    }
    if field(&got.fields, "host") != Some(b"app.test".as_slice())
        || field(&got.fields, "x-forwarded-for") != Some(b"127.0.0.1".as_slice())
        || field(&got.fields, "x-forwarded-proto") != Some(b"http".as_slice())
    {
        problems.push("host and forwarding fields");
    }
    if [
        "connection",
        "keep-alive",
        "te",
        "upgrade",
        "proxy-connection",
    ]
    .iter()
    .any(|hop| field(&got.fields, hop).is_some())
    {
        problems.push("a hop-by-hop field forwarded");
    }
    if got.body != request.body.clone().unwrap_or_default() {
        problems.push("body");
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "forwarded wrong ({}): {got:?}",
            problems.join(", ")
        ))
    }
}

/// What the client must have read for `request` answered with `answer`.
fn check_response(
    request: &ClientRequest,
    answer: &Answer,
    read: &Read,
    ends: bool,
) -> Result<(), String> {
    let mut problems = Vec::new();
    // The backend's reason phrase goes on as it came; the version is the
    // client's.
    let version = if request.http10 { 0 } else { 1 };
    if read.status_line != format!("HTTP/1.{version} {} Whatever", answer.status) {
        problems.push("status line");
    }
    if !in_order(&read.fields, &answer.fields) {
        problems.push("the backend's fields, in order");
    }
    if field(&read.fields, "date").is_none() {
        problems.push("no Date");
    }
    let sends_body = request.method != "HEAD" && answer.status != 204 && answer.status != 304;
    let framing = match (sends_body, answer.framing, request.http10) {
        (false, _, _) => "none",
        (true, 0, _) => "length",
        (true, _, false) => "chunked",
        (true, _, true) => "close",
    };
    if read.framing != framing {
        problems.push("framing");
    }
    if sends_body && read.body != answer.body {
        problems.push("body");
    }
    let connection = field(&read.fields, "connection").map(|v| v.to_ascii_lowercase());
    let wanted: Option<&[u8]> = match (request.http10, ends) {
        (_, true) => Some(b"close"),
        (true, false) => Some(b"keep-alive"),
        (false, false) => None,
    };
    if connection.as_deref() != wanted {
        problems.push("Connection");
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "answered wrong ({}): {read:?}",
            problems.join(", ")
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weir_serves_generated_streams_as_http1_says() {
    let weir = side().await;
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
        let (out, received) =
            tokio::task::block_in_place(|| handle.block_on(run_case(&weir, &bytes, &answer)));
        let sent: Vec<&ClientRequest> = requests.iter().collect();
        let methods: Vec<&str> = requests.iter().map(|r| r.method).collect();
        let read = read_responses(&out, &methods).map_err(|e| {
            TestCaseError::fail(format!(
                "{e}\nsent: {sent:?}\nread: {:?}",
                String::from_utf8_lossy(&out[..out.len().min(2000)])
            ))
        })?;
        // The requests answered: up to the first that ends the connection,
        // or up to the first broken one, which is refused.
        let ends_at = (0..requests.len())
            .find(|&i| ends_after(&requests[i], &answer, i == last))
            .unwrap_or(last);
        let broken_at = requests[..=ends_at]
            .iter()
            .position(|r| r.breakage.is_some());
        let served = broken_at.unwrap_or(ends_at + 1);
        prop_assert_eq!(
            received.len(),
            served,
            "requests forwarded; sent: {:?}",
            sent
        );
        for (request, got) in requests.iter().zip(&received) {
            check_forwarded(request, got)
                .map_err(|e| TestCaseError::fail(format!("{e}\nsent: {sent:?}")))?;
        }
        match broken_at {
            None => prop_assert_eq!(read.len(), served, "responses; sent: {:?}", sent),
            Some(at) => {
                prop_assert_eq!(read.len(), at + 1, "responses; sent: {:?}", sent);
                let refusal = &read[at].status_line;
                prop_assert!(
                    refusal.contains(" 400 ") || refusal.contains(" 431 "),
                    "the broken request refused: {}; sent: {:?}",
                    refusal,
                    sent
                );
            }
        }
        for (i, (request, response)) in requests.iter().zip(&read).take(served).enumerate() {
            let ends = i == ends_at && broken_at.is_none();
            check_response(request, &answer, response, ends)
                .map_err(|e| TestCaseError::fail(format!("{e}\nsent: {sent:?}")))?;
        }
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
}
