//! What queries over stored telemetry (`/v1/metrics/...`) share: bucket sums that
//! cannot overflow.
//!
//! # Sums
//!
//! Readings are at most 1e100 in absolute value ([`super::MAX_ABS_VALUE`]), so no
//! rollup total of new data comes near a double's limit. Databases from before that
//! rule may hold totals up to `f64::MAX`, and PostgreSQL's `sum(float8)` raises an
//! error (SQLSTATE 22003) instead of returning infinity when it overflows. So queries
//! sum a bucket's rollup totals in two parts ([`SplitSum`]): those up to
//! [`LARGE_TOTAL`] as they are (over 1e108 of them would be needed to overflow), and
//! the larger ones multiplied by [`LARGE_TOTAL_SCALE`], 2^-600: exact for numbers that
//! large (only the exponent changes), and small enough that no realistic count of them
//! overflows either. The two parts are put together here, where overflow is an
//! infinity and not an error.

/// Rollup totals up to this, in absolute value, are summed as they are; larger ones
/// scaled by [`LARGE_TOTAL_SCALE`]. Totals of readings within the range ingest
/// accepts never exceed it (that would take 1e100 readings).
pub const LARGE_TOTAL: f64 = 1e200;

/// 2^-600: large totals are summed multiplied by it. A power of two, so scaling a
/// number above 1e200 is exact (it stays above 1e19, far from underflow), and a sum
/// of scaled totals, each under 4.4e127, cannot overflow.
pub const LARGE_TOTAL_SCALE: f64 = f64::from_bits((1023 - 600) << 52);

/// 2^600, undoing [`LARGE_TOTAL_SCALE`].
const LARGE_TOTAL_UNSCALE: f64 = f64::from_bits((1023 + 600) << 52);

/// A bucket's sum of rollup totals, in the two parts a query reads (see the module
/// documentation).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SplitSum {
    /// The sum of the totals up to [`LARGE_TOTAL`]; `None` if there were none.
    pub small: Option<f64>,
    /// The sum of the larger totals, each multiplied by [`LARGE_TOTAL_SCALE`]; `None`
    /// if there were none (always, for data stored under the 1e100 rule).
    pub large_scaled: Option<f64>,
}

impl SplitSum {
    /// The sum, or `None` when it lies beyond the range of a double (only possible
    /// with totals stored before readings were bounded) or there was nothing to sum.
    pub fn sum(self) -> Option<f64> {
        let sum = match (self.small, self.large_scaled) {
            // Exactly what `sum(total)` gave before the split.
            (small, None) => small?,
            (small, Some(large)) => small.unwrap_or(0.0) + large * LARGE_TOTAL_UNSCALE,
        };
        sum.is_finite().then_some(sum)
    }

    /// The mean of `readings` readings. It lies between their smallest and largest
    /// value, so it is a double even when the sum is not: then it is computed on the
    /// scaled side. `None` when there are no readings or nothing to sum.
    pub fn mean(self, readings: i64) -> Option<f64> {
        if readings <= 0 {
            return None;
        }
        let count = readings as f64;
        if let Some(sum) = self.sum() {
            return Some(sum / count);
        }
        let scaled = self.small.unwrap_or(0.0) * LARGE_TOTAL_SCALE + self.large_scaled?;
        let mean = scaled / count * LARGE_TOTAL_UNSCALE;
        mean.is_finite().then_some(mean)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scale_is_an_exact_power_of_two() {
        assert_eq!(LARGE_TOTAL_SCALE, 2f64.powi(-600));
        assert_eq!(LARGE_TOTAL_SCALE * LARGE_TOTAL_UNSCALE, 1.0);
        // Written into SQL with these digits, which read back as the same double.
        assert_eq!(format!("{LARGE_TOTAL_SCALE:e}"), "2.409919865102884e-181");
        assert_eq!(format!("{LARGE_TOTAL:e}"), "1e200");
        for total in [1e200, f64::MAX, -f64::MAX, 3.3e250] {
            assert_eq!(total * LARGE_TOTAL_SCALE * LARGE_TOTAL_UNSCALE, total);
        }
        assert!((f64::MAX * LARGE_TOTAL_SCALE * 1e180).is_finite());
    }

    #[test]
    fn small_sums_are_exactly_what_they_were() {
        let only_small = |small| SplitSum {
            small: Some(small),
            large_scaled: None,
        };
        assert_eq!(only_small(10.5).sum(), Some(10.5));
        assert_eq!(only_small(10.5).mean(4), Some(2.625));
        // -0.0 stays -0.0: nothing is added to a sum that has no large part.
        assert!(only_small(-0.0).sum().unwrap().is_sign_negative());
        assert_eq!(only_small(1.0).mean(0), None);
        let nothing = SplitSum {
            small: None,
            large_scaled: None,
        };
        assert_eq!(nothing.sum(), None);
        assert_eq!(nothing.mean(3), None);
    }

    #[test]
    fn old_huge_totals_give_a_mean_even_when_the_sum_is_beyond_a_double() {
        // Two devices' buckets of one reading each at f64::MAX, and one of 6.
        let large = |totals: &[f64]| totals.iter().map(|t| t * LARGE_TOTAL_SCALE).sum();
        let split = SplitSum {
            small: Some(6.0),
            large_scaled: Some(large(&[f64::MAX, f64::MAX])),
        };
        assert_eq!(split.sum(), None);
        assert_eq!(split.mean(2), Some(f64::MAX));
        // That fits: the sum is the exact sum, rounded once.
        let split = SplitSum {
            small: Some(6.0),
            large_scaled: Some(large(&[f64::MAX, -f64::MAX / 2.0])),
        };
        assert_eq!(split.sum(), Some(f64::MAX / 2.0 + 6.0));
        assert_eq!(split.mean(3), Some((f64::MAX / 2.0 + 6.0) / 3.0));
        // Large totals alone.
        let split = SplitSum {
            small: None,
            large_scaled: Some(large(&[-f64::MAX, -f64::MAX, -f64::MAX])),
        };
        assert_eq!(split.sum(), None);
        assert_eq!(split.mean(3), Some(-f64::MAX));
        assert_eq!(split.mean(4), Some(-f64::MAX / 4.0 * 3.0));
    }
}
