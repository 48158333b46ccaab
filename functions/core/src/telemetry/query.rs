//! What queries over stored telemetry (`/v1/metrics/...`) share: the instants they may
//! name, whole buckets over those instants, and bucket sums that cannot overflow.
//!
//! # Instants
//!
//! `from` and `to` are written as telemetry timestamps are (RFC 3339 with a zone, or
//! integer Unix milliseconds), and must lie within [`MIN_INSTANT_MS`] ..=
//! [`MAX_INSTANT_MS`]: 0000-01-01T00:00:00Z to 9999-12-31T00:00:00Z. Responses write
//! instants back in RFC 3339, which has four-digit years, so an integer outside the
//! years 0000 to 9999 could not be answered truthfully; and PostgreSQL's `timestamptz`
//! (4713 BC to 294276 AD) and its millisecond arithmetic hold the whole range. Both
//! ends are UTC midnights, and the widest bucket is a day, so a range widened to whole
//! buckets stays inside too. A text that is not an instant is a 400; an instant
//! outside the range, [`InstantError::OutOfRange`], a 422 naming the range.
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

use thiserror::Error;

use super::timestamp;

/// The earliest instant a query may name: 0000-01-01T00:00:00Z, the first RFC 3339
/// can write.
pub const MIN_INSTANT_MS: i64 = -62_167_219_200_000;

/// The latest instant a query may name: 9999-12-31T00:00:00Z, the last UTC midnight
/// RFC 3339 can write a day after (so `to` rounded up to a whole `1d` bucket can
/// still be written).
pub const MAX_INSTANT_MS: i64 = 253_402_214_400_000;

/// Why a query parameter is not an instant a query may name.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InstantError {
    /// Neither an RFC 3339 date-time with a zone nor integer milliseconds: 400.
    #[error("{0}")]
    Format(String),
    /// An instant, but outside [`MIN_INSTANT_MS`] ..= [`MAX_INSTANT_MS`]: 422.
    #[error(
        "must be from 0000-01-01T00:00:00Z to 9999-12-31T00:00:00Z \
         (Unix milliseconds -62167219200000 to 253402214400000)"
    )]
    OutOfRange,
}

/// Parses a query's instant: RFC 3339 with a zone, or integer Unix milliseconds, within
/// [`MIN_INSTANT_MS`] ..= [`MAX_INSTANT_MS`].
pub fn parse_instant(text: &str) -> Result<i64, InstantError> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let ms = if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        // All digits: an integer, so failing to fit an i64 only means it is too far out.
        text.parse::<i64>().map_err(|_| InstantError::OutOfRange)?
    } else {
        timestamp::parse_rfc3339_ms(text).map_err(|e| InstantError::Format(e.to_string()))?
    };
    if (MIN_INSTANT_MS..=MAX_INSTANT_MS).contains(&ms) {
        Ok(ms)
    } else {
        Err(InstantError::OutOfRange)
    }
}

/// `[from, to)` widened to whole buckets of `size_ms` counted from the Unix epoch:
/// `from` rounded down, `to` up. `None` if a bound would not fit an i64 (never for
/// instants [`parse_instant`] accepts and buckets of at most a day) or `size_ms` is
/// not positive.
pub fn whole_buckets(from_ms: i64, to_ms: i64, size_ms: i64) -> Option<(i64, i64)> {
    if size_ms <= 0 {
        return None;
    }
    let start = from_ms.div_euclid(size_ms).checked_mul(size_ms)?;
    let below = to_ms.div_euclid(size_ms).checked_mul(size_ms)?;
    let end = if below == to_ms {
        below
    } else {
        below.checked_add(size_ms)?
    };
    Some((start, end))
}

/// How many buckets of `size_ms` cover `[start_ms, end_ms)` (0 when it is empty),
/// without overflowing whatever the bounds.
pub fn bucket_count(start_ms: i64, end_ms: i64, size_ms: i64) -> u64 {
    if size_ms <= 0 || end_ms <= start_ms {
        return 0;
    }
    let span = i128::from(end_ms) - i128::from(start_ms);
    let size = i128::from(size_ms);
    u64::try_from((span + size - 1) / size).unwrap_or(u64::MAX)
}

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
    fn instants_are_written_as_telemetry_timestamps_are() {
        assert_eq!(parse_instant("1970-01-01T00:01:00Z"), Ok(60_000));
        assert_eq!(parse_instant("1970-01-01T01:00:00+01:00"), Ok(0));
        assert_eq!(parse_instant("1795255200123"), Ok(1_795_255_200_123));
        assert_eq!(parse_instant("-1"), Ok(-1));
        assert_eq!(parse_instant("0"), Ok(0));
        for bad in [
            "",
            "-",
            "yesterday",
            "2026-11-21",
            "1e3",
            "\"",
            "12a",
            "+5",
            "1.5",
            " 1",
        ] {
            assert!(
                matches!(parse_instant(bad), Err(InstantError::Format(_))),
                "{bad:?}"
            );
        }
        // The same messages as a reading's `ts`.
        assert_eq!(
            parse_instant("2026-02-30T00:00:00Z")
                .unwrap_err()
                .to_string(),
            "has a month, day, hour, minute or second out of range"
        );
    }

    #[test]
    fn the_range_is_what_rfc3339_writes_with_a_day_to_spare() {
        assert_eq!(parse_instant("0000-01-01T00:00:00Z"), Ok(MIN_INSTANT_MS));
        assert_eq!(parse_instant("9999-12-31T00:00:00Z"), Ok(MAX_INSTANT_MS));
        assert_eq!(
            parse_instant(&MIN_INSTANT_MS.to_string()),
            Ok(MIN_INSTANT_MS)
        );
        assert_eq!(
            parse_instant(&MAX_INSTANT_MS.to_string()),
            Ok(MAX_INSTANT_MS)
        );
        assert_eq!(MIN_INSTANT_MS % 86_400_000, 0);
        assert_eq!(MAX_INSTANT_MS % 86_400_000, 0);
        for out in [
            (MIN_INSTANT_MS - 1).to_string(),
            (MAX_INSTANT_MS + 1).to_string(),
            i64::MAX.to_string(),
            i64::MIN.to_string(),
            "9223372036854775808".to_owned(),
            "-99999999999999999999999".to_owned(),
            "9300000000000000".to_owned(),
            "-9000000000000000000".to_owned(),
            // One millisecond before PostgreSQL's first timestamptz (4714-11-24 BC).
            "-210866803200001".to_owned(),
            "9999-12-31T00:00:00.001Z".to_owned(),
            "0000-01-01T00:00:00+00:01".to_owned(),
        ] {
            assert_eq!(parse_instant(&out), Err(InstantError::OutOfRange), "{out}");
        }
        let message = InstantError::OutOfRange.to_string();
        assert!(message.contains(&MIN_INSTANT_MS.to_string()), "{message}");
        assert!(message.contains(&MAX_INSTANT_MS.to_string()), "{message}");
    }

    #[test]
    fn whole_buckets_round_out_and_stay_in_range() {
        const HOUR: i64 = 3_600_000;
        const DAY: i64 = 24 * HOUR;
        assert_eq!(whole_buckets(1, HOUR, HOUR), Some((0, HOUR)));
        assert_eq!(whole_buckets(0, HOUR + 1, HOUR), Some((0, 2 * HOUR)));
        assert_eq!(whole_buckets(-1, 1, HOUR), Some((-HOUR, HOUR)));
        for size in [60_000, 5 * 60_000, 15 * 60_000, HOUR, 6 * HOUR, DAY] {
            let (start, end) =
                whole_buckets(MIN_INSTANT_MS + 1, MAX_INSTANT_MS - 1, size).expect("in range");
            assert_eq!((start, end), (MIN_INSTANT_MS, MAX_INSTANT_MS), "{size}");
        }
        // Beyond the range the arithmetic refuses rather than wraps.
        assert_eq!(whole_buckets(0, i64::MAX, DAY), None);
        assert_eq!(whole_buckets(i64::MIN, 0, 7 * HOUR), None);
        assert_eq!(whole_buckets(0, 1, 0), None);
    }

    #[test]
    fn bucket_counts_never_overflow() {
        assert_eq!(bucket_count(0, 3_600_000, 60_000), 60);
        assert_eq!(bucket_count(0, 3_600_001, 60_000), 61);
        assert_eq!(bucket_count(5, 5, 60_000), 0);
        assert_eq!(bucket_count(5, 4, 60_000), 0);
        assert_eq!(bucket_count(i64::MIN, i64::MAX, 1), u64::MAX);
        assert_eq!(bucket_count(i64::MIN, i64::MAX, 2), 1 << 63);
        assert_eq!(
            bucket_count(MIN_INSTANT_MS, MAX_INSTANT_MS, 60_000),
            3_652_424 * 1440
        );
    }

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
