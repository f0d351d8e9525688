//! A listener's drain: every open connection holds a watch on it, serving or
//! parked; draining tells them all to finish and waits until the last is gone.
//!
//! hyper-util's `GracefulShutdown` does this for connections being served, but a
//! parked connection (see `park`) is not being served and must still hear the
//! drain and count as open.

use std::pin::pin;

use hyper_util::server::graceful::GracefulConnection;
use tokio::sync::watch;

#[derive(Debug)]
pub struct Drain(watch::Sender<()>);

/// One connection's view of the drain; the connection counts as open while it lives.
#[derive(Debug)]
pub struct DrainWatch {
    receiver: watch::Receiver<()>,
    /// The drain's signal has been seen (it comes once).
    seen: bool,
}

impl Drain {
    pub fn new() -> Self {
        Drain(watch::channel(()).0)
    }

    pub fn watch(&self) -> DrainWatch {
        DrainWatch {
            receiver: self.0.subscribe(),
            seen: false,
        }
    }

    /// Connections still open.
    pub fn open(&self) -> usize {
        self.0.receiver_count()
    }

    /// Tells every connection to finish, then waits until all are closed.
    pub async fn drain(self) {
        let _ = self.0.send(());
        self.0.closed().await;
    }
}

impl DrainWatch {
    /// Resolves once the drain has started.
    pub async fn started(&mut self) {
        if !self.seen {
            // An error means the listener is gone: drain all the same.
            let _ = self.receiver.changed().await;
            self.seen = true;
        }
    }

    /// Serves `connection` to its end; when the drain starts meanwhile, asks it to
    /// finish its requests in flight and close.
    pub async fn serve<C: GracefulConnection>(&mut self, connection: C) -> C::Output {
        let mut connection = pin!(connection);
        tokio::select! {
            output = connection.as_mut() => return output,
            () = self.started() => connection.as_mut().graceful_shutdown(),
        }
        connection.await
    }
}
