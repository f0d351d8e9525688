//! Who may use the admin API: a `Host` that names this listener (an IP
//! literal, `localhost`, or a name the operator allowed), so that a page in a
//! browser cannot reach it through DNS rebinding; and for the endpoints that
//! change something, the operator's token.

use http::{HeaderMap, header};

use crate::config::AdminConfig;

/// Why a request is turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 421: the `Host` is not one this listener answers to.
    Host,
    /// 401: no token, or another one.
    Token,
}

/// Checks a request's `Host`; `changes` is true for the endpoints that change
/// something, which also need the token when one is set.
pub fn check(
    admin: Option<&AdminConfig>,
    headers: &HeaderMap,
    changes: bool,
) -> Result<(), Refusal> {
    if !host_allowed(admin, headers) {
        return Err(Refusal::Host);
    }
    if changes
        && let Some(token) = admin.and_then(|a| a.token.as_ref())
        && !bearer_matches(headers, token.0.as_bytes())
    {
        return Err(Refusal::Token);
    }
    Ok(())
}

/// An IP literal, `localhost` or an allowed name, with or without a port. A
/// request without `Host` (HTTP/1.0, a script) was not sent by a browser.
fn host_allowed(admin: Option<&AdminConfig>, headers: &HeaderMap) -> bool {
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = match (hosts.next(), hosts.next()) {
        (None, _) => return true,
        (Some(host), None) => host,
        (Some(_), Some(_)) => return false,
    };
    let Ok(host) = host.to_str() else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        // [v6]:port
        Some(bracketed) => match bracketed.split_once(']') {
            Some((v6, rest)) if rest.is_empty() || rest.starts_with(':') => {
                return v6.parse::<std::net::Ipv6Addr>().is_ok();
            }
            _ => return false,
        },
        None => host.rsplit_once(':').map_or(host, |(name, _port)| name),
    };
    if name.parse::<std::net::Ipv4Addr>().is_ok() || name.eq_ignore_ascii_case("localhost") {
        return true;
    }
    admin.is_some_and(|a| {
        a.allowed_hosts
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(name))
    })
}

/// `Authorization: Bearer <token>`, compared in time that does not depend on
/// where the two first differ (both are hashed first, so not on the length
/// either).
fn bearer_matches(headers: &HeaderMap, token: &[u8]) -> bool {
    let Some(sent) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
    else {
        return false;
    };
    let sent = ring::digest::digest(&ring::digest::SHA256, sent);
    let wanted = ring::digest::digest(&ring::digest::SHA256, token);
    sent.as_ref()
        .iter()
        .zip(wanted.as_ref())
        .fold(0u8, |differ, (a, b)| differ | (a ^ b))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn admin(token: Option<&str>) -> AdminConfig {
        AdminConfig {
            listen: "127.0.0.1:9901".parse().unwrap(),
            token: token.map(|t| Secret(t.to_owned())),
            allowed_hosts: vec!["admin.internal".to_owned()],
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn only_hosts_that_name_this_listener_are_answered() {
        let admin = admin(None);
        let host = |value: &str| check(Some(&admin), &headers(&[("host", value)]), false);
        for allowed in [
            "127.0.0.1:9901",
            "10.1.2.3",
            "[::1]:9901",
            "[::1]",
            "localhost:9901",
            "LOCALHOST",
            "admin.internal:9901",
            "Admin.Internal",
        ] {
            assert_eq!(host(allowed), Ok(()), "{allowed}");
        }
        for refused in [
            "evil.example",
            "evil.example:9901",
            "127.0.0.1.evil.example",
            "localhost.evil.example",
            "[::1",
            "[::1]x",
            "[evil]",
            "",
        ] {
            assert_eq!(host(refused), Err(Refusal::Host), "{refused}");
        }
        let twice = headers(&[("host", "127.0.0.1"), ("host", "evil.example")]);
        assert_eq!(check(Some(&admin), &twice, false), Err(Refusal::Host));
        assert_eq!(check(Some(&admin), &HeaderMap::new(), false), Ok(()));
    }

    #[test]
    fn changes_need_the_token_when_one_is_set() {
        let token = "0123456789abcdef0123";
        let admin = admin(Some(token));
        let with = |auth: &str| {
            check(
                Some(&admin),
                &headers(&[("host", "127.0.0.1"), ("authorization", auth)]),
                true,
            )
        };
        assert_eq!(with(&format!("Bearer {token}")), Ok(()));
        assert_eq!(with("Bearer 0123456789abcdef0124"), Err(Refusal::Token));
        assert_eq!(with(&format!("Bearer {token}x")), Err(Refusal::Token));
        assert_eq!(with(&format!("Basic {token}")), Err(Refusal::Token));
        let none = headers(&[("host", "127.0.0.1")]);
        assert_eq!(check(Some(&admin), &none, true), Err(Refusal::Token));
        // Reading needs no token.
        assert_eq!(check(Some(&admin), &none, false), Ok(()));
        // Without a token set, changes are open (to whoever reaches the port).
        let open = self::admin(None);
        assert_eq!(check(Some(&open), &none, true), Ok(()));
    }
}
