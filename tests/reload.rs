//! Hot reload over real sockets: no request fails while the config changes under
//! load, an invalid config or an unbindable listener changes nothing, listeners are
//! added, kept (same socket) and removed, and SIGHUP re-reads the file.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use support::*;
use weir::control::ReloadError;

/// `[[listeners]]` on `listen`, one route to upstream `app` with `backends`.
fn config_text(listeners: &[&str], strategy: &str, backends: &[SocketAddr]) -> String {
    let mut text = String::new();
    for listen in listeners {
        text += &format!("[[listeners]]\nlisten = \"{listen}\"\n\n");
    }
    let backends: Vec<String> = backends
        .iter()
        .map(|b| format!("{{ address = \"{b}\" }}"))
        .collect();
    text += &format!(
        "[[routes]]\nupstream = \"app\"\n\n[upstreams.app]\nstrategy = \"{strategy}\"\nbackends = [{}]\n",
        backends.join(", ")
    );
    text
}

fn parse(text: &str) -> weir::config::Config {
    weir::config::parse(text, "reload.toml").unwrap()
}

#[tokio::test]
async fn twenty_reloads_under_load_fail_no_request() {
    let [a, b, c] = [
        spawn_named_backend("a").await,
        spawn_named_backend("b").await,
        spawn_named_backend("c").await,
    ];
    let first = parse(&config_text(
        &["127.0.0.1:0"],
        "round_robin",
        &[a.addr, b.addr],
    ));
    let lb = start_lb_config(first).await;
    let control = lb.running.control();

    // Four clients, each looping over keep-alive connections until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (url, stop, answered) = (lb.url("/"), stop.clone(), answered.clone());
        clients.spawn(async move {
            let client = client();
            let mut failures = Vec::new();
            // Bounded: at most 20,000 requests per client.
            for _ in 0..20_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let reply = get(&client, &url, None).await;
                if reply.status != 200 {
                    failures.push((reply.status, reply.text()));
                }
                answered.fetch_add(1, Ordering::SeqCst);
            }
            failures
        });
    }

    let sets = [
        ("round_robin", vec![a.addr, b.addr], ["a", "b"]),
        ("least_connections", vec![b.addr, c.addr], ["b", "c"]),
        ("p2c", vec![a.addr, c.addr], ["a", "c"]),
        ("random", vec![b.addr, c.addr], ["b", "c"]),
    ];
    let probe = client();
    for round in 0..20 {
        let (strategy, backends, names) = &sets[round % sets.len()];
        let summary = within(
            "the reload",
            control.apply(parse(&config_text(&["127.0.0.1:0"], strategy, backends))),
        )
        .await
        .unwrap();
        assert_eq!((summary.listeners_kept, summary.backends), (1, 2));
        // Requests that start after the reload reach only the new backends.
        for _ in 0..6 {
            let reply = get(&probe, &lb.url("/"), None).await;
            assert!(
                names.contains(&reply.text().as_str()),
                "round {round}: {} answered, config has {names:?}",
                reply.text()
            );
        }
        // Let some load run on this config before the next change.
        let seen = answered.load(Ordering::SeqCst);
        within("load between reloads", async {
            while answered.load(Ordering::SeqCst) < seen + 400 {
                tokio::task::yield_now().await;
            }
        })
        .await;
    }
    stop.store(true, Ordering::SeqCst);
    let mut failures = Vec::new();
    while let Some(result) = within("the clients", clients.join_next()).await {
        failures.extend(result.unwrap());
    }
    assert_eq!(failures, [], "requests failed during reloads");
    assert!(answered.load(Ordering::SeqCst) >= 8000);
}

#[tokio::test]
async fn an_invalid_file_changes_nothing() {
    let a = spawn_named_backend("a").await;
    let b = spawn_named_backend("b").await;
    let dir = std::env::temp_dir().join(format!("weir-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("invalid.toml");
    let text = config_text(&["127.0.0.1:0"], "round_robin", &[a.addr]);
    std::fs::write(&path, &text).unwrap();
    let (trigger, shutdown) = weir::shutdown::channel();
    let running = within(
        "weir to start",
        weir::start_from(parse(&text), Some(path.clone()), shutdown),
    )
    .await
    .unwrap();
    let control = running.control();
    let url = format!("http://{}/", running.addresses[0]);

    std::fs::write(
        &path,
        text.replace("round_robin", "fastest")
            .replace(&a.addr.to_string(), &b.addr.to_string()),
    )
    .unwrap();
    let err = within("the reload", control.reload_from_file())
        .await
        .unwrap_err();
    let ReloadError::Config(err) = err else {
        panic!("{err}")
    };
    let problem = &err.problems()[0];
    assert_eq!(
        (problem.line, problem.key.as_deref()),
        (8, Some("strategy"))
    );
    assert!(
        err.to_string()
            .contains(&format!("{}:8:12", path.display())),
        "{err}"
    );
    assert_eq!(get(&client(), &url, None).await.text(), "a");

    // Fixed, the same file goes in.
    std::fs::write(
        &path,
        text.replace(&a.addr.to_string(), &b.addr.to_string()),
    )
    .unwrap();
    within("the reload", control.reload_from_file())
        .await
        .unwrap();
    assert_eq!(get(&client(), &url, None).await.text(), "b");
    trigger.trigger();
    within("weir finishes draining", running.wait()).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn listeners_are_added_kept_on_their_socket_and_removed() {
    let a = spawn_named_backend("a").await;
    let kept_listen = free_addr().await;
    let lb = start_lb_config(parse(&config_text(
        &[&kept_listen.to_string()],
        "round_robin",
        &[a.addr],
    )))
    .await;
    let control = lb.running.control();
    // A keep-alive connection open on the listener that stays.
    let mut open = RawConn::connect(kept_listen).await;
    open.send(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n").await;
    assert_eq!(open.read_response().await.unwrap().status, 200);

    let added_listen = free_addr().await;
    let both = [kept_listen.to_string(), added_listen.to_string()];
    let summary = within(
        "the reload",
        control.apply(parse(&config_text(
            &[&both[0], &both[1]],
            "round_robin",
            &[a.addr],
        ))),
    )
    .await
    .unwrap();
    assert_eq!(
        (
            summary.listeners_added,
            summary.listeners_kept,
            summary.listeners_removed
        ),
        (1, 1, 0)
    );
    assert_eq!(
        within("the addresses", control.addresses()).await,
        [kept_listen, added_listen]
    );
    // The open connection was not cut, and the new listener serves.
    open.send(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n").await;
    assert_eq!(open.read_response().await.unwrap().status, 200);
    assert_eq!(
        get(&client(), &format!("http://{added_listen}/"), None)
            .await
            .text(),
        "a"
    );

    let summary = within(
        "the reload",
        control.apply(parse(&config_text(&[&both[1]], "round_robin", &[a.addr]))),
    )
    .await
    .unwrap();
    assert_eq!((summary.listeners_kept, summary.listeners_removed), (1, 1));
    // The removed listener drains: its idle connection is closed, new ones refused.
    assert!(
        open.closed_within_bound().await,
        "idle connection of a removed listener stays open"
    );
    within("the removed port to refuse", async {
        while tokio::net::TcpStream::connect(kept_listen).await.is_ok() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!(
        get(&client(), &format!("http://{added_listen}/"), None)
            .await
            .text(),
        "a"
    );
}

#[tokio::test]
async fn a_listener_that_cannot_be_bound_fails_the_whole_reload() {
    let a = spawn_named_backend("a").await;
    let b = spawn_named_backend("b").await;
    let lb = start_lb_config(parse(&config_text(
        &["127.0.0.1:0"],
        "round_robin",
        &[a.addr],
    )))
    .await;
    let control = lb.running.control();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();

    let err = within(
        "the reload",
        control.apply(parse(&config_text(
            &["127.0.0.1:0", &taken_addr],
            "round_robin",
            &[b.addr],
        ))),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ReloadError::Bind { .. }), "{err}");
    assert!(err.to_string().contains(&taken_addr), "{err}");
    // Nothing was applied: the old backend still answers, one listener only.
    assert_eq!(get(&client(), &lb.url("/"), None).await.text(), "a");
    assert_eq!(within("the addresses", control.addresses()).await.len(), 1);
}

#[tokio::test]
async fn a_reload_starts_health_checks_where_the_config_adds_them() {
    let a = spawn_named_backend("a").await;
    let text = config_text(&["127.0.0.1:0"], "round_robin", &[a.addr]);
    let lb = start_lb_config(parse(&text)).await;
    assert_eq!(get(&client(), &lb.url("/"), None).await.text(), "a");
    let control = lb.running.control();
    within(
        "the reload",
        control.apply(parse(&format!(
            "{text}\n[upstreams.app.health_check]\npath = \"/check\"\ninterval = \"50ms\"\n"
        ))),
    )
    .await
    .unwrap();
    within("a health check", async {
        while !a
            .requests
            .lock()
            .unwrap()
            .iter()
            .any(|r| r.uri.path() == "/check")
        {
            tokio::task::yield_now().await;
        }
    })
    .await;
}

#[test]
fn sighup_rereads_the_file() {
    use std::io::{Read, Write};
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (a, b) = runtime.block_on(async {
        (
            spawn_named_backend("a").await,
            spawn_named_backend("b").await,
        )
    });
    let text = config_text(&["127.0.0.1:0"], "round_robin", &[a.addr]);
    let weir = WeirCommand::new().config_text("sighup", &text).start();
    let listen = weir.listening();
    let fetch = || -> Option<String> {
        let mut stream = std::net::TcpStream::connect(listen).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
            .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        response.rsplit("\r\n\r\n").next().map(str::to_owned)
    };
    let started = fetch().as_deref() == Some("a");
    std::fs::write(
        weir.config_path(),
        text.replace(&a.addr.to_string(), &b.addr.to_string()),
    )
    .unwrap();
    let hup = weir.signal("HUP");
    weir.wait_for_log("config reloaded");
    let reloaded = fetch().as_deref() == Some("b");
    drop(weir);
    drop((a, b));
    assert!(started, "weir did not start serving");
    assert!(hup);
    assert!(reloaded, "SIGHUP did not bring the new backend in");
}
