//! When to try again, and after how long.

use std::time::Duration;

/// Retries of one call: at most `attempts_max` tries in all, waiting
/// between them `backoff_initial`, doubled each time up to `backoff_max`,
/// each wait drawn at random from its upper half (jitter, so that clients
/// turned away together do not return together). A server's `Retry-After`
/// replaces the computed wait, bounded by `retry_after_max`.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts_max: u32,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub retry_after_max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts_max: 5,
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            retry_after_max: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// No retries: the first answer is the answer.
    pub fn none() -> Self {
        RetryPolicy {
            attempts_max: 1,
            ..RetryPolicy::default()
        }
    }

    /// The wait after failed attempt `attempt` (1-based).
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(retry_after) = retry_after {
            return retry_after.min(self.retry_after_max);
        }
        let doubled = self
            .backoff_initial
            .saturating_mul(1_u32 << attempt.saturating_sub(1).min(20));
        let ceiling = doubled.min(self.backoff_max);
        let mut byte = [0_u8; 1];
        let jitter = match getrandom::fill(&mut byte) {
            Ok(()) => f64::from(byte[0]) / 255.0,
            Err(_) => 1.0,
        };
        ceiling.mul_f64(0.5 + 0.5 * jitter)
    }
}

/// `Some(Retry-After)` when the answer says to come back (503, 429).
pub(crate) fn worth_retrying(response: &reqwest::Response) -> Option<Option<Duration>> {
    let status = response.status().as_u16();
    if status != 503 && status != 429 {
        return None;
    }
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok()?.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    Some(retry_after)
}

/// A request that failed on its way: the server may or may not have
/// applied it, and the same idempotency key makes trying again safe.
pub(crate) fn transport_worth_retrying(error: &reqwest::Error) -> bool {
    error.is_connect() || error.is_timeout() || error.is_request()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_ceiling_and_retry_after_wins() {
        let policy = RetryPolicy::default();
        for attempt in 1..=10 {
            let ceiling = (policy.backoff_initial * (1 << (attempt - 1))).min(policy.backoff_max);
            let wait = policy.delay(attempt, None);
            assert!(wait <= ceiling && wait >= ceiling / 2, "attempt {attempt}: {wait:?}");
        }
        assert_eq!(policy.delay(1, Some(Duration::from_secs(3))), Duration::from_secs(3));
        assert_eq!(
            policy.delay(1, Some(Duration::from_secs(3_600))),
            policy.retry_after_max
        );
    }
}
