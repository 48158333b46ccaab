//! RFC 3339 `date-time` to Unix milliseconds, written out so the core needs no date
//! crate: `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`.
//!
//! Choices where RFC 3339 leaves room:
//! - a zone is required; `T`/`Z` may be lowercase (RFC 3339 §5.6), a space may not
//!   stand for `T`;
//! - 1 to 9 fractional digits, truncated to the millisecond;
//! - a leap second (`:60`, only at minute 59) reads as `:59.999`, since Unix time has
//!   no leap seconds and the reading belongs at the end of that minute.

use thiserror::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub(crate) enum TimestampError {
    #[error("must be an RFC 3339 date-time with a zone, such as 2026-11-21T10:00:00.123Z")]
    Format,
    #[error("has a month, day, hour, minute or second out of range")]
    OutOfRange,
}

/// Parses an RFC 3339 date-time into milliseconds since the Unix epoch.
pub(crate) fn parse_rfc3339_ms(input: &str) -> Result<i64, TimestampError> {
    use TimestampError::{Format, OutOfRange};

    let mut cursor = Cursor {
        bytes: input.as_bytes(),
        at: 0,
    };
    let year = cursor.digits(4)?;
    cursor.expect(b'-')?;
    let month = cursor.digits(2)?;
    cursor.expect(b'-')?;
    let day = cursor.digits(2)?;
    match cursor.next() {
        Some(b'T' | b't') => {}
        _ => return Err(Format),
    }
    let hour = cursor.digits(2)?;
    cursor.expect(b':')?;
    let minute = cursor.digits(2)?;
    cursor.expect(b':')?;
    let second = cursor.digits(2)?;

    let mut millis = 0;
    if cursor.peek() == Some(b'.') {
        cursor.at += 1;
        let start = cursor.at;
        while cursor.peek().is_some_and(|b| b.is_ascii_digit()) {
            cursor.at += 1;
        }
        let fraction = &cursor.bytes[start..cursor.at];
        if fraction.is_empty() || fraction.len() > 9 {
            return Err(Format);
        }
        millis = fraction
            .iter()
            .chain(b"00")
            .take(3)
            .fold(0, |ms, b| ms * 10 + i64::from(b - b'0'));
    }

    let offset_minutes = match cursor.next() {
        Some(b'Z' | b'z') => 0,
        Some(sign @ (b'+' | b'-')) => {
            let hours = cursor.digits(2)?;
            cursor.expect(b':')?;
            let minutes = cursor.digits(2)?;
            if hours > 23 || minutes > 59 {
                return Err(OutOfRange);
            }
            let offset = hours * 60 + minutes;
            if sign == b'+' { offset } else { -offset }
        }
        _ => return Err(Format),
    };
    if cursor.at != cursor.bytes.len() {
        return Err(Format);
    }

    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
        || (second == 60 && minute != 59)
    {
        return Err(OutOfRange);
    }
    if second == 60 {
        // See the module doc: a leap second is the last millisecond of its minute.
        return Ok(to_unix_ms(
            year,
            month,
            day,
            hour,
            minute,
            59,
            999,
            offset_minutes,
        ));
    }
    Ok(to_unix_ms(
        year,
        month,
        day,
        hour,
        minute,
        second,
        millis,
        offset_minutes,
    ))
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.at += 1;
        Some(byte)
    }

    fn expect(&mut self, wanted: u8) -> Result<(), TimestampError> {
        match self.next() {
            Some(byte) if byte == wanted => Ok(()),
            _ => Err(TimestampError::Format),
        }
    }

    /// Exactly `count` ASCII digits as a number.
    fn digits(&mut self, count: usize) -> Result<i64, TimestampError> {
        let mut value = 0;
        for _ in 0..count {
            match self.next() {
                Some(byte @ b'0'..=b'9') => value = value * 10 + i64::from(byte - b'0'),
                _ => return Err(TimestampError::Format),
            }
        }
        Ok(value)
    }
}

fn is_leap_year(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to the given proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`), valid for every year RFC 3339 can write.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let shifted_month = (month + 9) % 12; // March = 0, so the leap day ends the year.
    let day_of_year = (153 * shifted_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[allow(clippy::too_many_arguments)]
fn to_unix_ms(
    year: i64,
    month: i64,
    day: i64,
    hour: i64,
    minute: i64,
    second: i64,
    millis: i64,
    offset_minutes: i64,
) -> i64 {
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second
        - offset_minutes * 60;
    seconds * 1_000 + millis
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(input: &str) -> i64 {
        parse_rfc3339_ms(input).unwrap_or_else(|e| panic!("{input}: {e}"))
    }

    #[test]
    fn known_instants() {
        assert_eq!(ms("1970-01-01T00:00:00Z"), 0);
        assert_eq!(ms("1970-01-01T00:00:00.001Z"), 1);
        assert_eq!(ms("1969-12-31T23:59:59.999Z"), -1);
        assert_eq!(ms("2000-02-29T12:00:00Z"), 951_825_600_000);
        // `date -u -d 2026-11-21T10:00:00Z +%s`
        assert_eq!(ms("2026-11-21T10:00:00.123Z"), 1_795_255_200_123);
        assert_eq!(ms("2038-01-19T03:14:08Z"), 2_147_483_648_000);
        assert_eq!(ms("9999-12-31T23:59:59.999Z"), 253_402_300_799_999);
        assert_eq!(ms("0000-01-01T00:00:00Z"), -62_167_219_200_000);
    }

    #[test]
    fn offsets_shift_to_utc() {
        let utc = ms("2026-11-21T10:00:00Z");
        assert_eq!(ms("2026-11-21T11:30:00+01:30"), utc);
        assert_eq!(ms("2026-11-21T05:00:00-05:00"), utc);
        assert_eq!(ms("2026-11-21T10:00:00+00:00"), utc);
        assert_eq!(ms("2026-11-21T10:00:00-00:00"), utc);
        assert_eq!(ms("2026-11-22T09:59:00+23:59"), utc);
        assert_eq!(ms("2026-11-21t10:00:00z"), utc);
    }

    #[test]
    fn fractions_truncate_to_milliseconds() {
        assert_eq!(ms("1970-01-01T00:00:00.1Z"), 100);
        assert_eq!(ms("1970-01-01T00:00:00.12Z"), 120);
        assert_eq!(ms("1970-01-01T00:00:00.123999999Z"), 123);
        assert_eq!(
            parse_rfc3339_ms("1970-01-01T00:00:00.1234567890Z"),
            Err(TimestampError::Format)
        );
    }

    #[test]
    fn leap_seconds_read_as_the_last_millisecond() {
        assert_eq!(ms("2016-12-31T23:59:60Z"), ms("2016-12-31T23:59:59.999Z"));
        assert_eq!(
            parse_rfc3339_ms("2016-12-31T23:58:60Z"),
            Err(TimestampError::OutOfRange)
        );
    }

    #[test]
    fn leap_years_follow_the_gregorian_rules() {
        for ok in [
            "2024-02-29T00:00:00Z",
            "2000-02-29T00:00:00Z",
            "1600-02-29T00:00:00Z",
        ] {
            assert!(parse_rfc3339_ms(ok).is_ok(), "{ok}");
        }
        for bad in [
            "2026-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2100-02-29T00:00:00Z",
            "2024-02-30T00:00:00Z",
        ] {
            assert_eq!(
                parse_rfc3339_ms(bad),
                Err(TimestampError::OutOfRange),
                "{bad}"
            );
        }
    }

    #[test]
    fn refuses_out_of_range_fields() {
        for bad in [
            "2026-13-01T00:00:00Z",
            "2026-00-01T00:00:00Z",
            "2026-01-00T00:00:00Z",
            "2026-01-32T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T00:60:00Z",
            "2026-01-01T00:00:61Z",
            "2026-01-01T00:00:00+24:00",
            "2026-01-01T00:00:00+00:60",
        ] {
            assert_eq!(
                parse_rfc3339_ms(bad),
                Err(TimestampError::OutOfRange),
                "{bad}"
            );
        }
    }

    #[test]
    fn refuses_other_shapes() {
        for bad in [
            "",
            "2026-11-21T10:00:00",
            "2026-11-21",
            "2026-11-21 10:00:00Z",
            "10000-01-01T00:00:00Z",
            "+2026-11-21T10:00:00Z",
            "-0001-01-01T00:00:00Z",
            "26-11-21T10:00:00Z",
            "2026-1-21T10:00:00Z",
            "2026-11-21T10:00Z",
            "2026-11-21T10:00:00.Z",
            "2026-11-21T10:00:00+0100",
            "2026-11-21T10:00:00+01",
            "2026-11-21T10:00:00ZZ",
            "2026-11-21T10:00:00Z ",
            " 2026-11-21T10:00:00Z",
            "2026-11-21T10:00:00UTC",
            "2026-11-21T10:00:00\0Z",
            "２０２６-11-21T10:00:00Z",
            "2026-11-21T10:00:00,5Z",
            "1763719200123",
        ] {
            assert_eq!(
                parse_rfc3339_ms(bad),
                Err(TimestampError::Format),
                "{bad:?}"
            );
        }
    }

    /// A slow, obviously correct count of days, to check the fast formula against.
    fn reference_days(year: i64, month: i64, day: i64) -> i64 {
        let mut days = 0;
        if year >= 1970 {
            for y in 1970..year {
                days += if is_leap_year(y) { 366 } else { 365 };
            }
        } else {
            for y in year..1970 {
                days -= if is_leap_year(y) { 366 } else { 365 };
            }
        }
        for m in 1..month {
            days += days_in_month(year, m);
        }
        days + day - 1
    }

    /// Deterministic pseudo-random numbers, so a failure reproduces.
    struct Lcg(u64);

    impl Lcg {
        fn below(&mut self, bound: u64) -> i64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((self.0 >> 33) % bound) as i64
        }
    }

    #[test]
    fn random_instants_match_the_reference() {
        let mut rng = Lcg(0x70a57e2);
        for _ in 0..5_000 {
            let year = rng.below(10_000);
            let month = rng.below(12) + 1;
            let day = rng.below(days_in_month(year, month) as u64) + 1;
            let (hour, minute, second, millis) =
                (rng.below(24), rng.below(60), rng.below(60), rng.below(1000));
            let offset = rng.below(24 * 60 * 2 - 1) - (24 * 60 - 1);
            let sign = if offset < 0 { '-' } else { '+' };
            let text = format!(
                "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{millis:03}{sign}{:02}:{:02}",
                offset.abs() / 60,
                offset.abs() % 60
            );
            let expected = ((reference_days(year, month, day) * 24 + hour) * 60 + minute - offset)
                * 60_000
                + second * 1_000
                + millis;
            assert_eq!(ms(&text), expected, "{text}");
        }
    }

    #[test]
    fn mutations_never_panic_and_never_parse_as_garbage() {
        let seeds = [
            "2026-11-21T10:00:00.123Z",
            "2024-02-29T23:59:60+05:30",
            "1999-12-31T23:59:59-00:00",
        ];
        let replacements = b"0912-:T.Z+ x\0\xff";
        for seed in seeds {
            for position in 0..seed.len() {
                for &replacement in replacements {
                    let mut bytes = seed.as_bytes().to_vec();
                    bytes[position] = replacement;
                    let Ok(text) = String::from_utf8(bytes) else {
                        continue;
                    };
                    if let Ok(value) = parse_rfc3339_ms(&text) {
                        // Whatever parses stays within the years RFC 3339 can write.
                        assert!(
                            (-62_167_305_600_000..=253_402_387_199_999).contains(&value),
                            "{text}"
                        );
                    }
                }
                let truncated = &seed[..position];
                assert!(parse_rfc3339_ms(truncated).is_err(), "{truncated}");
            }
        }
    }
}
