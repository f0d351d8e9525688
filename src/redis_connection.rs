//! The Redis that weir instances share: one multiplexed connection (which
//! reconnects by itself), every command bounded by `redis.timeout`, and
//! Redis's availability as one state logged once per change.
//!
//! Redis is an accelerator, never a dependency: a command that fails or takes
//! too long is counted and answered with `None`, and after a failure Redis is
//! left alone for a moment so that requests do not each wait out the timeout
//! while it is down.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prometheus::IntCounter;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, FromRedisValue, Pipeline};
use tracing::{debug, info, warn};

use crate::config::RedisConfig;

/// What a command is for: how long it may take, and what its failure means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// A request waits on it: `redis.timeout`, and skipped while Redis rests.
    Lookup,
    /// Written aside: a longer bound; skipped while Redis rests.
    Write,
    /// An operator's purge: a longer bound, tried even while Redis rests.
    Purge,
}

/// After a failure, commands are not tried for this long.
const BACKOFF: Duration = Duration::from_secs(1);

pub struct Redis {
    pub config: RedisConfig,
    /// What weir uses this connection for, in log lines.
    purpose: &'static str,
    client: redis::Client,
    connection: ConnectionManager,
    available: AtomicBool,
    /// Milliseconds after `epoch` before which no command is tried.
    resume_at: AtomicU64,
    epoch: Instant,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("url", &self.config.shown_url)
            .finish()
    }
}

impl Redis {
    /// Connects lazily: nothing waits for Redis here.
    pub fn new(
        config: &RedisConfig,
        purpose: &'static str,
    ) -> Result<Arc<Redis>, redis::RedisError> {
        let client = redis::Client::open(config.url.0.as_str())?;
        let settings = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout))
            .set_number_of_retries(1)
            .set_max_delay(BACKOFF);
        let connection = ConnectionManager::new_lazy_with_config(client.clone(), settings)?;
        Ok(Arc::new(Redis {
            config: config.clone(),
            purpose,
            client,
            connection,
            available: AtomicBool::new(true),
            resume_at: AtomicU64::new(0),
            epoch: Instant::now(),
        }))
    }

    /// A key of weir's: the configured prefix, then `parts`.
    pub fn key(&self, parts: &[&[u8]]) -> Vec<u8> {
        let prefix = self.config.key_prefix.as_bytes();
        let mut key =
            Vec::with_capacity(prefix.len() + parts.iter().map(|p| p.len()).sum::<usize>());
        key.extend_from_slice(prefix);
        for part in parts {
            key.extend_from_slice(part);
        }
        key
    }

    /// Whether commands are held back after a recent failure.
    pub fn resting(&self) -> bool {
        self.millis() < self.resume_at.load(Ordering::Relaxed)
    }

    fn millis(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Runs `cmd` for a request that waits on it: within `redis.timeout`;
    /// `None` (counted on `errors`) when Redis could not answer, or rests
    /// after a failure.
    pub async fn query<T: FromRedisValue>(&self, cmd: &Cmd, errors: &IntCounter) -> Option<T> {
        self.run(Use::Lookup, errors, |mut connection| async move {
            cmd.query_async::<T>(&mut connection).await
        })
        .await
    }

    /// As [`query`](Self::query), for a pipeline (one round trip), made for
    /// `purpose`.
    pub async fn query_pipeline<T: FromRedisValue>(
        &self,
        pipeline: &Pipeline,
        purpose: Use,
        errors: &IntCounter,
    ) -> Option<T> {
        self.run(purpose, errors, |mut connection| async move {
            pipeline.query_async::<T>(&mut connection).await
        })
        .await
    }

    /// As [`query`](Self::query), for `purpose`.
    pub async fn query_for<T: FromRedisValue>(
        &self,
        cmd: &Cmd,
        purpose: Use,
        errors: &IntCounter,
    ) -> Option<T> {
        self.run(purpose, errors, |mut connection| async move {
            cmd.query_async::<T>(&mut connection).await
        })
        .await
    }

    /// Runs a Lua script for a request that waits on it, as
    /// [`query`](Self::query): `EVALSHA`, and the script loaded first when
    /// Redis does not know it.
    pub async fn invoke<T: FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
        errors: &IntCounter,
    ) -> Option<T> {
        self.run(Use::Lookup, errors, |mut connection| async move {
            invocation.invoke_async::<T>(&mut connection).await
        })
        .await
    }

    async fn run<T, F, Fut>(&self, purpose: Use, errors: &IntCounter, command: F) -> Option<T>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        if purpose != Use::Purge && self.resting() {
            return None;
        }
        let limit = match purpose {
            Use::Lookup => self.config.timeout,
            // Nobody waits on these: room for a large value, or a walk.
            Use::Write | Use::Purge => (self.config.timeout * 10).max(Duration::from_secs(1)),
        };
        match tokio::time::timeout(limit, command(self.connection.clone())).await {
            Ok(Ok(value)) => {
                self.succeeded();
                Some(value)
            }
            Ok(Err(err)) => {
                // A command Redis refused (a full Redis, a wrong type) says
                // nothing of its availability; a lost connection does.
                if err.is_io_error() || err.is_connection_dropped() || err.is_timeout() {
                    self.failed(errors, &err.to_string());
                } else {
                    errors.inc();
                    debug!(error = %err, "redis refused a command");
                }
                None
            }
            Err(_) if purpose == Use::Lookup => {
                self.failed(errors, "no answer within redis.timeout");
                None
            }
            Err(_) => {
                // A slow write is not a Redis down: lookups go on using it.
                errors.inc();
                debug!("a redis write took longer than its bound");
                None
            }
        }
    }

    /// Records that Redis answered.
    pub fn succeeded(&self) {
        // Read first: a write on every answer would bounce the line between
        // cores.
        if !self.available.load(Ordering::Relaxed) && !self.available.swap(true, Ordering::Relaxed)
        {
            info!(redis = %self.config.shown_url, purpose = self.purpose, "redis answers again; back in use");
        }
    }

    /// Records a failure: counted, logged when Redis was available until now.
    pub fn failed(&self, errors: &IntCounter, why: &str) {
        errors.inc();
        self.resume_at.store(
            self.millis() + BACKOFF.as_millis() as u64,
            Ordering::Relaxed,
        );
        if self.available.swap(false, Ordering::Relaxed) {
            warn!(redis = %self.config.shown_url, purpose = self.purpose, error = why, "redis unavailable; going on without it");
        }
    }

    /// A connection of its own for pub/sub.
    pub async fn pubsub(&self) -> redis::RedisResult<redis::aio::PubSub> {
        match tokio::time::timeout(
            self.config.timeout.max(Duration::from_secs(1)),
            self.client.get_async_pubsub(),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "pub/sub connection timed out",
            ))),
        }
    }
}
