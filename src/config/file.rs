//! The config file as written: raw serde shapes that mirror the TOML, with every
//! unknown key rejected. Nothing here is checked beyond its syntax; `validate` turns
//! a `FileConfig` into the typed `Config` the daemon runs on.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer};
use toml::Spanned;

/// The whole file, as written: every value keeps its position for error messages.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub runtime: Option<FileRuntime>,
    pub admin: Option<Spanned<FileAdmin>>,
    pub logging: Option<FileLogging>,
    #[serde(default)]
    pub listeners: Vec<Spanned<FileListener>>,
    #[serde(default)]
    pub routes: Vec<Spanned<FileRoute>>,
    #[serde(default)]
    pub upstreams: BTreeMap<Spanned<String>, Spanned<FileUpstream>>,
    pub resolver: Option<Spanned<FileResolver>>,
    pub cache: Option<Spanned<FileCache>>,
    pub redis: Option<Spanned<FileRedis>>,
    #[serde(default)]
    pub rate_limits: BTreeMap<Spanned<String>, Spanned<FileRateLimit>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRuntime {
    pub workers: Option<Spanned<usize>>,
    pub shutdown_timeout: Option<DurationValue>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileListener {
    pub name: Option<Spanned<String>>,
    pub listen: Spanned<AddressValue>,
    pub header_timeout: Option<Spanned<DurationValue>>,
    pub idle_timeout: Option<Spanned<DurationValue>>,
    pub body_timeout: Option<Spanned<DurationValue>>,
    pub send_timeout: Option<Spanned<DurationValue>>,
    pub max_header_bytes: Option<Spanned<i64>>,
    // Accepted only to be refused by name until their issue lands.
    pub tls: Option<Spanned<FileTls>>,
    pub tls_handshake_timeout: Option<Spanned<DurationValue>>,
    #[serde(default)]
    pub trusted_proxies: Vec<Spanned<String>>,
    pub proxy_protocol: Option<Spanned<bool>>,
    pub max_connections: Option<Spanned<i64>>,
    pub max_concurrent_streams: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLogging {
    pub level: Option<Spanned<String>>,
    pub access_log: Option<Spanned<String>>,
    pub access_log_format: Option<Spanned<String>>,
}

/// `tls = { cert = "...", key = "..." }`, or `[[listeners.tls.certs]]` tables.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTls {
    pub cert: Option<Spanned<String>>,
    pub key: Option<Spanned<String>>,
    #[serde(default)]
    pub certs: Vec<Spanned<FileCert>>,
    pub client_ca: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCert {
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAdmin {
    pub listen: Spanned<AddressValue>,
    pub token: Option<Spanned<String>>,
    #[serde(default)]
    pub allowed_hosts: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRoute {
    pub name: Option<Spanned<String>>,
    pub host: Option<Spanned<String>>,
    pub path_prefix: Option<Spanned<String>>,
    pub upstream: Spanned<String>,
    pub cache: Option<Spanned<FileRouteCache>>,
    pub rate_limit: Option<Spanned<Vec<Spanned<String>>>>,
}

/// `[rate_limits.NAME]`: one named policy.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRateLimit {
    pub rate: Spanned<String>,
    pub burst: Option<Spanned<i64>>,
    pub key: Option<Spanned<String>>,
    pub scope: Option<Spanned<String>>,
    pub on_redis_error: Option<Spanned<String>>,
}

/// `[cache]`: the in-process store's sizes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileCache {
    pub memory: Option<Spanned<SizeValue>>,
    pub max_object_size: Option<Spanned<SizeValue>>,
}

/// `[redis]`: the state shared by every weir instance using it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRedis {
    pub url: Spanned<String>,
    pub timeout: Option<Spanned<DurationValue>>,
    pub key_prefix: Option<Spanned<String>>,
}

/// A route's `cache = true`, or `cache = { stale_while_revalidate = "10s", ... }`.
#[derive(Debug)]
pub enum FileRouteCache {
    Enabled(bool),
    Table(FileRouteCacheTable),
}

// By hand, as `FileUpstreamTls`: the table keeps its positions.
impl<'de> Deserialize<'de> for FileRouteCache {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = FileRouteCache;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("true, false or a table { stale_while_revalidate, stale_if_error, lock_timeout, default_ttl, store }")
            }
            fn visit_bool<E: serde::de::Error>(self, value: bool) -> Result<Self::Value, E> {
                Ok(FileRouteCache::Enabled(value))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                let deserializer = serde::de::value::MapAccessDeserializer::new(map);
                FileRouteCacheTable::deserialize(deserializer).map(FileRouteCache::Table)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRouteCacheTable {
    pub stale_while_revalidate: Option<Spanned<DurationValue>>,
    pub stale_if_error: Option<Spanned<DurationValue>>,
    pub lock_timeout: Option<Spanned<DurationValue>>,
    pub default_ttl: Option<Spanned<DurationValue>>,
    pub store: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileUpstream {
    pub strategy: Option<Spanned<String>>,
    #[serde(default)]
    pub backends: Vec<Spanned<FileBackend>>,
    pub max_connections_per_backend: Option<Spanned<i64>>,
    pub queue_timeout: Option<Spanned<DurationValue>>,
    pub timeouts: Option<FileTimeouts>,
    pub hash_key: Option<Spanned<String>>,
    pub hash_balance_factor: Option<Spanned<f64>>,
    pub sticky: Option<Spanned<FileSticky>>,
    pub health_check: Option<Spanned<FileHealthCheck>>,
    pub outlier_detection: Option<Spanned<FileOutlierDetection>>,
    pub panic_threshold: Option<Spanned<i64>>,
    pub retries: Option<Spanned<FileRetries>>,
    pub slow_start: Option<Spanned<DurationValue>>,
    pub tls: Option<Spanned<FileUpstreamTls>>,
    pub protocol: Option<Spanned<String>>,
    pub send_proxy_protocol: Option<Spanned<String>>,
}

/// `tls = true`, or `tls = { sni = "...", ca = "...", insecure_skip_verify = true }`.
#[derive(Debug)]
pub enum FileUpstreamTls {
    Enabled(bool),
    Table(FileUpstreamTlsTable),
}

// By hand rather than `#[serde(untagged)]`: untagged buffers the value, and the
// buffered table loses the positions its `Spanned` fields need.
impl<'de> Deserialize<'de> for FileUpstreamTls {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = FileUpstreamTls;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("true, false or a table { sni, ca, insecure_skip_verify }")
            }
            fn visit_bool<E: serde::de::Error>(self, value: bool) -> Result<Self::Value, E> {
                Ok(FileUpstreamTls::Enabled(value))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                let deserializer = serde::de::value::MapAccessDeserializer::new(map);
                FileUpstreamTlsTable::deserialize(deserializer).map(FileUpstreamTls::Table)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileUpstreamTlsTable {
    pub sni: Option<Spanned<String>>,
    pub ca: Option<Spanned<String>>,
    pub insecure_skip_verify: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSticky {
    pub cookie: Option<Spanned<String>>,
    pub ttl: Option<Spanned<DurationValue>>,
    pub secret: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileHealthCheck {
    pub path: Option<Spanned<String>>,
    pub host: Option<Spanned<String>>,
    pub interval: Option<Spanned<DurationValue>>,
    pub timeout: Option<Spanned<DurationValue>>,
    pub healthy_threshold: Option<Spanned<i64>>,
    pub unhealthy_threshold: Option<Spanned<i64>>,
    /// `"200-399"`, `200` or `[200, 204]`.
    pub expect_status: Option<Spanned<toml::Value>>,
    pub initial_state: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileOutlierDetection {
    pub consecutive_failures: Option<Spanned<i64>>,
    pub base_ejection_time: Option<Spanned<DurationValue>>,
    pub max_ejection_time: Option<Spanned<DurationValue>>,
    pub max_ejection_percent: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRetries {
    pub attempts: Option<Spanned<i64>>,
    pub budget: Option<Spanned<f64>>,
    pub min_retries_per_second: Option<Spanned<i64>>,
    pub max_body_bytes: Option<Spanned<i64>>,
    pub backoff: Option<Spanned<DurationValue>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileBackend {
    pub address: Option<Spanned<BackendAddressValue>>,
    pub srv: Option<Spanned<SrvNameValue>>,
    pub weight: Option<Spanned<i64>>,
}

/// `[resolver]`: how backend names are looked up.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileResolver {
    pub nameservers: Option<Vec<Spanned<AddressValue>>>,
    pub timeout: Option<Spanned<DurationValue>>,
    pub min_ttl: Option<Spanned<DurationValue>>,
    pub max_ttl: Option<Spanned<DurationValue>>,
    pub hold_missing: Option<Spanned<DurationValue>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTimeouts {
    pub connect: Option<Spanned<DurationValue>>,
    pub response: Option<Spanned<DurationValue>>,
    pub idle: Option<Spanned<DurationValue>>,
    pub request: Option<Spanned<DurationValue>>,
}

// === impl DurationValue ===

/// A duration written as a number and a unit: `"250ms"`, `"2s"`, `"5m"`, `"1h"`.
/// Parsed during deserialization so a bad value is reported at its own position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationValue(pub Duration);

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = DurationValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"250ms\", \"2s\", \"5m\" or \"1h\"")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<DurationValue, E> {
                parse_duration(text).map(DurationValue).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// Parses `<digits><unit>` with unit `ms`, `s`, `m` or `h`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "invalid duration {text:?}: expected a whole number and a unit (ms, s, m, h), e.g. \"250ms\" or \"30s\""
        )
    };
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (digits, unit) = text.split_at(split);
    let value: u64 = digits.parse().map_err(|_| bad())?;
    let too_large = || format!("duration {text:?} is too large");
    let per_unit = match unit {
        "ms" => Duration::from_millis(1),
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        _ => return Err(bad()),
    };
    per_unit
        .checked_mul(u32::try_from(value).map_err(|_| too_large())?)
        .ok_or_else(too_large)
}

// === impl SizeValue ===

/// A size in bytes written with a unit: `"256MiB"`, `"8MiB"`, `"512KiB"`, `"1GiB"`,
/// `"100B"` (also `KB`/`MB`/`GB` as powers of 1000, and `k`/`m`/`g` as nginx
/// writes them, as powers of 1024).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeValue(pub u64);

impl<'de> Deserialize<'de> for SizeValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = SizeValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size string such as \"256MiB\", \"512KiB\" or \"1GiB\"")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<SizeValue, E> {
                parse_size(text).map(SizeValue).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// Parses `<digits><unit>`, the unit one of `B`, `KiB`, `MiB`, `GiB`, `KB`, `MB`,
/// `GB`, `k`, `m`, `g`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "invalid size {text:?}: expected a whole number and a unit (B, KiB, MiB, GiB), e.g. \"256MiB\""
        )
    };
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (digits, unit) = text.split_at(split);
    let value: u64 = digits.parse().map_err(|_| bad())?;
    let per_unit: u64 = match unit {
        "B" => 1,
        "KiB" | "k" | "K" => 1 << 10,
        "MiB" | "m" | "M" => 1 << 20,
        "GiB" | "g" | "G" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(bad()),
    };
    value
        .checked_mul(per_unit)
        .ok_or_else(|| format!("size {text:?} is too large"))
}

// === impl AddressValue ===

/// A socket address: `IPv4:port` or `[IPv6]:port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressValue(pub SocketAddr);

impl<'de> Deserialize<'de> for AddressValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = AddressValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an address string such as \"127.0.0.1:8080\" or \"[::1]:8080\"")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<AddressValue, E> {
                text.parse().map(AddressValue).map_err(|_| {
                    E::custom(format!(
                        "invalid address {text:?}: expected IPv4:port or [IPv6]:port, e.g. \"127.0.0.1:8080\" (host names are not supported yet)"
                    ))
                })
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

// === impl BackendAddressValue ===

/// A backend's `address`: an IP address and port, or a DNS name and port whose
/// A/AAAA records are the backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendAddressValue {
    Ip(SocketAddr),
    Name { host: String, port: u16 },
}

impl<'de> Deserialize<'de> for BackendAddressValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = BackendAddressValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an address string such as \"127.0.0.1:8080\", \"[::1]:8080\" or \"app.internal:8080\"")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<BackendAddressValue, E> {
                parse_backend_address(text).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

fn parse_backend_address(text: &str) -> Result<BackendAddressValue, String> {
    if let Ok(address) = text.parse() {
        return Ok(BackendAddressValue::Ip(address));
    }
    let bad = |why: &str| {
        format!(
            "invalid address {text:?}: {why}; expected IPv4:port, [IPv6]:port or name:port, e.g. \"app.internal:8080\""
        )
    };
    if text.starts_with('[') || text.matches(':').count() > 1 {
        return Err(bad("not an IPv6 address in brackets with a port"));
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(bad("the port is missing"));
    };
    let port = match port.parse::<u16>() {
        Ok(port) if port > 0 => port,
        _ => return Err(bad("the port must be a number from 1 to 65535")),
    };
    if host.starts_with('_') {
        return Err(format!(
            "{host:?} is an SRV name: write {{ srv = \"{host}\" }}, whose records give the ports"
        ));
    }
    if !host.is_empty() && host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(bad("not a valid IPv4 address"));
    }
    if let Some(why) = dns_name_problem(host) {
        return Err(bad(&why));
    }
    // A last label of digits (or 0x...) is an address typo, and no certificate
    // can name it.
    let last = host
        .trim_end_matches('.')
        .rsplit('.')
        .next()
        .unwrap_or(host);
    if last.bytes().all(|b| b.is_ascii_digit()) || last.to_ascii_lowercase().starts_with("0x") {
        return Err(bad("a name's last label cannot be a number"));
    }
    Ok(BackendAddressValue::Name {
        host: host.to_ascii_lowercase(),
        port,
    })
}

// === impl SrvNameValue ===

/// The name of an SRV record set, e.g. `_http._tcp.app.service.consul`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvNameValue(pub String);

impl<'de> Deserialize<'de> for SrvNameValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = SrvNameValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an SRV name such as \"_http._tcp.app.service.consul\"")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<SrvNameValue, E> {
                if text.contains(':') {
                    return Err(E::custom(format!(
                        "invalid SRV name {text:?}: no port here, the SRV records give each target's port"
                    )));
                }
                match dns_name_problem(text) {
                    Some(why) => Err(E::custom(format!("invalid SRV name {text:?}: {why}"))),
                    None => Ok(SrvNameValue(text.to_ascii_lowercase())),
                }
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// Why `name` is not a DNS name weir can look up, if it is not: labels of
/// letters, digits, `-` and `_` (compose and SRV names use it), each 1 to 63
/// characters and not starting or ending with `-`; at most 253 characters; one
/// trailing dot allowed.
fn dns_name_problem(name: &str) -> Option<String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return Some("the name is empty".to_owned());
    }
    if name.len() > 253 {
        return Some("a name has at most 253 characters".to_owned());
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Some("a name has no empty labels (two dots in a row)".to_owned());
        }
        if label.len() > 63 {
            return Some(format!("the label {label:?} is longer than 63 characters"));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Some(format!("{c:?} is not allowed in a name"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Some(format!("the label {label:?} starts or ends with '-'"));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_addresses_are_ips_or_names_with_a_port() {
        assert_eq!(
            parse_backend_address("127.0.0.1:80"),
            Ok(BackendAddressValue::Ip("127.0.0.1:80".parse().unwrap()))
        );
        assert_eq!(
            parse_backend_address("[::1]:80"),
            Ok(BackendAddressValue::Ip("[::1]:80".parse().unwrap()))
        );
        assert_eq!(
            parse_backend_address("App.Internal:8080"),
            Ok(BackendAddressValue::Name {
                host: "app.internal".into(),
                port: 8080
            })
        );
        assert_eq!(
            parse_backend_address("my_app:80"),
            Ok(BackendAddressValue::Name {
                host: "my_app".into(),
                port: 80
            })
        );
        for (bad, why) in [
            ("app.internal", "port is missing"),
            ("app:0", "port must be"),
            ("app:http", "port must be"),
            ("::1:80", "IPv6"),
            ("[::1]", "IPv6"),
            ("300.1.1.1:80", "IPv4"),
            ("app.123:80", "last label"),
            ("0x7f.0.0.0x1:80", "last label"),
            ("_http._tcp.app:80", "SRV name"),
            ("app..internal:80", "empty labels"),
            ("-app:80", "starts or ends"),
            ("app/x:80", "not allowed"),
            (":80", "empty"),
        ] {
            let err = parse_backend_address(bad).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn sizes_take_every_unit() {
        assert_eq!(parse_size("100B"), Ok(100));
        assert_eq!(parse_size("512KiB"), Ok(512 * 1024));
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("8m"), Ok(8 << 20));
        assert_eq!(parse_size("2MB"), Ok(2_000_000));
        for bad in [
            "",
            "MiB",
            "12",
            "1.5MiB",
            "-1MiB",
            "1 MiB",
            "1mib",
            "99999999999999999999GiB",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
        assert!(
            parse_size("20000000000GiB")
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn durations_take_every_unit() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn durations_without_a_known_unit_are_refused() {
        for bad in [
            "",
            "10",
            "s",
            "1.5s",
            "-1s",
            "10 s",
            "3d",
            "10S",
            "99999999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
