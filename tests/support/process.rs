//! The weir binary as a child process: run to its end (`--check`, `--version`) or
//! started with a config file of its own and stopped by the guard it returns.
//!
//! Its stdout and stderr are captured whole; the address of a listener is read
//! from its log line. Every wait on the process is bounded by [`PROCESS_BOUND`],
//! and the guard kills and reaps the process when dropped, so none outlives its
//! test.

use std::ffi::OsString;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The binary under test.
pub const WEIR_BIN: &str = env!("CARGO_BIN_EXE_weir");

/// Upper bound of any wait on the process: its start, a log line, its exit.
pub const PROCESS_BOUND: Duration = Duration::from_secs(20);

/// How to run weir: arguments, a config file, a descriptor limit.
#[derive(Default)]
pub struct WeirCommand {
    args: Vec<OsString>,
    /// The folder holding the config written by [`WeirCommand::config_text`].
    config_dir: Option<PathBuf>,
    file_limit: Option<u32>,
}

impl WeirCommand {
    pub fn new() -> Self {
        WeirCommand::default()
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(OsString::from));
        self
    }

    /// `--config path`.
    pub fn config(self, path: &Path) -> Self {
        self.arg("--config").arg(path)
    }

    /// `--config` with `text` written to `weir.toml` in a folder of its own,
    /// `weir-<name>-<pid>` under the temporary directory; the folder goes with
    /// the process.
    pub fn config_text(mut self, name: &str, text: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("weir-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("weir.toml");
        std::fs::write(&path, text).unwrap();
        self.config_dir = Some(dir);
        self.config(&path)
    }

    /// Runs weir with at most `limit` open file descriptors (`ulimit -n`, set by a
    /// shell that then execs weir, so the process is still weir's own).
    pub fn file_limit(mut self, limit: u32) -> Self {
        self.file_limit = Some(limit);
        self
    }

    /// Starts weir. Its log is plain text at the config's level: `RUST_LOG` is
    /// not passed on, and `NO_COLOR` keeps escape codes out of it.
    pub fn start(self) -> WeirProcess {
        let mut command = match self.file_limit {
            None => Command::new(WEIR_BIN),
            Some(limit) => {
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
                    .arg(WEIR_BIN);
                sh
            }
        };
        let mut child = command
            .args(&self.args)
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the weir binary");
        let captured = Arc::new(Captured::default());
        captured.drain(child.stdout.take().unwrap(), |streams| &mut streams.stdout);
        captured.drain(child.stderr.take().unwrap(), |streams| &mut streams.stderr);
        WeirProcess {
            child,
            captured,
            config_dir: self.config_dir,
        }
    }

    /// Runs weir to its end and returns its exit status and output.
    pub fn output(self) -> Output {
        self.start().wait_for_exit()
    }
}

/// A running weir; dropping it kills the process and waits for it.
pub struct WeirProcess {
    child: Child,
    captured: Arc<Captured>,
    config_dir: Option<PathBuf>,
}

/// What the process wrote so far, filled by one thread per stream.
#[derive(Default)]
struct Captured {
    streams: Mutex<Streams>,
    changed: Condvar,
}

#[derive(Default)]
struct Streams {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// Streams not at their end yet: 0 once the process has exited.
    open: usize,
}

impl Captured {
    /// Copies `pipe` into the stream `field` picks, on a thread of its own, until EOF.
    fn drain(
        self: &Arc<Self>,
        mut pipe: impl Read + Send + 'static,
        field: fn(&mut Streams) -> &mut Vec<u8>,
    ) {
        self.streams.lock().unwrap().open += 1;
        let captured = self.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            loop {
                let n = match pipe.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                field(&mut captured.streams.lock().unwrap()).extend_from_slice(&chunk[..n]);
                captured.changed.notify_all();
            }
            captured.streams.lock().unwrap().open -= 1;
            captured.changed.notify_all();
        });
    }

    /// Waits until `found` gives a value; panics, naming `what` and showing the
    /// output so far, if the process exits first or [`PROCESS_BOUND`] passes.
    fn wait_for<T>(&self, what: &str, mut found: impl FnMut(&Streams) -> Option<T>) -> T {
        let deadline = Instant::now() + PROCESS_BOUND;
        let mut streams = self.streams.lock().unwrap();
        let failure = loop {
            if let Some(value) = found(&streams) {
                return value;
            }
            if streams.open == 0 {
                break format!("weir exited while waiting for {what}");
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break format!("timed out after {PROCESS_BOUND:?} waiting for {what}");
            }
            streams = self.changed.wait_timeout(streams, left).unwrap().0;
        };
        let output = format!(
            "stdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&streams.stdout),
            String::from_utf8_lossy(&streams.stderr)
        );
        // Released before panicking: the threads filling it go on to the end.
        drop(streams);
        panic!("{failure}; weir's output:\n{output}");
    }
}

impl WeirProcess {
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The config file written by [`WeirCommand::config_text`].
    pub fn config_path(&self) -> PathBuf {
        self.config_dir
            .as_ref()
            .expect("weir was started without WeirCommand::config_text")
            .join("weir.toml")
    }

    /// Sends the signal `name` (`HUP`, `TERM`, ...) to the process; false if
    /// `kill` failed.
    pub fn signal(&self, name: &str) -> bool {
        Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.id().to_string())
            .status()
            .expect("run kill")
            .success()
    }

    /// The first line of the log (stderr) that contains `needle`, waiting for it.
    pub fn wait_for_log(&self, needle: &str) -> String {
        self.captured
            .wait_for(&format!("a log line with {needle:?}"), |streams| {
                String::from_utf8_lossy(&streams.stderr)
                    .lines()
                    .find(|line| line.contains(needle))
                    .map(str::to_owned)
            })
    }

    /// Waits until `count` lines of the log (stderr) contain `needle`.
    pub fn wait_for_log_count(&self, needle: &str, count: usize) {
        self.captured
            .wait_for(&format!("{count} log lines with {needle:?}"), |streams| {
                let lines = String::from_utf8_lossy(&streams.stderr);
                (lines.lines().filter(|line| line.contains(needle)).count() >= count).then_some(())
            })
    }

    /// The address of the first listener, from its `listening` log line.
    pub fn listening(&self) -> SocketAddr {
        self.captured.wait_for("a listener's address", |streams| {
            String::from_utf8_lossy(&streams.stderr)
                .lines()
                .filter(|line| line.contains(" listening ") && line.contains(" listener="))
                .find_map(|line| {
                    line.split_once(" address=")?
                        .1
                        .split(' ')
                        .next()?
                        .parse()
                        .ok()
                })
        })
    }

    /// What the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.captured.streams.lock().unwrap().stderr).into_owned()
    }

    /// Waits for the process to end (both streams closed, then reaped) and returns
    /// its status and everything it wrote.
    pub fn wait_for_exit(mut self) -> Output {
        self.captured
            .wait_for("weir to exit", |streams| (streams.open == 0).then_some(()));
        let status: ExitStatus = self.child.wait().expect("wait for weir");
        let mut streams = self.captured.streams.lock().unwrap();
        Output {
            status,
            stdout: std::mem::take(&mut streams.stdout),
            stderr: std::mem::take(&mut streams.stderr),
        }
    }
}

impl Drop for WeirProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = &self.config_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A field of /proc/PID/status (`VmRSS`, `VmHWM`), in bytes.
pub fn proc_status(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}
