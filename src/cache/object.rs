//! A stored response: its head as it will be served again, its body, when it
//! arrived and how fresh it is, and the request header values it varies on.
//! What a new request may do with it is decided here too.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, StatusCode};

use super::directives::{RequestDirectives, ResponseDirectives};
use super::freshness;
use crate::config::RouteCache;

/// One stored response.
#[derive(Debug, Clone)]
pub struct Stored {
    pub status: StatusCode,
    /// As received, less what is never stored (hop-by-hop fields, `Age`).
    pub headers: HeaderMap,
    pub body: Bytes,
    pub response_time: SystemTime,
    /// Its age on arrival (RFC 9111 §4.2.3).
    pub initial_age: Duration,
    pub lifetime: Duration,
    pub directives: ResponseDirectives,
    /// The request header values of the fields its `Vary` names.
    pub vary: Vary,
}

/// The fields a response varies on, with the values of the request it answered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vary(pub Vec<(HeaderName, Option<String>)>);

/// What a stored response can do for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usable {
    /// Answer it as it is.
    Fresh,
    /// Stale, and the request accepts that (`max-stale`).
    StaleAccepted,
    /// Stale within `stale-while-revalidate`: answer it, revalidate aside.
    StaleWhileRevalidate,
    /// Ask the backend first (conditionally when it has validators); on an
    /// error, it may still answer if `stale_if_error` allows.
    Revalidate { stale_if_error: bool },
}

impl Stored {
    /// The stored form of a response to a request with `request_headers`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        status: StatusCode,
        mut headers: HeaderMap,
        body: Bytes,
        request_headers: &HeaderMap,
        request_time: SystemTime,
        response_time: SystemTime,
        default_ttl: Duration,
    ) -> Stored {
        let initial_age = freshness::initial_age(&headers, request_time, response_time);
        strip_unstored(&mut headers);
        // A recipient with a clock dates what it caches (RFC 9110 §6.6.1).
        if !headers.contains_key(header::DATE) {
            let date = httpdate::fmt_http_date(response_time);
            headers.insert(
                header::DATE,
                HeaderValue::from_str(&date).expect("an HTTP date"),
            );
        }
        let directives = ResponseDirectives::of(&headers);
        let lifetime =
            freshness::lifetime(status, &headers, &directives, response_time, default_ttl);
        let vary = Vary::of(&headers, request_headers).unwrap_or_default();
        Stored {
            status,
            headers,
            body,
            response_time,
            initial_age,
            lifetime,
            directives,
            vary,
        }
    }

    /// Current age (RFC 9111 §4.2.3).
    pub fn age(&self, now: SystemTime) -> Duration {
        self.initial_age
            + now
                .duration_since(self.response_time)
                .unwrap_or(Duration::ZERO)
    }

    /// Bytes this object holds, as the memory bound counts them.
    pub fn weight(&self) -> u64 {
        let head: usize = self
            .headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 32)
            .sum();
        (self.body.len() + head + 256) as u64
    }

    pub fn matches(&self, request_headers: &HeaderMap) -> bool {
        self.vary.matches(request_headers)
    }

    /// Whether a refreshed response may still be kept: a 304 can turn it
    /// `private` or `no-store`.
    pub fn still_storable(&self) -> bool {
        !(self.directives.no_store || self.directives.private || has_set_cookie(&self.headers))
    }

    pub fn has_validators(&self) -> bool {
        self.headers.contains_key(header::ETAG) || self.headers.contains_key(header::LAST_MODIFIED)
    }

    /// What this response can do for a request with `request` directives.
    pub fn usable(
        &self,
        request: &RequestDirectives,
        now: SystemTime,
        route: &RouteCache,
    ) -> Usable {
        let age = self.age(now);
        let fresh_left = self.lifetime.checked_sub(age).filter(|d| !d.is_zero());
        let staleness = age.saturating_sub(self.lifetime);
        let stale_if_error = !self.directives.forbids_stale()
            && staleness
                < self
                    .directives
                    .stale_if_error
                    .map_or(route.stale_if_error, Duration::from_secs);
        let revalidate = Usable::Revalidate { stale_if_error };
        if request.no_cache || self.directives.no_cache {
            return revalidate;
        }
        if request
            .max_age
            .is_some_and(|max| age > Duration::from_secs(max))
        {
            return revalidate;
        }
        if let Some(min_fresh) = request.min_fresh
            && fresh_left.unwrap_or(Duration::ZERO) < Duration::from_secs(min_fresh)
        {
            return revalidate;
        }
        if fresh_left.is_some() {
            return Usable::Fresh;
        }
        if self.directives.forbids_stale() {
            return revalidate;
        }
        match request.max_stale {
            Some(None) => return Usable::StaleAccepted,
            Some(Some(max)) if staleness <= Duration::from_secs(max) => {
                return Usable::StaleAccepted;
            }
            _ => {}
        }
        let while_revalidate = self
            .directives
            .stale_while_revalidate
            .map_or(route.stale_while_revalidate, Duration::from_secs);
        if staleness < while_revalidate {
            return Usable::StaleWhileRevalidate;
        }
        revalidate
    }

    /// The head to answer with: the stored fields and a current `Age`.
    pub fn head(&self, now: SystemTime) -> HeaderMap {
        let mut headers = self.headers.clone();
        headers.insert(header::AGE, age_value(self.age(now)));
        headers
    }

    /// Adds the validators of this response to a request sent to revalidate it.
    pub fn add_validators(&self, request: &mut HeaderMap) {
        if let Some(etag) = self.headers.get(header::ETAG) {
            request.insert(header::IF_NONE_MATCH, etag.clone());
        }
        if let Some(modified) = self.headers.get(header::LAST_MODIFIED) {
            request.insert(header::IF_MODIFIED_SINCE, modified.clone());
        }
    }

    /// This response updated by a `304` to its revalidation (RFC 9111 §4.3.4):
    /// the 304's fields replace the stored ones, except those that describe the
    /// stored body, and its freshness starts anew.
    pub fn refreshed(
        &self,
        not_modified: &HeaderMap,
        request_headers: &HeaderMap,
        request_time: SystemTime,
        response_time: SystemTime,
        default_ttl: Duration,
    ) -> Stored {
        let mut update = not_modified.clone();
        strip_unstored(&mut update);
        // A cookie in a 304 is meant for the client that asked, never for
        // everyone the stored response answers.
        update.remove(header::SET_COOKIE);
        let mut headers = self.headers.clone();
        let mut replaced: Vec<HeaderName> = Vec::new();
        for (name, value) in &update {
            if KEPT_ON_UPDATE.contains(name) {
                continue;
            }
            if !replaced.contains(name) {
                headers.remove(name);
                replaced.push(name.clone());
            }
            headers.append(name.clone(), value.clone());
        }
        // The 304's Age and Date time the refreshed response.
        let mut timing = headers.clone();
        timing.remove(header::AGE);
        if let Some(age) = not_modified.get(header::AGE) {
            timing.insert(header::AGE, age.clone());
        }
        let mut refreshed = Stored::new(
            self.status,
            headers,
            self.body.clone(),
            request_headers,
            request_time,
            response_time,
            default_ttl,
        );
        refreshed.initial_age = freshness::initial_age(&timing, request_time, response_time);
        refreshed.vary = self.vary.clone();
        refreshed
    }
}

/// Fields a 304 does not update: they describe the stored body (RFC 9111 §3.2).
static KEPT_ON_UPDATE: [HeaderName; 5] = [
    header::CONTENT_LENGTH,
    header::CONTENT_ENCODING,
    header::CONTENT_RANGE,
    header::ETAG,
    HeaderName::from_static("content-md5"),
];

/// Fields never stored: hop-by-hop ones and those naming the proxy hop
/// (RFC 9111 §3.1), and `Age`, which is computed anew on each answer.
fn strip_unstored(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
        "proxy-authentication-info",
        "proxy-authorization",
        "age",
    ] {
        headers.remove(name);
    }
}

fn age_value(age: Duration) -> HeaderValue {
    let mut buffer = itoa::Buffer::new();
    HeaderValue::from_str(buffer.format(age.as_secs())).expect("digits are a valid header value")
}

impl Vary {
    /// The fields `response` varies on with `request`'s values; `None` for
    /// `Vary: *`, which no request matches.
    pub fn of(response: &HeaderMap, request: &HeaderMap) -> Option<Vary> {
        let mut fields = Vec::new();
        for line in response.get_all(header::VARY) {
            let Ok(line) = line.to_str() else { return None };
            for name in line.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                if name == "*" {
                    return None;
                }
                let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
                    return None;
                };
                if !fields.iter().any(|(n, _)| *n == name) {
                    let value = normalised(request, &name);
                    fields.push((name, value));
                }
            }
        }
        Some(Vary(fields))
    }

    pub fn matches(&self, request: &HeaderMap) -> bool {
        self.0
            .iter()
            .all(|(name, value)| normalised(request, name) == *value)
    }
}

/// A request field's values as one list, without the spaces around commas:
/// `a,b` and `a, b` and two lines `a` and `b` select the same variant.
pub(super) fn normalised(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let mut out: Option<String> = None;
    for value in headers.get_all(name) {
        // Bytes that are not UTF-8 are escaped, not replaced: two different
        // values never select the same variant.
        let text = match value.to_str() {
            Ok(text) => std::borrow::Cow::Borrowed(text),
            Err(_) => std::borrow::Cow::Owned(value.as_bytes().escape_ascii().to_string()),
        };
        for item in text.split(',') {
            let out = out.get_or_insert_with(String::new);
            if !out.is_empty() {
                out.push(',');
            }
            out.push_str(item.trim());
        }
    }
    out
}

/// Whether a conditional request (`If-None-Match`, else `If-Modified-Since`) is
/// met by a stored response with `headers`: then the client gets a 304.
pub fn not_modified_for(request: &HeaderMap, headers: &HeaderMap) -> bool {
    if let Some(condition) = request.get(header::IF_NONE_MATCH) {
        let Some(etag) = headers.get(header::ETAG).and_then(|e| e.to_str().ok()) else {
            return false;
        };
        let Ok(condition) = condition.to_str() else {
            return false;
        };
        if condition.trim() == "*" {
            return true;
        }
        // Weak comparison (RFC 9110 §13.1.2).
        let opaque = |tag: &str| tag.trim().trim_start_matches("W/").to_owned();
        let etag = opaque(etag);
        return request
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|tag| opaque(tag) == etag);
    }
    if let Some(since) = freshness::single_date(request, header::IF_MODIFIED_SINCE) {
        let modified = freshness::single_date(headers, header::LAST_MODIFIED)
            .or_else(|| freshness::single_date(headers, header::DATE));
        return modified.is_some_and(|modified| modified <= since);
    }
    false
}

/// Whether the request asks for a conditional or partial answer the cache
/// resolves itself from a whole response.
pub fn is_conditional(request: &HeaderMap) -> bool {
    request.contains_key(header::IF_NONE_MATCH) || request.contains_key(header::IF_MODIFIED_SINCE)
}

/// Whether `headers` carry a field that keeps a response out of a shared
/// cache whatever its directives say: `Set-Cookie` (weir's rule, see
/// docs/caching.md).
pub fn has_set_cookie(headers: &HeaderMap) -> bool {
    headers.contains_key(header::SET_COOKIE)
}
