//! Parking quiet HTTP/1 keep-alive connections.
//!
//! A connection being served holds its loop: a read buffer (8 KiB and more),
//! room for the request in flight, a timer. Once an HTTP/1 connection has
//! been quiet for `PARK_AFTER` with nothing buffered, its loop hands back the
//! socket's halves and ends; the connection's task keeps only them, a timer
//! and the connection's shared facts (about a KiB), and waits for the socket
//! to become readable; the next request then gets a fresh loop.
//!
//! `PARK_AFTER` is short enough that an idle connection sheds its buffers at
//! once for all purposes (and that few connections hold them at any moment, which
//! is what the allocator's high-water mark follows), and long enough that a busy
//! keep-alive client never pays for rebuilding them between back-to-back
//! requests. A client that pauses longer pays a few microseconds to rebuild.

use std::time::Duration;

pub const PARK_AFTER: Duration = Duration::from_millis(10);
