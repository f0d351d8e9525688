//! weir with more than one worker, as a process: every worker accepts on every
//! listener, a reload's new listener is served by all of them, and the drain
//! waits for the requests each worker has in flight.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use support::process::WeirCommand;
use support::*;
use tokio::sync::Semaphore;

fn config(listeners: &[&str], backend: SocketAddr) -> String {
    let mut text = String::from("[runtime]\nworkers = 2\nshutdown_timeout = \"10s\"\n\n");
    for listen in listeners {
        text.push_str(&format!("[[listeners]]\nlisten = \"{listen}\"\n\n"));
    }
    text.push_str(&format!(
        "[[routes]]\nupstream = \"app\"\n\n[upstreams.app]\nbackends = [{{ address = \"{backend}\" }}]\n"
    ));
    text
}

/// `count` requests for `path`, each on a connection of its own and all at
/// once, so that every worker takes some: each must be answered 200.
async fn all_answered(address: SocketAddr, path: &'static str, count: usize) {
    let requests: Vec<_> = (0..count)
        .map(|_| tokio::spawn(status_of_get(address, path)))
        .collect();
    for request in requests {
        assert_eq!(within("a request", request).await.unwrap(), 200);
    }
}

/// The names of the process's threads.
fn thread_names(pid: u32) -> Vec<String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .collect()
}

/// A backend that answers `/slow` only once the test lets it: each permit
/// added answers one.
async fn backend(release: Arc<Semaphore>) -> Backend {
    spawn_backend(move |request| {
        let release = release.clone();
        async move {
            if request.uri().path() == "/slow" {
                release.acquire().await.unwrap().forget();
            }
            text(200, "ok")
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_worker_serves_and_drains_its_own_requests() {
    let release = Arc::new(Semaphore::new(0));
    let backend = backend(release.clone()).await;
    let weir = WeirCommand::new()
        .config_text("workers-drain", &config(&["127.0.0.1:0"], backend.addr))
        .start();
    let address = weir.listening();

    // A thread names itself once it runs, which may be after weir listens.
    within("both workers to be named", async {
        loop {
            let mut names = thread_names(weir.id());
            names.retain(|name| name.starts_with("weir-worker-"));
            names.sort();
            if names == ["weir-worker-0", "weir-worker-1"] {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;

    all_answered(address, "/", 64).await;

    // Requests in flight when the drain starts, on whichever worker took them.
    let slow: Vec<_> = (0..8)
        .map(|_| tokio::spawn(status_of_get(address, "/slow")))
        .collect();
    within("the slow requests to reach the backend", async {
        while backend.request_count() < 64 + 8 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(weir.signal("TERM"));
    // Each worker stops accepting on its own handle on the socket.
    weir.wait_for_log_count("stopped accepting", 2);
    release.add_permits(8);
    for request in slow {
        assert_eq!(within("a slow request", request).await.unwrap(), 200);
    }
    let output = tokio::task::spawn_blocking(move || weir.wait_for_exit())
        .await
        .unwrap();
    assert!(output.status.success(), "{output:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_added_by_reload_is_served_by_every_worker() {
    let backend = backend(Arc::new(Semaphore::new(0))).await;
    let weir = WeirCommand::new()
        .config_text("workers-reload", &config(&["127.0.0.1:0"], backend.addr))
        .start();
    weir.listening();
    let added = free_addr().await;
    std::fs::write(
        weir.config_path(),
        config(&["127.0.0.1:0", &added.to_string()], backend.addr),
    )
    .unwrap();
    assert!(weir.signal("HUP"));
    weir.wait_for_log("config reloaded");
    all_answered(added, "/", 64).await;
    // Dropped, then stopped: every worker drops its handle on the socket.
    std::fs::write(weir.config_path(), config(&["127.0.0.1:0"], backend.addr)).unwrap();
    assert!(weir.signal("HUP"));
    within("the removed listener's socket to close", async {
        while tokio::net::TcpStream::connect(added).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}
