//! The drain signal: one trigger, any number of listeners waiting on it.

use tokio::sync::watch;

/// Fires the drain once; dropping it without firing leaves the waiters waiting.
#[derive(Debug)]
pub struct ShutdownTrigger(watch::Sender<bool>);

/// A cloneable handle that resolves once the drain has been triggered.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger(tx), Shutdown(rx))
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }
}

impl Shutdown {
    /// True once the drain has been triggered.
    pub fn has_fired(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves when the drain starts (at once if it already has).
    pub async fn wait(&mut self) {
        // An error means the trigger is gone without firing: wait forever then.
        if self.0.wait_for(|&fired| fired).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
