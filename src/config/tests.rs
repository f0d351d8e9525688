//! Tests of the config pipeline: text → `Config`, and every refusal with its
//! position. Positions are 1-based; columns count characters. A test text shows
//! where it expects a problem with a `‸` right before the token to be reported;
//! [`marked`] takes it out and gives its line and column.

use std::net::SocketAddr;
use std::time::Duration;

use super::defaults::*;
use super::*;

const FILE: &str = "test.toml";

/// One listener, one route, one upstream; everything else defaulted.
const MINIMAL: &str = r#"[[listeners]]
listen = "127.0.0.1:8080"

[[routes]]
upstream = "api"

[upstreams.api]
backends = [{ address = "127.0.0.1:9001" }]
"#;

/// A route and an upstream, to complete texts that only write listeners.
const ROUTE_AND_UPSTREAM: &str = r#"
[[routes]]
upstream = "api"

[upstreams.api]
backends = [{ address = "127.0.0.1:9001" }]
"#;

// The `‸` marks in test texts, shared with the integration tests.
#[path = "../../tests/support/marks.rs"]
mod marks;
use marks::{MARK, marked, marks, unmarked};

#[track_caller]
fn accept(text: &str) -> Config {
    assert!(!text.contains(MARK), "take the marks out first: {text:?}");
    parse(text, FILE).unwrap_or_else(|err| panic!("refused:\n{err}\n--- text ---\n{text}"))
}

/// The problems of a refused text, in file order.
#[track_caller]
fn refuse(text: &str) -> Vec<Problem> {
    assert!(!text.contains(MARK), "take the marks out first: {text:?}");
    match parse(text, FILE) {
        Ok(config) => panic!("accepted: {config:#?}\n--- text ---\n{text}"),
        Err(err) => {
            let mut problems = err.problems().to_vec();
            problems.sort_by_key(|p| (p.line, p.column));
            problems
        }
    }
}

#[track_caller]
fn single_problem(text: &str) -> Problem {
    let problems = refuse(text);
    assert_eq!(problems.len(), 1, "expected one problem, got {problems:#?}");
    problems.into_iter().next().unwrap()
}

#[track_caller]
fn assert_problem(
    problem: &Problem,
    line: usize,
    column: usize,
    key: Option<&str>,
    message_part: &str,
) {
    assert_eq!(
        (problem.line, problem.column, problem.key.as_deref()),
        (line, column, key),
        "wrong place or key: {problem:#?}"
    );
    assert!(
        problem.message.contains(message_part),
        "message {:?} does not contain {message_part:?}",
        problem.message
    );
    assert_eq!(problem.file, FILE);
}

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

#[test]
fn marks_give_lines_and_columns_in_characters() {
    assert_eq!(
        marks("‸a = 1\nb = ‸\"é‸\"\n‸"),
        (
            "a = 1\nb = \"é\"\n".to_owned(),
            vec![(1, 1), (2, 5), (2, 7), (3, 1)]
        )
    );
    assert_eq!(marked("x = ‸1"), ("x = 1".to_owned(), 1, 5));
}

// === valid configs and defaults ===

#[test]
fn minimal_config_is_valid() {
    let config = accept(MINIMAL);
    assert_eq!(config.listeners.len(), 1);
    assert_eq!(config.routes.len(), 1);
    assert_eq!(config.upstreams.len(), 1);
    assert_eq!(config.listeners[0].listen, addr("127.0.0.1:8080"));
    assert_eq!(config.upstreams[0].name, "api");
    assert_eq!(
        config.upstreams[0].backends[0].address,
        addr("127.0.0.1:9001")
    );
}

#[test]
fn runtime_defaults_apply_without_a_runtime_table() {
    let config = accept(MINIMAL);
    assert_eq!(
        config.runtime,
        RuntimeConfig {
            workers: 0,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
        }
    );
}

#[test]
fn listener_defaults_apply() {
    let listener = &accept(MINIMAL).listeners[0];
    assert_eq!(listener.header_timeout, DEFAULT_HEADER_TIMEOUT);
    assert_eq!(listener.idle_timeout, DEFAULT_IDLE_TIMEOUT);
    assert_eq!(listener.body_timeout, DEFAULT_BODY_TIMEOUT);
    assert_eq!(listener.send_timeout, DEFAULT_SEND_TIMEOUT);
    assert_eq!(listener.max_header_bytes, DEFAULT_MAX_HEADER_BYTES);
}

#[test]
fn route_without_host_or_path_matches_everything() {
    let route = &accept(MINIMAL).routes[0];
    assert_eq!(route.host, None);
    assert_eq!(route.path_prefix, None);
    assert_eq!(route.upstream, 0);
}

#[test]
fn upstream_defaults_apply() {
    let upstream = &accept(MINIMAL).upstreams[0];
    assert_eq!(upstream.strategy, StrategyKind::RoundRobin);
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
fn explicit_values_replace_the_defaults() {
    let config = accept(
        r#"[runtime]
workers = 4
shutdown_timeout = "5m"

[[listeners]]
listen = "127.0.0.1:8080"
header_timeout = "250ms"
idle_timeout = "2m"
body_timeout = "15s"
send_timeout = "1m"
max_header_bytes = 16384

[[routes]]
upstream = "api"

[upstreams.api]
strategy = "round_robin"
backends = [{ address = "127.0.0.1:9001" }]
max_connections_per_backend = 0
timeouts = { connect = "1s", response = "1h", idle = "90s", request = "2h" }
"#,
    );
    assert_eq!(config.runtime.workers, 4);
    assert_eq!(config.runtime.shutdown_timeout, Duration::from_secs(300));
    let listener = &config.listeners[0];
    assert_eq!(listener.header_timeout, Duration::from_millis(250));
    assert_eq!(listener.idle_timeout, Duration::from_secs(120));
    assert_eq!(listener.body_timeout, Duration::from_secs(15));
    assert_eq!(listener.send_timeout, Duration::from_secs(60));
    assert_eq!(listener.max_header_bytes, 16384);
    assert_eq!(
        config.upstreams[0].timeouts,
        UpstreamTimeouts {
            connect: Duration::from_secs(1),
            response: Duration::from_secs(3600),
            idle: Duration::from_secs(90),
            request: Some(Duration::from_secs(7200)),
        }
    );
}

#[test]
fn listeners_without_a_name_are_named_by_index() {
    let config = accept(
        &[
            r#"[[listeners]]
listen = "127.0.0.1:8080"

[[listeners]]
name = "web"
listen = "127.0.0.1:8081"

[[listeners]]
listen = "127.0.0.1:8082"
"#,
            ROUTE_AND_UPSTREAM,
        ]
        .concat(),
    );
    let names: Vec<&str> = config.listeners.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["listener-0", "web", "listener-2"]);
}

#[test]
fn routes_without_a_name_are_named_by_index() {
    let config = accept(
        r#"[[listeners]]
listen = "127.0.0.1:8080"

[[routes]]
path_prefix = "/a"
upstream = "api"

[[routes]]
name = "api"
path_prefix = "/b"
upstream = "api"

[[routes]]
upstream = "api"

[upstreams.api]
backends = [{ address = "127.0.0.1:9001" }]
"#,
    );
    let names: Vec<&str> = config.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["route-0", "api", "route-2"]);
}

#[test]
fn routes_keep_file_order_and_point_to_upstreams_in_name_order() {
    let config = accept(
        r#"[[listeners]]
listen = "127.0.0.1:8080"

[[routes]]
path_prefix = "/z"
upstream = "zeta"

[[routes]]
upstream = "alpha"

[upstreams.zeta]
backends = [{ address = "127.0.0.1:9002" }]

[upstreams.alpha]
backends = [{ address = "127.0.0.1:9001" }]
"#,
    );
    let upstreams: Vec<&str> = config.upstreams.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(upstreams, ["alpha", "zeta"]);
    assert_eq!(config.routes[0].path_prefix.as_deref(), Some("/z"));
    assert_eq!(config.upstreams[config.routes[0].upstream].name, "zeta");
    assert_eq!(config.upstreams[config.routes[1].upstream].name, "alpha");
}

#[test]
fn ipv6_addresses_are_accepted() {
    let config = accept(
        r#"[[listeners]]
listen = "[::1]:8080"

[[routes]]
upstream = "api"

[upstreams.api]
backends = [{ address = "[::1]:9001" }]
"#,
    );
    assert_eq!(config.listeners[0].listen, addr("[::1]:8080"));
    assert_eq!(config.upstreams[0].backends[0].address, addr("[::1]:9001"));
}

#[test]
fn backends_can_be_written_as_an_array_of_tables() {
    let config = accept(
        r#"[[listeners]]
listen = "127.0.0.1:8080"

[[routes]]
upstream = "api"

[[upstreams.api.backends]]
address = "127.0.0.1:9001"
weight = 3

[[upstreams.api.backends]]
address = "127.0.0.1:9002"
"#,
    );
    let weights: Vec<u32> = config.upstreams[0]
        .backends
        .iter()
        .map(|b| b.weight.get())
        .collect();
    assert_eq!(weights, [3, 1]);
}

// === hosts and path prefixes ===

/// A config whose only route has `host = "<host>"`, the value marked.
fn with_route_host(host: &str) -> String {
    format!(
        r#"[[listeners]]
listen = "127.0.0.1:8080"

[[routes]]
host = ‸"{host}"
upstream = "api"

[upstreams.api]
backends = [{{ address = "127.0.0.1:9001" }}]
"#
    )
}

/// A config whose only route has `path_prefix = "<prefix>"`, the value marked.
fn with_route_path_prefix(prefix: &str) -> String {
    format!(
        r#"[[listeners]]
listen = "127.0.0.1:8080"

[[routes]]
path_prefix = ‸"{prefix}"
upstream = "api"

[upstreams.api]
backends = [{{ address = "127.0.0.1:9001" }}]
"#
    )
}

#[test]
fn exact_host_is_stored_lowercase() {
    let config = accept(&unmarked(&with_route_host("API.Example.COM")));
    assert_eq!(
        config.routes[0].host,
        Some(HostPattern::Exact("api.example.com".into()))
    );
}

#[test]
fn wildcard_host_becomes_a_lowercase_suffix() {
    let config = accept(&unmarked(&with_route_host("*.Example.com")));
    assert_eq!(
        config.routes[0].host,
        Some(HostPattern::Suffix(".example.com".into()))
    );
}

#[test]
fn host_with_a_port_is_rejected() {
    let (text, line, column) = marked(&with_route_host("api.example.com:8080"));
    let problem = single_problem(&text);
    assert_problem(&problem, line, column, Some("host"), "invalid host");
}

#[test]
fn host_with_a_wildcard_not_in_front_is_rejected() {
    for host in ["*", "*.", "a.*.com", "*.*.com", "api.*"] {
        let (text, line, column) = marked(&with_route_host(host));
        let problem = single_problem(&text);
        assert_problem(&problem, line, column, Some("host"), "invalid host");
    }
}

#[test]
fn path_prefix_trailing_slash_is_trimmed() {
    let config = accept(&unmarked(&with_route_path_prefix("/api/")));
    assert_eq!(config.routes[0].path_prefix.as_deref(), Some("/api"));
}

#[test]
fn path_prefix_several_trailing_slashes_are_trimmed() {
    let config = accept(&unmarked(&with_route_path_prefix("/api/v1///")));
    assert_eq!(config.routes[0].path_prefix.as_deref(), Some("/api/v1"));
}

#[test]
fn path_prefix_of_root_stays_root() {
    for prefix in ["/", "//"] {
        let config = accept(&unmarked(&with_route_path_prefix(prefix)));
        assert_eq!(config.routes[0].path_prefix.as_deref(), Some("/"));
    }
}

#[test]
fn path_prefix_is_normalised_as_request_paths_are() {
    for (prefix, normal) in [
        ("/%61pi", "/api"),
        ("/api/./v1/", "/api/v1"),
        ("/api/v0/../v1", "/api/v1"),
        ("/a%2fb", "/a%2Fb"),
        ("/api/..", "/"),
    ] {
        let config = accept(&unmarked(&with_route_path_prefix(prefix)));
        assert_eq!(
            config.routes[0].path_prefix.as_deref(),
            Some(normal),
            "{prefix:?}"
        );
    }
}

#[test]
fn path_prefix_above_the_root_or_with_a_bare_percent_is_rejected() {
    let (text, line, column) = marked(&with_route_path_prefix("/../api"));
    let problem = single_problem(&text);
    assert_problem(
        &problem,
        line,
        column,
        Some("path_prefix"),
        "climb above the root",
    );
    let (text, line, column) = marked(&with_route_path_prefix("/100%"));
    let problem = single_problem(&text);
    assert_problem(
        &problem,
        line,
        column,
        Some("path_prefix"),
        "two hex digits",
    );
}

#[test]
fn path_prefix_without_leading_slash_is_rejected() {
    let (text, line, column) = marked(&with_route_path_prefix("api"));
    let problem = single_problem(&text);
    assert_problem(
        &problem,
        line,
        column,
        Some("path_prefix"),
        "invalid path prefix",
    );
}

#[test]
fn path_prefix_with_query_or_space_is_rejected() {
    for prefix in ["/api?x=1", "/api#top", "/a b"] {
        let (text, line, column) = marked(&with_route_path_prefix(prefix));
        let problem = single_problem(&text);
        assert_problem(
            &problem,
            line,
            column,
            Some("path_prefix"),
            "invalid path prefix",
        );
    }
}

// === weights ===

/// A config whose only backend has `weight = <weight>`, the value marked.
fn with_weight(weight: i64) -> String {
    format!(
        r#"[[listeners]]
listen = "127.0.0.1:8080"

[[routes]]
upstream = "api"

[upstreams.api]
backends = [{{ address = "127.0.0.1:9001", weight = ‸{weight} }}]
"#
    )
}

#[test]
fn weights_are_kept_per_backend() {
    let config = accept(&format!(
        r#"[[listeners]]
listen = "127.0.0.1:8080"

[[routes]]
upstream = "api"

[upstreams.api]
backends = [
  {{ address = "127.0.0.1:9001", weight = 2 }},
  {{ address = "127.0.0.1:9002" }},
  {{ address = "127.0.0.1:9003", weight = {MAX_WEIGHT} }},
  {{ address = "127.0.0.1:9004", weight = 1 }},
]
"#
    ));
    let weights: Vec<u32> = config.upstreams[0]
        .backends
        .iter()
        .map(|b| b.weight.get())
        .collect();
    assert_eq!(weights, [2, DEFAULT_WEIGHT, MAX_WEIGHT, 1]);
}

#[test]
fn weight_zero_is_rejected() {
    let (text, line, column) = marked(&with_weight(0));
    let problem = single_problem(&text);
    let message = format!("must be between 1 and {MAX_WEIGHT}");
    assert_problem(&problem, line, column, Some("weight"), &message);
}

#[test]
fn weight_above_max_is_rejected() {
    let (text, line, column) = marked(&with_weight(i64::from(MAX_WEIGHT) + 1));
    let problem = single_problem(&text);
    let message = format!("must be between 1 and {MAX_WEIGHT}");
    assert_problem(&problem, line, column, Some("weight"), &message);
}

#[test]
fn negative_weight_is_rejected() {
    let (text, line, column) = marked(&with_weight(-1));
    let problem = single_problem(&text);
    assert_problem(
        &problem,
        line,
        column,
        Some("weight"),
        "must be between 1 and",
    );
}

// === unknown keys and syntax ===

#[test]
fn unknown_key_at_top_level_is_rejected() {
    let (text, line, column) = marked(&["‸colour = \"red\"\n", MINIMAL].concat());
    let problem = single_problem(&text);
    assert_problem(
        &problem,
        line,
        column,
        Some("colour"),
        "unknown field `colour`",
    );
}

#[test]
fn unknown_key_in_runtime_is_rejected() {
    let (text, line, column) = marked(&["[runtime]\n‸threads = 4\n\n", MINIMAL].concat());
    let problem = single_problem(&text);
    assert_problem(
        &problem,
        line,
        column,
        Some("threads"),
        "unknown field `threads`",
    );
}

#[test]
fn unknown_key_in_a_listener_is_rejected() {
    let (text, line, column) = marked(
        &[
            r#"[[listeners]]
listen = "127.0.0.1:8080"
‸bogus = 1
"#,
            ROUTE_AND_UPSTREAM,
        ]
        .concat(),
    );
    let problem = single_problem(&text);
    assert_problem(
        &problem,
        line,
        column,
        Some("bogus"),
        "unknown field `bogus`",
    );
}

#[test]
fn unknown_key_in_a_route_is_rejected() {
    let (text, line, column) = marked(
        r#"[[listeners]]
listen = "127.0.0.1:8080"

[[routes]]
‸prefix = "/api"
upstream = "api"

[upstreams.api]
backends = [{ address = "127.0.0.1:9001" }]
"#,
    );
    let problem = single_problem(&text);
    assert_problem(
        &problem,
        line,
        column,
        Some("prefix"),
        "unknown field `prefix`",
    );
}

#[test]
fn unknown_key_in_an_upstream_is_rejected() {
    let (text, line, column) = marked(&[MINIMAL, "‸stratgy = \"random\"\n"].concat());
    let problem = single_problem(&text);
    assert_problem(
        &problem,
        line,
        column,
        Some("stratgy"),
        "unknown field `stratgy`",
    );
}

#[test]
fn unknown_key_in_a_backend_inline_table_is_rejected() {
    let (text, line, column) = marked(
        r#"[[listeners]]
listen = "127.0.0.1:8080"

[[routes]]
upstream = "api"

[upstreams.api]
backends = [{ address = "127.0.0.1:9001", ‸wieght = 2 }]
"#,
    );
    let problem = single_problem(&text);
    assert_problem(
        &problem,
        line,
        column,
        Some("wieght"),
        "unknown field `wieght`",
    );
}

#[test]
fn unknown_key_in_upstream_timeouts_is_rejected() {
    let (text, line, column) = marked(&[MINIMAL, "timeouts = { ‸read = \"5s\" }\n"].concat());
    let problem = single_problem(&text);
    assert_problem(&problem, line, column, Some("read"), "unknown field `read`");
}

#[test]
fn duplicate_key_is_rejected() {
    let (text, line, column) = marked(
        &[
            r#"[[listeners]]
listen = "127.0.0.1:8080"
‸listen = "127.0.0.1:8081"
"#,
            ROUTE_AND_UPSTREAM,
        ]
        .concat(),
    );
    let problem = single_problem(&text);
    assert_problem(&problem, line, column, Some("listen"), "duplicate key");
}

#[test]
fn toml_syntax_error_is_reported_at_its_place() {
    let (text, line, column) = marked(
        &[
            r#"[[listeners]]
listen = "127.0.0.1:8080‸
"#,
            ROUTE_AND_UPSTREAM,
        ]
        .concat(),
    );
    let problem = single_problem(&text);
    // the unterminated string is reported at the end of its line
    assert_eq!(
        (problem.line, problem.column),
        (line, column),
        "{problem:#?}"
    );
    assert!(problem.message.contains("string"), "{problem:#?}");
}

#[test]
fn missing_listen_is_rejected() {
    let (text, line, column) =
        marked(&["‸[[listeners]]\nname = \"web\"\n", ROUTE_AND_UPSTREAM].concat());
    let problem = single_problem(&text);
    assert_eq!(
        (problem.line, problem.column),
        (line, column),
        "{problem:#?}"
    );
    assert!(problem.message.contains("missing field `listen`"));
}

#[test]
fn missing_route_upstream_is_rejected() {
    let (text, line, column) = marked(
        r#"[[listeners]]
listen = "127.0.0.1:8080"

‸[[routes]]
path_prefix = "/"

[upstreams.api]
backends = [{ address = "127.0.0.1:9001" }]
"#,
    );
    let problem = single_problem(&text);
    assert_eq!(
        (problem.line, problem.column),
        (line, column),
        "{problem:#?}"
    );
    assert!(problem.message.contains("missing field `upstream`"));
}

// === durations ===

/// A config whose listener has `line` besides its `listen`.
fn with_listener_line(line: &str) -> String {
    [
        "[[listeners]]\nlisten = \"127.0.0.1:8080\"\n",
        line,
        "\n",
        ROUTE_AND_UPSTREAM,
    ]
    .concat()
}

#[test]
fn duration_with_unknown_unit_is_rejected() {
    let (text, line, column) = marked(&with_listener_line(r#"header_timeout = ‸"5x""#));
    let problem = single_problem(&text);
    assert_problem(
        &problem,
        line,
        column,
        Some("header_timeout"),
        "invalid duration \"5x\"",
    );
}

#[test]
fn duration_without_unit_is_rejected() {
    let (text, line, column) = marked(&with_listener_line(r#"idle_timeout = ‸"10""#));
    let problem = single_problem(&text);
    assert_problem(
        &problem,
        line,
        column,
        Some("idle_timeout"),
        "invalid duration \"10\"",
    );
}

#[test]
fn fractional_duration_is_rejected() {
    let (text, line, column) =
        marked(&["[runtime]\nshutdown_timeout = ‸\"1.5s\"\n\n", MINIMAL].concat());
    let problem = single_problem(&text);
    assert_problem(
        &problem,
        line,
        column,
        Some("shutdown_timeout"),
        "invalid duration \"1.5s\"",
    );
}

#[test]
fn duration_written_as_a_number_is_rejected() {
    let (text, line, column) = marked(&with_listener_line("idle_timeout = ‸10"));
    let problem = single_problem(&text);
    assert_problem(
        &problem,
        line,
        column,
        Some("idle_timeout"),
        "expected a duration string",
    );
}

#[test]
fn malformed_duration_in_upstream_timeouts_is_rejected() {
    let (text, line, column) = marked(&[MINIMAL, "timeouts = { connect = ‸\"5x\" }\n"].concat());
    let problem = single_problem(&text);
    assert_problem(
        &problem,
        line,
        column,
        Some("connect"),
        "invalid duration \"5x\"",
    );
}

// === addresses ===

#[test]
fn listen_address_with_a_host_name_is_rejected() {
    let (text, line, column) = marked(
        &[
            "[[listeners]]\nlisten = ‸\"localhost:8080\"\n",
            ROUTE_AND_UPSTREAM,
        ]
        .concat(),
    );
    let problem = single_problem(&text);
    assert_problem(&problem, line, column, Some("listen"), "invalid address");
}

#[test]
fn listen_address_without_port_is_rejected() {
    let (text, line, column) = marked(
        &[
            "[[listeners]]\nlisten = ‸\"127.0.0.1\"\n",
            ROUTE_AND_UPSTREAM,
        ]
        .concat(),
    );
    let problem = single_problem(&text);
    assert_problem(&problem, line, column, Some("listen"), "invalid address");
}

#[test]
fn backend_address_without_port_is_rejected() {
    let (text, line, column) = marked(
        r#"[[listeners]]
listen = "127.0.0.1:8080"

[[routes]]
upstream = "api"

[upstreams.api]
backends = [{ address = ‸"127.0.0.1" }]
"#,
    );
    let problem = single_problem(&text);
    assert_problem(&problem, line, column, Some("address"), "invalid address");
}

// === backends by name ===

/// A config whose one upstream has these `backends` (marks kept).
fn with_backends(backends: &str) -> String {
    format!(
        "[[listeners]]\nlisten = \"127.0.0.1:8080\"\n\n[[routes]]\nupstream = \"api\"\n\n\
         [upstreams.api]\nbackends = [{backends}]\n"
    )
}

#[test]
fn backends_may_be_names_and_srv_records() {
    let config = accept(&with_backends(
        r#"{ address = "10.0.0.1:80" }, { address = "App.Internal:8080", weight = 3 }, { srv = "_http._tcp.app.service.consul" }"#,
    ));
    let upstream = &config.upstreams[0];
    assert_eq!(upstream.backends.len(), 1);
    assert_eq!(
        upstream.dns,
        vec![
            DnsBackends {
                lookup: DnsLookup::Address {
                    host: "app.internal".into(),
                    port: 8080
                },
                weight: NonZeroU32::new(3).unwrap(),
            },
            DnsBackends {
                lookup: DnsLookup::Srv {
                    name: "_http._tcp.app.service.consul".into()
                },
                weight: NonZeroU32::new(1).unwrap(),
            },
        ]
    );
    assert_eq!(config.resolver, ResolverConfig::default());
}

#[test]
fn malformed_backend_names_are_refused_at_their_place() {
    for (backends, key, message) in [
        (
            r#"{ address = ‸"app.internal" }"#,
            "address",
            "the port is missing",
        ),
        (
            r#"{ address = ‸"app..internal:80" }"#,
            "address",
            "empty labels",
        ),
        (
            r#"{ address = ‸"_http._tcp.app:80" }"#,
            "address",
            "is an SRV name: write { srv",
        ),
        (r#"{ srv = ‸"_http._tcp.app:80" }"#, "srv", "no port here"),
        (
            r#"{ srv = "_http._tcp.app", weight = ‸2 }"#,
            "weight",
            "from its SRV record",
        ),
        (
            r#"{ address = "app:80", srv = ‸"_http._tcp.app" }"#,
            "srv",
            "not both",
        ),
        (
            r#"{ address = "app:80" }, { address = ‸"APP:80" }"#,
            "address",
            "listed twice",
        ),
    ] {
        let (text, line, column) = marked(&with_backends(backends));
        let problem = single_problem(&text);
        assert_problem(&problem, line, column, Some(key), message);
    }
}

#[test]
fn the_resolver_table_is_read_and_checked() {
    let config = accept(&format!(
        "{MINIMAL}\n[resolver]\nnameservers = [\"127.0.0.1:5353\"]\ntimeout = \"500ms\"\n\
         min_ttl = \"2s\"\nmax_ttl = \"1m\"\nhold_missing = \"0s\"\n"
    ));
    assert_eq!(
        config.resolver,
        ResolverConfig {
            nameservers: vec!["127.0.0.1:5353".parse().unwrap()],
            timeout: Duration::from_millis(500),
            min_ttl: Duration::from_secs(2),
            max_ttl: Duration::from_secs(60),
            hold_missing: Duration::ZERO,
        }
    );
    for (table, key, message) in [
        (
            "min_ttl = \"1m\"\nmax_ttl = ‸\"2s\"",
            "max_ttl",
            "at least min_ttl",
        ),
        ("min_ttl = ‸\"0s\"", "min_ttl", "greater than zero"),
        ("timeout = ‸\"0s\"", "timeout", "greater than zero"),
        ("min_ttl = ‸\"10m\"", "min_ttl", "at most max_ttl"),
        (
            "nameservers = [‸\"127.0.0.1:0\"]",
            "nameservers",
            "its port",
        ),
        (
            "nameservers = [‸\"ns.example:53\"]",
            "nameservers",
            "invalid address",
        ),
    ] {
        let (text, line, column) = marked(&format!("{MINIMAL}\n[resolver]\n{table}\n"));
        let problem = single_problem(&text);
        assert_problem(&problem, line, column, Some(key), message);
    }
}

// === cache ===

/// A config whose route caches with `cache` and has the top-level `extra` tables.
fn cached(cache: &str, extra: &str) -> String {
    format!(
        "[[listeners]]\nlisten = \"127.0.0.1:8080\"\n\n[[routes]]\nupstream = \"api\"\ncache = {cache}\n\n\
         [upstreams.api]\nbackends = [{{ address = \"127.0.0.1:9001\" }}]\n{extra}\n"
    )
}

#[test]
fn the_cache_keys_are_read() {
    let config = accept(&cached("true", ""));
    let route = config.routes[0].cache.clone().unwrap();
    assert_eq!(route.store, CacheStore::Memory);
    assert_eq!(route.lock_timeout, DEFAULT_CACHE_LOCK_TIMEOUT);
    assert_eq!(route.default_ttl, Duration::ZERO);
    assert_eq!(config.cache, CacheConfig::default());
    assert!(accept(&cached("false", "")).routes[0].cache.is_none());
    assert!(accept(MINIMAL).routes[0].cache.is_none());

    let config = accept(&cached(
        "{ stale_while_revalidate = \"10s\", stale_if_error = \"5m\", lock_timeout = \"1s\", default_ttl = \"30s\", store = \"redis\" }",
        "[cache]\nmemory = \"64MiB\"\nmax_object_size = \"512KiB\"\n\
         [redis]\nurl = \"redis://user:pw@127.0.0.1:6380/2\"\ntimeout = \"50ms\"\nkey_prefix = \"site:\"",
    ));
    let route = config.routes[0].cache.clone().unwrap();
    assert_eq!(route.stale_while_revalidate, Duration::from_secs(10));
    assert_eq!(route.stale_if_error, Duration::from_secs(300));
    assert_eq!(route.lock_timeout, Duration::from_secs(1));
    assert_eq!(route.default_ttl, Duration::from_secs(30));
    assert_eq!(route.store, CacheStore::Redis);
    assert_eq!(config.cache.memory, 64 << 20);
    assert_eq!(config.cache.max_object_size, 512 << 10);
    let redis = config.redis.unwrap();
    assert_eq!(redis.timeout, Duration::from_millis(50));
    assert_eq!(redis.key_prefix, "site:");
    assert_eq!(redis.shown_url, "redis://user:***@127.0.0.1:6380/2");
    assert!(
        !format!("{redis:?}").contains("pw"),
        "the password stays out of debug output"
    );
    // With [redis], a route shares by default.
    let config = accept(&cached("true", "[redis]\nurl = \"redis://127.0.0.1\""));
    assert_eq!(
        config.routes[0].cache.as_ref().unwrap().store,
        CacheStore::Both
    );
}

#[test]
fn bad_cache_keys_are_refused_where_they_are() {
    for (cache, extra, key, message) in [
        (
            "{ store = ‸\"redis\" }",
            "",
            "store",
            "needs a [redis] table",
        ),
        (
            "{ store = ‸\"both\" }",
            "",
            "store",
            "needs a [redis] table",
        ),
        ("{ store = ‸\"disk\" }", "", "store", "unknown store"),
        (
            "{ lock_timeout = ‸\"0s\" }",
            "",
            "lock_timeout",
            "greater than zero",
        ),
        (
            "{ stale_while_revalidate = ‸\"10\" }",
            "",
            "stale_while_revalidate",
            "invalid duration",
        ),
        ("{ ‸ttl = \"10s\" }", "", "ttl", "unknown field"),
        ("‸\"yes\"", "", "cache", "true, false or a table"),
        (
            "true",
            "[cache]\nmemory = ‸\"12\"",
            "memory",
            "invalid size",
        ),
        (
            "true",
            "[cache]\nmemory = ‸\"12KiB\"",
            "memory",
            "at least 1MiB",
        ),
        (
            "true",
            "[cache]\nmemory = \"2MiB\"\nmax_object_size = ‸\"4MiB\"",
            "max_object_size",
            "at most `memory`",
        ),
        (
            "true",
            "[redis]\nurl = ‸\"http://127.0.0.1\"",
            "url",
            "unsupported scheme",
        ),
        (
            "true",
            "[redis]\nurl = ‸\"redis://127.0.0.1:0\"",
            "url",
            "invalid port",
        ),
        (
            "true",
            "[redis]\nurl = ‸\"redis://127.0.0.1/x\"",
            "url",
            "invalid database",
        ),
        (
            "true",
            "[redis]\nurl = \"redis://127.0.0.1\"\ntimeout = ‸\"0ms\"",
            "timeout",
            "greater than zero",
        ),
        (
            "true",
            "[redis]\nurl = \"redis://127.0.0.1\"\nkey_prefix = ‸\"a b\"",
            "key_prefix",
            "visible ASCII",
        ),
    ] {
        let (text, line, column) = marked(&cached(cache, extra));
        let problem = single_problem(&text);
        assert_problem(&problem, line, column, Some(key), message);
    }
}

// === listeners ===

#[test]
fn two_listeners_on_the_same_address_are_rejected() {
    let (text, line, column) = marked(
        &[
            r#"[[listeners]]
listen = "127.0.0.1:8080"
[[listeners]]
listen = ‸"127.0.0.1:8080"
"#,
            ROUTE_AND_UPSTREAM,
        ]
        .concat(),
    );
    let problem = single_problem(&text);
    assert_problem(&problem, line, column, Some("listen"), "already used");
}

#[test]
fn duplicate_listener_name_is_rejected() {
    let (text, line, column) = marked(
        &[
            r#"[[listeners]]
name = "web"
listen = "127.0.0.1:8080"
[[listeners]]
name = ‸"web"
listen = "127.0.0.1:8081"
"#,
            ROUTE_AND_UPSTREAM,
        ]
        .concat(),
    );
    let problem = single_problem(&text);
    assert_problem(
        &problem,
        line,
        column,
        Some("name"),
        "duplicate listener name \"web\"",
    );
}

#[test]
fn default_listener_name_colliding_with_an_explicit_one_is_rejected() {
    let (text, line, column) = marked(
        &[
            r#"[[listeners]]
name = "listener-1"
listen = "127.0.0.1:8080"
‸[[listeners]]
listen = "127.0.0.1:8081"
"#,
            ROUTE_AND_UPSTREAM,
        ]
        .concat(),
    );
    let problem = single_problem(&text);
    // the unnamed listener has no `name` to point at: its header is used
    assert_problem(
        &problem,
        line,
        column,
        Some("name"),
        "duplicate listener name \"listener-1\"",
    );
}

#[test]
fn empty_listener_name_is_rejected() {
    let (text, line, column) = marked(
        &[
            "[[listeners]]\nname = ‸\" \"\nlisten = \"127.0.0.1:8080\"\n",
            ROUTE_AND_UPSTREAM,
        ]
        .concat(),
    );
    let problem = single_problem(&text);
    assert_problem(&problem, line, column, Some("name"), "must not be empty");
}

#[test]
fn zero_header_timeout_is_rejected() {
    let (text, line, column) = marked(&with_listener_line(r#"header_timeout = ‸"0s""#));
    let problem = single_problem(&text);
    assert_problem(
        &problem,
        line,
        column,
        Some("header_timeout"),
        "must be greater than zero",
    );
}

#[test]
fn zero_idle_timeout_is_rejected() {
    let (text, line, column) = marked(&with_listener_line(r#"idle_timeout = ‸"0ms""#));
    let problem = single_problem(&text);
    assert_problem(
        &problem,
        line,
        column,
        Some("idle_timeout"),
        "must be greater than zero",
    );
}

#[test]
fn zero_body_timeout_is_rejected() {
    let (text, line, column) = marked(&with_listener_line(r#"body_timeout = ‸"0s""#));
    let problem = single_problem(&text);
    assert_problem(
        &problem,
        line,
        column,
        Some("body_timeout"),
        "must be greater than zero",
    );
}

#[test]
fn zero_send_timeout_is_rejected() {
    let (text, line, column) = marked(&with_listener_line(r#"send_timeout = ‸"0ms""#));
    let problem = single_problem(&text);
    assert_problem(
        &problem,
        line,
        column,
        Some("send_timeout"),
        "must be greater than zero",
    );
}

#[test]
fn malformed_send_timeout_is_rejected() {
    let (text, line, column) = marked(&with_listener_line(r#"send_timeout = ‸"soon""#));
    let problem = single_problem(&text);
    assert_problem(
        &problem,
        line,
        column,
        Some("send_timeout"),
        "invalid duration \"soon\"",
    );
}

#[test]
fn max_header_bytes_below_minimum_is_rejected() {
    let entry = format!("max_header_bytes = ‸{}", MIN_MAX_HEADER_BYTES - 1);
    let (text, line, column) = marked(&with_listener_line(&entry));
    let problem = single_problem(&text);
    let message = format!("must be between {MIN_MAX_HEADER_BYTES} and {MAX_MAX_HEADER_BYTES}");
    assert_problem(&problem, line, column, Some("max_header_bytes"), &message);
}

#[test]
fn max_header_bytes_above_maximum_is_rejected() {
    let entry = format!("max_header_bytes = ‸{}", MAX_MAX_HEADER_BYTES + 1);
    let (text, line, column) = marked(&with_listener_line(&entry));
    let problem = single_problem(&text);
    let message = format!("must be between {MIN_MAX_HEADER_BYTES} and {MAX_MAX_HEADER_BYTES}");
    assert_problem(&problem, line, column, Some("max_header_bytes"), &message);
}

#[test]
fn negative_max_header_bytes_is_rejected() {
    let (text, line, column) = marked(&with_listener_line("max_header_bytes = ‸-1"));
    let problem = single_problem(&text);
    assert_problem(
        &problem,
        line,
        column,
        Some("max_header_bytes"),
        "must be between",
    );
}

#[test]
fn max_header_bytes_bounds_are_accepted() {
    for bytes in [MIN_MAX_HEADER_BYTES, MAX_MAX_HEADER_BYTES] {
        let config = accept(&with_listener_line(&format!("max_header_bytes = {bytes}")));
        assert_eq!(config.listeners[0].max_header_bytes, bytes);
    }
}

// === file-level problems ===

#[test]
fn empty_file_is_rejected() {
    let (text, line, column) = marked("‸");
    let problem = single_problem(&text);
    assert_problem(&problem, line, column, None, "the config file is empty");
}

#[test]
fn whitespace_only_file_is_rejected_as_empty() {
    let (text, line, column) = marked("‸  \n\t\n\n");
    let problem = single_problem(&text);
    assert_problem(&problem, line, column, None, "the config file is empty");
}

#[test]
fn comment_only_file_is_missing_listeners_and_routes() {
    let (text, line, column) = marked("‸# nothing yet\n");
    let problems = refuse(&text);
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert_problem(
        &problems[0],
        line,
        column,
        Some("listeners"),
        "no [[listeners]]",
    );
    assert_problem(&problems[1], line, column, Some("routes"), "no [[routes]]");
}

#[test]
fn config_without_listeners_is_rejected() {
    let (text, line, column) = marked(&["‸", ROUTE_AND_UPSTREAM].concat());
    let problem = single_problem(&text);
    assert_problem(
        &problem,
        line,
        column,
        Some("listeners"),
        "no [[listeners]]",
    );
}

#[test]
fn config_without_routes_is_rejected() {
    let (text, line, column) = marked(
        r#"‸[[listeners]]
listen = "127.0.0.1:8080"

[upstreams.api]
backends = [{ address = "127.0.0.1:9001" }]
"#,
    );
    let problem = single_problem(&text);
    assert_problem(&problem, line, column, Some("routes"), "no [[routes]]");
}

// === routes ===

#[test]
fn route_to_an_unknown_upstream_is_rejected() {
    let (text, line, column) = marked(
        r#"[[listeners]]
listen = "127.0.0.1:8080"

[[routes]]
upstream = ‸"apj"

[upstreams.api]
backends = [{ address = "127.0.0.1:9001" }]
"#,
    );
    let problem = single_problem(&text);
    assert_problem(
        &problem,
        line,
        column,
        Some("upstream"),
        "unknown upstream \"apj\"; defined upstreams: api",
    );
}

#[test]
fn route_without_any_upstream_defined_is_rejected() {
    let (text, line, column) = marked(
        &["[[listeners]]\nlisten = \"127.0.0.1:8080\"\n\n[[routes]]\nupstream = ‸\"api\"\n"]
            .concat(),
    );
    let problem = single_problem(&text);
    assert_problem(
        &problem,
        line,
        column,
        Some("upstream"),
        "no upstream is defined",
    );
}

#[test]
fn duplicate_route_name_is_rejected() {
    let (text, line, column) = marked(
        r#"[[listeners]]
listen = "127.0.0.1:8080"

[[routes]]
name = "api"
upstream = "api"

[[routes]]
name = ‸"api"
upstream = "api"

[upstreams.api]
backends = [{ address = "127.0.0.1:9001" }]
"#,
    );
    let problem = single_problem(&text);
    assert_problem(
        &problem,
        line,
        column,
        Some("name"),
        "duplicate route name \"api\"",
    );
}

// === upstreams ===

#[test]
fn upstream_without_backends_is_rejected() {
    let (text, line, column) = marked(
        r#"[[listeners]]
listen = "127.0.0.1:8080"

[[routes]]
upstream = "api"

‸[upstreams.api]
strategy = "round_robin"
"#,
    );
    let problem = single_problem(&text);
    // reported at the upstream's header
    assert_problem(
        &problem,
        line,
        column,
        Some("upstreams.api.backends"),
        "at least one backend",
    );
}

#[test]
fn upstream_with_an_empty_backend_list_is_rejected() {
    let (text, line, column) = marked(
        r#"[[listeners]]
listen = "127.0.0.1:8080"

[[routes]]
upstream = "api"

‸[upstreams.api]
backends = []
"#,
    );
    let problem = single_problem(&text);
    assert_problem(
        &problem,
        line,
        column,
        Some("upstreams.api.backends"),
        "at least one backend",
    );
}

#[test]
fn backend_without_address_is_rejected() {
    let (text, line, column) = marked(
        r#"[[listeners]]
listen = "127.0.0.1:8080"

[[routes]]
upstream = "api"

[upstreams.api]
backends = [‸{ weight = 2 }]
"#,
    );
    let problem = single_problem(&text);
    assert_eq!(
        (problem.line, problem.column),
        (line, column),
        "{problem:#?}"
    );
    assert!(problem.message.contains("missing field `address`"));
}

#[test]
fn duplicate_backend_is_rejected() {
    let (text, line, column) = marked(
        r#"[[listeners]]
listen = "127.0.0.1:8080"

[[routes]]
upstream = "api"

[upstreams.api]
backends = [{ address = "127.0.0.1:9001" }, { address = ‸"127.0.0.1:9001" }]
"#,
    );
    let problem = single_problem(&text);
    assert_problem(&problem, line, column, Some("address"), "listed twice");
}

/// A config whose upstream has `strategy = "<strategy>"`, the value marked.
fn with_strategy(strategy: &str) -> String {
    format!(
        r#"[[listeners]]
listen = "127.0.0.1:8080"

[[routes]]
upstream = "api"

[upstreams.api]
strategy = ‸"{strategy}"
backends = [{{ address = "127.0.0.1:9001" }}]
"#
    )
}

#[test]
fn round_robin_strategy_is_accepted() {
    let config = accept(&unmarked(&with_strategy("round_robin")));
    assert_eq!(config.upstreams[0].strategy, StrategyKind::RoundRobin);
}

#[test]
fn unknown_strategy_is_rejected() {
    let (text, line, column) = marked(&with_strategy("fastest"));
    let problem = single_problem(&text);
    assert_problem(
        &problem,
        line,
        column,
        Some("strategy"),
        "unknown strategy \"fastest\"",
    );
}

#[test]
fn every_built_strategy_is_accepted() {
    let expected = [
        ("round_robin", StrategyKind::RoundRobin),
        ("least_connections", StrategyKind::LeastConnections),
        ("p2c", StrategyKind::PowerOfTwo),
        ("random", StrategyKind::Random),
        ("ip_hash", StrategyKind::IpHash),
        ("ewma", StrategyKind::Ewma),
    ];
    for (name, kind) in expected {
        let config = parse(&unmarked(&with_strategy(name)), "weir.toml").unwrap();
        assert_eq!(config.upstreams[0].strategy, kind, "{name}");
    }
}

#[test]
fn zero_response_timeout_is_rejected() {
    let (text, line, column) = marked(&[MINIMAL, "timeouts = { response = ‸\"0ms\" }\n"].concat());
    let problem = single_problem(&text);
    assert_problem(
        &problem,
        line,
        column,
        Some("timeouts.response"),
        "must be greater than zero",
    );
}

#[test]
fn unlimited_max_connections_per_backend_is_accepted() {
    accept(&[MINIMAL, "max_connections_per_backend = 0\n"].concat());
}

#[test]
fn limits_and_queue_timeout_are_accepted() {
    let config = accept(&[&with_listener_line("max_connections = 8000") as &str, ""].concat());
    assert_eq!(config.listeners[0].max_connections, 8000);
    let config = accept(
        &[
            MINIMAL,
            "max_connections_per_backend = 5\nqueue_timeout = \"2s\"\n",
        ]
        .concat(),
    );
    let upstream = &config.upstreams[0];
    assert_eq!(upstream.max_connections_per_backend, 5);
    assert_eq!(upstream.queue_timeout, Some(Duration::from_secs(2)));
    assert_eq!(accept(MINIMAL).listeners[0].max_connections, 0);
}

#[test]
fn queue_timeout_needs_a_connection_limit() {
    let (text, line, column) = marked(&[MINIMAL, "queue_timeout = ‸\"1s\"\n"].concat());
    let problem = single_problem(&text);
    assert_problem(
        &problem,
        line,
        column,
        Some("queue_timeout"),
        "only applies with max_connections_per_backend",
    );
}

#[test]
fn negative_max_connections_per_backend_is_rejected() {
    let (text, line, column) = marked(&[MINIMAL, "max_connections_per_backend = ‸-1\n"].concat());
    let problem = single_problem(&text);
    assert_problem(
        &problem,
        line,
        column,
        Some("max_connections_per_backend"),
        "must be between 0 and 1000000",
    );
}

// === keys of the contract whose feature is not built yet ===

#[test]
fn admin_takes_a_listen_address_apart_from_the_listeners() {
    let config = accept(&["[admin]\nlisten = \"127.0.0.1:9901\"\n\n", MINIMAL].concat());
    assert_eq!(
        config.admin,
        Some(AdminConfig {
            listen: "127.0.0.1:9901".parse().unwrap(),
            token: None,
            allowed_hosts: Vec::new(),
        })
    );
    assert_eq!(accept(MINIMAL).admin, None);
    // MINIMAL's listener is 127.0.0.1:8080.
    let (text, line, column) =
        marked(&["[admin]\nlisten = ‸\"127.0.0.1:8080\"\n\n", MINIMAL].concat());
    let problem = single_problem(&text);
    assert_problem(
        &problem,
        line,
        column,
        Some("admin.listen"),
        "also a proxy listener",
    );
}

#[test]
fn logging_defaults_and_every_key() {
    assert_eq!(accept(MINIMAL).logging, LoggingConfig::default());
    assert_eq!(LoggingConfig::default().access_log, AccessLogTarget::Off);
    let config = accept(
        &[
            MINIMAL,
            "\n[logging]\nlevel = \"debug\"\naccess_log = \"/var/log/weir/access.log\"\naccess_log_format = \"combined\"\n",
        ]
        .concat(),
    );
    assert_eq!(
        config.logging,
        LoggingConfig {
            level: "debug".into(),
            access_log: AccessLogTarget::File("/var/log/weir/access.log".into()),
            access_log_format: AccessLogFormat::Combined,
        }
    );
    let config = accept(&[MINIMAL, "\n[logging]\naccess_log = \"stdout\"\n"].concat());
    assert_eq!(config.logging.access_log, AccessLogTarget::Stdout);
}

#[test]
fn bad_logging_values_are_refused_at_the_value() {
    for (entry, key, message) in [
        ("level = ‸\"loud\"", "level", "expected one of"),
        ("access_log = ‸\"\"", "access_log", "a file path"),
        (
            "access_log_format = ‸\"xml\"",
            "access_log_format",
            "\"json\" or \"combined\"",
        ),
    ] {
        let (text, line, column) = marked(&[MINIMAL, &format!("\n[logging]\n{entry}\n")].concat());
        let problem = single_problem(&text);
        assert_problem(&problem, line, column, Some(key), message);
    }
}

#[test]
fn listener_tls_takes_one_certificate_or_several_read_from_the_config_folder() {
    let text = with_listener_line(r#"tls = { cert = "certs/site.pem", key = "certs/site.key" }"#);
    let config = parse(&text, "/etc/weir/weir.toml").unwrap();
    let listener = &config.listeners[0];
    assert_eq!(
        listener.tls,
        Some(TlsConfig {
            certs: vec![CertFiles {
                cert: "/etc/weir/certs/site.pem".into(),
                key: "/etc/weir/certs/site.key".into(),
            }],
            client_ca: None,
        })
    );
    assert_eq!(listener.tls_handshake_timeout, Duration::from_secs(10));
    let text = with_listener_line(
        "tls = { client_ca = \"/ca.pem\", certs = [{ cert = \"/a.pem\", key = \"/a.key\" }, { cert = \"/b.pem\", key = \"/b.key\" }] }",
    );
    let tls = accept(&text).listeners[0].tls.clone().unwrap();
    assert_eq!(tls.certs.len(), 2);
    assert_eq!(tls.client_ca, Some("/ca.pem".into()));
    // The same as array-of-tables, as docs/configuration.md shows it.
    let tables = accept(
        &[
            "[[listeners]]\nlisten = \"127.0.0.1:8443\"\n",
            "[listeners.tls]\nclient_ca = \"/ca.pem\"\n",
            "[[listeners.tls.certs]]\ncert = \"/a.pem\"\nkey = \"/a.key\"\n",
            "[[listeners.tls.certs]]\ncert = \"/b.pem\"\nkey = \"/b.key\"\n",
            ROUTE_AND_UPSTREAM,
        ]
        .concat(),
    );
    assert_eq!(tables.listeners[0].tls, Some(tls));
    let (text, line, column) = marked(&with_listener_line("tls = ‸{}"));
    let problem = single_problem(&text);
    assert_problem(
        &problem,
        line,
        column,
        Some("tls"),
        "tls needs a certificate",
    );
    let (text, line, column) = marked(&with_listener_line(r#"tls = { cert = ‸"a.pem" }"#));
    let problem = single_problem(&text);
    assert_problem(&problem, line, column, Some("tls.cert"), "needs tls.key");
}

#[test]
fn trusted_proxies_take_networks_and_addresses() {
    let text = with_listener_line(
        r#"trusted_proxies = ["10.0.0.0/8", "192.0.2.7", "2001:db8::/32", "10.1.2.3/16"]"#,
    );
    let config = parse(&text, "weir.toml").unwrap();
    let networks: Vec<String> = config.listeners[0]
        .trusted_proxies
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(
        networks,
        ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32", "10.1.0.0/16"]
    );
}

#[test]
fn invalid_trusted_proxy_is_refused_at_its_value() {
    let (text, line, column) = marked(&with_listener_line(
        r#"trusted_proxies = ["10.0.0.0/8", ‸"10.0.0.0/33"]"#,
    ));
    let problem = single_problem(&text);
    assert_problem(
        &problem,
        line,
        column,
        Some("trusted_proxies"),
        "invalid network",
    );
}

#[test]
fn max_concurrent_streams_is_bounded() {
    assert_eq!(accept(MINIMAL).listeners[0].max_concurrent_streams, 200);
    assert_eq!(
        accept(&with_listener_line("max_concurrent_streams = 8")).listeners[0]
            .max_concurrent_streams,
        8
    );
    let (text, line, column) = marked(&with_listener_line("max_concurrent_streams = ‸0"));
    let problem = single_problem(&text);
    assert_problem(
        &problem,
        line,
        column,
        Some("max_concurrent_streams"),
        "between 1 and 10000",
    );
}

#[test]
fn hash_keys_of_every_kind_are_accepted() {
    let expected = [
        ("path", HashKey::Path),
        ("uri", HashKey::Uri),
        (
            "header:X-User",
            HashKey::Header(http::HeaderName::from_static("x-user")),
        ),
        ("cookie:session", HashKey::Cookie("session".into())),
        ("query:user", HashKey::Query("user".into())),
    ];
    for (text, key) in expected {
        let config = parse(
            &[
                MINIMAL,
                &format!("strategy = \"hash\"\nhash_key = \"{text}\"\n"),
            ]
            .concat(),
            "weir.toml",
        )
        .unwrap();
        assert_eq!(
            config.upstreams[0].strategy,
            StrategyKind::Hash(key),
            "{text}"
        );
    }
}

#[test]
fn invalid_hash_key_is_refused_at_its_value() {
    for bad in ["host", "header:", "header:bad name", "cookie:", "query:"] {
        let (text, line, column) = marked(
            &[
                MINIMAL,
                &format!("strategy = \"hash\"\nhash_key = ‸\"{bad}\"\n"),
            ]
            .concat(),
        );
        let problem = single_problem(&text);
        assert_problem(&problem, line, column, Some("hash_key"), "invalid hash_key");
    }
}

#[test]
fn hash_needs_a_hash_key_and_only_hash_takes_one() {
    let (text, line, column) = marked(&[MINIMAL, "strategy = ‸\"hash\"\n"].concat());
    let problem = single_problem(&text);
    assert_problem(&problem, line, column, Some("strategy"), "needs a hash_key");
    let (text, line, column) = marked(&[MINIMAL, "hash_key = ‸\"path\"\n"].concat());
    let problem = single_problem(&text);
    assert_problem(
        &problem,
        line,
        column,
        Some("hash_key"),
        "only applies to strategy",
    );
}

#[test]
fn hash_balance_factor_goes_with_hashing_only() {
    let config = parse(
        &[
            MINIMAL,
            "strategy = \"ip_hash\"\nhash_balance_factor = 1.25\n",
        ]
        .concat(),
        "weir.toml",
    )
    .unwrap();
    assert_eq!(config.upstreams[0].hash_balance_percent, Some(125));
    let (text, line, column) = marked(&[MINIMAL, "hash_balance_factor = ‸1.25\n"].concat());
    let problem = single_problem(&text);
    assert_problem(
        &problem,
        line,
        column,
        Some("hash_balance_factor"),
        "only applies to strategy",
    );
    let (text, line, column) = marked(
        &[
            MINIMAL,
            "strategy = \"ip_hash\"\nhash_balance_factor = ‸0.5\n",
        ]
        .concat(),
    );
    let problem = single_problem(&text);
    assert_problem(
        &problem,
        line,
        column,
        Some("hash_balance_factor"),
        "must be between 1.0 and 100.0",
    );
}

#[test]
fn ip_hash_is_accepted() {
    let config = parse(&[MINIMAL, "strategy = \"ip_hash\"\n"].concat(), "weir.toml").unwrap();
    assert_eq!(config.upstreams[0].strategy, StrategyKind::IpHash);
}

#[test]
fn upstream_tls_is_true_or_a_table() {
    let on = parse(&[MINIMAL, "tls = true\n"].concat(), "/etc/weir/weir.toml").unwrap();
    assert_eq!(on.upstreams[0].tls, Some(UpstreamTlsConfig::default()));
    assert_eq!(on.upstreams[0].protocol, UpstreamProtocol::Http1);
    let off = parse(&[MINIMAL, "tls = false\n"].concat(), "weir.toml").unwrap();
    assert_eq!(off.upstreams[0].tls, None);
    let table = parse(
        &[
            MINIMAL,
            "tls = { sni = \"api.internal\", ca = \"certs/ca.pem\" }\nprotocol = \"h2\"\n",
        ]
        .concat(),
        "/etc/weir/weir.toml",
    )
    .unwrap();
    let upstream = &table.upstreams[0];
    assert_eq!(
        upstream.tls,
        Some(UpstreamTlsConfig {
            sni: Some("api.internal".into()),
            ca: Some(PathBuf::from("/etc/weir/certs/ca.pem")),
            insecure_skip_verify: false,
        })
    );
    assert_eq!(upstream.protocol, UpstreamProtocol::H2);
}

#[test]
fn upstream_tls_problems_name_their_key() {
    let (text, line, column) = marked(&[MINIMAL, "tls = { ‸sny = \"a\" }\n"].concat());
    let problem = single_problem(&text);
    assert_problem(
        &problem,
        line,
        column,
        Some("sny"),
        "expected one of `sni`, `ca`",
    );
    let (text, line, column) = marked(&[MINIMAL, "tls = ‸\"yes\"\n"].concat());
    let problem = single_problem(&text);
    assert_problem(
        &problem,
        line,
        column,
        Some("tls"),
        "true, false or a table",
    );
    let (text, line, column) = marked(&[MINIMAL, "tls = { sni = ‸\"not a name!\" }\n"].concat());
    let problem = single_problem(&text);
    assert_problem(&problem, line, column, Some("tls.sni"), "DNS name");
    let (text, line, column) = marked(
        &[
            MINIMAL,
            "tls = { ca = ‸\"ca.pem\", insecure_skip_verify = true }\n",
        ]
        .concat(),
    );
    let problem = single_problem(&text);
    assert_problem(&problem, line, column, Some("tls.ca"), "contradict");
}

#[test]
fn upstream_protocol_must_fit_tls() {
    let h2c = parse(&[MINIMAL, "protocol = \"h2c\"\n"].concat(), "weir.toml").unwrap();
    assert_eq!(h2c.upstreams[0].protocol, UpstreamProtocol::H2c);
    for (extra, message) in [
        ("protocol = ‸\"h2\"\n", "needs tls"),
        ("tls = true\nprotocol = ‸\"h2c\"\n", "with tls, use \"h2\""),
        (
            "protocol = ‸\"http2\"\n",
            "expected \"http1\", \"h2\" or \"h2c\"",
        ),
    ] {
        let (text, line, column) = marked(&[MINIMAL, extra].concat());
        let problem = single_problem(&text);
        assert_problem(&problem, line, column, Some("protocol"), message);
    }
}

// === several problems, positions and messages ===

#[test]
fn several_problems_in_one_file_are_all_reported() {
    let (text, places) = marks(
        r#"[[listeners]]
listen = "127.0.0.1:8080"
header_timeout = ‸"0s"

[[routes]]
upstream = ‸"missing"

[upstreams.api]
strategy = ‸"fastest"
backends = [{ address = "127.0.0.1:9001", weight = ‸0 }]
"#,
    );
    let problems = refuse(&text);
    let found: Vec<(usize, usize, Option<&str>)> = problems
        .iter()
        .map(|p| (p.line, p.column, p.key.as_deref()))
        .collect();
    let keys = ["header_timeout", "upstream", "strategy", "weight"];
    assert_eq!(places.len(), keys.len());
    let expected: Vec<(usize, usize, Option<&str>)> = places
        .iter()
        .zip(keys)
        .map(|(&(line, column), key)| (line, column, Some(key)))
        .collect();
    assert_eq!(found, expected);
}

#[test]
fn problems_in_several_tables_are_all_reported() {
    let (text, places) = marks(
        &[
            "[[listeners]]\nlisten = \"127.0.0.1:8081\"\nmax_concurrent_streams = ‸0\n\n",
            MINIMAL,
            "protocol = ‸\"h2\"\n",
        ]
        .concat(),
    );
    let problems = refuse(&text);
    let found: Vec<(usize, usize, Option<&str>)> = problems
        .iter()
        .map(|p| (p.line, p.column, p.key.as_deref()))
        .collect();
    let keys = ["max_concurrent_streams", "protocol"];
    assert_eq!(places.len(), keys.len());
    let expected: Vec<(usize, usize, Option<&str>)> = places
        .iter()
        .zip(keys)
        .map(|(&(line, column), key)| (line, column, Some(key)))
        .collect();
    assert_eq!(found, expected);
}

#[test]
fn columns_count_characters_not_bytes() {
    // `é` takes two bytes and one column
    let (text, line, column) = marked(
        &[
            r#"listeners = [{ name = "café", listen = "127.0.0.1:8080", header_timeout = ‸"0s" }]
"#,
            ROUTE_AND_UPSTREAM,
        ]
        .concat(),
    );
    let problem = single_problem(&text);
    assert_problem(
        &problem,
        line,
        column,
        Some("header_timeout"),
        "must be greater than zero",
    );
}

/// Some Windows editors start a UTF-8 file with a byte order mark; editors do not
/// show it, so it takes no column.
#[test]
fn a_byte_order_mark_takes_no_column() {
    // marked in the text without the byte order mark, as an editor shows it
    let (text, line, column) = marked(&with_listener_line(r#"header_timeout = ‸"0s""#));
    let text = ["\u{FEFF}", &text].concat();
    assert_problem(
        &single_problem(&text),
        line,
        column,
        Some("header_timeout"),
        "must be greater than zero",
    );
    let (text, line, column) = marked(&["‸nope = 1\n", MINIMAL].concat());
    let text = ["\u{FEFF}", &text].concat();
    assert_problem(
        &single_problem(&text),
        line,
        column,
        Some("nope"),
        "unknown field",
    );
}

#[test]
fn an_error_at_a_key_right_after_a_byte_order_mark_names_the_key() {
    let (text, line, column) = marked(&["listeners = ‸5\n", ROUTE_AND_UPSTREAM].concat());
    let text = ["\u{FEFF}", &text].concat();
    assert_problem(&single_problem(&text), line, column, Some("listeners"), "");
}

#[test]
fn a_config_with_a_byte_order_mark_is_accepted() {
    let config = accept(&["\u{FEFF}", MINIMAL].concat());
    assert_eq!(config.listeners.len(), 1);
}

#[test]
fn a_key_after_a_multibyte_character_is_named() {
    // `key_at` walks back from `=` over key characters; the character that stops
    // it may take more than one byte
    let text = "\u{A0}listeners = 5";
    let value = text.find('5').unwrap();
    assert_eq!(
        key_at(text, &(value..value + 1)).as_deref(),
        Some("listeners")
    );
}

#[test]
fn crlf_line_endings_give_the_same_positions() {
    let (text, line, column) = marked(&with_listener_line(r#"header_timeout = ‸"0s""#));
    let problem = single_problem(&text.replace('\n', "\r\n"));
    assert_problem(
        &problem,
        line,
        column,
        Some("header_timeout"),
        "must be greater than zero",
    );
}

#[test]
fn problem_display_names_file_line_column_and_key() {
    let (text, line, column) = marked(&with_listener_line(r#"header_timeout = ‸"0s""#));
    let problem = single_problem(&text);
    assert_eq!(
        problem.to_string(),
        format!("test.toml:{line}:{column}: `header_timeout`: must be greater than zero")
    );
}

#[test]
fn problem_display_without_key_has_no_key_part() {
    let (text, line, column) = marked("‸");
    let problem = single_problem(&text);
    assert!(
        problem.to_string().starts_with(&format!(
            "test.toml:{line}:{column}: the config file is empty"
        )),
        "{problem}"
    );
}

#[test]
fn config_error_display_lists_one_problem_per_line() {
    let (text, line, column) = marked("‸# nothing yet\n");
    let err = parse(&text, FILE).unwrap_err();
    let text = err.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    let place = format!("test.toml:{line}:{column}: ");
    assert!(lines.iter().all(|l| l.starts_with(&place)), "{text}");
}

#[test]
fn unreadable_file_is_a_read_error_without_problems() {
    let path = Path::new("/nonexistent/weir/config.toml");
    let err = load(path).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
    assert!(err.problems().is_empty());
    assert!(
        err.to_string()
            .starts_with("/nonexistent/weir/config.toml: cannot read")
    );
}

// === edge cases found while writing these tests ===

#[test]
fn two_listeners_on_port_zero_are_not_duplicates() {
    let text = [
        r#"[[listeners]]
listen = "127.0.0.1:0"
[[listeners]]
listen = "127.0.0.1:0"
"#,
        ROUTE_AND_UPSTREAM,
    ]
    .concat();
    accept(&text);
}

#[test]
fn empty_route_name_is_rejected() {
    let (text, line, column) = marked(
        r#"[[listeners]]
listen = "127.0.0.1:8080"

[[routes]]
name = ‸""
upstream = "api"

[upstreams.api]
backends = [{ address = "127.0.0.1:9001" }]
"#,
    );
    let problem = single_problem(&text);
    assert_problem(&problem, line, column, Some("name"), "must not be empty");
}

#[test]
fn zero_upstream_timeout_is_reported_at_its_value() {
    let (text, line, column) = marked(&[MINIMAL, "timeouts = { connect = ‸\"0s\" }\n"].concat());
    let problem = single_problem(&text);
    assert_problem(
        &problem,
        line,
        column,
        Some("timeouts.connect"),
        "must be greater than zero",
    );
}

#[test]
fn missing_required_key_names_the_key() {
    let (text, line, column) =
        marked(&["‸[[listeners]]\nname = \"web\"\n", ROUTE_AND_UPSTREAM].concat());
    let problem = single_problem(&text);
    assert_problem(
        &problem,
        line,
        column,
        Some("listen"),
        "missing field `listen`",
    );
}

#[test]
fn host_with_an_empty_label_is_rejected() {
    let (text, line, column) = marked(&with_route_host("api..example.com"));
    let problem = single_problem(&text);
    assert_problem(&problem, line, column, Some("host"), "invalid host");
}

#[test]
fn sticky_takes_a_cookie_a_ttl_and_a_secret() {
    let config = accept(
        &[
            MINIMAL,
            "sticky = { cookie = \"srv\", ttl = \"1h\", secret = \"0123456789abcdef\" }\n",
        ]
        .concat(),
    );
    let sticky = config.upstreams[0].sticky.as_ref().unwrap();
    assert_eq!(sticky.cookie, "srv");
    assert_eq!(sticky.ttl, Some(Duration::from_secs(3600)));
    assert_eq!(sticky.secret, Some(Secret("0123456789abcdef".into())));
    assert!(!format!("{config:?}").contains("0123456789abcdef"));

    let config = accept(&[MINIMAL, "sticky = {}\n"].concat());
    let sticky = config.upstreams[0].sticky.as_ref().unwrap();
    assert_eq!(sticky.cookie, "weir_srv");
    assert_eq!((sticky.ttl, sticky.secret.is_none()), (None, true));
    assert_eq!(accept(MINIMAL).upstreams[0].sticky, None);
}

#[test]
fn bad_sticky_values_are_refused_at_the_value() {
    for (sticky, key, message) in [
        (
            r#"{ cookie = ‸"a b" }"#,
            "sticky.cookie",
            "invalid cookie name",
        ),
        (
            r#"{ cookie = ‸"" }"#,
            "sticky.cookie",
            "invalid cookie name",
        ),
        (r#"{ ttl = ‸"0s" }"#, "sticky.ttl", "at least 1s"),
        (r#"{ secret = ‸"short" }"#, "sticky.secret", "too short"),
    ] {
        let (text, line, column) = marked(&[MINIMAL, &format!("sticky = {sticky}\n")].concat());
        let problem = single_problem(&text);
        assert_problem(&problem, line, column, Some(key), message);
    }
    let problems = refuse(&[MINIMAL, "sticky = { name = \"x\" }\n"].concat());
    assert!(
        problems[0].message.contains("unknown field `name`"),
        "{problems:?}"
    );
}

// === health checks, outlier detection, panic threshold ===

#[test]
fn health_check_defaults_and_every_key() {
    let config = accept(&[MINIMAL, "health_check = {}\n"].concat());
    let check = config.upstreams[0].health_check.as_ref().unwrap();
    assert_eq!(
        *check,
        HealthCheckConfig {
            path: "/".into(),
            host: None,
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
            expect_status: StatusSet(vec![(200, 399)]),
            initially_healthy: true,
        }
    );
    let config = accept(
        &[
            MINIMAL,
            "\n[upstreams.api.health_check]\npath = \"/healthz?deep=1\"\nhost = \"app.internal\"\n\
             interval = \"2s\"\ntimeout = \"500ms\"\nhealthy_threshold = 1\nunhealthy_threshold = 5\n\
             expect_status = [200, \"204-206\"]\ninitial_state = \"unhealthy\"\n",
        ]
        .concat(),
    );
    let check = config.upstreams[0].health_check.as_ref().unwrap();
    assert_eq!(check.path, "/healthz?deep=1");
    assert_eq!(check.host.as_deref(), Some("app.internal"));
    assert_eq!(
        (check.interval, check.timeout),
        (Duration::from_secs(2), Duration::from_millis(500))
    );
    assert_eq!((check.healthy_threshold, check.unhealthy_threshold), (1, 5));
    assert_eq!(check.expect_status, StatusSet(vec![(200, 200), (204, 206)]));
    assert!(!check.initially_healthy);
    assert!(check.expect_status.contains(205) && !check.expect_status.contains(201));
}

#[test]
fn expect_status_takes_a_range_a_status_or_a_list() {
    for (text, set) in [
        (r#""200-299""#, vec![(200, 299)]),
        ("204", vec![(204, 204)]),
        (r#"[200, 204]"#, vec![(200, 200), (204, 204)]),
    ] {
        let config = accept(
            &[
                MINIMAL,
                &format!("health_check = {{ expect_status = {text} }}\n"),
            ]
            .concat(),
        );
        assert_eq!(
            config.upstreams[0]
                .health_check
                .as_ref()
                .unwrap()
                .expect_status,
            StatusSet(set)
        );
    }
}

#[test]
fn bad_health_check_values_are_refused_at_the_value() {
    for (entry, key, message) in [
        (
            r#"path = ‸"healthz""#,
            "health_check.path",
            "starting with '/'",
        ),
        (
            r#"interval = ‸"0s""#,
            "health_check.interval",
            "greater than zero",
        ),
        (
            "healthy_threshold = ‸0",
            "health_check.healthy_threshold",
            "between 1 and 100",
        ),
        (
            "unhealthy_threshold = ‸-1",
            "health_check.unhealthy_threshold",
            "between 1 and 100",
        ),
        (
            r#"expect_status = ‸"299-200""#,
            "health_check.expect_status",
            "status range",
        ),
        (
            "expect_status = ‸99",
            "health_check.expect_status",
            "status range",
        ),
        (
            "expect_status = ‸[]",
            "health_check.expect_status",
            "status range",
        ),
        (
            r#"initial_state = ‸"down""#,
            "health_check.initial_state",
            "\"unhealthy\"",
        ),
    ] {
        let (text, line, column) =
            marked(&[MINIMAL, &format!("health_check = {{ {entry} }}\n")].concat());
        let problem = single_problem(&text);
        assert_problem(&problem, line, column, Some(key), message);
    }
}

#[test]
fn outlier_detection_defaults_and_bounds() {
    let config = accept(&[MINIMAL, "outlier_detection = {}\npanic_threshold = 50\n"].concat());
    let upstream = &config.upstreams[0];
    assert_eq!(
        upstream.outlier_detection,
        Some(OutlierConfig {
            consecutive_failures: 5,
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 50,
        })
    );
    assert_eq!(upstream.panic_threshold, 50);
    assert_eq!(accept(MINIMAL).upstreams[0].panic_threshold, 0);

    let (text, line, column) = marked(
        &[
            MINIMAL,
            "outlier_detection = { base_ejection_time = \"1m\", max_ejection_time = ‸\"10s\" }\n",
        ]
        .concat(),
    );
    let problem = single_problem(&text);
    assert_problem(
        &problem,
        line,
        column,
        Some("outlier_detection.max_ejection_time"),
        "at least base_ejection_time",
    );
    let (text, line, column) = marked(&[MINIMAL, "panic_threshold = ‸101\n"].concat());
    let problem = single_problem(&text);
    assert_problem(
        &problem,
        line,
        column,
        Some("panic_threshold"),
        "between 0 and 100",
    );
    let (text, line, column) = marked(
        &[
            MINIMAL,
            "outlier_detection = { consecutive_failures = ‸0 }\n",
        ]
        .concat(),
    );
    let problem = single_problem(&text);
    assert_problem(
        &problem,
        line,
        column,
        Some("outlier_detection.consecutive_failures"),
        "between 1 and 1000",
    );
}

// === retries ===

#[test]
fn without_a_retries_table_only_unsent_requests_are_retried() {
    assert_eq!(
        accept(MINIMAL).upstreams[0].retries,
        RetryPolicy::UNSENT_ONLY
    );
}

#[test]
fn retries_defaults_and_every_key() {
    let config = accept(&[MINIMAL, "retries = {}\n"].concat());
    assert_eq!(
        config.upstreams[0].retries,
        RetryPolicy {
            attempts: 2,
            after_send: true,
            budget: Some(RetryBudgetConfig {
                percent: 20,
                min_per_second: 10,
            }),
            max_body_bytes: 65536,
            backoff: Duration::from_millis(25),
        }
    );
    let config = accept(
        &[
            MINIMAL,
            "\n[upstreams.api.retries]\nattempts = 0\nbudget = 0.5\nmin_retries_per_second = 0\n\
             max_body_bytes = 0\nbackoff = \"0ms\"\n",
        ]
        .concat(),
    );
    let retries = config.upstreams[0].retries;
    assert_eq!(retries.attempts, 0);
    assert_eq!(
        retries.budget,
        Some(RetryBudgetConfig {
            percent: 50,
            min_per_second: 0
        })
    );
    assert_eq!(
        (retries.max_body_bytes, retries.backoff),
        (0, Duration::ZERO)
    );
}

#[test]
fn bad_retry_values_are_refused_at_the_value() {
    for (entry, key, message) in [
        ("attempts = ‸11", "retries.attempts", "between 0 and 10"),
        ("budget = ‸1.5", "retries.budget", "between 0.0 and 1.0"),
        ("budget = ‸-0.1", "retries.budget", "between 0.0 and 1.0"),
        (
            "max_body_bytes = ‸-1",
            "retries.max_body_bytes",
            "between 0 and",
        ),
        (
            "min_retries_per_second = ‸-1",
            "retries.min_retries_per_second",
            "between 0 and",
        ),
    ] {
        let (text, line, column) =
            marked(&[MINIMAL, &format!("retries = {{ {entry} }}\n")].concat());
        let problem = single_problem(&text);
        assert_problem(&problem, line, column, Some(key), message);
    }
    let (text, line, column) = marked(&[MINIMAL, "timeouts = { request = ‸\"0s\" }\n"].concat());
    let problem = single_problem(&text);
    assert_problem(
        &problem,
        line,
        column,
        Some("timeouts.request"),
        "greater than zero",
    );
}

#[test]
fn slow_start_takes_a_duration_but_not_with_hashing() {
    let config = accept(&[MINIMAL, "slow_start = \"30s\"\n"].concat());
    assert_eq!(
        config.upstreams[0].slow_start,
        Some(Duration::from_secs(30))
    );
    assert_eq!(accept(MINIMAL).upstreams[0].slow_start, None);
    let (text, line, column) =
        marked(&[MINIMAL, "strategy = \"ip_hash\"\nslow_start = ‸\"30s\"\n"].concat());
    let problem = single_problem(&text);
    assert_problem(
        &problem,
        line,
        column,
        Some("slow_start"),
        "does not apply to strategy \"hash\"",
    );
}

#[test]
fn proxy_protocol_is_a_listener_switch() {
    assert!(accept(&with_listener_line("proxy_protocol = true")).listeners[0].proxy_protocol);
    assert!(!accept(MINIMAL).listeners[0].proxy_protocol);
}

#[test]
fn send_proxy_protocol_takes_a_version() {
    use crate::proxy_protocol::Version;
    for (text, version) in [("v1", Version::V1), ("v2", Version::V2)] {
        let config = accept(&[MINIMAL, &format!("send_proxy_protocol = \"{text}\"\n")].concat());
        assert_eq!(config.upstreams[0].send_proxy_protocol, Some(version));
    }
    let (text, line, column) = marked(&[MINIMAL, "send_proxy_protocol = ‸\"v3\"\n"].concat());
    let problem = single_problem(&text);
    assert_problem(
        &problem,
        line,
        column,
        Some("send_proxy_protocol"),
        "expected \"v1\" or \"v2\"",
    );
}

// === rate limits ===

/// A route listing `list` (TOML array) and the policies of `limits`.
fn rate_limited(list: &str, limits: &str) -> String {
    format!(
        "[[listeners]]\nlisten = \"127.0.0.1:8080\"\n\n[[routes]]\nupstream = \"api\"\nrate_limit = {list}\n\n\
         [upstreams.api]\nbackends = [{{ address = \"127.0.0.1:9001\" }}]\n\n{limits}\n"
    )
}

#[test]
fn rate_limit_policies_are_read_with_their_defaults() {
    let config = accept(&rate_limited(
        "[\"b\", \"a\"]",
        "[rate_limits.a]\nrate = \"100/s\"\n\n\
         [rate_limits.b]\nrate = \"30/m\"\nburst = 50\nkey = \"header:X-Api-Key\"\nscope = \"global\"\non_redis_error = \"deny\"\n\n\
         [redis]\nurl = \"redis://127.0.0.1\"",
    ));
    let a = &config.rate_limits[0];
    assert_eq!(a.name, "a");
    assert_eq!(
        a.rate,
        Rate {
            count: 100,
            per: Duration::from_secs(1)
        }
    );
    assert_eq!(a.burst, 1);
    assert_eq!(a.key, LimitKey::Client);
    assert_eq!(a.scope, LimitScope::Local);
    let b = &config.rate_limits[1];
    assert_eq!(b.rate.per, Duration::from_secs(60));
    assert_eq!(b.burst, 50);
    assert_eq!(b.key, LimitKey::Header("x-api-key".parse().unwrap()));
    assert_eq!(b.scope, LimitScope::Global);
    assert_eq!(b.on_redis_error, OnRedisError::Deny);
    // In the order the route lists them.
    assert_eq!(config.routes[0].rate_limit, vec![1, 0]);
    for (key, expected) in [
        ("route", LimitKey::Route),
        ("cookie:session", LimitKey::Cookie("session".into())),
        ("query:user", LimitKey::Query("user".into())),
    ] {
        let text = rate_limited(
            "[\"a\"]",
            &format!("[rate_limits.a]\nrate = \"1/h\"\nburst = 0\nkey = \"{key}\""),
        );
        let config = accept(&text);
        assert_eq!(config.rate_limits[0].key, expected);
        assert_eq!(config.rate_limits[0].burst, 1, "0 means one at a time");
    }
}

#[test]
fn rate_limit_mistakes_are_reported_at_their_key() {
    let policy = |keys: &str| format!("[rate_limits.a]\n{keys}");
    for (list, limits, key, message) in [
        (
            "[‸\"b\"]",
            policy("rate = \"1/s\""),
            "rate_limit",
            "unknown rate-limit policy \"b\"; defined policies: a",
        ),
        (
            "[‸\"b\"]",
            String::new(),
            "rate_limit",
            "no policy is defined",
        ),
        (
            "[\"a\", ‸\"a\"]",
            policy("rate = \"1/s\""),
            "rate_limit",
            "listed twice",
        ),
        (
            "[\"a\"]",
            policy("rate = ‸\"100\""),
            "rate",
            "expected \"N/s\"",
        ),
        (
            "[\"a\"]",
            policy("rate = ‸\"100/d\""),
            "rate",
            "expected \"N/s\"",
        ),
        ("[\"a\"]", policy("rate = ‸\"0/s\""), "rate", "at least 1"),
        (
            "[\"a\"]",
            policy("rate = ‸\"1000001/s\""),
            "rate",
            "at most 1000000 requests per second",
        ),
        (
            "[\"a\"]",
            policy("rate = ‸\"60000001/m\""),
            "rate",
            "at most 1000000 requests per second",
        ),
        (
            "[\"a\"]",
            policy("rate = \"1/s\"\nkey = ‸\"header:Host\""),
            "key",
            "header:host cannot be a key",
        ),
        (
            "[\"a\"]",
            policy("rate = \"1/s\"\nkey = ‸\"cookie:a;b\""),
            "key",
            "expected client, route",
        ),
        (
            "[\"a\"]",
            policy("rate = \"1/s\"\nkey = ‸\"query:a&b\""),
            "key",
            "expected client, route",
        ),
        (
            "[\"a\"]",
            policy("rate = ‸\"-5/s\""),
            "rate",
            "expected \"N/s\"",
        ),
        (
            "[\"a\"]",
            policy("rate = ‸\"1.5/s\""),
            "rate",
            "expected \"N/s\"",
        ),
        (
            "[\"a\"]",
            policy("rate = \"1/s\"\nburst = ‸-1"),
            "burst",
            "between 0 and",
        ),
        (
            "[\"a\"]",
            policy("rate = \"1/s\"\nkey = ‸\"ip\""),
            "key",
            "expected client, route",
        ),
        (
            "[\"a\"]",
            policy("rate = \"1/s\"\nkey = ‸\"header:\""),
            "key",
            "expected client, route",
        ),
        (
            "[\"a\"]",
            policy("rate = \"1/s\"\nscope = ‸\"cluster\""),
            "scope",
            "expected \"local\" or \"global\"",
        ),
        (
            "[\"a\"]",
            policy("rate = \"1/s\"\nscope = ‸\"global\""),
            "scope",
            "needs a [redis] table",
        ),
        (
            "[\"a\"]",
            policy("rate = \"1/s\"\non_redis_error = ‸\"deny\""),
            "on_redis_error",
            "only applies to scope = \"global\"",
        ),
        (
            "[\"a\"]",
            policy("rate = \"1/s\"\n‸burts = 5"),
            "burts",
            "unknown field",
        ),
        (
            "[\"a\"]",
            "‸[rate_limits.a]\nburst = 5".to_owned(),
            "rate",
            "missing field `rate`",
        ),
    ] {
        let (text, line, column) = marked(&rate_limited(list, &limits));
        let problem = single_problem(&text);
        assert_problem(&problem, line, column, Some(key), message);
    }
}

#[test]
fn a_route_lists_at_most_eight_policies() {
    let names: Vec<String> = (0..9).map(|i| format!("p{i}")).collect();
    let policies: String = names
        .iter()
        .map(|n| format!("[rate_limits.{n}]\nrate = \"1/s\"\n"))
        .collect();
    let mut list: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    list[8] = format!("‸{}", list[8]);
    let (text, line, column) = marked(&rate_limited(&format!("[{}]", list.join(", ")), &policies));
    let problem = single_problem(&text);
    assert_problem(
        &problem,
        line,
        column,
        Some("rate_limit"),
        "at most 8 policies per route",
    );
}

#[test]
fn a_policy_name_must_fit_headers_and_redis_keys() {
    let (text, line, column) = marked(&rate_limited(
        "[\"a b\"]",
        "[rate_limits.‸\"a b\"]\nrate = \"1/s\"",
    ));
    let problem = single_problem(&text);
    assert_problem(
        &problem,
        line,
        column,
        Some("rate_limits"),
        "invalid policy name",
    );
}

#[test]
fn admin_token_and_allowed_hosts_are_read_and_checked() {
    let config = accept(
        &[
            "[admin]\nlisten = \"127.0.0.1:9901\"\ntoken = \"0123456789abcdef0123\"\nallowed_hosts = [\"Admin.Example\"]\n\n",
            MINIMAL,
        ]
        .concat(),
    );
    let admin = config.admin.unwrap();
    assert_eq!(admin.token, Some(Secret("0123456789abcdef0123".into())));
    assert_eq!(admin.allowed_hosts, vec!["admin.example".to_owned()]);
    for (admin, key, message) in [
        ("token = ‸\"short\"", "token", "at least 16"),
        ("token = ‸\"0123456789 abcdef\"", "token", "at least 16"),
        (
            "allowed_hosts = [‸\"evil.example:80\"]",
            "allowed_hosts",
            "without port",
        ),
    ] {
        let (text, line, column) = marked(
            &[
                &format!("[admin]\nlisten = \"127.0.0.1:9901\"\n{admin}\n\n"),
                MINIMAL,
            ]
            .concat(),
        );
        let problem = single_problem(&text);
        assert_problem(&problem, line, column, Some(key), message);
    }
}
