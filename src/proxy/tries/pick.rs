//! Choosing a backend of an upstream for a request: the one its affinity cookie
//! names, else the strategy's choice among the usable backends (healthy, not
//! ejected; every backend in panic mode; of the lowest SRV priority that has
//! one), with slow start for warming ones.

use std::net::IpAddr;

use http::Request;

use crate::balance::RequestKey;
use crate::http1::request::ReceivedRequest;
use crate::upstream::{Backend, RequestBody, Upstream};

/// A backend chosen for one request.
#[derive(Debug, Clone, Copy)]
pub struct Pick<'a> {
    /// The backend's position in [`Upstream::backends`].
    pub index: usize,
    pub backend: &'a Backend,
    /// A `Set-Cookie` header for the response, when the request was not already
    /// stuck to this backend by its affinity cookie.
    pub set_cookie: Option<&'a http::HeaderValue>,
}

/// Picks a usable backend of `upstream` for the request, if there is one.
pub fn pick<'u>(upstream: &'u Upstream, request: &RequestKey<'_>) -> Option<Pick<'u>> {
    pick_where(upstream, request, &|_| true)
}

/// [`pick`] among the backends `allowed` admits.
pub(super) fn pick_where<'u>(
    upstream: &'u Upstream,
    request: &RequestKey<'_>,
    allowed: &dyn Fn(usize) -> bool,
) -> Option<Pick<'u>> {
    let backends = &upstream.backends;
    let panic = in_panic(upstream);
    let usable = |i: usize| allowed(i) && (panic || backends[i].state.is_usable());
    // SRV priorities: only the lowest value that has a usable backend is used,
    // with its own balancer (a range of the backends). Usable here means really
    // usable, panic mode or not: a lower tier that is all down must not hold
    // the traffic. With none usable at all, the whole upstream is picked from.
    let really_usable = |i: usize| allowed(i) && backends[i].state.is_usable();
    let tier = upstream
        .tiers
        .iter()
        .find(|tier| tier.range.clone().any(really_usable));
    let (balancer, offset, candidates) = match tier {
        None => (&upstream.balancer, 0, &backends[..]),
        Some(tier) => (
            &tier.balancer,
            tier.range.start,
            &backends[tier.range.clone()],
        ),
    };
    let in_tier = |i: usize| i >= offset && i < offset + candidates.len();
    let sticky = upstream.sticky.as_ref();
    if let Some(i) = sticky
        .and_then(|s| s.stuck(request))
        .filter(|&i| in_tier(i) && usable(i))
    {
        return Some(Pick {
            index: i,
            backend: &backends[i],
            set_cookie: None,
        });
    }
    // Strategies with a fixed weight table see a warming backend's lower weight
    // as a chance to be passed over; the others read its weight live. A client
    // already stuck to it stays.
    let warm_enough = |i: usize| {
        let warmth = backends[i].warmth();
        warmth >= 1.0 || fastrand::f64() < warmth
    };
    let i = if upstream.slow_start_by_chance {
        balancer
            .pick(request, candidates, &mut |i| {
                usable(i + offset) && warm_enough(i + offset)
            })
            .or_else(|| balancer.pick(request, candidates, &mut |i| usable(i + offset)))
    } else {
        balancer.pick(request, candidates, &mut |i| usable(i + offset))
    }? + offset;
    Some(Pick {
        index: i,
        backend: &backends[i],
        set_cookie: sticky.map(|s| s.set_cookie(i)),
    })
}

/// The backend for a retry of `request`: a usable one not tried yet, else any
/// usable one (the same backend again beats no try at all).
pub(super) fn pick_retry<'u>(
    upstream: &'u Upstream,
    client: IpAddr,
    request: &Request<RequestBody>,
    received: Option<&ReceivedRequest>,
    tried: &[usize],
) -> Option<Pick<'u>> {
    let key = RequestKey::of(client, request, received);
    pick_where(upstream, &key, &|i| !tried.contains(&i)).or_else(|| pick(upstream, &key))
}

/// True when too few backends are usable for them to carry the load alone
/// (`panic_threshold`): spreading over all, failing ones included, then beats
/// overloading the few. Costs a scan of the backends, only when configured.
fn in_panic(upstream: &Upstream) -> bool {
    if upstream.panic_threshold == 0 {
        return false;
    }
    let backends = &upstream.backends;
    let usable = backends.iter().filter(|b| b.state.is_usable()).count();
    usable * 100 < upstream.panic_threshold as usize * backends.len()
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use http::{HeaderMap, HeaderValue, header::COOKIE};

    use super::*;
    use crate::metrics::Metrics;
    use crate::upstream::BackendStates;

    fn sticky_upstream() -> Upstream {
        let config = crate::config::parse(
            r#"
            [[listeners]]
            listen = "127.0.0.1:0"
            [[routes]]
            upstream = "app"
            [upstreams.app]
            sticky = { cookie = "srv" }
            backends = [{ address = "127.0.0.1:9001" }, { address = "127.0.0.1:9002" }]
            "#,
            "test.toml",
        )
        .unwrap();
        Upstream::new(
            &config.upstreams[0],
            &Default::default(),
            &BackendStates::new(),
            &Metrics::new(),
        )
        .unwrap()
    }

    /// Picks for a request carrying `cookie`: (backend port, the cookie set if any).
    fn pick_with(upstream: &Upstream, cookie: Option<&str>) -> (u16, Option<String>) {
        let mut headers = HeaderMap::new();
        if let Some(cookie) = cookie {
            headers.insert(COOKIE, HeaderValue::from_str(cookie).unwrap());
        }
        let request = RequestKey {
            client: IpAddr::V4(Ipv4Addr::LOCALHOST),
            path: "/",
            query: None,
            headers: crate::balance::Fields::Map(&headers),
        };
        let pick = pick(upstream, &request).unwrap();
        let set_cookie = pick
            .set_cookie
            .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned());
        (pick.backend.address.port(), set_cookie)
    }

    #[test]
    fn a_client_stuck_to_a_down_backend_is_moved_and_given_a_new_cookie() {
        let upstream = sticky_upstream();
        let (port, cookie) = pick_with(&upstream, None);
        let cookie = cookie.unwrap();
        assert_eq!(pick_with(&upstream, Some(&cookie)), (port, None));

        let stuck_to = upstream
            .backends
            .iter()
            .position(|b| b.address.port() == port);
        upstream.backends[stuck_to.unwrap()]
            .state
            .set_healthy(false);
        let (moved_to, fresh) = pick_with(&upstream, Some(&cookie));
        assert_ne!(moved_to, port);
        let fresh = fresh.expect("the moved client gets a cookie for its new backend");
        assert_eq!(pick_with(&upstream, Some(&fresh)), (moved_to, None));
    }
}
