//! The part of a request a policy counts it by, read the way a backend
//! would read it, so that no spelling of one key makes a new one.

use std::borrow::Cow;
use std::net::IpAddr;

use crate::balance::RequestKey;
use crate::config::LimitKey;

/// The key of every request that names its key field more than once: a
/// client must not be able to pick the value weir counts while the backend
/// reads another.
const REPEATED: &[u8] = b"\0repeated";

/// A request's key for one policy.
pub enum KeyBytes<'a> {
    Borrowed(&'a [u8]),
    Owned(Vec<u8>),
    Address([u8; 16], usize),
}

impl KeyBytes<'_> {
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            KeyBytes::Borrowed(bytes) => bytes,
            KeyBytes::Owned(bytes) => bytes,
            KeyBytes::Address(octets, len) => &octets[..*len],
        }
    }
}

/// The key of `request` under `key`: a missing header, cookie or query
/// parameter is the empty key, which every such request shares; one named
/// twice is another shared key.
pub fn of<'a>(key: &LimitKey, request: &RequestKey<'a>, route: &'a str) -> KeyBytes<'a> {
    match key {
        LimitKey::Client => client(request.client),
        LimitKey::Route => KeyBytes::Borrowed(route.as_bytes()),
        LimitKey::Header(name) => {
            let mut values = request.headers.values(name.as_str());
            match (values.next(), values.next()) {
                (None, _) => KeyBytes::Borrowed(b""),
                (Some(value), None) => KeyBytes::Borrowed(value),
                (Some(_), Some(_)) => KeyBytes::Borrowed(REPEATED),
            }
        }
        LimitKey::Cookie(name) => {
            let mut values = request.headers.cookies(name.as_str());
            match (values.next(), values.next()) {
                (None, _) => KeyBytes::Borrowed(b""),
                (Some(value), None) => KeyBytes::Borrowed(value.as_bytes()),
                (Some(_), Some(_)) => KeyBytes::Borrowed(REPEATED),
            }
        }
        LimitKey::Query(name) => {
            let Some(query) = request.query else {
                return KeyBytes::Borrowed(b"");
            };
            let mut values = query.split('&').filter_map(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                (decoded(key.as_bytes()).as_ref() == name.as_bytes())
                    .then(|| decoded(value.as_bytes()))
            });
            match (values.next(), values.next()) {
                (None, _) => KeyBytes::Borrowed(b""),
                (Some(Cow::Borrowed(value)), None) => KeyBytes::Borrowed(value),
                (Some(Cow::Owned(value)), None) => KeyBytes::Owned(value),
                (Some(_), Some(_)) => KeyBytes::Borrowed(REPEATED),
            }
        }
    }
}

/// A client address as a key: an IPv4 address (also written as IPv4-mapped
/// IPv6) whole, an IPv6 address by its /64, the block one host is given.
fn client(address: IpAddr) -> KeyBytes<'static> {
    let mut octets = [0; 16];
    match address.to_canonical() {
        IpAddr::V4(v4) => {
            octets[..4].copy_from_slice(&v4.octets());
            KeyBytes::Address(octets, 4)
        }
        IpAddr::V6(v6) => {
            octets.copy_from_slice(&v6.octets());
            KeyBytes::Address(octets, 8)
        }
    }
}

/// A query name or value as backends read it: `%XX` decoded and `+` as a
/// space; borrowed when there is nothing to decode.
fn decoded(text: &[u8]) -> Cow<'_, [u8]> {
    if !text.iter().any(|&b| b == b'%' || b == b'+') {
        return Cow::Borrowed(text);
    }
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'%' => match (
                text.get(i + 1).and_then(|&b| hex(b)),
                text.get(i + 2).and_then(|&b| hex(b)),
            ) {
                (Some(high), Some(low)) => {
                    out.push(high << 4 | low);
                    i += 3;
                    continue;
                }
                // Malformed: kept as sent, as most backends do.
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            other => out.push(other),
        }
        i += 1;
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    fn read(key: LimitKey, headers: &HeaderMap, query: Option<&str>, client: &str) -> Vec<u8> {
        let request = RequestKey {
            client: client.parse().unwrap(),
            path: "/",
            query,
            headers: crate::balance::Fields::Map(headers),
        };
        of(&key, &request, "api").as_bytes().to_vec()
    }

    #[test]
    fn each_kind_of_key_reads_its_part() {
        let mut headers = HeaderMap::new();
        headers.insert("x-api-key", "k1".parse().unwrap());
        headers.insert("cookie", "a=1; session=s9".parse().unwrap());
        let query = Some("page=2&user=u5");
        let at = |key| read(key, &headers, query, "192.0.2.7");
        assert_eq!(at(LimitKey::Client), vec![192, 0, 2, 7]);
        assert_eq!(at(LimitKey::Route), b"api");
        assert_eq!(at(LimitKey::Header("x-api-key".parse().unwrap())), b"k1");
        assert_eq!(at(LimitKey::Cookie("session".into())), b"s9");
        assert_eq!(at(LimitKey::Query("user".into())), b"u5");
        // Missing: the one shared empty key.
        assert_eq!(at(LimitKey::Header("x-other".parse().unwrap())), b"");
        assert_eq!(at(LimitKey::Query("use".into())), b"");
        assert_eq!(at(LimitKey::Cookie("sess".into())), b"");
    }

    #[test]
    fn a_query_key_is_read_decoded_whatever_its_spelling() {
        let headers = HeaderMap::new();
        let user = |query| read(LimitKey::Query("user".into()), &headers, Some(query), "::1");
        assert_eq!(user("user=u5"), b"u5");
        assert_eq!(user("user=u%35"), b"u5");
        assert_eq!(user("%75ser=%75%35"), b"u5");
        assert_eq!(user("user=a+b"), b"a b");
        assert_eq!(user("user=100%"), b"100%");
        assert_eq!(user("user=%zz"), b"%zz");
        assert_eq!(user("x=1&user"), b"");
    }

    #[test]
    fn a_key_field_named_twice_is_one_shared_key() {
        let mut headers = HeaderMap::new();
        headers.append("x-api-key", "junk1".parse().unwrap());
        headers.append("x-api-key", "valid".parse().unwrap());
        headers.append("cookie", "user=a".parse().unwrap());
        headers.append("cookie", "user=b".parse().unwrap());
        let header = read(
            LimitKey::Header("x-api-key".parse().unwrap()),
            &headers,
            None,
            "::1",
        );
        let cookie = read(LimitKey::Cookie("user".into()), &headers, None, "::1");
        let query = read(
            LimitKey::Query("k".into()),
            &headers,
            Some("k=1&k=2"),
            "::1",
        );
        assert_eq!(header, REPEATED);
        assert_eq!(cookie, REPEATED);
        assert_eq!(query, REPEATED);
        let other = read(
            LimitKey::Query("k".into()),
            &headers,
            Some("k=junk2&k=2"),
            "::1",
        );
        assert_eq!(other, REPEATED, "junk does not make a new key");
    }

    #[test]
    fn an_ipv6_client_is_its_64_block_and_a_mapped_ipv4_is_the_ipv4() {
        let headers = HeaderMap::new();
        let client = |address| read(LimitKey::Client, &headers, None, address);
        assert_eq!(
            client("2001:db8:1:2:aaaa::1"),
            client("2001:db8:1:2:bbbb::9")
        );
        assert_ne!(client("2001:db8:1:2::1"), client("2001:db8:1:3::1"));
        assert_eq!(client("::ffff:192.0.2.7"), client("192.0.2.7"));
    }
}
