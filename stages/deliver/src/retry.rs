//! How often and how far apart a provider call is retried.
//!
//! The runner redelivers a delivery after the delay the stage asks for; this policy picks that
//! delay (the provider's `Retry-After` when it gave one, else exponential backoff with jitter)
//! and says when to stop: after `attempts`, the delivery is `failed` and dead-lettered. The
//! default spreads 10 attempts over about an hour (15 s, 30 s, 1 min … capped at 15 min), what
//! SNS and the push services themselves recommend for transient failures.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A provider's retry policy (`[deliver.<provider>.retry]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Calls in all, the first included; capped by `topology.deliver_max_deliveries`.
    pub attempts: u32,
    /// Delay before the second call; doubles each time.
    #[serde(with = "humantime_serde")]
    pub initial: Duration,
    /// Longest delay between two calls.
    #[serde(with = "humantime_serde")]
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { attempts: 10, initial: Duration::from_secs(15), max: Duration::from_secs(15 * 60) }
    }
}

impl RetryPolicy {
    /// The delay after failed call number `attempt` (1 for the first): the provider's own
    /// `retry_after` when it gave one (never shortened), else `initial * 2^(attempt-1)` capped at
    /// `max`, with ±20 % jitter so a burst of failures does not come back as one burst.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(hint) = retry_after {
            return hint;
        }
        let exponent = attempt.saturating_sub(1).min(20);
        let base = self.initial.saturating_mul(1 << exponent).min(self.max);
        let jitter = 0.8 + rand::random::<f64>() * 0.4;
        base.mul_f64(jitter)
    }

    /// Whether call number `attempt` is the last one this policy (and the consumer, which allows
    /// `consumer_max`) makes.
    pub fn is_last(&self, attempt: u32, consumer_max: u32) -> bool {
        attempt >= self.attempts.min(consumer_max).max(1)
    }

    /// The total of every delay if all attempts fail (without jitter): what "about an hour" is.
    pub fn span(&self) -> Duration {
        (1..self.attempts).map(|a| self.initial.saturating_mul(1 << a.saturating_sub(1).min(20)).min(self.max)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_spreads_ten_attempts_over_about_an_hour() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.attempts, 10);
        let span = policy.span();
        assert!(span >= Duration::from_secs(45 * 60) && span <= Duration::from_secs(80 * 60), "{span:?}");
        assert!(!policy.is_last(9, 12) && policy.is_last(10, 12));
        assert!(policy.is_last(5, 5), "the consumer's limit caps the policy");
    }

    #[test]
    fn retry_after_is_obeyed_and_backoff_grows_to_its_cap() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.delay(3, Some(Duration::from_secs(2))), Duration::from_secs(2));
        let first = policy.delay(1, None);
        assert!(first >= Duration::from_secs(12) && first <= Duration::from_secs(18), "{first:?}");
        let late = policy.delay(9, None);
        assert!(late >= Duration::from_secs(12 * 60) && late <= Duration::from_secs(18 * 60), "{late:?}");
    }
}
