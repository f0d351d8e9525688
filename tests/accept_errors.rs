//! The accept loop survives running out of file descriptors (EMFILE): it backs off
//! and serves again once descriptors are free. Runs the real binary under a low
//! `RLIMIT_NOFILE` so the test process itself is not starved.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use support::WeirCommand;

/// A tiny blocking HTTP/1.1 backend answering "ok" to every request.
fn spawn_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut seen = Vec::new();
                loop {
                    let Ok(n) = stream.read(&mut buf) else { return };
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        if stream
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            });
        }
    });
    address
}

fn get(address: SocketAddr) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

/// Retries `get` until it answers 200 or the deadline passes (weir backing off
/// after EMFILE: no event to await from outside).
fn get_ok_within(address: SocketAddr, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if get(address).is_ok_and(|r| r.starts_with("HTTP/1.1 200")) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn accept_loop_survives_emfile() {
    let backend = spawn_backend();
    let weir = WeirCommand::new()
        .config_text(
            "emfile",
            &format!(
                "[runtime]\nworkers = 1\n[[listeners]]\nlisten = \"127.0.0.1:0\"\n\
                 [[routes]]\nupstream = \"a\"\n[upstreams.a]\nbackends = [{{ address = \"{backend}\" }}]\n"
            ),
        )
        .file_limit(64)
        .start();
    let address = weir.listening();
    assert!(
        get(address).is_ok_and(|r| r.starts_with("HTTP/1.1 200")),
        "weir did not start"
    );

    // Hold far more connections than weir has descriptors: the kernel completes the
    // handshakes, and weir's accept() fails with EMFILE once its table is full.
    let mut held = Vec::new();
    for _ in 0..200 {
        if let Ok(stream) = TcpStream::connect(address) {
            held.push(stream);
        }
    }
    // Give weir's accept loop a request it can only serve after descriptors free up.
    assert!(
        get(address).is_err() || held.len() < 60,
        "expected weir to be out of descriptors"
    );
    drop(held);

    assert!(
        get_ok_within(address, Duration::from_secs(10)),
        "weir stopped accepting after EMFILE"
    );
}
