//! WebSocket through weir with a real WebSocket client and server (tungstenite):
//! the upgrade is tunnelled both ways, large and fragmented messages included,
//! until either side closes.

mod support;

use futures_util::{SinkExt, StreamExt};
use support::*;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

/// A WebSocket server echoing every data message back.
async fn spawn_echo_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut socket) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(message)) = socket.next().await {
                    if message.is_text() || message.is_binary() {
                        if socket.send(message).await.is_err() {
                            return;
                        }
                    } else if message.is_close() {
                        return;
                    }
                }
            });
        }
    });
    address
}

#[tokio::test]
async fn websocket_messages_go_both_ways_through_weir() {
    let echo = spawn_echo_server().await;
    let lb = start_lb(&one_upstream(&["echo"], ""), &[("echo", echo)]).await;
    let (mut socket, response) = within(
        "the WebSocket handshake",
        tokio_tungstenite::connect_async(format!("ws://{}/chat", lb.addr)),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 101);

    socket.send(Message::text("hello")).await.unwrap();
    assert_eq!(
        within("the echo", socket.next()).await.unwrap().unwrap(),
        Message::text("hello")
    );

    // 4 MiB in one message.
    let large: Vec<u8> = (0..4 << 20).map(|i| (i % 251) as u8).collect();
    within(
        "the large message out",
        socket.send(Message::binary(large.clone())),
    )
    .await
    .unwrap();
    let echoed = within("the large echo", socket.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(echoed.into_data(), large);

    // One text message in three frames.
    for (part, opcode, last) in [
        ("frag", OpCode::Data(Data::Text), false),
        ("men", OpCode::Data(Data::Continue), false),
        ("ted", OpCode::Data(Data::Continue), true),
    ] {
        socket
            .send(Message::Frame(Frame::message(
                part.as_bytes().to_vec(),
                opcode,
                last,
            )))
            .await
            .unwrap();
    }
    assert_eq!(
        within("the fragmented echo", socket.next())
            .await
            .unwrap()
            .unwrap(),
        Message::text("fragmented")
    );

    socket.close(None).await.unwrap();
    // The close handshake completes through the tunnel: the stream ends.
    within("the close", async {
        while let Some(Ok(message)) = socket.next().await {
            assert!(message.is_close(), "{message:?}");
        }
    })
    .await;
}

#[tokio::test]
async fn a_silent_tunnel_is_closed_after_idle_timeout_and_a_busy_one_is_not() {
    let echo = spawn_echo_server().await;
    let config = format!(
        "[[listeners]]\nlisten = \"127.0.0.1:0\"\nidle_timeout = \"300ms\"\n\n{}",
        one_upstream(&["echo"], "")
    );
    let lb = start_lb(&config, &[("echo", echo)]).await;
    let (mut socket, _) = within(
        "the WebSocket handshake",
        tokio_tungstenite::connect_async(format!("ws://{}/", lb.addr)),
    )
    .await
    .unwrap();
    // Busy: a message every 100 ms for a second, three times the idle timeout.
    for i in 0..10 {
        socket.send(Message::text(format!("{i}"))).await.unwrap();
        assert_eq!(
            within("an echo", socket.next()).await.unwrap().unwrap(),
            Message::text(format!("{i}"))
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Silent: weir closes the tunnel, and the client sees its stream end.
    let end = within("the idle close", socket.next()).await;
    assert!(
        !matches!(end, Some(Ok(Message::Text(_) | Message::Binary(_)))),
        "{end:?}"
    );
}

async fn open_tunnel(
    lb: &Lb,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let (mut socket, response) = within(
        "the WebSocket handshake",
        tokio_tungstenite::connect_async(format!("ws://{}/", lb.addr)),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 101);
    socket.send(Message::text("up")).await.unwrap();
    assert_eq!(
        within("an echo", socket.next()).await.unwrap().unwrap(),
        Message::text("up")
    );
    socket
}

#[tokio::test]
async fn tunnels_count_against_max_connections() {
    let echo = spawn_echo_server().await;
    let config = format!(
        "[[listeners]]\nlisten = \"127.0.0.1:0\"\nmax_connections = 2\n\n{}",
        one_upstream(&["echo"], "")
    );
    let lb = start_lb(&config, &[("echo", echo)]).await;
    let first = open_tunnel(&lb).await;
    let _second = open_tunnel(&lb).await;
    // A third client connects (the kernel's backlog takes it) but is not served
    // while both tunnels are open.
    let mut third = RawConn::connect(lb.addr).await;
    third.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let early =
        tokio::time::timeout(std::time::Duration::from_millis(300), third.read_some()).await;
    assert!(early.is_err(), "served past max_connections: {early:?}");
    drop(first);
    // Served now (what the echo server makes of a plain GET does not matter).
    within("the third client's response", third.read_response())
        .await
        .expect("a response");
}

#[tokio::test]
async fn a_tunnel_occupies_its_backend_until_it_closes() {
    let echo = spawn_echo_server().await;
    let lb = start_lb(
        &one_upstream(&["echo"], "max_connections_per_backend = 1\n"),
        &[("echo", echo)],
    )
    .await;
    let mut socket = open_tunnel(&lb).await;
    let reply = get(&client(), &lb.url("/"), None).await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    socket.close(None).await.unwrap();
    while let Some(Ok(_)) = within("the close", socket.next()).await {}
    drop(socket);
    within("the backend's slot back", async {
        loop {
            let reply = get(&client(), &lb.url("/"), None).await;
            if reply.status != 503 {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_drain_waits_for_an_open_tunnel() {
    let echo = spawn_echo_server().await;
    let config =
        "[runtime]\nshutdown_timeout = \"60s\"\n".to_owned() + &one_upstream(&["echo"], "");
    let lb = start_lb(&config, &[("echo", echo)]).await;
    let mut socket = open_tunnel(&lb).await;
    lb.trigger.trigger();
    let mut drained = std::pin::pin!(lb.running.wait());
    // Draining: the tunnel still carries messages, and the drain is not over.
    for i in 0..3 {
        socket.send(Message::text(format!("{i}"))).await.unwrap();
        tokio::select! {
            echoed = within("an echo while draining", socket.next()) => {
                assert_eq!(echoed.unwrap().unwrap(), Message::text(format!("{i}")));
            }
            () = &mut drained => panic!("the drain ended with a tunnel open"),
        }
    }
    socket.close(None).await.unwrap();
    while let Some(Ok(_)) = within("the close", socket.next()).await {}
    drop(socket);
    within("the drain once the tunnel closed", drained).await;
}
