//! Tunnels for upgraded connections (WebSocket and other `Upgrade` protocols):
//! once both sides have switched protocols, bytes are copied both ways until
//! either side closes, or until no byte has moved either way for `idle_timeout`.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tracing::debug;

use super::RequestGuard;
use crate::upstream::InFlight;
use crate::upstream::http1::Upgraded;

/// A client connection after its protocol switch, as the tunnel copies it.
pub type ClientIo = Box<dyn TunnelIo>;

/// What a tunnel's client side must be.
pub trait TunnelIo: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> TunnelIo for T {}

/// Where the client side of a tunnel comes from: hyper's upgrade (HTTP/2), or
/// weir's HTTP/1 server, which hands its connection over once the 101 is out.
pub enum ClientSide {
    Hyper(OnUpgrade),
    Http1(tokio::sync::oneshot::Receiver<ClientIo>),
}

/// The request extension by which weir's HTTP/1 server offers its connection
/// to a tunnel (only on requests that ask for an upgrade).
#[derive(Clone)]
pub struct Http1Upgrade(
    pub Arc<std::sync::Mutex<Option<tokio::sync::oneshot::Receiver<ClientIo>>>>,
);

impl ClientSide {
    /// The client side of `request`'s upgrade.
    pub fn of<B>(request: &mut http::Request<B>) -> ClientSide {
        let handed = request
            .extensions_mut()
            .remove::<Http1Upgrade>()
            .and_then(|offer| offer.0.lock().unwrap_or_else(|e| e.into_inner()).take());
        match handed {
            Some(handed) => ClientSide::Http1(handed),
            None => ClientSide::Hyper(hyper::upgrade::on(request)),
        }
    }
}

/// Runs the tunnel in its own task until it closes. Writes to the client go
/// through its connection's socket, whose `send_timeout` holds here too.
///
/// Held meanwhile: `guard` keeps the client connection counted as busy, so its
/// header and idle timeouts stay out of it (the tunnel keeps its own idle
/// clock), and its task open: counted in `max_connections`, waited for by a
/// drain; `in_flight` keeps the tunnel counted on its backend.
pub fn spawn(
    client: ClientSide,
    backend: Upgraded,
    guard: RequestGuard,
    in_flight: Option<InFlight>,
    idle_timeout: Duration,
) {
    tokio::spawn(async move {
        let _held = (guard, in_flight);
        let client: ClientIo = match client {
            ClientSide::Hyper(upgrade) => match upgrade.await {
                Ok(client) => Box::new(TokioIo::new(client)),
                Err(err) => {
                    debug!(error = %err, "upgrade did not complete");
                    return;
                }
            },
            ClientSide::Http1(handed) => match handed.await {
                Ok(client) => client,
                Err(_) => {
                    debug!("upgrade did not complete: the client connection ended first");
                    return;
                }
            },
        };
        let start = Instant::now();
        let last_activity = Arc::new(AtomicU64::new(0));
        let mut client = Watched::new(client, &last_activity, start);
        let mut backend = Watched::new(backend, &last_activity, start);
        let idle = async {
            loop {
                let last = start + Duration::from_millis(last_activity.load(Ordering::Relaxed));
                if last.elapsed() >= idle_timeout {
                    return;
                }
                tokio::time::sleep_until(last + idle_timeout).await;
            }
        };
        tokio::select! {
            copied = tokio::io::copy_bidirectional(&mut client, &mut backend) => match copied {
                Ok((up, down)) => debug!(bytes_up = up, bytes_down = down, "tunnel closed"),
                Err(err) => debug!(error = %err, "tunnel ended with an error"),
            },
            () = idle => debug!(?idle_timeout, "tunnel idle; closed"),
        }
    });
}

/// An IO that notes when bytes last moved through it (milliseconds since `start`).
struct Watched<T> {
    io: T,
    last_activity: Arc<AtomicU64>,
    start: Instant,
}

impl<T> Watched<T> {
    fn new(io: T, last_activity: &Arc<AtomicU64>, start: Instant) -> Self {
        Watched {
            io,
            last_activity: last_activity.clone(),
            start,
        }
    }

    fn touch(&self) {
        let now = self.start.elapsed().as_millis() as u64;
        self.last_activity.store(now, Ordering::Relaxed);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = polled
            && n > 0
        {
            this.touch();
        }
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
