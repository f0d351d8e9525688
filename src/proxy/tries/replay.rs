//! What may be sent again once it reached a backend, and the copy kept to do it:
//! an idempotent request, with no body or one read whole beforehand.

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Uri, Version};

use crate::config::RetryPolicy;
use crate::http1::request::ReceivedRequest;
use crate::upstream::RequestBody;

/// Methods that may be sent twice (RFC 9110 §9.2.2; SPEC lists these).
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// Whether `policy` lets a request with `method` be tried again after it was sent.
fn replayable(policy: &RetryPolicy, method: &Method) -> bool {
    policy.after_send && policy.attempts > 0 && is_idempotent(method)
}

/// Whether the request body is read whole before forwarding, so that a retry can
/// send it again: only for a replayable request whose announced length is within
/// `max_body_bytes`. Any other body streams.
pub fn keeps_body(
    policy: &RetryPolicy,
    parts: &http::request::Parts,
    received: Option<&ReceivedRequest>,
) -> bool {
    replayable(policy, &parts.method)
        && crate::balance::Fields::of(&parts.headers, received)
            .first("content-length")
            .and_then(|v| std::str::from_utf8(v).ok()?.parse::<u64>().ok())
            .is_some_and(|length| length <= policy.max_body_bytes)
}

/// A copy of a request kept to send it again after it reached a backend. A
/// head read in place is not part of it: the tries hold that for all of them.
#[derive(Debug)]
pub struct Replay {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    body: Option<Bytes>,
}

impl Replay {
    /// The copy of `request` if `policy` lets it be tried again once sent: a
    /// replayable method with an empty or kept body, and no protocol upgrade.
    pub fn of(request: &Request<RequestBody>, policy: &RetryPolicy) -> Option<Replay> {
        if !replayable(policy, request.method()) {
            return None;
        }
        if request.headers().contains_key(http::header::UPGRADE) {
            return None;
        }
        let body = match request.body() {
            RequestBody::Empty => None,
            RequestBody::Full(Some(bytes)) => Some(bytes.clone()),
            RequestBody::Full(None) | RequestBody::Streaming(_) => return None,
        };
        Some(Replay {
            method: request.method().clone(),
            uri: request.uri().clone(),
            version: request.version(),
            headers: request.headers().clone(),
            body,
        })
    }

    pub fn request(&self) -> Request<RequestBody> {
        let body = match &self.body {
            Some(bytes) => RequestBody::Full(Some(bytes.clone())),
            None => RequestBody::Empty,
        };
        let mut request = Request::new(body);
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers.clone();
        request
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            attempts: 2,
            after_send: true,
            budget: None,
            max_body_bytes: 1024,
            backoff: Duration::ZERO,
        }
    }

    #[test]
    fn only_idempotent_methods_with_a_replayable_body_are_replayed() {
        let policy = policy();
        let request = |method: Method, body: RequestBody| {
            let mut request = Request::new(body);
            *request.method_mut() = method;
            request
        };
        assert!(Replay::of(&request(Method::GET, RequestBody::Empty), &policy).is_some());
        let put = request(
            Method::PUT,
            RequestBody::Full(Some(Bytes::from_static(b"x"))),
        );
        let replayed = Replay::of(&put, &policy).unwrap().request();
        assert_eq!(replayed.method(), Method::PUT);
        assert!(matches!(replayed.body(), RequestBody::Full(Some(b)) if b == "x"));
        assert!(Replay::of(&request(Method::POST, RequestBody::Empty), &policy).is_none());
        assert!(Replay::of(&request(Method::PATCH, RequestBody::Empty), &policy).is_none());
        let unsent_only = RetryPolicy::UNSENT_ONLY;
        assert!(Replay::of(&request(Method::GET, RequestBody::Empty), &unsent_only).is_none());
    }

    #[test]
    fn a_body_is_kept_only_when_it_could_be_replayed_and_is_small_enough() {
        let parts = |method: Method, length: Option<&str>| {
            let mut request = Request::new(());
            *request.method_mut() = method;
            if let Some(length) = length {
                request
                    .headers_mut()
                    .insert(http::header::CONTENT_LENGTH, length.parse().unwrap());
            }
            request.into_parts().0
        };
        let policy = policy();
        assert!(keeps_body(&policy, &parts(Method::PUT, Some("1024")), None));
        assert!(!keeps_body(
            &policy,
            &parts(Method::PUT, Some("1025")),
            None
        ));
        assert!(!keeps_body(&policy, &parts(Method::PUT, None), None));
        assert!(!keeps_body(&policy, &parts(Method::POST, Some("10")), None));
        assert!(!keeps_body(
            &RetryPolicy::UNSENT_ONLY,
            &parts(Method::PUT, Some("10")),
            None
        ));
    }
}
