//! `sticky`: cookie-based session affinity on top of any strategy. The first
//! response names the chosen backend in a cookie; later requests carrying it go back
//! to that backend while it is usable, and are balanced afresh (with a new cookie)
//! when it is not.
//!
//! A cookie value is an HMAC of the upstream's name and the backend's address, so it
//! shows nothing of the address, a client cannot make one up for a backend it was
//! never sent to, and instances sharing a `secret` agree. All values are computed
//! when the config is built: a request costs a cookie scan and a binary search.

use std::sync::OnceLock;

use http::HeaderValue;
use ring::hmac;

use super::RequestKey;
use crate::config::StickyConfig;

/// Bytes of the HMAC kept in a cookie value (128 bits, hex-encoded).
const TAG_BYTES: usize = 16;

type Tag = [u8; TAG_BYTES * 2];

#[derive(Debug)]
pub struct Sticky {
    cookie: String,
    /// Each backend's cookie value, sorted by value for the lookup.
    by_value: Vec<(Tag, usize)>,
    /// The `Set-Cookie` header naming each backend, by index.
    set_cookie: Vec<HeaderValue>,
}

impl Sticky {
    /// The affinity of `upstream`, whose backends have these names (addresses).
    pub fn new(config: &StickyConfig, upstream: &str, names: &[String]) -> Self {
        let key = match &config.secret {
            Some(secret) => hmac::Key::new(hmac::HMAC_SHA256, secret.0.as_bytes()),
            None => hmac::Key::new(hmac::HMAC_SHA256, process_key()),
        };
        let tags: Vec<Tag> = names.iter().map(|name| tag(&key, upstream, name)).collect();
        let attributes = match config.ttl {
            Some(ttl) => format!("; Path=/; Max-Age={}; HttpOnly", ttl.as_secs()),
            None => "; Path=/; HttpOnly".to_owned(),
        };
        let set_cookie = tags
            .iter()
            .map(|tag| {
                let value = [config.cookie.as_bytes(), b"=", tag, attributes.as_bytes()].concat();
                // Token name, hex value, fixed attributes: always a valid header value.
                HeaderValue::from_bytes(&value).expect("cookie header is visible ASCII")
            })
            .collect();
        let mut by_value: Vec<(Tag, usize)> = tags.into_iter().zip(0..).collect();
        by_value.sort_unstable();
        Sticky {
            cookie: config.cookie.clone(),
            by_value,
            set_cookie,
        }
    }

    /// The backend the request's cookie names, if it carries a valid one.
    pub fn stuck(&self, request: &RequestKey<'_>) -> Option<usize> {
        let value = request.cookie(&self.cookie)?.as_bytes();
        let tag: &Tag = value.try_into().ok()?;
        self.by_value
            .binary_search_by(|(candidate, _)| candidate.cmp(tag))
            .ok()
            .map(|found| self.by_value[found].1)
    }

    /// The `Set-Cookie` header that sticks a client to backend `index`.
    pub fn set_cookie(&self, index: usize) -> &HeaderValue {
        &self.set_cookie[index]
    }
}

fn tag(key: &hmac::Key, upstream: &str, name: &str) -> Tag {
    let message = [
        b"weir sticky v1\0",
        upstream.as_bytes(),
        b"\0",
        name.as_bytes(),
    ]
    .concat();
    let mac = hmac::sign(key, &message);
    let mut tag = [0u8; TAG_BYTES * 2];
    for (pair, byte) in tag.chunks_exact_mut(2).zip(mac.as_ref()) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0xf)];
    }
    tag
}

/// The key used when the config gives no secret: random, drawn once per process so
/// that cookies stay valid across reloads (but not restarts, nor other instances).
fn process_key() -> &'static [u8] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    KEY.get_or_init(|| {
        use ring::rand::SecureRandom;
        let mut key = [0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut key)
            .expect("the system random source is readable");
        key
    })
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Duration;

    use http::HeaderMap;
    use http::header::COOKIE;

    use super::*;
    use crate::balance::Fields;
    use crate::config::Secret;

    fn names() -> Vec<String> {
        (1..=3).map(|i| format!("127.0.0.1:900{i}")).collect()
    }

    fn config(secret: Option<&str>) -> StickyConfig {
        StickyConfig {
            cookie: "srv".into(),
            ttl: Some(Duration::from_secs(3600)),
            secret: secret.map(|s| Secret(s.into())),
        }
    }

    fn stuck(sticky: &Sticky, cookie: &str) -> Option<usize> {
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, HeaderValue::from_str(cookie).unwrap());
        sticky.stuck(&RequestKey {
            client: IpAddr::V4(Ipv4Addr::LOCALHOST),
            path: "/",
            query: None,
            headers: Fields::Map(&headers),
        })
    }

    /// The cookie value of a `Set-Cookie` header.
    fn value(set_cookie: &HeaderValue) -> &str {
        let text = set_cookie.to_str().unwrap();
        text["srv=".len()..text.find(';').unwrap()].into()
    }

    #[test]
    fn the_cookie_set_for_a_backend_leads_back_to_it() {
        let sticky = Sticky::new(&config(None), "app", &names());
        for i in 0..3 {
            let value = value(sticky.set_cookie(i));
            assert_eq!(stuck(&sticky, &format!("a=1; srv={value}; b=2")), Some(i));
        }
        assert_eq!(
            sticky.set_cookie(0).to_str().unwrap()[4 + 32..],
            *"; Path=/; Max-Age=3600; HttpOnly"
        );
    }

    #[test]
    fn values_are_opaque_and_tampered_ones_lead_nowhere() {
        let sticky = Sticky::new(&config(None), "app", &names());
        let value = value(sticky.set_cookie(1)).to_owned();
        assert!(!value.contains("9002") && value.len() == 32);
        let mut tampered = value.into_bytes();
        tampered[5] = if tampered[5] == b'0' { b'1' } else { b'0' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert_eq!(stuck(&sticky, &format!("srv={tampered}")), None);
        for junk in ["srv=", "srv=127.0.0.1:9002", "other=1", "srv=zz"] {
            assert_eq!(stuck(&sticky, junk), None, "{junk}");
        }
    }

    #[test]
    fn a_shared_secret_gives_the_same_values_everywhere_and_keys_them() {
        let one = Sticky::new(&config(Some("0123456789abcdef")), "app", &names());
        let two = Sticky::new(&config(Some("0123456789abcdef")), "app", &names());
        let other = Sticky::new(&config(Some("fedcba9876543210")), "app", &names());
        let other_upstream = Sticky::new(&config(Some("0123456789abcdef")), "web", &names());
        for i in 0..3 {
            assert_eq!(one.set_cookie(i), two.set_cookie(i));
            assert_ne!(one.set_cookie(i), other.set_cookie(i));
            assert_ne!(one.set_cookie(i), other_upstream.set_cookie(i));
        }
    }

    #[test]
    fn without_a_ttl_the_cookie_lasts_the_session() {
        let sticky = Sticky::new(
            &StickyConfig {
                ttl: None,
                ..config(None)
            },
            "app",
            &names(),
        );
        assert!(
            sticky
                .set_cookie(0)
                .to_str()
                .unwrap()
                .ends_with("; Path=/; HttpOnly")
        );
    }
}
