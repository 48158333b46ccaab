//! The Redis backend, as Spin's: keys exactly as the component names them, in the
//! database of the configured URL (so every label on one URL shares its keys, and
//! every host pointed at it shares its state — the point of configuring it).
//!
//! One multiplexed connection per URL behind the `redis` crate's connection manager,
//! which reconnects after a lost connection. It connects lazily: the host starts
//! while Redis is down, and requests get the interface's `other` error until it is
//! back. Every operation is bounded ([`OPERATION_TIMEOUT`]), so a Redis that stops
//! answering costs a request that long per call, never a hang, and never a trap.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::bindings::key_value::Error;
use crate::runtime_config::RedisUrl;

/// The longest one key-value call may wait for Redis (connecting included).
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(2);
/// A connection attempt, and one command's reply, give up after this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Keys asked for per `SCAN` round trip in `get-keys`.
const SCAN_COUNT: usize = 1000;

pub struct RedisKv {
    conn: ConnectionManager,
    /// The URL without credentials, for messages.
    target: String,
}

impl RedisKv {
    /// A client for `url`; no connection is made until the first call. Must be called
    /// inside the Tokio runtime (the manager spawns its reconnection task there).
    pub fn new(url: &RedisUrl) -> anyhow::Result<RedisKv> {
        let target = url.redacted();
        // The client's errors may quote the URL: replace them.
        let client = redis::Client::open(url.expose())
            .map_err(|_| anyhow::anyhow!("{target}: not a usable Redis URL"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| anyhow::anyhow!("{target}: cannot create the Redis client: {e}"))?;
        Ok(RedisKv { conn, target })
    }

    /// The URL without credentials.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Runs one command, bounded by [`OPERATION_TIMEOUT`]; any failure is the
    /// interface's `other` error (no credentials in it: Redis errors do not carry
    /// the URL).
    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, Error> {
        let mut conn = self.conn.clone();
        match tokio::time::timeout(OPERATION_TIMEOUT, cmd.query_async::<T>(&mut conn)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(Error::Other(format!("Redis at {}: {e}", self.target))),
            Err(_) => Err(Error::Other(format!(
                "Redis at {} did not answer within {OPERATION_TIMEOUT:?}",
                self.target
            ))),
        }
    }

    /// `PING`: whether Redis answers, for the start-up check.
    pub async fn ping(&self) -> Result<(), Error> {
        self.query::<String>(&redis::cmd("PING")).await.map(|_| ())
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        self.query(redis::cmd("GET").arg(key)).await
    }

    pub async fn set(&self, key: &str, value: &[u8]) -> Result<(), Error> {
        self.query(redis::cmd("SET").arg(key).arg(value)).await
    }

    pub async fn delete(&self, key: &str) -> Result<(), Error> {
        self.query::<i64>(redis::cmd("DEL").arg(key))
            .await
            .map(|_| ())
    }

    pub async fn exists(&self, key: &str) -> Result<bool, Error> {
        self.query(redis::cmd("EXISTS").arg(key)).await
    }

    /// Every key of the database, sorted. `SCAN` rather than `KEYS *`, so a large
    /// database is walked in steps without blocking Redis for everyone else.
    pub async fn keys(&self) -> Result<Vec<String>, Error> {
        let mut keys = std::collections::BTreeSet::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = self
                .query(redis::cmd("SCAN").arg(cursor).arg("COUNT").arg(SCAN_COUNT))
                .await?;
            // SCAN may return a key more than once; the set keeps one.
            keys.extend(batch);
            if next == 0 {
                return Ok(keys.into_iter().collect());
            }
            cursor = next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn other(result: Result<impl std::fmt::Debug, Error>) -> String {
        match result {
            Err(Error::Other(message)) => message,
            other => panic!("expected the `other` error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_redis_that_is_down_is_an_error_not_a_hang() {
        // A port nobody listens on: refused at once.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let url = RedisUrl::parse(&format!("redis://:secret-pw@127.0.0.1:{port}/2")).unwrap();
        let kv = RedisKv::new(&url).unwrap();
        let started = Instant::now();
        let message = other(kv.get("k").await);
        assert!(
            message.contains(&format!("127.0.0.1:{port}/2")),
            "{message}"
        );
        assert!(!message.contains("secret-pw"), "{message}");
        other(kv.set("k", b"v").await);
        other(kv.keys().await);
        assert!(
            started.elapsed() < OPERATION_TIMEOUT * 3,
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn a_redis_that_never_answers_times_out() {
        // Accepts connections (the kernel completes the handshake) and never replies.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = silent.local_addr().unwrap().port();
        let url = RedisUrl::parse(&format!("redis://127.0.0.1:{port}")).unwrap();
        let kv = RedisKv::new(&url).unwrap();
        for _ in 0..2 {
            let started = Instant::now();
            let message = other(kv.exists("k").await);
            let took = started.elapsed();
            assert!(
                took <= OPERATION_TIMEOUT + Duration::from_millis(500),
                "{took:?}"
            );
            assert!(message.contains("Redis at redis://127.0.0.1"), "{message}");
        }
        drop(silent);
    }
}
