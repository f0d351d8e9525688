//! `Cache-Control` as a cache reads it (RFC 9111 §5.2): the response's
//! directives, which decide storing and freshness, and the request's, which
//! decide what a stored response may answer.

use http::HeaderMap;
use http::header::{CACHE_CONTROL, PRAGMA};

/// Delta-seconds beyond this are taken as this (RFC 9111 §1.2.2: 2^31).
const MAX_DELTA_SECONDS: u64 = 1 << 31;

/// The response directives a shared cache acts on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseDirectives {
    pub no_store: bool,
    /// Qualified (`no-cache="Set-Cookie"`) or not: both are taken as the
    /// unqualified form, which RFC 9111 §5.2.2.4 allows.
    pub no_cache: bool,
    /// Qualified or not, as for `no_cache`: a shared cache does not store it.
    pub private: bool,
    pub public: bool,
    pub must_revalidate: bool,
    pub proxy_revalidate: bool,
    pub must_understand: bool,
    pub max_age: Option<u64>,
    pub s_maxage: Option<u64>,
    pub stale_while_revalidate: Option<u64>,
    pub stale_if_error: Option<u64>,
}

/// The request directives a cache acts on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestDirectives {
    /// `no-cache`, or `Pragma: no-cache` without a `Cache-Control`.
    pub no_cache: bool,
    pub no_store: bool,
    pub max_age: Option<u64>,
    /// `max-stale` without a value is `Some(None)`: any staleness.
    pub max_stale: Option<Option<u64>>,
    pub min_fresh: Option<u64>,
    pub only_if_cached: bool,
}

impl ResponseDirectives {
    pub fn of(headers: &HeaderMap) -> Self {
        let mut d = ResponseDirectives::default();
        for_each(headers, |name, value| match name {
            "no-store" => d.no_store = true,
            "no-cache" => d.no_cache = true,
            "private" => d.private = true,
            "public" => d.public = true,
            "must-revalidate" => d.must_revalidate = true,
            "proxy-revalidate" => d.proxy_revalidate = true,
            "must-understand" => d.must_understand = true,
            // The first occurrence counts (RFC 9111 §4.2.1); one that is not a
            // number makes the response stale rather than fresh forever.
            "max-age" => first(&mut d.max_age, seconds_or_zero(value)),
            "s-maxage" => first(&mut d.s_maxage, seconds_or_zero(value)),
            "stale-while-revalidate" => {
                first(&mut d.stale_while_revalidate, seconds_or_zero(value))
            }
            "stale-if-error" => first(&mut d.stale_if_error, seconds_or_zero(value)),
            _ => {}
        });
        d
    }

    /// A stale copy may never be used without the origin's word.
    pub fn forbids_stale(&self) -> bool {
        // s-maxage carries proxy-revalidate's meaning for a shared cache (§5.2.2.10).
        self.must_revalidate || self.proxy_revalidate || self.s_maxage.is_some() || self.no_cache
    }
}

impl RequestDirectives {
    pub fn of(headers: &HeaderMap) -> Self {
        let mut d = RequestDirectives::default();
        for_each(headers, |name, value| match name {
            "no-cache" => d.no_cache = true,
            "no-store" => d.no_store = true,
            "only-if-cached" => d.only_if_cached = true,
            "max-age" => first(&mut d.max_age, seconds(value)),
            "min-fresh" => first(&mut d.min_fresh, seconds(value)),
            "max-stale" if d.max_stale.is_none() => {
                d.max_stale = match value {
                    None => Some(None),
                    Some(v) => seconds(Some(v)).map(Some),
                };
            }
            _ => {}
        });
        // Pragma: no-cache counts only where Cache-Control is absent (RFC 9111 §5.4).
        if !headers.contains_key(CACHE_CONTROL)
            && headers
                .get_all(PRAGMA)
                .iter()
                .any(|v| v.to_str().is_ok_and(|v| has_token(v, "no-cache")))
        {
            d.no_cache = true;
        }
        d
    }
}

fn first(slot: &mut Option<u64>, value: Option<u64>) {
    if slot.is_none() {
        *slot = value;
    }
}

/// Delta-seconds, quoted or not; `None` when absent or not a number.
fn seconds(value: Option<&str>) -> Option<u64> {
    let value = value?;
    let value = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Too many digits for u64 is still a number: the largest delta.
    Some(
        value
            .parse::<u64>()
            .map_or(MAX_DELTA_SECONDS, |v| v.min(MAX_DELTA_SECONDS)),
    )
}

/// As [`seconds`], but a present directive with a bad value counts as 0.
fn seconds_or_zero(value: Option<&str>) -> Option<u64> {
    Some(seconds(value).unwrap_or(0))
}

/// Whether a comma-separated list holds `token` (case-insensitive).
pub fn has_token(list: &str, token: &str) -> bool {
    list.split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Calls `each(name, value)` for every directive of every `Cache-Control` line,
/// names lowercased, values unquoted only by the caller. Commas inside a quoted
/// value do not split it.
fn for_each(headers: &HeaderMap, mut each: impl FnMut(&str, Option<&str>)) {
    let mut name = String::new();
    for line in headers.get_all(CACHE_CONTROL) {
        let Ok(line) = line.to_str() else { continue };
        let mut rest = line;
        while !rest.is_empty() {
            let end = directive_end(rest);
            let (directive, after) = rest.split_at(end);
            rest = after.strip_prefix(',').unwrap_or(after);
            let directive = directive.trim();
            if directive.is_empty() {
                continue;
            }
            let (key, value) = match directive.split_once('=') {
                Some((key, value)) => (key.trim(), Some(value.trim())),
                None => (directive, None),
            };
            name.clear();
            name.push_str(key);
            name.make_ascii_lowercase();
            each(&name, value);
        }
    }
}

/// Where the directive at the start of `text` ends: its first comma outside quotes.
fn directive_end(text: &str) -> usize {
    let mut quoted = false;
    let mut escaped = false;
    for (i, b) in text.bytes().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b',' if !quoted => return i,
            _ => {}
        }
    }
    text.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(lines: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in lines {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn response_directives_across_lines_first_wins() {
        let d = ResponseDirectives::of(&headers(&[
            ("cache-control", "Max-Age=60, public"),
            (
                "cache-control",
                "max-age=5, no-cache=\"set-cookie, foo\", s-maxage=\"30\"",
            ),
        ]));
        assert_eq!(d.max_age, Some(60));
        assert_eq!(d.s_maxage, Some(30));
        assert!(d.public && d.no_cache && !d.private);
        assert!(d.forbids_stale());
    }

    #[test]
    fn a_bad_max_age_is_stale_not_absent() {
        for value in ["max-age=-1", "max-age=abc", "max-age=", "max-age=1.5"] {
            let d = ResponseDirectives::of(&headers(&[("cache-control", value)]));
            assert_eq!(d.max_age, Some(0), "{value}");
        }
        let huge = ResponseDirectives::of(&headers(&[(
            "cache-control",
            "max-age=99999999999999999999999",
        )]));
        assert_eq!(huge.max_age, Some(MAX_DELTA_SECONDS));
    }

    #[test]
    fn request_directives_and_pragma() {
        let d = RequestDirectives::of(&headers(&[(
            "cache-control",
            "max-stale, min-fresh=5, only-if-cached",
        )]));
        assert_eq!(d.max_stale, Some(None));
        assert_eq!(d.min_fresh, Some(5));
        assert!(d.only_if_cached && !d.no_cache);
        let d = RequestDirectives::of(&headers(&[("cache-control", "max-stale=10")]));
        assert_eq!(d.max_stale, Some(Some(10)));
        assert!(RequestDirectives::of(&headers(&[("pragma", "no-cache")])).no_cache);
        // Cache-Control present: Pragma is ignored.
        assert!(
            !RequestDirectives::of(&headers(&[
                ("pragma", "no-cache"),
                ("cache-control", "max-age=5")
            ]))
            .no_cache
        );
    }
}
