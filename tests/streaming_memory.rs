//! 1 GiB up and 1 GiB down through the real binary: bodies stream, so weir's peak
//! RSS grows by far less than the body (the bound is 64 MiB). The backend and the
//! client are plain blocking sockets in this process; weir runs as its own process
//! so that its memory can be read from /proc.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use support::{WeirCommand, WeirProcess};

const GIB: u64 = 1 << 30;
const CHUNK: usize = 256 * 1024;
const RSS_GROWTH_LIMIT_KIB: u64 = 64 * 1024;

/// Peak resident set of `pid` in KiB (VmHWM).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Reads a request or response head up to the blank line; returns its lines.
fn read_head(reader: &mut impl BufRead) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let line = line.trim_end().to_owned();
        if line.is_empty() {
            return lines;
        }
        lines.push(line);
    }
}

fn content_length(head: &[String]) -> u64 {
    head.iter()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0)
}

/// The byte at offset `i` of every body is `i % 251`: a shifted, lost or repeated
/// byte shows at the sampled positions.
const PERIOD: usize = 251;
/// Every SAMPLE-th byte is checked; checking all 2 GiB in a debug build would take
/// longer than the transfer.
const SAMPLE: usize = 4099;

/// Reads exactly `len` bytes and checks the pattern at the sampled offsets.
fn drain(reader: &mut impl Read, len: u64) {
    let mut buf = vec![0u8; CHUNK];
    let mut offset = 0u64;
    while offset < len {
        let want = buf.len().min(usize::try_from(len - offset).unwrap());
        let n = reader.read(&mut buf[..want]).unwrap();
        assert!(n > 0, "stream ended with {} bytes missing", len - offset);
        let first = (SAMPLE - (offset % SAMPLE as u64) as usize) % SAMPLE;
        for i in (first..n).step_by(SAMPLE) {
            let at = offset + i as u64;
            assert_eq!(
                buf[i],
                (at % PERIOD as u64) as u8,
                "wrong byte at offset {at}"
            );
        }
        offset += n as u64;
    }
}

/// Writes `len` bytes of the pattern.
fn pour(writer: &mut impl Write, len: u64) {
    // A whole number of periods, so consecutive writes continue the pattern.
    let pattern: Vec<u8> = (0..PERIOD * 1024).map(|i| (i % PERIOD) as u8).collect();
    let mut left = len;
    while left > 0 {
        let n = pattern.len().min(usize::try_from(left).unwrap());
        writer.write_all(&pattern[..n]).unwrap();
        left -= n as u64;
    }
}

/// Backend: `POST /up` is read to the end and answered with its checksum;
/// `GET /down` is answered with 1 GiB.
fn spawn_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut writer = stream.try_clone().unwrap();
                let mut reader = BufReader::with_capacity(CHUNK, stream);
                loop {
                    let head = read_head(&mut reader);
                    if head.is_empty() {
                        return;
                    }
                    if head[0].starts_with("POST") {
                        let len = content_length(&head);
                        drain(&mut reader, len);
                        let body = len.to_string();
                        write!(
                            writer,
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        )
                        .unwrap();
                    } else {
                        write!(writer, "HTTP/1.1 200 OK\r\ncontent-length: {GIB}\r\n\r\n").unwrap();
                        pour(&mut writer, GIB);
                    }
                }
            });
        }
    });
    address
}

fn start_weir(backend: SocketAddr) -> (WeirProcess, SocketAddr) {
    let weir = WeirCommand::new()
        .config_text(
            "streaming",
            &format!(
                "[runtime]\nworkers = 1\n[[listeners]]\nlisten = \"127.0.0.1:0\"\n\
                 [[routes]]\nupstream = \"a\"\n[upstreams.a]\nbackends = [{{ address = \"{backend}\" }}]\n\
                 timeouts = {{ response = \"5m\" }}\n"
            ),
        )
        .start();
    let address = weir.listening();
    (weir, address)
}

#[test]
fn one_gib_each_way_streams_without_buffering() {
    let backend = spawn_backend();
    let (weir, address) = start_weir(backend);
    let pid = weir.id();

    // Warm up with a small request so the baseline includes the connection setup.
    let stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::with_capacity(CHUNK, stream);
    write!(
        writer,
        "POST /up HTTP/1.1\r\nhost: a\r\ncontent-length: 1\r\n\r\n"
    )
    .unwrap();
    pour(&mut writer, 1);
    let head = read_head(&mut reader);
    let mut answer = vec![0u8; usize::try_from(content_length(&head)).unwrap()];
    reader.read_exact(&mut answer).unwrap();
    let baseline = peak_rss_kib(pid);

    write!(
        writer,
        "POST /up HTTP/1.1\r\nhost: a\r\ncontent-length: {GIB}\r\n\r\n"
    )
    .unwrap();
    pour(&mut writer, GIB);
    let head = read_head(&mut reader);
    assert!(head[0].contains(" 200 "), "{head:?}");
    let mut echoed = vec![0u8; usize::try_from(content_length(&head)).unwrap()];
    reader.read_exact(&mut echoed).unwrap();
    // The backend checked the pattern and answers the length it received.
    assert_eq!(
        String::from_utf8(echoed).unwrap(),
        GIB.to_string(),
        "upload lost bytes"
    );

    write!(writer, "GET /down HTTP/1.1\r\nhost: a\r\n\r\n").unwrap();
    let head = read_head(&mut reader);
    assert!(head[0].contains(" 200 "), "{head:?}");
    assert_eq!(content_length(&head), GIB);
    drain(&mut reader, GIB);

    let growth = peak_rss_kib(pid).saturating_sub(baseline);
    assert!(
        growth < RSS_GROWTH_LIMIT_KIB,
        "peak RSS grew by {growth} KiB while streaming 2 GiB (limit {RSS_GROWTH_LIMIT_KIB} KiB)"
    );
}
