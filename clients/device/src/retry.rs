//! When to try a request again, and how long to wait first.
//!
//! Exponential backoff with full jitter (a uniform wait between zero and the
//! exponential ceiling), so that a fleet knocked offline together does not come back
//! in lockstep. A server's `Retry-After` wins over the backoff: the wait is never
//! shorter than what it asked for.

use std::time::Duration;

use rand::Rng;

/// How often and how patiently a request is retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first one included; 1 means never retry.
    pub max_attempts: u32,
    /// The ceiling of the first retry's wait; each further retry doubles it.
    pub base_delay: Duration,
    /// The ceiling never grows past this.
    pub max_delay: Duration,
    /// The longest `Retry-After` the library waits for; a server asking for more ends
    /// the call with the error, and the caller decides (it may be hours for a device
    /// that is over its quota).
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// One attempt, no retry.
    pub fn never() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// The exponential ceiling before retry number `retry` (0 for the first retry):
    /// `min(max_delay, base_delay · 2^retry)`.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 2u32.checked_pow(retry).unwrap_or(u32::MAX);
        self.base_delay
            .checked_mul(factor)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }

    /// Full jitter: uniform in `[0, ceiling(retry)]`.
    pub fn backoff(&self, retry: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling(retry).as_micros() as u64;
        Duration::from_micros(rng.random_range(0..=ceiling))
    }

    /// The wait before retry number `retry`, given the server's `Retry-After`, if it
    /// sent one. With it: `Retry-After` plus a little jitter (up to a tenth of it, at
    /// least up to `base_delay`), never less than asked. `None` when the server asks
    /// for more than [`RetryPolicy::max_retry_after`].
    pub fn delay(
        &self,
        retry: u32,
        retry_after: Option<Duration>,
        rng: &mut impl Rng,
    ) -> Option<Duration> {
        match retry_after {
            None => Some(self.backoff(retry, rng)),
            Some(asked) if asked > self.max_retry_after => None,
            Some(asked) => {
                let spread = (asked / 10).max(self.base_delay).as_micros() as u64;
                Some(asked + Duration::from_micros(rng.random_range(0..=spread)))
            }
        }
    }
}

/// A `Retry-After` header in delay-seconds (RFC 9110 §10.2.3), which is what Toaster
/// sends. An HTTP-date, or anything else, gives `None`: the caller falls back to
/// its backoff.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Thirty-odd digits of seconds is a server bug; saturating is as good an answer
    // as any, and max_retry_after refuses it.
    Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
            max_retry_after: Duration::from_secs(60),
        }
    }

    #[test]
    fn the_ceiling_doubles_then_stops_at_max_delay() {
        let p = policy();
        let ceilings: Vec<u64> = (0..8).map(|r| p.ceiling(r).as_millis() as u64).collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        // No overflow however many retries.
        assert_eq!(p.ceiling(40), Duration::from_secs(5));
        assert_eq!(p.ceiling(u32::MAX), Duration::from_secs(5));
    }

    #[test]
    fn full_jitter_spreads_over_the_whole_range() {
        let p = policy();
        let mut rng = StdRng::seed_from_u64(7);
        for retry in 0..8 {
            let ceiling = p.ceiling(retry);
            let samples: Vec<Duration> = (0..2000).map(|_| p.backoff(retry, &mut rng)).collect();
            assert!(samples.iter().all(|d| *d <= ceiling), "retry {retry}");
            let min = samples.iter().min().unwrap();
            let max = samples.iter().max().unwrap();
            // Full jitter, not "ceiling plus a bit": the waits reach both ends.
            assert!(*min < ceiling / 20, "retry {retry}: min {min:?}");
            assert!(*max > ceiling * 19 / 20, "retry {retry}: max {max:?}");
            let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
            assert!(
                mean > ceiling * 2 / 5 && mean < ceiling * 3 / 5,
                "retry {retry}: mean {mean:?} of {ceiling:?}"
            );
        }
    }

    #[test]
    fn retry_after_is_a_floor_with_a_small_spread() {
        let p = policy();
        let mut rng = StdRng::seed_from_u64(11);
        for asked in [1u64, 3, 30, 60] {
            let asked = Duration::from_secs(asked);
            for retry in 0..5 {
                let d = p.delay(retry, Some(asked), &mut rng).unwrap();
                assert!(d >= asked, "{d:?} < {asked:?}");
                assert!(
                    d <= asked + (asked / 10).max(p.base_delay),
                    "{d:?} for {asked:?}"
                );
            }
        }
        // Zero is a valid header: retry (almost) at once.
        let d = p.delay(0, Some(Duration::ZERO), &mut rng).unwrap();
        assert!(d <= p.base_delay);
    }

    #[test]
    fn a_retry_after_beyond_the_limit_ends_the_retries() {
        let p = policy();
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(p.delay(0, Some(Duration::from_secs(61)), &mut rng), None);
        assert!(
            p.delay(0, Some(Duration::from_secs(60)), &mut rng)
                .is_some()
        );
    }

    #[test]
    fn without_retry_after_the_delay_is_the_backoff() {
        let p = policy();
        let mut rng = StdRng::seed_from_u64(3);
        for retry in 0..6 {
            let d = p.delay(retry, None, &mut rng).unwrap();
            assert!(d <= p.ceiling(retry));
        }
    }

    #[test]
    fn retry_after_parses_delay_seconds_only() {
        assert_eq!(parse_retry_after("1"), Some(Duration::from_secs(1)));
        assert_eq!(parse_retry_after(" 17 "), Some(Duration::from_secs(17)));
        assert_eq!(parse_retry_after("0"), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("99999999999999999999999"),
            Some(Duration::from_secs(u64::MAX))
        );
        for bad in ["", "-1", "1.5", "soon", "Wed, 21 Oct 2015 07:28:00 GMT"] {
            assert_eq!(parse_retry_after(bad), None, "{bad:?}");
        }
    }
}
