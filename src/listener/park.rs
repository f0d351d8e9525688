//! Parking quiet HTTP/1 keep-alive connections.
//!
//! hyper keeps a connection's buffers (8 KiB and more to read, its cached headers,
//! room for the request future) for as long as the connection is open, so an idle
//! keep-alive connection would cost tens of KiB. Once an HTTP/1 connection has
//! been quiet for `PARK_AFTER` with nothing buffered, weir ends hyper's part of it
//! (hyper sees end of input, which closes an idle HTTP/1 connection without a
//! word), keeps only the socket, and waits for it to become readable; the next
//! request then gets a fresh hyper connection. Only the socket, a timer and the
//! connection's shared facts stay meanwhile: about a KiB.
//!
//! `PARK_AFTER` is short enough that an idle connection sheds its buffers at
//! once for all purposes (and that few connections hold them at any moment, which
//! is what the allocator's high-water mark follows), and long enough that a busy
//! keep-alive client never pays for rebuilding them between back-to-back
//! requests. A client that pauses longer pays a few microseconds to rebuild.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

pub const PARK_AFTER: Duration = Duration::from_millis(10);

/// Where a connection that parks leaves its socket, with the time its
/// `idle_timeout` runs out.
#[derive(Debug)]
pub struct ParkSlot<S>(Mutex<Option<(S, Instant)>>);

impl<S> Default for ParkSlot<S> {
    fn default() -> Self {
        ParkSlot(Mutex::new(None))
    }
}

impl<S> ParkSlot<S> {
    pub fn put(&self, stream: S, idle_deadline: Instant) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some((stream, idle_deadline));
    }

    pub fn take(&self) -> Option<(S, Instant)> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}
