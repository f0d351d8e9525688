//! Admission under `max_connections_per_backend`: a request is counted in on the
//! picked backend, or on another with room, or waits in the upstream's queue for
//! `queue_timeout`.

use std::net::IpAddr;
use std::sync::atomic::Ordering;

use http::Request;

use super::pick::{Pick, pick_where};
use crate::balance::RequestKey;
use crate::http1::request::ReceivedRequest;
use crate::upstream::{RequestBody, SlotWaiters, Upstream, UpstreamError};

/// Counts the request in on the picked backend, or on another one with room
/// when it is at `limit`. When every usable backend is at its limit, waits up
/// to `queue_timeout` for a slot, else fails at once.
pub(super) async fn admit<'u>(
    upstream: &'u Upstream,
    client: IpAddr,
    pick: &mut Pick<'u>,
    request: &Request<RequestBody>,
    received: Option<&ReceivedRequest>,
    tried: &[usize],
    limit: u32,
) -> Result<(), UpstreamError> {
    let queue_until = upstream
        .queue_timeout
        .map(|timeout| tokio::time::Instant::now() + timeout);
    let room = |i: usize| upstream.backends[i].state.in_flight() < limit;
    loop {
        if pick.backend.state.try_start_request(limit) {
            return Ok(());
        }
        let key = RequestKey::of(client, request, received);
        let other = pick_where(upstream, &key, &|i| room(i) && !tried.contains(&i))
            .or_else(|| pick_where(upstream, &key, &room));
        if let Some(other) = other {
            *pick = other;
            continue;
        }
        let Some(until) = queue_until else {
            return Err(UpstreamError::AtCapacity);
        };
        let slots = pick.backend.state.slots();
        let freed = slots.freed.notified();
        tokio::pin!(freed);
        freed.as_mut().enable();
        let _waiting = Waiting::register(slots);
        // A slot freed between the pick above and the registration is seen here.
        let missed = pick_where(upstream, &key, &room).is_some();
        let woken = missed || tokio::time::timeout_at(until, freed).await.is_ok();
        if !woken {
            return Err(UpstreamError::AtCapacity);
        }
    }
}

/// Counts a request as queued for a slot while it lives (also when the request
/// is dropped mid-wait).
struct Waiting<'a>(&'a SlotWaiters);

impl<'a> Waiting<'a> {
    fn register(slots: &'a SlotWaiters) -> Self {
        slots.waiting.fetch_add(1, Ordering::SeqCst);
        Waiting(slots)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}
