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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRoute {
    pub name: Option<Spanned<String>>,
    pub host: Option<Spanned<String>>,
    pub path_prefix: Option<Spanned<String>>,
    pub upstream: Spanned<String>,
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
    pub address: Spanned<AddressValue>,
    pub weight: Option<Spanned<i64>>,
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

#[cfg(test)]
mod tests {
    use super::*;

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
