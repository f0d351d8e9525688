//! The example configs in `config/` and `weir --check` / `weir --version` through the
//! real binary.

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;

use support::WeirCommand;
use support::marks::{marked, marks};
use weir::config::defaults::*;
use weir::config::{self, RuntimeConfig, UpstreamTimeouts};

fn example_configs() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 3,
        "expected at least 3 example configs in {}, found {files:?}",
        dir.display()
    );
    files
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config")
        .join(name)
}

fn weir(args: &[&str]) -> Output {
    WeirCommand::new().args(args).output()
}

fn check(path: &Path) -> Output {
    weir(&["--config", path.to_str().unwrap(), "--check"])
}

/// A directory of its own for this test process.
fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("weir-config-files-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

// === the example configs ===

#[test]
fn every_example_config_loads() {
    for path in example_configs() {
        if let Err(err) = config::load(&path) {
            panic!("{} does not load:\n{err}", path.display());
        }
    }
}

#[test]
fn check_accepts_every_example_config() {
    for path in example_configs() {
        let output = check(&path);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{}: stderr:\n{}",
            path.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.contains("is valid"), "{}: {stdout}", path.display());
        assert!(
            stdout.contains(&path.display().to_string()),
            "the file is named: {stdout}"
        );
    }
}

#[test]
fn minimal_example_has_one_listener_route_and_upstream() {
    let config = config::load(&example("minimal.toml")).unwrap();
    assert_eq!(config.listeners.len(), 1);
    assert_eq!(config.routes.len(), 1);
    assert_eq!(config.upstreams.len(), 1);
}

#[test]
fn multi_route_example_routes_by_host_and_path_with_weights() {
    let config = config::load(&example("multi-route.toml")).unwrap();
    assert_eq!(config.listeners.len(), 2);
    assert!(config.routes.iter().any(|r| r.host.is_some()));
    assert!(config.routes.iter().any(|r| r.path_prefix.is_some()));
    assert!(
        config
            .upstreams
            .iter()
            .flat_map(|u| &u.backends)
            .any(|b| b.weight.get() > 1)
    );
    assert!(
        config
            .upstreams
            .iter()
            .any(|u| u.timeouts.connect != DEFAULT_CONNECT_TIMEOUT)
    );
}

/// `config/weir.toml` writes out every default: loading it must give the same values
/// as the constants, so the file and the code cannot drift apart.
#[test]
fn full_example_writes_out_the_defaults() {
    let config = config::load(&example("weir.toml")).unwrap();
    assert_eq!(
        config.runtime,
        RuntimeConfig {
            workers: 0,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
        }
    );
    let listener = &config.listeners[0];
    assert_eq!(listener.name, "listener-0");
    assert_eq!(listener.header_timeout, DEFAULT_HEADER_TIMEOUT);
    assert_eq!(listener.idle_timeout, DEFAULT_IDLE_TIMEOUT);
    assert_eq!(listener.max_header_bytes, DEFAULT_MAX_HEADER_BYTES);
    assert_eq!(config.routes[0].name, "route-0");
    let upstream = &config.upstreams[0];
    assert_eq!(upstream.backends[0].weight.get(), DEFAULT_WEIGHT);
    assert_eq!(
        upstream.timeouts,
        UpstreamTimeouts {
            connect: DEFAULT_CONNECT_TIMEOUT,
            response: DEFAULT_RESPONSE_TIMEOUT,
            idle: DEFAULT_UPSTREAM_IDLE_TIMEOUT,
            request: None,
        }
    );
}

#[test]
fn full_example_mentions_every_supported_key() {
    let text = std::fs::read_to_string(example("weir.toml")).unwrap();
    for key in [
        "[runtime]",
        "workers =",
        "shutdown_timeout =",
        "[[listeners]]",
        "name =",
        "listen =",
        "header_timeout =",
        "idle_timeout =",
        "max_header_bytes =",
        "[[routes]]",
        "host =",
        "path_prefix =",
        "upstream =",
        "strategy =",
        "backends =",
        "address =",
        "weight =",
        "srv =",
        "[resolver]",
        "nameservers =",
        "min_ttl =",
        "max_ttl =",
        "hold_missing =",
        "max_connections_per_backend =",
        "connect =",
        "response =",
        "idle =",
        "request:",
        "[admin]",
        "[logging]",
        "level =",
        "access_log =",
        "access_log_format =",
        "max_connections =",
        "proxy_protocol =",
        "send_proxy_protocol =",
        "sni =",
        "protocol = \"http1\"",
        "tls = {",
        "client_ca =",
        "tls_handshake_timeout =",
        "max_concurrent_streams =",
        "trusted_proxies =",
        "hash_key =",
        "hash_balance_factor =",
        "queue_timeout =",
        "slow_start =",
        "panic_threshold =",
        "sticky =",
        "health_check]",
        "expect_status =",
        "initial_state =",
        "healthy_threshold =",
        "unhealthy_threshold =",
        "outlier_detection]",
        "consecutive_failures =",
        "base_ejection_time =",
        "max_ejection_time =",
        "max_ejection_percent =",
        "retries]",
        "attempts =",
        "budget =",
        "min_retries_per_second =",
        "max_body_bytes =",
        "backoff =",
    ] {
        assert!(
            text.contains(key),
            "config/weir.toml does not mention {key}"
        );
    }
}

// === weir --check on broken configs ===

/// The start of a valid config, to which a broken case appends one problem.
const VALID: &str = r#"[[listeners]]
listen = "127.0.0.1:8080"

[[routes]]
upstream = "api"

[upstreams.api]
backends = [{ address = "127.0.0.1:9001" }]
"#;

struct Broken {
    name: &'static str,
    text: String,
    line: usize,
    column: usize,
    /// Must appear in stderr: the key in backquotes or a telling phrase.
    expect: &'static str,
}

/// A broken case whose text marks where its problem is reported.
#[track_caller]
fn broken(name: &'static str, text: impl Into<String>, expect: &'static str) -> Broken {
    let (text, line, column) = marked(&text.into());
    Broken {
        name,
        text,
        line,
        column,
        expect,
    }
}

/// `case` with a byte order mark in front, as some Windows editors write it.
fn with_bom(mut case: Broken) -> Broken {
    case.text.insert(0, '\u{FEFF}');
    case
}

/// `VALID` without its listener: the route and the upstream.
fn after_the_listener() -> &'static str {
    &VALID[VALID.find("\n[[routes]]").unwrap()..]
}

fn broken_configs() -> Vec<Broken> {
    vec![
        broken("empty", "‸", "the config file is empty"),
        broken("whitespace", "‸ \n\n\t\n", "the config file is empty"),
        broken(
            "top-level-typo",
            ["‸listners = []\n", VALID].concat(),
            "`listners`: unknown field",
        ),
        broken(
            "listener-typo",
            VALID.replace("listen = ", "‸lsten = "),
            "`lsten`: unknown field",
        ),
        broken(
            "upstream-typo",
            [VALID, "‸stratgy = \"round_robin\"\n"].concat(),
            "`stratgy`: unknown field",
        ),
        broken(
            "backend-typo",
            VALID.replace("9001\" }", "9001\", ‸wieght = 2 }"),
            "`wieght`: unknown field",
        ),
        broken(
            "duration-unit",
            VALID.replace("8080\"\n", "8080\"\nheader_timeout = ‸\"5x\"\n"),
            "`header_timeout`: invalid duration",
        ),
        broken(
            "duration-no-unit",
            VALID.replace("8080\"\n", "8080\"\nidle_timeout = ‸\"10\"\n"),
            "`idle_timeout`: invalid duration",
        ),
        broken(
            "duration-fraction",
            ["[runtime]\nshutdown_timeout = ‸\"1.5s\"\n", VALID].concat(),
            "`shutdown_timeout`: invalid duration",
        ),
        broken(
            "listen-host-name",
            VALID.replace("\"127.0.0.1:8080", "‸\"localhost:8080"),
            "`listen`: invalid address",
        ),
        broken(
            "unknown-upstream",
            VALID.replace("upstream = \"api\"", "upstream = ‸\"apj\""),
            "`upstream`: unknown upstream \"apj\"",
        ),
        broken(
            "no-backends",
            VALID
                .replace(
                    "backends = [{ address = \"127.0.0.1:9001\" }]",
                    "backends = []",
                )
                .replace("[upstreams.api]", "‸[upstreams.api]"),
            "needs at least one backend",
        ),
        broken(
            "weight-zero",
            VALID.replace("9001\" }", "9001\", weight = ‸0 }"),
            "`weight`: must be between 1 and 1000",
        ),
        broken(
            "weight-too-big",
            VALID.replace("9001\" }", "9001\", weight = ‸1001 }"),
            "`weight`: must be between 1 and 1000",
        ),
        broken(
            "same-address",
            [
                "[[listeners]]\nlisten = \"127.0.0.1:8080\"\n",
                &VALID.replace("listen = ", "listen = ‸"),
            ]
            .concat(),
            "is already used by another listener",
        ),
        broken(
            "duplicate-listener-name",
            [
                "[[listeners]]\nname = \"web\"\nlisten = \"127.0.0.1:8081\"\n",
                &VALID.replace("[[listeners]]\n", "[[listeners]]\nname = ‸\"web\"\n"),
            ]
            .concat(),
            "duplicate listener name \"web\"",
        ),
        broken(
            "no-listeners",
            VALID.replace("[[listeners]]\nlisten = \"127.0.0.1:8080\"\n", "‸"),
            "no [[listeners]]",
        ),
        broken(
            "no-routes",
            ["‸", &VALID.replace("[[routes]]\nupstream = \"api\"\n", "")].concat(),
            "no [[routes]]",
        ),
        broken(
            "zero-header-timeout",
            VALID.replace("8080\"\n", "8080\"\nheader_timeout = ‸\"0s\"\n"),
            "`header_timeout`: must be greater than zero",
        ),
        broken(
            "max-header-bytes-too-small",
            VALID.replace("8080\"\n", "8080\"\nmax_header_bytes = ‸1024\n"),
            "`max_header_bytes`: must be between",
        ),
        broken(
            "duplicate-backend",
            VALID.replace(
                "[{ address = \"127.0.0.1:9001\" }]",
                "[{ address = \"127.0.0.1:9001\" }, { address = ‸\"127.0.0.1:9001\" }]",
            ),
            "is listed twice",
        ),
        broken(
            "unknown-strategy",
            [VALID, "strategy = ‸\"fastest\"\n"].concat(),
            "`strategy`: unknown strategy \"fastest\"",
        ),
        broken(
            "sticky-not-a-table",
            [VALID, "sticky = ‸true\n"].concat(),
            "`sticky`: invalid type: boolean `true`, expected a table",
        ),
        broken(
            "logging-level",
            ["[logging]\nlevel = ‸\"loud\"\n", VALID].concat(),
            "`level`: expected one of: error, warn, info, debug, trace",
        ),
        broken(
            "health-check-path",
            [
                VALID,
                "\n[upstreams.api.health_check]\npath = ‸\"healthz\"\n",
            ]
            .concat(),
            "`health_check.path`: must be a path starting with '/'",
        ),
        broken(
            "listener-tls",
            VALID.replace("8080\"\n", "8080\"\ntls = { key = ‸\"a.key\" }\n"),
            "`tls.key`: tls.key needs tls.cert",
        ),
        broken(
            "max-connections-per-backend",
            [VALID, "max_connections_per_backend = ‸-5\n"].concat(),
            "`max_connections_per_backend`: must be between 0 and",
        ),
        // A BOM (as some Windows editors write) is not shown by editors, so it
        // takes no column
        with_bom(broken(
            "bom-value-on-first-line",
            ["listeners = ‸5\n", after_the_listener()].concat(),
            "`listeners`",
        )),
        with_bom(broken(
            "bom-typo-on-first-line",
            ["‸listners = []\n", VALID].concat(),
            "`listners`: unknown field",
        )),
        with_bom(broken(
            "bom-syntax-on-first-line",
            ["[[listeners]‸\n", after_the_listener()].concat(),
            "expected `]`",
        )),
        with_bom(broken("bom-only", "‸\n", "the config file is empty")),
        broken(
            "syntax",
            VALID.replace("8080\"", "8080‸"),
            "invalid basic string",
        ),
    ]
}

#[test]
fn check_refuses_broken_configs_with_file_line_column_and_key() {
    let dir = scratch_dir("broken");
    let cases = broken_configs();
    assert!(cases.len() >= 12);
    let mut failures = Vec::new();
    for case in &cases {
        let path = dir.join(format!("{}.toml", case.name));
        std::fs::write(&path, &case.text).unwrap();
        let output = check(&path);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let place = format!("{}:{}:{}", path.display(), case.line, case.column);
        if output.status.code() != Some(1) {
            failures.push(format!("{}: exit status {:?}", case.name, output.status));
        }
        if !stderr.contains(&place) {
            failures.push(format!("{}: stderr lacks {place:?}:\n{stderr}", case.name));
        }
        if !stderr.contains(case.expect) {
            failures.push(format!(
                "{}: stderr lacks {:?}:\n{stderr}",
                case.name, case.expect
            ));
        }
        if !output.stdout.is_empty() {
            failures.push(format!(
                "{}: stdout is not empty: {}",
                case.name,
                String::from_utf8_lossy(&output.stdout)
            ));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn check_reports_every_problem_of_a_file() {
    let dir = scratch_dir("several");
    let path = dir.join("several.toml");
    let (text, places) = marks(
        r#"[[listeners]]
listen = "127.0.0.1:8080"
header_timeout = ‸"0s"

[[routes]]
upstream = ‸"missing"

[upstreams.api]
backends = [{ address = "127.0.0.1:9001", weight = ‸0 }]
"#,
    );
    std::fs::write(&path, text).unwrap();
    let output = check(&path);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let file = path.display();
    let keys = ["header_timeout", "upstream", "weight"];
    assert_eq!(places.len(), keys.len());
    for (&(line, column), key) in places.iter().zip(keys) {
        let place = format!("{file}:{line}:{column}: `{key}`");
        assert!(stderr.contains(&place), "stderr lacks {place:?}:\n{stderr}");
    }
    assert_eq!(stderr.lines().count(), 3, "one line per problem:\n{stderr}");
}

#[test]
fn check_of_a_missing_file_fails() {
    let dir = scratch_dir("missing");
    let path = dir.join("does-not-exist.toml");
    let output = check(&path);
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot read"), "{stderr}");
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
}

#[test]
fn check_accepts_a_valid_file_written_elsewhere() {
    let dir = scratch_dir("valid");
    let path = dir.join("valid.toml");
    std::fs::write(&path, VALID).unwrap();
    let output = check(&path);
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("is valid"), "{stdout}");
}

// === weir --version ===

#[test]
fn version_prints_the_crate_version() {
    let output = weir(&["--version"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(stdout.trim(), format!("weir {}", env!("CARGO_PKG_VERSION")));
}
