//! The cache's shared tier: stored responses written through to Redis so that
//! every weir instance using it can answer them, and purges told to all of
//! them over pub/sub.
//!
//! Keys (after `redis.key_prefix`):
//! - `c:<key>`: the object of a response without `Vary`, or the list of fields
//!   the key's variants differ by;
//! - `v:<key>\n<values>`: the object of one variant;
//! - `b:<id>:<n>`: the body past the first chunk, in chunks, so that no value
//!   is huge; an object names the id of its chunks, fresh for each write, so
//!   a reader never mixes two versions.
//!
//! Every key expires on its own once the response can no longer be used.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use prometheus::IntCounter;
use tracing::{debug, warn};

use super::directives::ResponseDirectives;
use super::object::{Stored, Vary};
use crate::metrics::Metrics;
use crate::redis_connection::{Redis, Use};

/// The body is written in chunks of this size.
const CHUNK: usize = 256 * 1024;
/// An object past its use is kept this long if it can be revalidated.
const REVALIDATION_GRACE: Duration = Duration::from_secs(3600);
const OBJECT_MAGIC: &[u8; 4] = b"WCO1";
const INDEX_MAGIC: &[u8; 4] = b"WCV1";
/// The channel purges and invalidations are published on.
const CHANNEL: &str = "cache:purge";

#[derive(Debug)]
pub struct SharedTier {
    pub redis: Arc<Redis>,
    errors: IntCounter,
    purge_errors: IntCounter,
}

/// What another instance asks every instance to drop.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "drop", rename_all = "lowercase")]
pub enum Dropped {
    /// One key (an unsafe method's invalidation).
    Key { key: String },
    /// `POST /cache/purge`.
    Purge {
        host: String,
        path: Option<String>,
        prefix: Option<String>,
    },
}

impl SharedTier {
    pub fn new(redis: Arc<Redis>, metrics: &Metrics) -> Self {
        SharedTier {
            redis,
            errors: metrics.redis_errors("cache"),
            purge_errors: metrics.redis_errors("purge"),
        }
    }

    /// Counts a lookup that took longer than `redis.timeout` in all.
    pub fn lookup_timed_out(&self) {
        self.redis
            .failed(&self.errors, "lookup took longer than redis.timeout");
    }

    /// The stored response of `key` that `request` selects, if Redis has it
    /// and answers in time. What Redis holds is checked as untrusted input:
    /// a value that does not decode whole, within `limit` bytes of body, is a
    /// miss.
    pub async fn get(&self, key: &str, request: &HeaderMap, limit: u64) -> Option<Stored> {
        let redis = &self.redis;
        let first: Option<Vec<u8>> = redis
            .query(
                redis::cmd("GET").arg(redis.key(&[b"c:", key.as_bytes()])),
                &self.errors,
            )
            .await?;
        let first = first?;
        let object = if first.starts_with(INDEX_MAGIC) {
            let (generation, fields) = decode_index(&first)?;
            let variant_key = variant_key(key, generation, &fields, request);
            let object: Option<Vec<u8>> = redis
                .query(
                    redis::cmd("GET").arg(redis.key(&[b"v:", &variant_key])),
                    &self.errors,
                )
                .await?;
            object?
        } else {
            first
        };
        let (mut stored, rest) = decode_object(&object, limit)?;
        if let Some((id, count, length)) = rest {
            let keys: Vec<Vec<u8>> = (1..=count)
                .map(|n| redis.key(&[b"b:", format!("{id:016x}:{n}").as_bytes()]))
                .collect();
            let chunks: Vec<Option<Vec<u8>>> = redis
                .query(redis::cmd("MGET").arg(keys), &self.errors)
                .await?;
            let mut body = BytesMut::with_capacity(length);
            body.extend_from_slice(&stored.body);
            for chunk in chunks {
                let chunk = chunk?;
                if body.len() + chunk.len() > length {
                    return None;
                }
                body.extend_from_slice(&chunk);
            }
            if body.len() != length {
                return None;
            }
            stored.body = body.freeze();
        }
        // A length that disagrees with the body would misframe the answer.
        if let Some(declared) = stored.headers.get(http::header::CONTENT_LENGTH)
            && declared.to_str().ok() != Some(stored.body.len().to_string().as_str())
        {
            return None;
        }
        stored.vary.matches(request).then_some(stored)
    }

    /// Writes `stored` under `key`, to expire once useless: one round trip
    /// for a response without `Vary`; with one, the key's index of variants
    /// (made once, with a generation that an invalidation ends) first.
    pub async fn put(&self, key: &str, stored: &Stored, ttl: Duration) {
        let redis = &self.redis;
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1000);
        let id: u64 = fastrand::u64(..);
        let (object, chunks) = encode_object(stored, id);
        let index_key = redis.key(&[b"c:", key.as_bytes()]);
        let mut pipeline = redis::pipe();
        if stored.vary.0.is_empty() {
            pipeline
                .cmd("SET")
                .arg(&index_key)
                .arg(object)
                .arg("PX")
                .arg(ttl_ms)
                .ignore();
        } else {
            let fields: Vec<&HeaderName> = stored.vary.0.iter().map(|(n, _)| n).collect();
            let mut index = redis::pipe();
            index
                .cmd("SET")
                .arg(&index_key)
                .arg(encode_index(fastrand::u64(..), &fields))
                .arg("NX")
                .arg("PX")
                .arg(ttl_ms)
                .ignore()
                .cmd("PEXPIRE")
                .arg(&index_key)
                .arg(ttl_ms)
                .arg("GT")
                .ignore()
                .cmd("GET")
                .arg(&index_key);
            let found: Option<(Option<Vec<u8>>,)> =
                redis.query_pipeline(&index, Use::Write, &self.errors).await;
            let current = found
                .and_then(|(value,)| value)
                .and_then(|v| decode_index(&v));
            let generation = match current {
                // The key's variants differ by these fields: this one joins them.
                Some((generation, current)) if current.iter().eq(fields.iter().copied()) => {
                    generation
                }
                // No index (a response without Vary was there), or another
                // list of fields: a new index, the old variants let go.
                _ => {
                    let generation = fastrand::u64(..);
                    pipeline
                        .cmd("SET")
                        .arg(&index_key)
                        .arg(encode_index(generation, &fields))
                        .arg("PX")
                        .arg(ttl_ms)
                        .ignore();
                    generation
                }
            };
            let variant = variant_key_of(key, generation, &stored.vary);
            pipeline
                .cmd("SET")
                .arg(redis.key(&[b"v:", &variant]))
                .arg(object)
                .arg("PX")
                .arg(ttl_ms)
                .ignore();
        }
        for (n, chunk) in chunks.iter().enumerate() {
            pipeline
                .cmd("SET")
                .arg(redis.key(&[b"b:", format!("{id:016x}:{}", n + 1).as_bytes()]))
                .arg(chunk.as_ref())
                .arg("PX")
                .arg(ttl_ms)
                .ignore();
        }
        let _: Option<()> = redis
            .query_pipeline(&pipeline, Use::Write, &self.errors)
            .await;
    }

    /// Drops `key` from Redis (its index, and with it every variant) and tells
    /// every instance to drop it from memory.
    pub async fn invalidate(&self, key: &str) {
        let redis = &self.redis;
        let message = Dropped::Key {
            key: key.to_owned(),
        };
        let mut pipeline = redis::pipe();
        pipeline
            .cmd("DEL")
            .arg(redis.key(&[b"c:", key.as_bytes()]))
            .ignore()
            .cmd("PUBLISH")
            .arg(redis.key(&[CHANNEL.as_bytes()]))
            .arg(serde_json::to_vec(&message).unwrap_or_default())
            .ignore();
        let _: Option<()> = redis
            .query_pipeline(&pipeline, Use::Write, &self.errors)
            .await;
    }

    /// Drops from Redis every key `matches` selects among those of `host`,
    /// and publishes the purge to every instance. How many keys went, or
    /// `None` when Redis could not be reached.
    pub async fn purge(&self, message: &Dropped, matches: impl Fn(&str) -> bool) -> Option<usize> {
        let Dropped::Purge { host, .. } = message else {
            return None;
        };
        let redis = &self.redis;
        let mut removed = 0;
        for kind in [&b"c:"[..], &b"v:"[..]] {
            // Both schemes; the glob's special characters in the host escaped.
            let mut pattern = redis.key(&[kind, b"http*://"]);
            for b in host.to_ascii_lowercase().bytes() {
                if matches!(b, b'*' | b'?' | b'[' | b']' | b'\\') {
                    pattern.push(b'\\');
                }
                pattern.push(b);
            }
            pattern.extend_from_slice(b"/*");
            let mut cursor: u64 = 0;
            let prefix_len = redis.key(&[kind]).len();
            // A bounded walk: SCAN returns every key present throughout.
            for _ in 0..100_000 {
                let (next, keys): (u64, Vec<Vec<u8>>) = redis
                    .query_for(
                        redis::cmd("SCAN")
                            .arg(cursor)
                            .arg("MATCH")
                            .arg(&pattern)
                            .arg("COUNT")
                            .arg(1000),
                        Use::Purge,
                        &self.purge_errors,
                    )
                    .await?;
                let doomed: Vec<&Vec<u8>> = keys
                    .iter()
                    .filter(|k| {
                        let text = String::from_utf8_lossy(&k[prefix_len..]);
                        let key = text.split('\n').next().unwrap_or("");
                        matches(key)
                    })
                    .collect();
                if !doomed.is_empty() {
                    let _: Option<()> = redis
                        .query_for(
                            redis::cmd("UNLINK").arg(&doomed),
                            Use::Purge,
                            &self.purge_errors,
                        )
                        .await;
                    removed += doomed.len();
                }
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        let _: Option<i64> = redis
            .query_for(
                redis::cmd("PUBLISH")
                    .arg(redis.key(&[CHANNEL.as_bytes()]))
                    .arg(serde_json::to_vec(message).unwrap_or_default()),
                Use::Purge,
                &self.purge_errors,
            )
            .await;
        Some(removed)
    }

    /// Follows the purges and invalidations of every instance until the
    /// returned task is aborted, reconnecting while Redis is away; each one
    /// goes to `apply`.
    pub fn follow(
        redis: Arc<Redis>,
        errors: IntCounter,
        apply: impl Fn(Dropped) + Send + Sync + 'static,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let channel = redis.key(&[CHANNEL.as_bytes()]);
            let mut delay = Duration::from_millis(100);
            loop {
                match redis.pubsub().await {
                    Ok(mut pubsub) => {
                        if let Err(err) = pubsub.subscribe(&channel).await {
                            redis.failed(&errors, &err.to_string());
                        } else {
                            redis.succeeded();
                            delay = Duration::from_millis(100);
                            let mut messages = pubsub.into_on_message();
                            while let Some(message) = messages.next().await {
                                match serde_json::from_slice::<Dropped>(message.get_payload_bytes())
                                {
                                    Ok(dropped) => apply(dropped),
                                    Err(err) => {
                                        debug!(error = %err, "unreadable cache message on redis")
                                    }
                                }
                            }
                            // The connection ended: purges may have been missed.
                            warn!(
                                "redis pub/sub connection lost; purges from other instances may be missed until it is back"
                            );
                        }
                    }
                    Err(err) => redis.failed(&errors, &err.to_string()),
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        })
    }
}

/// How long Redis keeps `stored`: while fresh or stale-servable, and an hour
/// more when it can be revalidated.
pub fn time_to_keep(
    stored: &Stored,
    stale_while_revalidate: Duration,
    stale_if_error: Duration,
) -> Duration {
    let d = &stored.directives;
    let stale = d
        .stale_while_revalidate
        .map_or(stale_while_revalidate, Duration::from_secs)
        .max(d.stale_if_error.map_or(stale_if_error, Duration::from_secs));
    let left = stored
        .lifetime
        .saturating_sub(stored.age(SystemTime::now()))
        + stale;
    if stored.has_validators() {
        left + REVALIDATION_GRACE
    } else {
        left
    }
}

fn variant_key(key: &str, generation: u64, fields: &[HeaderName], request: &HeaderMap) -> Vec<u8> {
    let vary = Vary(
        fields
            .iter()
            .map(|name| (name.clone(), super::object::normalised(request, name)))
            .collect(),
    );
    variant_key_of(key, generation, &vary)
}

/// `<key>\n<generation>` then each field and value: the variant's key under
/// the index generation it belongs to.
fn variant_key_of(key: &str, generation: u64, vary: &Vary) -> Vec<u8> {
    let mut out = key.as_bytes().to_vec();
    out.extend_from_slice(format!("\n{generation:016x}").as_bytes());
    for (name, value) in &vary.0 {
        out.push(b'\n');
        out.extend_from_slice(name.as_str().as_bytes());
        match value {
            Some(value) => {
                out.push(b'=');
                out.extend_from_slice(value.as_bytes());
            }
            None => out.push(b'!'),
        }
    }
    out
}

// === encoding ===

fn put_u16(out: &mut Vec<u8>, value: usize) {
    out.extend_from_slice(&(value as u16).to_be_bytes());
}
fn put_u32(out: &mut Vec<u8>, value: usize) {
    out.extend_from_slice(&(value as u32).to_be_bytes());
}
fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_be_bytes());
}
fn millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn encode_index(generation: u64, fields: &[&HeaderName]) -> Vec<u8> {
    let mut out = INDEX_MAGIC.to_vec();
    put_u64(&mut out, generation);
    put_u32(&mut out, fields.len());
    for name in fields {
        put_u16(&mut out, name.as_str().len());
        out.extend_from_slice(name.as_str().as_bytes());
    }
    out
}

fn decode_index(data: &[u8]) -> Option<(u64, Vec<HeaderName>)> {
    let mut r = Reader(data.strip_prefix(INDEX_MAGIC)?);
    let generation = r.u64()?;
    let count = r.u32()?;
    if count > MAX_VARY_FIELDS {
        return None;
    }
    let mut fields = Vec::with_capacity(count);
    for _ in 0..count {
        let len = r.u16()?;
        fields.push(HeaderName::from_bytes(r.take(len)?).ok()?);
    }
    r.0.is_empty().then_some((generation, fields))
}

/// Caps on what a value read from Redis may hold.
const MAX_VARY_FIELDS: usize = 64;
const MAX_HEADERS: usize = 512;

/// The object (head and first chunk) and the chunks of the rest.
fn encode_object(stored: &Stored, id: u64) -> (Vec<u8>, Vec<Bytes>) {
    let mut out = OBJECT_MAGIC.to_vec();
    put_u16(&mut out, stored.status.as_u16() as usize);
    put_u64(&mut out, millis(stored.response_time));
    put_u64(
        &mut out,
        u64::try_from(stored.initial_age.as_millis()).unwrap_or(u64::MAX),
    );
    put_u64(
        &mut out,
        u64::try_from(stored.lifetime.as_millis()).unwrap_or(u64::MAX),
    );
    put_u32(&mut out, stored.vary.0.len());
    for (name, value) in &stored.vary.0 {
        put_u16(&mut out, name.as_str().len());
        out.extend_from_slice(name.as_str().as_bytes());
        match value {
            Some(value) => {
                out.push(1);
                put_u32(&mut out, value.len());
                out.extend_from_slice(value.as_bytes());
            }
            None => out.push(0),
        }
    }
    put_u32(&mut out, stored.headers.len());
    for (name, value) in &stored.headers {
        put_u16(&mut out, name.as_str().len());
        out.extend_from_slice(name.as_str().as_bytes());
        put_u32(&mut out, value.len());
        out.extend_from_slice(value.as_bytes());
    }
    let body = &stored.body;
    let first = body.len().min(CHUNK);
    let rest: Vec<Bytes> = (first..body.len())
        .step_by(CHUNK)
        .map(|start| body.slice(start..(start + CHUNK).min(body.len())))
        .collect();
    put_u64(&mut out, body.len() as u64);
    put_u64(&mut out, id);
    put_u32(&mut out, rest.len());
    put_u32(&mut out, first);
    out.extend_from_slice(&body[..first]);
    (out, rest)
}

/// The chunks of a body still to read: their id, how many, the whole length.
type Chunks = (u64, usize, usize);

/// A stored response with its first chunk, and the chunks still to read.
fn decode_object(data: &[u8], limit: u64) -> Option<(Stored, Option<Chunks>)> {
    let mut r = Reader(data.strip_prefix(OBJECT_MAGIC)?);
    let status = StatusCode::from_u16(r.u16()? as u16).ok()?;
    // Only what weir stores: a final status, never a partial or a 304.
    if !(200..600).contains(&status.as_u16())
        || matches!(
            status,
            StatusCode::PARTIAL_CONTENT | StatusCode::NOT_MODIFIED
        )
    {
        return None;
    }
    let response_time = UNIX_EPOCH + Duration::from_millis(r.u64()?);
    let initial_age = Duration::from_millis(r.u64()?);
    let lifetime = Duration::from_millis(r.u64()?);
    let vary_count = r.u32()?;
    if vary_count > MAX_VARY_FIELDS {
        return None;
    }
    let mut vary = Vec::with_capacity(vary_count);
    for _ in 0..vary_count {
        let len = r.u16()?;
        let name = HeaderName::from_bytes(r.take(len)?).ok()?;
        let value = match r.take(1)?[0] {
            0 => None,
            _ => {
                let len = r.u32()?;
                Some(String::from_utf8(r.take(len)?.to_vec()).ok()?)
            }
        };
        vary.push((name, value));
    }
    let header_count = r.u32()?;
    if header_count > MAX_HEADERS {
        return None;
    }
    let mut headers = HeaderMap::with_capacity(header_count);
    for _ in 0..header_count {
        let len = r.u16()?;
        let name = HeaderName::from_bytes(r.take(len)?).ok()?;
        let len = r.u32()?;
        let value = HeaderValue::from_bytes(r.take(len)?).ok()?;
        headers.append(name, value);
    }
    let length = r.u64()?;
    if length > limit {
        return None;
    }
    let length = usize::try_from(length).ok()?;
    let id = r.u64()?;
    let chunks = r.u32()?;
    let first = r.u32()?;
    // The chunking weir writes, exactly: a first chunk of up to CHUNK bytes,
    // then as many chunks as the rest needs.
    if first != length.min(CHUNK) || chunks != length.saturating_sub(CHUNK).div_ceil(CHUNK) {
        return None;
    }
    let body = Bytes::copy_from_slice(r.take(first)?);
    if !r.0.is_empty() {
        return None;
    }
    let rest = (chunks > 0).then_some((id, chunks, length));
    let directives = ResponseDirectives::of(&headers);
    let stored = Stored {
        status,
        headers,
        body,
        response_time,
        initial_age,
        lifetime,
        directives,
        vary: Vary(vary),
    };
    Some((stored, rest))
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u16(&mut self) -> Option<usize> {
        Some(u16::from_be_bytes(self.take(2)?.try_into().ok()?) as usize)
    }
    fn u32(&mut self) -> Option<usize> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?) as usize)
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(body_len: usize) -> Stored {
        let mut headers = HeaderMap::new();
        headers.insert("cache-control", HeaderValue::from_static("max-age=60"));
        headers.append("x-many", HeaderValue::from_static("a"));
        headers.append("x-many", HeaderValue::from_static("b"));
        let mut request = HeaderMap::new();
        request.insert("accept-language", HeaderValue::from_static("fr"));
        headers.insert("vary", HeaderValue::from_static("accept-language"));
        let body: Vec<u8> = (0..body_len).map(|i| (i % 251) as u8).collect();
        let now = SystemTime::now();
        Stored::new(
            StatusCode::OK,
            headers,
            Bytes::from(body),
            &request,
            now,
            now,
            Duration::ZERO,
        )
    }

    #[test]
    fn objects_round_trip_with_repeated_fields_and_vary() {
        let stored = sample(100);
        let (encoded, chunks) = encode_object(&stored, 7);
        assert!(chunks.is_empty());
        let (decoded, rest) = decode_object(&encoded, u64::MAX).unwrap();
        assert!(rest.is_none());
        assert_eq!(decoded.status, stored.status);
        assert_eq!(decoded.headers, stored.headers);
        assert_eq!(decoded.body, stored.body);
        assert_eq!(decoded.vary, stored.vary);
        assert_eq!(decoded.lifetime, stored.lifetime);
        assert_eq!(decoded.headers.get_all("x-many").iter().count(), 2);
    }

    #[test]
    fn large_bodies_go_in_chunks() {
        let stored = sample(CHUNK * 2 + 10);
        let (encoded, chunks) = encode_object(&stored, 9);
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[1].len(), 10);
        let (decoded, rest) = decode_object(&encoded, u64::MAX).unwrap();
        assert_eq!(rest, Some((9, 2, CHUNK * 2 + 10)));
        assert_eq!(decoded.body.len(), CHUNK);
    }

    #[test]
    fn truncated_or_foreign_values_are_misses() {
        let (encoded, _) = encode_object(&sample(100), 1);
        for cut in [0, 3, 10, 40, encoded.len() - 1] {
            assert!(decode_object(&encoded[..cut], u64::MAX).is_none(), "{cut}");
        }
        assert!(decode_object(b"hello world", u64::MAX).is_none());
        // Over the limit, or a length the chunks do not add up to: a miss.
        assert!(decode_object(&encoded, 99).is_none());
        let index = encode_index(5, &[&HeaderName::from_static("accept")]);
        assert_eq!(
            decode_index(&index).unwrap(),
            (5, vec![HeaderName::from_static("accept")])
        );
        assert!(decode_index(&index[..index.len() - 1]).is_none());
    }
}
