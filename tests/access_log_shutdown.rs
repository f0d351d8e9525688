//! The access log's last lines at the end of the process: `access_log::finish`
//! has every writer write out what it buffered before returning. A test binary of
//! its own: `finish` closes every access log of the process.

mod support;

use std::time::Duration;

use support::*;

#[tokio::test]
async fn finish_writes_every_buffered_line_before_returning() {
    let backend = spawn_named_backend("ok").await;
    let dir = std::env::temp_dir().join(format!("weir-access-log-finish-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("access.log");
    let text = format!(
        "[logging]\naccess_log = \"{}\"\n\n\
         [[listeners]]\nlisten = \"127.0.0.1:0\"\n\n[[routes]]\nupstream = \"app\"\n\n\
         [upstreams.app]\nbackends = [{{ address = \"{}\" }}]\n",
        path.display(),
        backend.addr
    );
    let lb = start_lb_config(weir::config::parse(&text, "finish.toml").unwrap()).await;
    let client = client();
    for _ in 0..50 {
        assert_eq!(get(&client, &lb.url("/"), None).await.status, 200);
    }
    // No waiting for the writer's next round: `finish` is what makes the lines land.
    weir::access_log::finish(Duration::from_secs(5));
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(text.lines().count(), 50, "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}
