//! The proxy's view of a request's fields, whichever way they came: a
//! `HeaderMap` (HTTP/2, and the rare HTTP/1 requests that take that path), or
//! the head weir's HTTP/1 server parsed in place ([`ReceivedRequest`]), read
//! where it lies until the backend's head is written as edits over it.
//!
//! The received head goes with the request as a value of its own beside it,
//! not as one of its `http::Extensions`: an extension costs three
//! allocations and a hash map per request, some 850 instructions (4 % of a
//! small request).

use bytes::Bytes;
use http::{HeaderValue, Request};

use crate::balance::Fields;
use crate::http1::edits::CopiedHead;
use crate::http1::request::ReceivedRequest;
use crate::http1::rewrite::{self, Forwarding};

use super::ProxyError;
use super::forward::ClientFacts;

/// The first value of the field `name` (lower case) of `request`, which came
/// with the head `received` when it is read in place; sharing the head's bytes.
pub(crate) fn value<B>(
    request: &Request<B>,
    received: Option<&ReceivedRequest>,
    name: &http::HeaderName,
) -> Option<HeaderValue> {
    match received {
        Some(received) => {
            let value = Fields::of(request.headers(), Some(received)).first(name.as_str())?;
            HeaderValue::from_maybe_shared(received.bytes.slice_ref(value)).ok()
        }
        None => request.headers().get(name).cloned(),
    }
}

/// Makes the fields of `request`, read in place from `received`, its
/// `HeaderMap`, for the paths that read or change one (an HTTP/2 backend, the
/// cache). Done before any rewriting.
pub(crate) fn into_header_map<B>(
    request: &mut Request<B>,
    received: &mut Option<Box<ReceivedRequest>>,
) -> Result<(), ProxyError> {
    if let Some(received) = received.take() {
        *request.headers_mut() = received.header_map().map_err(ProxyError::BadRequest)?;
    }
    Ok(())
}

/// Writes the backend's head for a request read in place: origin-form
/// target (`target` when its path was normalised), hop-by-hop fields gone,
/// `X-Forwarded-*` as SPEC says, every other line as it came. Kept with the
/// request for weir's HTTP/1 client to send.
pub(crate) fn rewrite_received(
    received: &mut ReceivedRequest,
    target: &http::Uri,
    client: &ClientFacts,
) {
    let normalised = target
        .path_and_query()
        .map(|pq| pq.as_str().as_bytes())
        .filter(|pq| *pq != received.head.path_and_query.of(&received.bytes));
    let forwarding = Forwarding {
        client: client.address.as_bytes(),
        tls: client.tls,
        trusted: client.trusted_proxies.is_some(),
        target: normalised,
        backend_host: None,
        upgrade: false,
    };
    // Room for the head and what the rewrite adds, most often: one allocation.
    let mut out = Vec::with_capacity(received.bytes.len() + 128);
    rewrite::request_edits(
        &received.bytes,
        &received.head,
        &received.fields,
        &forwarding,
        &mut CopiedHead::new(&received.bytes, &mut out),
    );
    received.outgoing = Some(Bytes::from(out));
}
