//! Policies counted in Redis, across every weir instance that shares it: the
//! same GCRA as on one instance, run by a Lua script on Redis's own clock
//! (`TIME`), so that instances with clocks apart still agree. One round trip
//! per decision (`EVALSHA`; the script is loaded once when Redis does not
//! know it).
//!
//! Keys are `<prefix>rl:{<policy>:<digest>}`: the braces are a hash tag, so
//! a Redis Cluster keeps each key whole on one slot; the digest (SHA-256 of
//! the request's key, cut to 128 bits) keeps client-chosen bytes out of key
//! names and their length bounded. Each key expires when its TAT passes, so
//! Redis holds only the keys active within `burst / rate`.

use std::sync::Arc;

use prometheus::IntCounter;
use redis::Script;

use super::gcra::{Gcra, Verdict};
use crate::redis_connection::Redis;

/// KEYS[1]: a key's TAT, in microseconds of Redis's clock since 2023-11-14
/// (a recent start keeps a double's resolution near 0.01 µs). ARGV: the
/// interval and tolerance in microseconds (perhaps fractional), then "take"
/// or "give" (give back one request let through before). Returns whether it
/// passed, the microseconds to wait when it did not, the microseconds to a
/// full burst, and the requests that would also pass now.
const SCRIPT: &str = r#"
if redis.replicate_commands then redis.replicate_commands() end
local time = redis.call('TIME')
local now = (tonumber(time[1]) - 1700000000) * 1000000 + tonumber(time[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local stored = tonumber(redis.call('GET', KEYS[1]) or '')
local tat = now
if stored and stored > now then tat = stored end
-- Never further ahead than this policy can push a key: a rate changed by a
-- reload applies at once.
local bound = tolerance + interval
if tat - now > bound then
  tat = now + bound
  redis.call('SET', KEYS[1], string.format('%.3f', tat), 'PX', math.floor(bound / 1000) + 1)
end
if ARGV[3] == 'give' then
  if tat > now then
    local back = math.max(tat - interval, now)
    redis.call('SET', KEYS[1], string.format('%.3f', back), 'PX', math.floor((back - now) / 1000) + 1)
  end
  return {1, 0, 0, 0}
end
if tat - now > tolerance then
  return {0, math.ceil(tat - now - tolerance), math.ceil(tat - now), 0}
end
local new = tat + interval
redis.call('SET', KEYS[1], string.format('%.3f', new), 'PX', math.floor((new - now) / 1000) + 1)
return {1, 0, math.ceil(new - now), math.floor((tolerance + interval - (new - now)) / interval + 1e-9)}
"#;

pub struct GlobalStore {
    pub redis: Arc<Redis>,
    script: Script,
    errors: IntCounter,
    /// `<prefix>rl:{<policy>:`
    prefix: Vec<u8>,
    /// What the policy counts by (`client`, `header:x-api-key`): hashed with
    /// each key, so a policy whose key changes starts afresh.
    kind: String,
    interval: String,
    tolerance: String,
}

impl std::fmt::Debug for GlobalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GlobalStore")
            .field("prefix", &String::from_utf8_lossy(&self.prefix))
            .finish()
    }
}

impl GlobalStore {
    pub fn new(
        redis: Arc<Redis>,
        policy: &str,
        kind: String,
        gcra: &Gcra,
        errors: IntCounter,
    ) -> GlobalStore {
        let prefix = redis.key(&[b"rl:{", policy.as_bytes(), b":"]);
        let micros = |nanos: u64| (nanos as f64 / 1000.0).to_string();
        GlobalStore {
            script: Script::new(SCRIPT),
            errors,
            prefix,
            kind,
            interval: micros(gcra.interval),
            tolerance: micros(gcra.tolerance),
            redis,
        }
    }

    /// The Redis key of a request key's bytes.
    pub fn key(&self, key: &[u8]) -> Vec<u8> {
        let mut context = ring::digest::Context::new(&ring::digest::SHA256);
        context.update(self.kind.as_bytes());
        context.update(b"\n");
        context.update(key);
        let digest = context.finish();
        let mut name = Vec::with_capacity(self.prefix.len() + 33);
        name.extend_from_slice(&self.prefix);
        for byte in &digest.as_ref()[..16] {
            name.extend_from_slice(&HEX[usize::from(*byte)].to_be_bytes());
        }
        name.push(b'}');
        name
    }

    /// Decides on one request of `key` in Redis; `None` when Redis could not
    /// answer within `redis.timeout` (or rests after a failure).
    pub async fn check(&self, gcra: &Gcra, key: &[u8]) -> Option<Verdict> {
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(key)
            .arg(&self.interval)
            .arg(&self.tolerance)
            .arg("take");
        let (passed, wait, reset, remaining): (i64, i64, i64, i64) =
            self.redis.invoke(&invocation, &self.errors).await?;
        let micros = |n: i64| u64::try_from(n).unwrap_or(0).saturating_mul(1000);
        // Bounded by what the policy allows: the answer is Redis's, and a
        // Redis is not trusted to say more than the policy could.
        let most = gcra.remaining(gcra.interval);
        Some(if passed == 1 {
            Verdict::Allowed {
                remaining: u64::try_from(remaining).unwrap_or(0).min(most),
                reset: micros(reset),
            }
        } else {
            Verdict::Refused {
                retry_after: micros(wait),
            }
        })
    }

    /// Gives back a request `check` let through (another policy refused it).
    pub async fn give_back(&self, key: &[u8]) {
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(key)
            .arg(&self.interval)
            .arg(&self.tolerance)
            .arg("give");
        let _: Option<(i64, i64, i64, i64)> = self.redis.invoke(&invocation, &self.errors).await;
    }
}

/// Each byte as two lowercase hex digits.
const HEX: [u16; 256] = {
    let digits = b"0123456789abcdef";
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = ((digits[i >> 4] as u16) << 8) | digits[i & 15] as u16;
        i += 1;
    }
    table
};
