//! The tests' Redis (`support::redis`): a real `redis-server` on loopback that
//! answers once started, reads and writes through `command`, goes down with
//! `stop` and comes back empty on the same port with `restart`.

mod support;

use std::net::TcpStream;
use std::time::Duration;

use support::redis::RedisServer;

/// Far above a refused loopback connect, which fails at once.
const CONNECT_BOUND: Duration = Duration::from_secs(2);

fn refuses_connections(server: &RedisServer) -> bool {
    TcpStream::connect_timeout(&server.addr(), CONNECT_BOUND).is_err()
}

#[test]
fn starts_and_answers_ping() {
    let server = RedisServer::start();
    assert_eq!(server.command(&["PING"]), "PONG");
    assert_eq!(
        server.url(),
        format!("redis://127.0.0.1:{}/0", server.port())
    );
    // No persistence: nothing would be written to its folder.
    assert_eq!(server.command(&["CONFIG", "GET", "save"]), "save\n");
    assert_eq!(
        server.command(&["CONFIG", "GET", "appendonly"]),
        "appendonly\nno"
    );
}

#[test]
fn command_reads_back_what_it_wrote() {
    let server = RedisServer::start();
    assert_eq!(server.command(&["DBSIZE"]), "0");
    assert_eq!(server.command(&["KEYS", "*"]), "");
    assert_eq!(server.command(&["SET", "greeting", "hello"]), "OK");
    assert_eq!(server.command(&["GET", "greeting"]), "hello");
    // A value is read by its length, CRLF and all.
    let value = "two lines\r\nand spaces";
    assert_eq!(server.command(&["SET", "lines", value]), "OK");
    assert_eq!(server.command(&["GET", "lines"]), value);
    assert_eq!(server.command(&["GET", "missing"]), "(nil)");
    assert_eq!(server.command(&["DBSIZE"]), "2");
    let mut keys: Vec<String> = server
        .command(&["KEYS", "*"])
        .lines()
        .map(str::to_owned)
        .collect();
    keys.sort();
    assert_eq!(keys, ["greeting", "lines"]);
    assert_eq!(server.command(&["INCR", "count"]), "1");
    assert!(
        server.command(&["INCR", "greeting"]).starts_with("-ERR "),
        "an error reply keeps its sign"
    );
}

#[test]
fn stop_makes_connects_fail() {
    let mut server = RedisServer::start();
    assert_eq!(server.command(&["PING"]), "PONG");
    server.stop();
    assert!(refuses_connections(&server));
    assert!(server.try_command(&["PING"]).is_err());
    // Twice is harmless.
    server.stop();
}

#[test]
fn restart_answers_again_on_the_same_port_and_empty() {
    let mut server = RedisServer::start();
    let port = server.port();
    assert_eq!(server.command(&["SET", "kept", "no"]), "OK");
    server.stop();
    server.restart();
    assert_eq!(server.port(), port);
    assert_eq!(server.command(&["PING"]), "PONG");
    assert_eq!(server.command(&["DBSIZE"]), "0");
    // From running, too.
    assert_eq!(server.command(&["SET", "kept", "no"]), "OK");
    server.restart();
    assert_eq!(server.port(), port);
    assert_eq!(server.command(&["GET", "kept"]), "(nil)");
}

#[test]
fn two_servers_are_apart() {
    let a = RedisServer::start();
    let b = RedisServer::start();
    assert_ne!(a.port(), b.port());
    assert_eq!(a.command(&["SET", "only", "a"]), "OK");
    assert_eq!(b.command(&["GET", "only"]), "(nil)");
}

#[test]
fn dropping_kills_the_server() {
    let server = RedisServer::start();
    let probe = RedisServer::start();
    let addr = server.addr();
    drop(server);
    assert!(TcpStream::connect_timeout(&addr, CONNECT_BOUND).is_err());
    // Only its own process: the other one still answers.
    assert_eq!(probe.command(&["PING"]), "PONG");
}

#[test]
fn restart_waits_out_a_port_taken_for_a_moment() {
    let mut server = RedisServer::start();
    server.stop();
    let squatter = std::net::TcpListener::bind(server.addr()).unwrap();
    // Released from another thread while `restart` tries again.
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        drop(squatter);
    });
    server.restart();
    release.join().unwrap();
    assert_eq!(server.command(&["PING"]), "PONG");
    assert!(
        server.log().contains("Address already in use"),
        "the first launches found the port taken"
    );
}
