//! `weir status`, `weir reload` and `weir cache purge` against a running weir:
//! found through its config file (or `--admin`), with its token.

mod support;

use std::process::Output;

use support::process::{WeirCommand, WeirProcess};
use support::*;

const TOKEN: &str = "cli-token-0123456789abcdef";

/// A running weir (a process) with an admin listener, a token, and a cached route.
async fn running(name: &str, backend: std::net::SocketAddr) -> (WeirProcess, std::net::SocketAddr) {
    let admin = free_addr().await;
    let text = format!(
        "[admin]\nlisten = \"{admin}\"\ntoken = \"{TOKEN}\"\n\n[[listeners]]\nlisten = \"127.0.0.1:0\"\n\n\
         [[routes]]\nupstream = \"app\"\ncache = true\n\n\
         [upstreams.app]\nbackends = [{{ address = \"{backend}\" }}]\n"
    );
    let weir = WeirCommand::new().config_text(name, &text).start();
    weir.listening();
    (weir, admin)
}

/// Runs the weir binary with `args` (blocking, off the runtime) to its end.
async fn cli(args: &[String]) -> Output {
    let args = args.to_vec();
    within(
        "the command",
        tokio::task::spawn_blocking(move || {
            let mut command = WeirCommand::new();
            for arg in &args {
                command = command.arg(arg);
            }
            command.output()
        }),
    )
    .await
    .unwrap()
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reload_and_purge_from_the_command_line() {
    let backend = spawn_named_backend("a").await;
    let (weir, admin) = running("admin-cli-status", backend.addr).await;
    let config = weir.config_path().display().to_string();

    let status = cli(&strings(&["status", "--config", &config])).await;
    let table = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{status:?}");
    assert!(
        table.contains("upstream app (round_robin): 1 of 1 usable"),
        "{table}"
    );
    assert!(table.contains(&backend.addr.to_string()), "{table}");

    let json = cli(&strings(&[
        "status",
        "--admin",
        &admin.to_string(),
        "--json",
    ]))
    .await;
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(value["upstreams"][0]["name"], "app");

    // The token comes from the config file...
    let reload = cli(&strings(&["reload", "--config", &config])).await;
    assert!(reload.status.success(), "{reload:?}");
    assert!(String::from_utf8_lossy(&reload.stdout).contains("weir: reloaded: 1 upstreams"));
    // ... and without it the admin API refuses.
    let refused = cli(&strings(&["reload", "--admin", &admin.to_string()])).await;
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("401"),
        "{refused:?}"
    );

    let purge = cli(&strings(&[
        "cache",
        "purge",
        "--config",
        &config,
        "--host",
        "site.example",
        "--prefix",
        "/img/",
    ]))
    .await;
    assert!(purge.status.success(), "{purge:?}");
    assert!(
        String::from_utf8_lossy(&purge.stdout).contains("weir: purged 0 in memory"),
        "{purge:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_the_file_refuses_prints_where_and_changes_nothing() {
    let backend = spawn_named_backend("a").await;
    let (weir, _admin) = running("admin-cli-refused", backend.addr).await;
    let path = weir.config_path();
    let good = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        good.replace("upstream = \"app\"", "upstream = \"nope\""),
    )
    .unwrap();
    // The admin address and token are read from the file as it was, so give them.
    let admin = good
        .lines()
        .find_map(|l| l.strip_prefix("listen = \""))
        .unwrap()
        .trim_end_matches('"')
        .to_owned();
    let reload = cli(&strings(&["reload", "--admin", &admin, "--token", TOKEN])).await;
    assert!(!reload.status.success());
    let stderr = String::from_utf8_lossy(&reload.stderr);
    assert!(
        stderr.contains("the running config is unchanged"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{}:", path.display())) && stderr.contains("`upstream`"),
        "{stderr}"
    );
}

#[tokio::test]
async fn an_unreachable_admin_api_is_a_clear_error() {
    let address = refused_addr().await;
    let status = cli(&strings(&["status", "--admin", &address.to_string()])).await;
    assert!(!status.status.success());
    let stderr = String::from_utf8_lossy(&status.stderr);
    assert!(
        stderr.contains(&format!("cannot reach the admin API at {address}")),
        "{stderr}"
    );
}
