//! Per-user rate limits with GCRA (the generic cell rate algorithm): one
//! number per user, the "theoretical arrival time" (TAT). A request at
//! `now` is admitted if `TAT - now <= tolerance`, and then moves the TAT one
//! emission interval later. `N per minute` means an interval of 60 s / N and
//! a tolerance of N − 1 intervals: a burst of N, then one every interval.
//!
//! In-process by default. With `--redis-url`, every instance shares the
//! state through a Lua script that reads Redis's own clock, so instances
//! with skewed clocks still agree. If Redis cannot be reached, the limiter
//! logs it (at most every 10 s) and falls back to its in-process state:
//! each instance then admits up to the limit on its own (documented).

use crate::clock::now_ms;
use anyhow::Context;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Users whose state one instance keeps in memory at most. When full,
/// users whose TAT has passed (no state worth keeping) are forgotten first;
/// if none has, the map is cleared, which can only admit more, never less.
pub const TRACKED_USERS_MAX: usize = 1_000_000;
/// How long a Redis call may take before the fallback answers.
const REDIS_TIMEOUT: Duration = Duration::from_millis(250);
const REDIS_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// After a failure, Redis is left alone this long (the fallback answers),
/// so an outage does not add a timeout to every request.
const REDIS_RETRY_AFTER: Duration = Duration::from_secs(1);

const GCRA_SCRIPT: &str = r"
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
if tat - now > tolerance then
  return {0, tat - now - tolerance}
end
local next_tat = tat + interval
redis.call('SET', KEYS[1], next_tat, 'PX', next_tat - now + 1000)
return {1, 0}
";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    Limited { retry_after_ms: u64 },
}

pub struct RateLimiter {
    /// Names the limit in Redis keys and logs (`purchases`, `transactions`).
    name: &'static str,
    interval_ms: u64,
    tolerance_ms: u64,
    local: Mutex<HashMap<String, u64>>,
    redis: Option<SharedState>,
}

struct SharedState {
    connection: redis::aio::ConnectionManager,
    script: redis::Script,
    last_error_logged: Mutex<Option<Instant>>,
    down_since: Mutex<Option<Instant>>,
}

impl RateLimiter {
    /// `per_minute` requests a minute per user, in bursts of as many.
    pub fn new(name: &'static str, per_minute: u32) -> Self {
        assert!(per_minute > 0);
        let interval_ms = (60_000 / u64::from(per_minute)).max(1);
        RateLimiter {
            name,
            interval_ms,
            tolerance_ms: interval_ms * (u64::from(per_minute) - 1),
            local: Mutex::new(HashMap::new()),
            redis: None,
        }
    }

    /// Shares the state through Redis. Connecting is lazy and retried, so a
    /// Redis that is down at startup only means the fallback for now.
    pub fn with_redis(mut self, client: redis::Client) -> anyhow::Result<Self> {
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(1);
        let connection = redis::aio::ConnectionManager::new_lazy_with_config(client, config)?;
        self.redis = Some(SharedState {
            connection,
            script: redis::Script::new(GCRA_SCRIPT),
            last_error_logged: Mutex::new(None),
            down_since: Mutex::new(None),
        });
        Ok(self)
    }

    pub async fn check(&self, user: &str) -> Decision {
        if let Some(shared) = self.redis.as_ref().filter(|shared| shared.worth_trying()) {
            let checked = tokio::time::timeout(REDIS_TIMEOUT, self.check_shared(shared, user)).await;
            match checked {
                Ok(Ok(decision)) => {
                    *shared.down_since.lock().expect("lock") = None;
                    return decision;
                }
                Ok(Err(error)) => shared.failed(self.name, &error.to_string()),
                Err(_) => shared.failed(self.name, "timed out"),
            }
        }
        self.check_local(user, now_ms())
    }

    async fn check_shared(&self, shared: &SharedState, user: &str) -> Result<Decision, redis::RedisError> {
        let mut connection = shared.connection.clone();
        let key = format!("coffer:rate:{}:{user}", self.name);
        let (allowed, retry_after_ms): (i64, i64) = shared
            .script
            .key(key)
            .arg(self.interval_ms)
            .arg(self.tolerance_ms)
            .invoke_async(&mut connection)
            .await?;
        Ok(match allowed {
            1 => Decision::Allowed,
            _ => Decision::Limited {
                retry_after_ms: retry_after_ms.max(1) as u64,
            },
        })
    }

    /// GCRA on this instance's own state.
    pub fn check_local(&self, user: &str, now_ms: u64) -> Decision {
        let mut states = self.local.lock().expect("rate limit lock");
        let tat = states.get(user).copied().unwrap_or(now_ms).max(now_ms);
        if tat - now_ms > self.tolerance_ms {
            return Decision::Limited {
                retry_after_ms: tat - now_ms - self.tolerance_ms,
            };
        }
        if states.len() >= TRACKED_USERS_MAX && !states.contains_key(user) {
            states.retain(|_, tat| *tat > now_ms);
            if states.len() >= TRACKED_USERS_MAX {
                states.clear();
            }
        }
        states.insert(user.to_owned(), tat + self.interval_ms);
        Decision::Allowed
    }
}

impl SharedState {
    fn worth_trying(&self) -> bool {
        self.down_since
            .lock()
            .expect("lock")
            .is_none_or(|since| since.elapsed() >= REDIS_RETRY_AFTER)
    }

    fn failed(&self, name: &str, error: &str) {
        *self.down_since.lock().expect("lock") = Some(Instant::now());
        let mut last = self.last_error_logged.lock().expect("log lock");
        if last.is_none_or(|at| at.elapsed() >= REDIS_ERROR_LOG_INTERVAL) {
            tracing::error!(
                limit = name,
                %error,
                "Redis unreachable: rate limits fall back to this instance's own state (each instance admits up to the limit)"
            );
            *last = Some(Instant::now());
        }
    }
}

/// TLS to Redis (`rediss://` URLs): the CA that signed the server's
/// certificate (the system's CAs when none is named) and a client
/// certificate for servers that ask for one.
#[derive(Debug, Clone, Default)]
pub struct RedisTls {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// How long the startup check waits for Redis.
const REDIS_STARTUP_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The client for `url`, checked once: a Redis that is down or slow only
/// means the fallback for now (logged), but one that refuses coffer (a
/// certificate that does not verify, a wrong password) is a configuration
/// error that stops the startup with its reason.
pub async fn redis_client(url: &str, tls: &RedisTls) -> anyhow::Result<redis::Client> {
    let client = if tls.ca_file.is_none() && tls.cert_file.is_none() && tls.key_file.is_none() {
        redis::Client::open(url)?
    } else {
        anyhow::ensure!(
            url.starts_with("rediss://"),
            "--redis-ca-file, --redis-cert-file and --redis-key-file need a rediss:// URL"
        );
        let read =
            |flag: &str, path: &PathBuf| std::fs::read(path).with_context(|| format!("{flag} {}", path.display()));
        let client_tls = match (&tls.cert_file, &tls.key_file) {
            (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
                client_cert: read("--redis-cert-file", cert)?,
                client_key: read("--redis-key-file", key)?,
            }),
            (None, None) => None,
            _ => anyhow::bail!("--redis-cert-file and --redis-key-file go together"),
        };
        let root_cert = tls.ca_file.as_ref().map(|ca| read("--redis-ca-file", ca)).transpose()?;
        redis::Client::build_with_tls(url, redis::TlsCertificates { client_tls, root_cert })?
    };
    let ping = async {
        let mut connection = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut connection).await
    };
    match tokio::time::timeout(REDIS_STARTUP_CHECK_TIMEOUT, ping).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) if refuses_coffer(&error) => anyhow::bail!("Redis refused the connection: {error}"),
        Ok(Err(error)) => tracing::warn!(%error, "Redis unreachable at startup: rate limits fall back to this instance's own state until it is"),
        Err(_) => tracing::warn!("Redis did not answer within 2 s at startup: rate limits fall back to this instance's own state until it does"),
    }
    Ok(client)
}

/// A failure that retrying cannot fix: the client's kind of error (a
/// certificate that does not verify), a failed login, or a TLS alert from
/// the server (a client certificate it demands, or refuses), which redis-rs
/// passes on as an I/O error carrying OpenSSL's text.
fn refuses_coffer(error: &redis::RedisError) -> bool {
    matches!(
        error.kind(),
        redis::ErrorKind::Client | redis::ErrorKind::AuthenticationFailed
    ) || error.to_string().contains("SSL routines")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_the_limit_then_one_per_interval() {
        let limiter = RateLimiter::new("test", 5);
        let start = 1_000_000;
        for _ in 0..5 {
            assert_eq!(limiter.check_local("u", start), Decision::Allowed);
        }
        assert_eq!(
            limiter.check_local("u", start),
            Decision::Limited { retry_after_ms: 12_000 }
        );
        assert_eq!(limiter.check_local("other", start), Decision::Allowed, "per user");
        assert!(matches!(
            limiter.check_local("u", start + 11_999),
            Decision::Limited { .. }
        ));
        assert_eq!(limiter.check_local("u", start + 12_000), Decision::Allowed);
        assert!(matches!(
            limiter.check_local("u", start + 12_000),
            Decision::Limited { .. }
        ));
        // Idle for a minute: the full burst again.
        for _ in 0..5 {
            assert_eq!(limiter.check_local("u", start + 200_000), Decision::Allowed);
        }
    }
}
