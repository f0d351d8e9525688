//! Who may use the admin API: the token for what changes something, a `Host`
//! that names the listener (against DNS rebinding), and a crowd of idle
//! connections that holds the admin listener and nothing else.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use hyper::Request;
use support::*;

const TOKEN: &str = "s3cret-token-0123456789";

/// weir started from a file with an admin listener and `admin_extra` keys;
/// returns the file's folder so the test can remove it.
async fn start(
    admin: SocketAddr,
    admin_extra: &str,
    backend: SocketAddr,
) -> (
    weir::Running,
    weir::shutdown::ShutdownTrigger,
    std::path::PathBuf,
) {
    let dir = std::env::temp_dir().join(format!(
        "weir-admin-guard-{}-{}",
        std::process::id(),
        admin.port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("weir.toml");
    std::fs::write(
        &path,
        format!(
            "[admin]\nlisten = \"{admin}\"\n{admin_extra}\n\n[[listeners]]\nlisten = \"127.0.0.1:0\"\n\n\
             [[routes]]\nupstream = \"app\"\n\n[upstreams.app]\nbackends = [{{ address = \"{backend}\" }}]\n"
        ),
    )
    .unwrap();
    let config = weir::config::load(&path).unwrap();
    let (trigger, shutdown) = weir::shutdown::channel();
    let running = within(
        "weir to start",
        weir::start_from(config, Some(path), shutdown),
    )
    .await
    .unwrap();
    (running, trigger, dir)
}

async fn post(admin: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = Request::post(format!("http://{admin}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    send(&client(), request.body(empty()).unwrap()).await
}

#[tokio::test]
async fn changes_need_the_token_and_reading_does_not() {
    let backend = spawn_named_backend("a").await;
    let admin = free_addr().await;
    let (running, trigger, dir) = start(admin, &format!("token = \"{TOKEN}\""), backend.addr).await;

    let refused = post(admin, "/reload", &[]).await;
    assert_eq!(refused.status, 401);
    assert_eq!(
        refused.header("www-authenticate"),
        Some("Bearer realm=\"weir admin\"")
    );
    let wrong = post(
        admin,
        "/reload",
        &[("authorization", "Bearer s3cret-token-0123456780")],
    )
    .await;
    assert_eq!(wrong.status, 401);
    let purge = post(admin, "/cache/purge", &[]).await;
    assert_eq!(purge.status, 401);

    let bearer = format!("Bearer {TOKEN}");
    let reloaded = post(admin, "/reload", &[("authorization", &bearer)]).await;
    assert_eq!(reloaded.status, 200, "{}", reloaded.text());
    // Reading needs no token.
    assert_eq!(
        get(&client(), &format!("http://{admin}/status"), None)
            .await
            .status,
        200
    );
    trigger.trigger();
    within("weir to drain", running.wait()).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_host_that_does_not_name_the_listener_is_misdirected() {
    let backend = spawn_named_backend("a").await;
    let admin = free_addr().await;
    let (running, trigger, dir) = start(
        admin,
        "allowed_hosts = [\"weir-admin.internal\"]",
        backend.addr,
    )
    .await;
    let with_host = |host: &'static str| async move {
        get(&client(), &format!("http://{admin}/status"), Some(host)).await
    };
    let rebound = with_host("evil.example").await;
    assert_eq!(rebound.status, 421);
    assert_eq!(
        post(admin, "/reload", &[("host", "evil.example:9901")])
            .await
            .status,
        421
    );
    assert_eq!(with_host("localhost").await.status, 200);
    assert_eq!(with_host("weir-admin.internal:9901").await.status, 200);
    // Without a token, a reload from an allowed host goes through.
    assert_eq!(post(admin, "/reload", &[]).await.status, 200);
    trigger.trigger();
    within("weir to drain", running.wait()).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_to_the_admin_port_leave_the_proxy_serving() {
    let backend = spawn_named_backend("a").await;
    let admin = free_addr().await;
    let (running, trigger, dir) = start(admin, "", backend.addr).await;
    let url = format!("http://{}/", running.addresses[0]);
    // 500 connections that never send a byte: weir takes 64, the kernel's
    // backlog holds some more, and the rest wait for a SYN-ACK that does not
    // come (each attempt is bounded).
    let attempts: Vec<_> = (0..500)
        .map(|_| {
            tokio::spawn(tokio::time::timeout(
                Duration::from_secs(1),
                tokio::net::TcpStream::connect(admin),
            ))
        })
        .collect();
    let mut idle = Vec::new();
    for attempt in attempts {
        if let Ok(Ok(stream)) = attempt.await.unwrap() {
            idle.push(stream);
        }
    }
    assert!(idle.len() >= 64, "{} connected", idle.len());
    for _ in 0..20 {
        assert_eq!(get(&client(), &url, None).await.text(), "a");
    }
    // The admin API itself is held: its 64 connections are taken.
    let held = tokio::time::timeout(
        Duration::from_secs(1),
        client().get(format!("http://{admin}/healthz").parse().unwrap()),
    )
    .await;
    assert!(held.is_err(), "answered past the connection cap: {held:?}");
    // Once they go, the admin API answers again.
    drop(idle);
    let status = within_for(
        Duration::from_secs(30),
        "the admin API to answer again",
        async {
            loop {
                let attempt = tokio::time::timeout(
                    Duration::from_secs(2),
                    client().get(format!("http://{admin}/healthz").parse().unwrap()),
                )
                .await;
                if let Ok(Ok(response)) = attempt {
                    break response.status();
                }
            }
        },
    )
    .await;
    assert_eq!(status, 200);
    trigger.trigger();
    within("weir to drain", running.wait()).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn an_admin_connection_that_sends_nothing_is_closed() {
    use tokio::io::AsyncReadExt;
    let backend = spawn_named_backend("a").await;
    let admin = free_addr().await;
    let (running, trigger, dir) = start(admin, "", backend.addr).await;
    let mut idle = tokio::net::TcpStream::connect(admin).await.unwrap();
    // Closed by weir after its 10 s header timeout: the read ends.
    let mut buf = [0u8; 64];
    let read = within_for(
        Duration::from_secs(20),
        "weir to close the idle connection",
        idle.read(&mut buf),
    )
    .await;
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    trigger.trigger();
    within("weir to drain", running.wait()).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_purge_body_that_stalls_is_answered_408() {
    let backend = spawn_named_backend("a").await;
    let admin = free_addr().await;
    let (running, trigger, dir) = start(admin, "", backend.addr).await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(admin).await.unwrap();
    conn.write_all(
        b"POST /cache/purge HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{\"host\"",
    )
    .await
    .unwrap();
    // The rest never comes: weir gives up after its 10 s body bound.
    let mut answer = Vec::new();
    within_for(
        Duration::from_secs(20),
        "weir to answer the stalled body",
        async {
            let mut buf = [0u8; 1024];
            while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => answer.extend_from_slice(&buf[..n]),
                }
            }
        },
    )
    .await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    trigger.trigger();
    within("weir to drain", running.wait()).await;
    let _ = std::fs::remove_dir_all(dir);
}
