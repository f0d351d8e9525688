//! The access log over real sockets: one line per request with every field, in
//! JSON or combined format, and a reopened file after rotation and reload.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::*;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("weir-access-log-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The file's lines once it has `n` of them. The writer is a thread of weir's
/// with no event to await: the file is polled, 10 ms apart, for at most 10 s.
async fn lines(path: &Path, n: usize) -> Vec<String> {
    for _ in 0..1000 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() >= n {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{} has fewer than {n} lines", path.display());
}

fn config(path: &Path, format: &str, backend: std::net::SocketAddr) -> weir::config::Config {
    let text = format!(
        "[logging]\naccess_log = \"{}\"\naccess_log_format = \"{format}\"\n\n\
         [[listeners]]\nlisten = \"127.0.0.1:0\"\n\n[[routes]]\npath_prefix = \"/app\"\nupstream = \"app\"\n\n\
         [upstreams.app]\nbackends = [{{ address = \"{backend}\" }}]\n",
        path.display()
    );
    weir::config::parse(&text, "access-log.toml").unwrap()
}

#[tokio::test]
async fn json_lines_carry_every_field() {
    let backend = spawn_named_backend("hello, world!").await;
    let dir = temp_dir("json");
    let path = dir.join("access.log");
    let lb = start_lb_config(config(&path, "json", backend.addr)).await;
    let client = client();
    assert_eq!(get(&client, &lb.url("/app/x?q=1"), None).await.status, 200);
    assert_eq!(get(&client, &lb.url("/nowhere"), None).await.status, 404);

    let lines = lines(&path, 2).await;
    let first: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(first["client"], "127.0.0.1");
    assert_eq!(
        (first["method"].as_str(), first["path"].as_str()),
        (Some("GET"), Some("/app/x?q=1"))
    );
    assert_eq!(
        (first["status"].as_u64(), first["bytes"].as_u64()),
        (Some(200), Some(13))
    );
    assert_eq!(first["upstream"], "app");
    assert_eq!(first["backend"], backend.addr.to_string());
    assert_eq!(first["attempts"], 1);
    assert!(first["duration"].as_f64().unwrap() > 0.0);
    assert!(first["time"].as_str().unwrap().ends_with('Z'));
    let second: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(
        (
            second["status"].as_u64(),
            second["upstream"].is_null(),
            second["attempts"].as_u64()
        ),
        (Some(404), true, Some(0))
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn combined_lines_and_reopen_after_rotation() {
    let backend = spawn_named_backend("ok").await;
    let dir = temp_dir("combined");
    let path = dir.join("access.log");
    let lb = start_lb_config(config(&path, "combined", backend.addr)).await;
    let request = hyper::Request::get(lb.url("/app"))
        .header("user-agent", "test-agent")
        .header("referer", "https://from.test/a")
        .body(empty())
        .unwrap();
    assert_eq!(send(&client(), request).await.status, 200);
    let line = lines(&path, 1).await.remove(0);
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
    let tail = format!(
        "\"GET /app HTTP/1.1\" 200 2 \"https://from.test/a\" \"test-agent\" app {} ",
        backend.addr
    );
    assert!(line.contains(&tail), "{line}");
    assert!(line.ends_with(" 1"), "{line}");

    // Rotation: the file is moved away, a reload reopens the configured path.
    let rotated = dir.join("access.log.1");
    std::fs::rename(&path, &rotated).unwrap();
    within(
        "the reload",
        lb.running
            .control()
            .apply(config(&path, "combined", backend.addr)),
    )
    .await
    .unwrap();
    assert_eq!(get(&client(), &lb.url("/app"), None).await.status, 200);
    assert_eq!(lines(&path, 1).await.len(), 1);
    assert_eq!(
        std::fs::read_to_string(&rotated).unwrap().lines().count(),
        1
    );
    let _ = std::fs::remove_dir_all(&dir);
}
