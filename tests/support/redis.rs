//! A real `redis-server` (the Debian package; `scripts/test` installs it) as a
//! child process on `127.0.0.1`, for the tests of what weir keeps in Redis.
//!
//! Each server has a port and a folder of its own, no config file and no
//! persistence (`--save ""`, `--appendonly no`): a restarted server is empty.
//! [`RedisServer::command`] speaks RESP over a plain blocking socket, so a test
//! can read what weir wrote without a Redis client among the dev-dependencies.
//!
//! Everything here blocks the calling thread, for milliseconds when Redis is
//! well; every wait is bounded by [`REDIS_BOUND`]. The guard kills and reaps
//! its own process when dropped, so none outlives its test.

use std::fs::OpenOptions;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Upper bound of any wait: the server's start, one command's round trip.
pub const REDIS_BOUND: Duration = Duration::from_secs(10);

/// How often a starting server is asked whether it answers yet.
const POLL: Duration = Duration::from_millis(10);

/// Upper bound of one such question: a starting Redis answers in microseconds,
/// and a process that is not Redis may never answer.
const PROBE_BOUND: Duration = Duration::from_secs(1);

/// Fresh ports tried by [`RedisServer::start`] before giving up.
const START_ATTEMPTS: usize = 8;

/// Tells apart the folders of the servers of one test binary.
static SERVERS: AtomicUsize = AtomicUsize::new(0);

/// A running `redis-server`; dropping it kills the process and waits for it.
pub struct RedisServer {
    port: u16,
    /// `--dir`, also holding `redis.log` (the process's stdout and stderr).
    dir: PathBuf,
    /// `None` after [`RedisServer::stop`].
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a free loopback port and waits until it answers.
    pub fn start() -> RedisServer {
        let n = SERVERS.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("weir-redis-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = RedisServer {
            port: 0,
            dir,
            child: None,
        };
        // A port read from a released listener may be taken again before Redis
        // binds it (by another test's server, say): then Redis exits, and the
        // next attempt takes another port.
        for _ in 0..START_ATTEMPTS {
            server.port = free_port();
            if let Some(child) = server.launch() {
                server.child = Some(child);
                return server;
            }
        }
        panic!(
            "redis-server did not start on any of {START_ATTEMPTS} ports; its log:\n{}",
            server.log()
        );
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// Kills the server, as a crash would: connections drop, connects are
    /// refused, and everything it held is gone. Nothing if it is not running.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again, empty, on the same port; stops it first if it
    /// is running. While it was down the port may have been taken for a moment
    /// (as a connection's local end, say), so a launch that fails is tried again
    /// until [`REDIS_BOUND`] has passed.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + REDIS_BOUND;
        loop {
            if let Some(child) = self.launch() {
                self.child = Some(child);
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "redis-server did not start again on port {} within {REDIS_BOUND:?}; its log:\n{}",
                    self.port,
                    self.log()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Sends one command and returns its reply as text, panicking if the server
    /// cannot be reached. See [`RedisServer::try_command`] for the text.
    #[track_caller]
    pub fn command(&self, args: &[&str]) -> String {
        match self.try_command(args) {
            Ok(reply) => reply,
            Err(err) => panic!("redis {args:?} on port {}: {err}", self.port),
        }
    }

    /// Sends one command on a connection of its own and returns the reply: a
    /// status (`OK`, `PONG`) or a value as it is, an integer in decimal, an error
    /// with its `-` (`-ERR ...`), a missing value as `(nil)`, and an array's
    /// items one a line (nested arrays flattened, an empty one as an empty
    /// string). An error if the server cannot be reached, or does not answer
    /// within [`REDIS_BOUND`] with a reply that parses.
    pub fn try_command(&self, args: &[&str]) -> io::Result<String> {
        self.exchange(args, REDIS_BOUND)
    }

    /// [`RedisServer::try_command`] with each step bounded by `bound`.
    fn exchange(&self, args: &[&str], bound: Duration) -> io::Result<String> {
        let stream = TcpStream::connect_timeout(&self.addr(), bound)?;
        stream.set_read_timeout(Some(bound))?;
        stream.set_write_timeout(Some(bound))?;
        (&stream).write_all(&encode(args))?;
        let mut lines = Vec::new();
        read_reply(&mut BufReader::new(&stream), &mut lines)?;
        Ok(lines.join("\n"))
    }

    /// What the server wrote to its stdout and stderr, across restarts.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
    }

    /// Starts `redis-server` on this server's port and waits until it, and not
    /// some other process, answers there; `None` if the port was not its to have.
    fn launch(&self) -> Option<Child> {
        // Appended to: the log of a restart follows that of the first start.
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("redis.log"))
            .unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn();
        let mut child = match child {
            Ok(child) => child,
            Err(err) if err.kind() == io::ErrorKind::NotFound => panic!(
                "redis-server is not installed (the Debian package redis-server; scripts/test installs it)"
            ),
            Err(err) => panic!("start redis-server: {err}"),
        };
        let deadline = Instant::now() + REDIS_BOUND;
        loop {
            // Exited before answering: most often, its port was taken.
            if child.try_wait().unwrap().is_some() {
                return None;
            }
            if let Ok(answer) = self.exchange(&["PING"], PROBE_BOUND)
                && answer == "PONG"
            {
                // A PONG may come from another server that took the port first
                // while this one is about to fail to bind it: ask whose it is.
                let info = self
                    .exchange(&["INFO", "server"], PROBE_BOUND)
                    .unwrap_or_default();
                if info.contains(&format!("process_id:{}\r\n", child.id())) {
                    return Some(child);
                }
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                // Gone on its own meanwhile: the port was not its to have.
                if child.wait().is_ok_and(|status| status.code().is_some()) {
                    return None;
                }
                panic!(
                    "redis-server on port {} did not answer PING within {REDIS_BOUND:?}; its log:\n{}",
                    self.port,
                    self.log()
                );
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A loopback port nothing listens on: bound, then released.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind a loopback port")
        .port()
}

/// A command as RESP: an array of bulk strings.
fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Reads one RESP2 reply, pushing its text to `out` (an array's items one each).
fn read_reply(reader: &mut impl BufRead, out: &mut Vec<String>) -> io::Result<()> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before a reply",
        ));
    }
    let line = line.trim_end_matches("\r\n");
    let bad = || io::Error::new(io::ErrorKind::InvalidData, format!("bad reply {line:?}"));
    let (kind, rest) = line.split_at_checked(1).ok_or_else(bad)?;
    match kind {
        "+" | ":" => out.push(rest.to_owned()),
        "-" => out.push(line.to_owned()),
        "$" => {
            let len: i64 = rest.parse().map_err(|_| bad())?;
            if len < 0 {
                out.push("(nil)".to_owned());
            } else {
                // The value and its CRLF; read by length, as it may hold CRLFs.
                let mut value = vec![0; len as usize + 2];
                reader.read_exact(&mut value)?;
                value.truncate(len as usize);
                out.push(String::from_utf8_lossy(&value).into_owned());
            }
        }
        "*" => {
            let len: i64 = rest.parse().map_err(|_| bad())?;
            if len < 0 {
                out.push("(nil)".to_owned());
            }
            for _ in 0..len.max(0) {
                read_reply(reader, out)?;
            }
        }
        _ => return Err(bad()),
    }
    Ok(())
}
