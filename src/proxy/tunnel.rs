//! Tunnels for upgraded connections (WebSocket and other `Upgrade` protocols):
//! once both sides have switched protocols, bytes are copied both ways until
//! either side closes.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tracing::debug;

use super::RequestGuard;

/// Runs the tunnel in its own task. `guard` keeps the client connection counted as
/// busy for the tunnel's lifetime, so its header and idle timeouts stay out of it.
pub fn spawn(client: OnUpgrade, backend: OnUpgrade, guard: RequestGuard) {
    tokio::spawn(async move {
        let _guard = guard;
        let (client, backend) = match tokio::try_join!(client, backend) {
            Ok(both) => both,
            Err(err) => {
                debug!(error = %err, "upgrade did not complete");
                return;
            }
        };
        let (mut client, mut backend) = (TokioIo::new(client), TokioIo::new(backend));
        match tokio::io::copy_bidirectional(&mut client, &mut backend).await {
            Ok((up, down)) => debug!(bytes_up = up, bytes_down = down, "tunnel closed"),
            Err(err) => debug!(error = %err, "tunnel ended with an error"),
        }
    });
}
