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
    socket.send(Message::binary(large.clone())).await.unwrap();
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
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://{}/", lb.addr))
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
