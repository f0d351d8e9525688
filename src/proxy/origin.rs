//! How the cache reaches a route's backends: the pick and the tries of the
//! proxy, on the snapshot the request started with.

use std::sync::{Arc, Mutex};

use http::{Request, header};

use super::error::ProxyError;
use super::forward;
use super::tries::{self, ClientEnds, Tried};
use crate::balance::RequestKey;
use crate::cache::{Origin, Sent};
use crate::snapshot::Snapshot;
use crate::upstream::RequestBody;

/// One client request's way to its upstream, for the cache. It may send more
/// than one request (a revalidation aside); the tries of all add up.
#[derive(Debug)]
pub(super) struct UpstreamOrigin {
    pub snapshot: Arc<Snapshot>,
    pub upstream: usize,
    pub client: ClientEnds,
    /// `Host` names each tried backend (an HTTP/1.0 request without one).
    pub name_backend: bool,
    pub tried: Mutex<Tried>,
}

impl UpstreamOrigin {
    pub fn tried(&self) -> Tried {
        *self.tried.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Origin for UpstreamOrigin {
    type Error = ProxyError;

    fn send(&self, request: Request<RequestBody>) -> Sent<'_, ProxyError> {
        Box::pin(async move {
            let upstream = &self.snapshot.upstreams[self.upstream];
            let pick = tries::pick(
                upstream,
                &RequestKey::of(self.client.address, &request, None),
            )
            .ok_or(ProxyError::NoBackend)?;
            let mut tried = Tried::default();
            let result = tries::forward(
                upstream,
                self.client,
                pick,
                request,
                None,
                self.name_backend,
                &mut tried,
            )
            .await;
            {
                let mut total = self.tried.lock().unwrap_or_else(|p| p.into_inner());
                total.count += tried.count;
                total.backend = tried.backend.or(total.backend);
            }
            let (mut response, pick) = result?;
            forward::take_received_fields(&mut response);
            forward::rewrite_response(response.headers_mut());
            if let Some(cookie) = pick.set_cookie {
                response
                    .headers_mut()
                    .append(header::SET_COOKIE, cookie.clone());
            }
            Ok(response)
        })
    }
}
