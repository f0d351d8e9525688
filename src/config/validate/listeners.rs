//! Validation of listeners: addresses, timeouts and limits, TLS termination and the
//! trusted proxy networks.

use toml::Spanned;

use super::{int_in, item_name, positive_duration, relative_to_file};
use crate::config::defaults::*;
use crate::config::file::{self, FileListener};
use crate::config::problems::Problems;
use crate::config::{CertFiles, ListenerConfig, TlsConfig};

pub(super) fn validate_listener(
    index: usize,
    raw: &FileListener,
    problems: &mut Problems<'_>,
) -> ListenerConfig {
    let max_concurrent_streams = int_in(
        &raw.max_concurrent_streams,
        "max_concurrent_streams",
        1..=10_000,
        DEFAULT_MAX_CONCURRENT_STREAMS,
        problems,
    );
    let tls = raw.tls.as_ref().map(|tls| validate_tls(tls, problems));
    let tls_handshake_timeout = positive_duration(
        &raw.tls_handshake_timeout,
        "tls_handshake_timeout",
        DEFAULT_TLS_HANDSHAKE_TIMEOUT,
        problems,
    );

    let name = item_name(&raw.name, || format!("listener-{index}"), problems);
    let header_timeout = positive_duration(
        &raw.header_timeout,
        "header_timeout",
        DEFAULT_HEADER_TIMEOUT,
        problems,
    );
    let idle_timeout = positive_duration(
        &raw.idle_timeout,
        "idle_timeout",
        DEFAULT_IDLE_TIMEOUT,
        problems,
    );
    let body_timeout = positive_duration(
        &raw.body_timeout,
        "body_timeout",
        DEFAULT_BODY_TIMEOUT,
        problems,
    );
    let send_timeout = positive_duration(
        &raw.send_timeout,
        "send_timeout",
        DEFAULT_SEND_TIMEOUT,
        problems,
    );
    let max_header_bytes = match &raw.max_header_bytes {
        None => DEFAULT_MAX_HEADER_BYTES,
        Some(value) => {
            match usize::try_from(*value.get_ref()) {
                Ok(n) if (MIN_MAX_HEADER_BYTES..=MAX_MAX_HEADER_BYTES).contains(&n) => n,
                _ => {
                    problems.spanned(
                    value,
                    "max_header_bytes",
                    format!("must be between {MIN_MAX_HEADER_BYTES} and {MAX_MAX_HEADER_BYTES} bytes"),
                );
                    DEFAULT_MAX_HEADER_BYTES
                }
            }
        }
    };
    let max_connections = int_in(
        &raw.max_connections,
        "max_connections",
        0..=10_000_000,
        0,
        problems,
    );
    ListenerConfig {
        name,
        tls,
        tls_handshake_timeout,
        max_concurrent_streams,
        max_connections,
        proxy_protocol: raw.proxy_protocol.as_ref().is_some_and(|p| *p.get_ref()),
        listen: raw.listen.get_ref().0,
        header_timeout,
        idle_timeout,
        body_timeout,
        send_timeout,
        max_header_bytes,
        trusted_proxies: raw
            .trusted_proxies
            .iter()
            .filter_map(|entry| parse_network(entry, problems))
            .collect(),
    }
}

fn validate_tls(raw: &Spanned<file::FileTls>, problems: &mut Problems<'_>) -> TlsConfig {
    let file = problems.file;
    let path = |p: &Spanned<String>| relative_to_file(file, p);
    let tls = raw.get_ref();
    let mut certs = Vec::new();
    match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => certs.push(CertFiles {
            cert: path(cert),
            key: path(key),
        }),
        (None, None) => {}
        (Some(cert), None) => problems.spanned(cert, "tls.cert", "tls.cert needs tls.key"),
        (None, Some(key)) => problems.spanned(key, "tls.key", "tls.key needs tls.cert"),
    }
    certs.extend(tls.certs.iter().map(|c| CertFiles {
        cert: path(&c.get_ref().cert),
        key: path(&c.get_ref().key),
    }));
    if certs.is_empty() && tls.cert.is_none() && tls.key.is_none() {
        problems.spanned(
            raw,
            "tls",
            "tls needs a certificate: tls = { cert = \"cert.pem\", key = \"key.pem\" } or [[listeners.tls.certs]] tables",
        );
    }
    TlsConfig {
        certs,
        client_ca: tls.client_ca.as_ref().map(path),
    }
}

/// `10.0.0.0/8`, `2001:db8::/32`, or a single address (a /32 or /128).
fn parse_network(entry: &Spanned<String>, problems: &mut Problems<'_>) -> Option<ipnet::IpNet> {
    let text = entry.get_ref().trim();
    let parsed = text
        .parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
    match parsed {
        Ok(network) => Some(network.trunc()),
        Err(_) => {
            problems.spanned(
                entry,
                "trusted_proxies",
                format!("invalid network {text:?}: expected an address or CIDR block, e.g. \"10.0.0.0/8\" or \"192.0.2.7\""),
            );
            None
        }
    }
}
