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
use tracing::{info, warn};

use crate::config::RedisConfig;

/// After a failure, commands are not tried for this long.
const BACKOFF: Duration = Duration::from_secs(1);

pub struct Redis {
    pub config: RedisConfig,
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
    pub fn new(config: &RedisConfig) -> Result<Arc<Redis>, redis::RedisError> {
        let client = redis::Client::open(config.url.0.as_str())?;
        let settings = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout))
            .set_number_of_retries(1)
            .set_max_delay(BACKOFF);
        let connection = ConnectionManager::new_lazy_with_config(client.clone(), settings)?;
        Ok(Arc::new(Redis {
            config: config.clone(),
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

    /// Runs `cmd` within the timeout; `None` (counted on `errors`) when Redis
    /// could not answer, or rests after a failure.
    pub async fn query<T: FromRedisValue>(&self, cmd: &Cmd, errors: &IntCounter) -> Option<T> {
        if self.resting() {
            return None;
        }
        let mut connection = self.connection.clone();
        let result =
            tokio::time::timeout(self.config.timeout, cmd.query_async::<T>(&mut connection)).await;
        self.settle(result, errors)
    }

    /// As [`query`](Self::query), for a pipeline (one round trip).
    pub async fn query_pipeline<T: FromRedisValue>(
        &self,
        pipeline: &Pipeline,
        errors: &IntCounter,
    ) -> Option<T> {
        if self.resting() {
            return None;
        }
        let mut connection = self.connection.clone();
        let result = tokio::time::timeout(
            self.config.timeout,
            pipeline.query_async::<T>(&mut connection),
        )
        .await;
        self.settle(result, errors)
    }

    fn settle<T>(
        &self,
        result: Result<redis::RedisResult<T>, tokio::time::error::Elapsed>,
        errors: &IntCounter,
    ) -> Option<T> {
        match result {
            Ok(Ok(value)) => {
                self.succeeded();
                Some(value)
            }
            Ok(Err(err)) => {
                self.failed(errors, &err.to_string());
                None
            }
            Err(_) => {
                self.failed(errors, "no answer within redis.timeout");
                None
            }
        }
    }

    /// Records that Redis answered.
    pub fn succeeded(&self) {
        if !self.available.swap(true, Ordering::Relaxed) {
            info!(redis = %self.config.shown_url, "redis answers again; the shared cache is back in use");
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
            warn!(redis = %self.config.shown_url, error = why, "redis unavailable; going on without it");
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
