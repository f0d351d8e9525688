//! `weir --check` on the cache's keys: `[cache]` and a route's `cache`, each
//! problem reported with its file, line and column (marked `‸` in the text).

mod support;

use support::WeirCommand;
use support::marks::marked;

/// A listener, a route to `api` whose `cache` value is `cache`, and the upstream.
fn with_route_cache(cache: &str) -> String {
    format!(
        "[[listeners]]\nlisten = \"127.0.0.1:8080\"\n\n[[routes]]\nupstream = \"api\"\ncache = {cache}\n\n\
         [upstreams.api]\nbackends = [{{ address = \"127.0.0.1:9001\" }}]\n"
    )
}

/// A cached route and `[cache]` with `keys`.
fn with_cache_table(keys: &str) -> String {
    format!("{}\n[cache]\n{keys}\n", with_route_cache("true"))
}

/// Runs `weir --check` on `text` (with its one mark) and checks that it is
/// refused with the mark's place and `expect` on stderr.
#[track_caller]
fn refused(name: &str, text: &str, expect: &str) {
    let (text, line, column) = marked(text);
    let weir = WeirCommand::new()
        .config_text(&format!("cache-config-{name}"), &text)
        .arg("--check")
        .start();
    let path = weir.config_path();
    let output = weir.wait_for_exit();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let place = format!("{}:{line}:{column}", path.display());
    assert_eq!(
        output.status.code(),
        Some(1),
        "{name}: {stderr}\n---\n{text}"
    );
    assert!(
        stderr.contains(&place),
        "{name}: stderr lacks {place:?}:\n{stderr}\n---\n{text}"
    );
    assert!(
        stderr.contains(expect),
        "{name}: stderr lacks {expect:?}:\n{stderr}"
    );
}

#[test]
fn a_redis_store_without_redis_is_refused_at_the_store() {
    refused(
        "redis-store",
        &with_route_cache(r#"{ stale_if_error = "5m", store = ‸"redis" }"#),
        "`store`: needs a [redis] table",
    );
}

#[test]
fn an_unknown_store_is_refused() {
    refused(
        "unknown-store",
        &with_route_cache(r#"{ store = ‸"disk" }"#),
        "`store`: unknown store \"disk\"",
    );
}

#[test]
fn a_size_without_a_unit_is_refused() {
    refused(
        "size-without-unit",
        &with_cache_table("memory = ‸\"12\""),
        "`memory`: invalid size \"12\"",
    );
}

#[test]
fn a_store_below_one_mib_is_refused() {
    refused(
        "small-store",
        &with_cache_table("memory = ‸\"512KiB\""),
        "`memory`: must be at least 1MiB",
    );
}

#[test]
fn an_object_size_above_the_store_is_refused() {
    refused(
        "object-over-store",
        &with_cache_table("memory = \"4MiB\"\nmax_object_size = ‸\"8MiB\""),
        "`max_object_size`: must be at most `memory`",
    );
}

#[test]
fn an_unknown_key_of_the_cache_table_is_refused() {
    refused(
        "cache-table-typo",
        &with_cache_table("‸memroy = \"4MiB\""),
        "`memroy`: unknown field `memroy`",
    );
}

#[test]
fn an_unknown_key_of_a_route_cache_is_refused() {
    refused(
        "route-cache-typo",
        &with_route_cache(r#"{ stale_if_error = "5m", ‸ttl = "1s" }"#),
        "`ttl`: unknown field `ttl`",
    );
}

#[test]
fn a_zero_lock_timeout_is_refused() {
    refused(
        "zero-lock-timeout",
        &with_route_cache(r#"{ lock_timeout = ‸"0s" }"#),
        "`lock_timeout`: must be greater than zero",
    );
}

#[test]
fn a_valid_cache_config_passes() {
    let text = [
        with_route_cache(
            r#"{ stale_while_revalidate = "10s", stale_if_error = "5m", lock_timeout = "5s", default_ttl = "0s", store = "memory" }"#,
        ),
        "\n[cache]\nmemory = \"256MiB\"\nmax_object_size = \"8MiB\"\n".to_owned(),
    ]
    .concat();
    let output = WeirCommand::new()
        .config_text("cache-config-valid", &text)
        .arg("--check")
        .output();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
