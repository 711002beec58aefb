//! Retry policy: exponential backoff with jitter, as plain arithmetic.
//!
//! Jitter keeps a fleet that lost its registry at the same moment from retrying at the same
//! moment too. The random part is passed in, so the arithmetic is testable.

use std::time::Duration;

/// How often and how patiently to retry a failed pull.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts after the first one; 0 means try once.
    pub retries: u32,
    /// Delay before the first retry; doubles for every further one.
    pub initial: Duration,
    /// Upper bound of any single delay.
    pub max: Duration,
}

impl RetryPolicy {
    /// Total attempts, the first included.
    pub fn attempts(&self) -> u32 {
        self.retries.saturating_add(1)
    }

    /// The delay before retry number `retry` (1 for the first retry), given a jitter sample in
    /// `[0, 1)`. "Equal jitter": half of the exponential delay is kept, the other half is random,
    /// so delays still grow while hosts spread out.
    pub fn delay(&self, retry: u32, jitter: f64) -> Duration {
        let exponent = retry.saturating_sub(1).min(31);
        let ceiling = self
            .initial
            .checked_mul(1u32 << exponent)
            .unwrap_or(self.max)
            .min(self.max);
        let jitter = jitter.clamp(0.0, 1.0);
        let half = ceiling / 2;
        half + (ceiling - half).mul_f64(jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            retries: 5,
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
        }
    }

    #[test]
    fn doubles_then_caps() {
        let p = policy();
        let full: Vec<_> = (1..=7).map(|r| p.delay(r, 1.0).as_secs()).collect();
        assert_eq!(full, vec![1, 2, 4, 8, 16, 30, 30]);
        let low: Vec<_> = (1..=3).map(|r| p.delay(r, 0.0).as_millis()).collect();
        assert_eq!(low, vec![500, 1000, 2000]);
        assert_eq!(p.attempts(), 6);
    }

    #[test]
    fn zero_retries_is_one_attempt() {
        let p = RetryPolicy {
            retries: 0,
            ..policy()
        };
        assert_eq!(p.attempts(), 1);
    }

    proptest! {
        #[test]
        fn delay_is_bounded_and_grows(
            initial_ms in 1u64..10_000,
            max_ms in 1u64..600_000,
            retry in 1u32..200,
            jitter in 0.0f64..1.0,
        ) {
            let p = RetryPolicy {
                retries: 10,
                initial: Duration::from_millis(initial_ms),
                max: Duration::from_millis(max_ms),
            };
            let d = p.delay(retry, jitter);
            // Never above the cap, never below half the un-jittered delay.
            prop_assert!(d <= p.max);
            let ceiling = p.delay(retry, 1.0);
            prop_assert!(d >= ceiling / 2);
            // The ceiling never shrinks from one retry to the next.
            prop_assert!(p.delay(retry + 1, 1.0) >= ceiling);
        }
    }
}
