//! The part of a request a policy counts it by.

use std::net::IpAddr;

use crate::balance::RequestKey;
use crate::config::LimitKey;

/// A request's key for one policy, borrowed from the request where it can be.
pub enum KeyBytes<'a> {
    Borrowed(&'a [u8]),
    V4([u8; 4]),
    V6([u8; 16]),
}

impl KeyBytes<'_> {
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            KeyBytes::Borrowed(bytes) => bytes,
            KeyBytes::V4(octets) => octets,
            KeyBytes::V6(octets) => octets,
        }
    }
}

/// The key of `request` under `key`: a missing header, cookie or query
/// parameter is the empty key, which every such request shares.
pub fn of<'a>(key: &LimitKey, request: &RequestKey<'a>, route: &'a str) -> KeyBytes<'a> {
    let borrowed = |value: Option<&'a [u8]>| KeyBytes::Borrowed(value.unwrap_or_default());
    match key {
        LimitKey::Client => match request.client {
            IpAddr::V4(v4) => KeyBytes::V4(v4.octets()),
            IpAddr::V6(v6) => KeyBytes::V6(v6.octets()),
        },
        LimitKey::Route => KeyBytes::Borrowed(route.as_bytes()),
        LimitKey::Header(name) => borrowed(request.headers.get(name).map(|v| v.as_bytes())),
        LimitKey::Cookie(name) => borrowed(request.cookie(name).map(str::as_bytes)),
        LimitKey::Query(name) => borrowed(
            request
                .query
                .and_then(|query| {
                    query
                        .split('&')
                        .find_map(|pair| pair.strip_prefix(name.as_str())?.strip_prefix('='))
                })
                .map(str::as_bytes),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    #[test]
    fn each_kind_of_key_reads_its_part() {
        let mut headers = HeaderMap::new();
        headers.insert("x-api-key", "k1".parse().unwrap());
        headers.insert("cookie", "a=1; session=s9".parse().unwrap());
        let request = RequestKey {
            client: "192.0.2.7".parse().unwrap(),
            path: "/",
            query: Some("page=2&user=u5"),
            headers: &headers,
        };
        let read = |key: LimitKey| of(&key, &request, "api").as_bytes().to_vec();
        assert_eq!(read(LimitKey::Client), vec![192, 0, 2, 7]);
        assert_eq!(read(LimitKey::Route), b"api");
        assert_eq!(read(LimitKey::Header("x-api-key".parse().unwrap())), b"k1");
        assert_eq!(read(LimitKey::Cookie("session".into())), b"s9");
        assert_eq!(read(LimitKey::Query("user".into())), b"u5");
        // Missing: the one shared empty key.
        assert_eq!(read(LimitKey::Header("x-other".parse().unwrap())), b"");
        assert_eq!(read(LimitKey::Query("use".into())), b"");
    }
}
