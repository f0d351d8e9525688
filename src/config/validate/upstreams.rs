//! Validation of upstreams: backends, timeouts and limits, TLS towards the backends
//! and the protocol spoken to them.

use std::collections::HashSet;
use std::num::NonZeroU32;
use std::time::Duration;

use toml::Spanned;

use super::policies::{
    validate_health_check, validate_outlier_detection, validate_retries, validate_sticky,
    validate_strategy,
};
use super::{int_in, positive_duration, relative_to_file};
use crate::config::defaults::*;
use crate::config::file::{self, FileUpstream};
use crate::config::problems::Problems;
use crate::config::{
    BackendConfig, DnsBackends, DnsLookup, RetryPolicy, UpstreamConfig, UpstreamProtocol,
    UpstreamTimeouts, UpstreamTlsConfig,
};

pub(super) fn validate_upstream(
    name: &Spanned<String>,
    raw: &Spanned<FileUpstream>,
    problems: &mut Problems<'_>,
) -> UpstreamConfig {
    let raw_span = raw.span();
    let raw = raw.get_ref();
    let tls = raw
        .tls
        .as_ref()
        .and_then(|tls| validate_upstream_tls(tls, problems));
    let protocol = validate_protocol(raw.protocol.as_ref(), tls.is_some(), problems);
    let send_proxy_protocol =
        raw.send_proxy_protocol
            .as_ref()
            .and_then(|version| match version.get_ref().as_str() {
                "v1" => Some(crate::proxy_protocol::Version::V1),
                "v2" => Some(crate::proxy_protocol::Version::V2),
                _ => {
                    problems.spanned(version, "send_proxy_protocol", "expected \"v1\" or \"v2\"");
                    None
                }
            });
    let max_connections_per_backend = int_in(
        &raw.max_connections_per_backend,
        "max_connections_per_backend",
        0..=1_000_000,
        0,
        problems,
    );
    let queue_timeout = raw.queue_timeout.as_ref().and_then(|timeout| {
        if max_connections_per_backend == 0 {
            problems.spanned(
                timeout,
                "queue_timeout",
                "queue_timeout only applies with max_connections_per_backend above 0",
            );
            None
        } else {
            Some(positive_duration(
                &Some(timeout.clone()),
                "queue_timeout",
                Duration::ZERO,
                problems,
            ))
        }
    });

    let strategy = validate_strategy(raw, problems);

    // By the written name, so a bad hash_key does not also make the factor look misplaced.
    let hashing = raw
        .strategy
        .as_ref()
        .is_some_and(|s| matches!(s.get_ref().as_str(), "hash" | "ip_hash"));
    let hash_balance_percent = raw.hash_balance_factor.as_ref().and_then(|factor| {
        let value = *factor.get_ref();
        if !hashing {
            problems.spanned(factor, "hash_balance_factor", "hash_balance_factor only applies to strategy = \"hash\" or \"ip_hash\"");
            None
        } else if !(1.0..=100.0).contains(&value) {
            problems.spanned(factor, "hash_balance_factor", "must be between 1.0 and 100.0, e.g. 1.25 (a backend may take 125 % of the average load)");
            None
        } else {
            Some((value * 100.0).round() as u32)
        }
    });

    let slow_start = raw.slow_start.as_ref().and_then(|ramp| {
        if hashing {
            // A ramp would move keys back and forth; HAProxy and Envoy leave it out too.
            problems.spanned(ramp, "slow_start", "slow_start does not apply to strategy \"hash\" or \"ip_hash\": their keys would move back and forth");
            None
        } else {
            Some(positive_duration(&Some(ramp.clone()), "slow_start", Duration::ZERO, problems))
        }
    });
    if let Some(key) = &raw.hash_key
        && raw.strategy.as_ref().is_none_or(|s| s.get_ref() != "hash")
    {
        problems.spanned(
            key,
            "hash_key",
            "hash_key only applies to strategy = \"hash\"",
        );
    }

    let sticky = raw
        .sticky
        .as_ref()
        .map(|sticky| validate_sticky(sticky.get_ref(), problems));
    let health_check = raw
        .health_check
        .as_ref()
        .map(|check| validate_health_check(check.get_ref(), problems));
    let outlier_detection = raw
        .outlier_detection
        .as_ref()
        .map(|outlier| validate_outlier_detection(outlier.get_ref(), problems));
    let panic_threshold = int_in(
        &raw.panic_threshold,
        "panic_threshold",
        0..=100,
        0,
        problems,
    );
    let retries = raw
        .retries
        .as_ref()
        .map_or(RetryPolicy::UNSENT_ONLY, |retries| {
            validate_retries(retries.get_ref(), problems)
        });

    if raw.backends.is_empty() {
        problems.at(
            raw_span.clone(),
            Some(format!("upstreams.{}.backends", name.get_ref())),
            "an upstream needs at least one backend, e.g. backends = [{ address = \"127.0.0.1:9001\" }]",
        );
    }
    let mut seen = HashSet::new();
    let mut seen_names = HashSet::new();
    let mut backends = Vec::new();
    let mut dns = Vec::new();
    for entry in &raw.backends {
        let backend = entry.get_ref();
        let weight = match &backend.weight {
            None => DEFAULT_WEIGHT,
            Some(w) => match u32::try_from(*w.get_ref()) {
                Ok(n) if (1..=MAX_WEIGHT).contains(&n) => n,
                _ => {
                    problems.spanned(w, "weight", format!("must be between 1 and {MAX_WEIGHT}"));
                    DEFAULT_WEIGHT
                }
            },
        };
        let weight = NonZeroU32::new(weight).unwrap_or(NonZeroU32::MIN);
        let lookup = match (&backend.address, &backend.srv) {
            (Some(address), None) => match address.get_ref() {
                file::BackendAddressValue::Ip(address_ip) => {
                    if !seen.insert(*address_ip) {
                        problems.spanned(address, "address", format!("backend {address_ip} is listed twice in this upstream; raise its weight instead"));
                    }
                    backends.push(BackendConfig {
                        address: *address_ip,
                        weight,
                    });
                    continue;
                }
                file::BackendAddressValue::Name { host, port } => (
                    DnsLookup::Address {
                        host: host.clone(),
                        port: *port,
                    },
                    address.span(),
                    "address",
                ),
            },
            (None, Some(srv)) => {
                if let Some(w) = &backend.weight {
                    problems.spanned(w, "weight", "an srv entry takes each target's weight from its SRV record; remove weight");
                }
                (
                    DnsLookup::Srv {
                        name: srv.get_ref().0.clone(),
                    },
                    srv.span(),
                    "srv",
                )
            }
            (Some(_), Some(srv)) => {
                problems.spanned(
                    srv,
                    "srv",
                    "a backend has an address or an srv name, not both",
                );
                continue;
            }
            (None, None) => {
                problems.at(
                    entry.span(),
                    Some("address".into()),
                    "missing field `address`: a backend needs an address, e.g. { address = \"127.0.0.1:9001\" } or { address = \"app.internal:8080\" }, or an srv name",
                );
                continue;
            }
        };
        let (lookup, span, key) = lookup;
        if !seen_names.insert(lookup.clone()) {
            problems.at(
                span,
                Some(key.into()),
                format!("{lookup} is listed twice in this upstream; raise its weight instead"),
            );
        }
        dns.push(DnsBackends { lookup, weight });
    }

    let timeouts = raw.timeouts.as_ref();
    let timeouts = UpstreamTimeouts {
        connect: positive_duration(
            &timeouts.and_then(|t| t.connect.clone()),
            "timeouts.connect",
            DEFAULT_CONNECT_TIMEOUT,
            problems,
        ),
        response: positive_duration(
            &timeouts.and_then(|t| t.response.clone()),
            "timeouts.response",
            DEFAULT_RESPONSE_TIMEOUT,
            problems,
        ),
        // 0 is allowed: no connection is kept idle (no reuse).
        idle: timeouts
            .and_then(|t| t.idle.as_ref())
            .map_or(DEFAULT_UPSTREAM_IDLE_TIMEOUT, |d| d.get_ref().0),
        request: timeouts
            .and_then(|t| t.request.clone())
            .map(|d| positive_duration(&Some(d), "timeouts.request", Duration::ZERO, problems)),
    };

    UpstreamConfig {
        name: name.get_ref().clone(),
        strategy,
        hash_balance_percent,
        sticky,
        health_check,
        outlier_detection,
        panic_threshold,
        retries,
        max_connections_per_backend,
        queue_timeout,
        slow_start,
        send_proxy_protocol,
        tls,
        protocol,
        backends,
        dns,
        timeouts,
    }
}

fn validate_upstream_tls(
    raw: &Spanned<file::FileUpstreamTls>,
    problems: &mut Problems<'_>,
) -> Option<UpstreamTlsConfig> {
    let table = match raw.get_ref() {
        file::FileUpstreamTls::Enabled(false) => return None,
        file::FileUpstreamTls::Enabled(true) => return Some(UpstreamTlsConfig::default()),
        file::FileUpstreamTls::Table(table) => table,
    };
    let sni = table.sni.as_ref().and_then(|sni| {
        let name = sni.get_ref();
        if rustls_pki_types::ServerName::try_from(name.as_str()).is_err() {
            problems.spanned(sni, "tls.sni", "expected a DNS name or an IP address");
            return None;
        }
        Some(name.clone())
    });
    let insecure_skip_verify = table
        .insecure_skip_verify
        .as_ref()
        .is_some_and(|skip| *skip.get_ref());
    if let (Some(ca), true) = (&table.ca, insecure_skip_verify) {
        problems.spanned(
            ca,
            "tls.ca",
            "tls.ca and tls.insecure_skip_verify contradict each other; keep one",
        );
    }
    Some(UpstreamTlsConfig {
        sni,
        ca: table
            .ca
            .as_ref()
            .map(|ca| relative_to_file(problems.file, ca)),
        insecure_skip_verify,
    })
}

fn validate_protocol(
    raw: Option<&Spanned<String>>,
    tls: bool,
    problems: &mut Problems<'_>,
) -> UpstreamProtocol {
    let Some(raw) = raw else {
        return UpstreamProtocol::Http1;
    };
    match (raw.get_ref().as_str(), tls) {
        ("http1", _) => UpstreamProtocol::Http1,
        ("h2", true) => UpstreamProtocol::H2,
        ("h2c", false) => UpstreamProtocol::H2c,
        ("h2", false) => {
            problems.spanned(
                raw,
                "protocol",
                "protocol = \"h2\" is HTTP/2 over TLS and needs tls; use \"h2c\" for cleartext HTTP/2",
            );
            UpstreamProtocol::Http1
        }
        ("h2c", true) => {
            problems.spanned(
                raw,
                "protocol",
                "protocol = \"h2c\" is cleartext HTTP/2; with tls, use \"h2\"",
            );
            UpstreamProtocol::Http1
        }
        _ => {
            problems.spanned(raw, "protocol", "expected \"http1\", \"h2\" or \"h2c\"");
            UpstreamProtocol::Http1
        }
    }
}
