//! Freshness and age (RFC 9111 §4.2): how long a stored response stays fresh,
//! and how old it is now.

use std::time::{Duration, SystemTime};

use http::header::{AGE, DATE, EXPIRES};
use http::{HeaderMap, StatusCode};

use super::directives::ResponseDirectives;

/// The freshness lifetime of a response received at `response_time`:
/// `s-maxage`, else `max-age`, else `Expires` − `Date`, else `default_ttl` for
/// a status cacheable by default (weir's stand-in for heuristic freshness,
/// which stays off unless configured).
pub fn lifetime(
    status: StatusCode,
    headers: &HeaderMap,
    directives: &ResponseDirectives,
    response_time: SystemTime,
    default_ttl: Duration,
) -> Duration {
    if let Some(seconds) = directives.s_maxage.or(directives.max_age) {
        return Duration::from_secs(seconds);
    }
    if headers.contains_key(EXPIRES) {
        // An invalid Expires (e.g. "0") means already expired (§5.3).
        let Some(expires) = single_date(headers, EXPIRES) else {
            return Duration::ZERO;
        };
        let date = single_date(headers, DATE).unwrap_or(response_time);
        return expires.duration_since(date).unwrap_or(Duration::ZERO);
    }
    if !default_ttl.is_zero() && (directives.public || cacheable_by_default(status)) {
        return default_ttl;
    }
    Duration::ZERO
}

/// `corrected_initial_age` of §4.2.3: the age the response had on arrival,
/// from its `Age` and `Date` and the time the request took.
pub fn initial_age(
    headers: &HeaderMap,
    request_time: SystemTime,
    response_time: SystemTime,
) -> Duration {
    let age_value = age_value(headers);
    let apparent_age = single_date(headers, DATE)
        .and_then(|date| response_time.duration_since(date).ok())
        .unwrap_or(Duration::ZERO);
    let response_delay = response_time
        .duration_since(request_time)
        .unwrap_or(Duration::ZERO);
    apparent_age.max(age_value + response_delay)
}

/// The `Age` a response carries. One that is not a single whole number
/// (negative, a fraction, a list, two fields) says the response is of unknown
/// age: taken as the largest, so it is stale rather than fresh by mistake.
fn age_value(headers: &HeaderMap) -> Duration {
    let unknown = Duration::from_secs(MAX_AGE);
    let mut values = headers.get_all(AGE).iter();
    let Some(value) = values.next() else {
        return Duration::ZERO;
    };
    if values.next().is_some() {
        return unknown;
    }
    let Ok(text) = value.to_str() else {
        return unknown;
    };
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return unknown;
    }
    Duration::from_secs(text.parse::<u64>().map_or(MAX_AGE, |age| age.min(MAX_AGE)))
}

/// The largest age (RFC 9111 §1.2.2: 2^31 seconds).
const MAX_AGE: u64 = 1 << 31;

/// A date header that appears once with a valid HTTP-date.
pub fn single_date(headers: &HeaderMap, name: http::HeaderName) -> Option<SystemTime> {
    let mut values = headers.get_all(name).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    httpdate::parse_http_date(value.to_str().ok()?.trim()).ok()
}

/// Statuses a cache may store without explicit freshness (RFC 9110 §15.1).
pub fn cacheable_by_default(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 206 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(lines: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in lines {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn s_maxage_then_max_age_then_expires() {
        let h = headers(&[("cache-control", "max-age=10, s-maxage=20")]);
        let d = ResponseDirectives::of(&h);
        assert_eq!(
            lifetime(StatusCode::OK, &h, &d, at(0), Duration::ZERO),
            Duration::from_secs(20)
        );
        let date = httpdate::fmt_http_date(at(1_000_000));
        let expires = httpdate::fmt_http_date(at(1_000_100));
        let h = headers(&[("date", &date), ("expires", &expires)]);
        let d = ResponseDirectives::of(&h);
        assert_eq!(
            lifetime(StatusCode::OK, &h, &d, at(5), Duration::ZERO),
            Duration::from_secs(100)
        );
        let h = headers(&[("expires", "0")]);
        assert_eq!(
            lifetime(StatusCode::OK, &h, &d, at(5), Duration::from_secs(9)),
            Duration::ZERO
        );
    }

    #[test]
    fn default_ttl_only_for_statuses_cacheable_by_default() {
        let h = HeaderMap::new();
        let d = ResponseDirectives::default();
        let ttl = Duration::from_secs(30);
        assert_eq!(lifetime(StatusCode::OK, &h, &d, at(0), ttl), ttl);
        assert_eq!(
            lifetime(StatusCode::CREATED, &h, &d, at(0), ttl),
            Duration::ZERO
        );
        assert_eq!(
            lifetime(StatusCode::OK, &h, &d, at(0), Duration::ZERO),
            Duration::ZERO
        );
    }

    #[test]
    fn initial_age_takes_the_larger_of_apparent_and_corrected() {
        let date = httpdate::fmt_http_date(at(1_000));
        let h = headers(&[("date", &date), ("age", "5")]);
        // Apparent: 1010 - 1000 = 10; corrected: 5 + (1010 - 1008) = 7.
        assert_eq!(
            initial_age(&h, at(1_008), at(1_010)),
            Duration::from_secs(10)
        );
        let h = headers(&[("age", "50")]);
        assert_eq!(
            initial_age(&h, at(1_008), at(1_010)),
            Duration::from_secs(52)
        );
        for bad in ["-7200", "abc", "1.5", "0, 7200", "7200;x"] {
            let h = headers(&[("age", bad)]);
            assert!(
                initial_age(&h, at(1_008), at(1_010)) >= Duration::from_secs(MAX_AGE),
                "{bad}"
            );
        }
        let h = headers(&[("age", "0"), ("age", "0")]);
        assert!(initial_age(&h, at(1_008), at(1_010)) >= Duration::from_secs(MAX_AGE));
    }
}
