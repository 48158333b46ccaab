//! The query parameters of the series routes: `from`, `to`, `bucket`, `agg`, `fill`,
//! and the bound on the number of buckets (variable `max_query_buckets`).
//!
//! Bucket edges are UTC instants counted from the Unix epoch: a `1h` bucket starts on
//! the hour, `6h` at 00:00, 06:00, 12:00 and 18:00 UTC, `1d` at 00:00 UTC. The range
//! `[from, to)` is widened to whole buckets (`from` rounded down, `to` up), so every
//! bucket returned covers its full interval, and the same bucket always has the same
//! value whatever range asked for it.

use spin_sdk::variables;
use toaster_core::problem::{FieldError, Problem};
use toaster_core::telemetry::{BatchError, BatchLimits, MAX_FUTURE_MS, parse_batch};
use toaster_platform::query::Query;
use toaster_platform::time;

/// The variable bounding the buckets one query may return.
pub const MAX_BUCKETS_VARIABLE: &str = "max_query_buckets";
/// `max_query_buckets` when the variable is not set.
pub const DEFAULT_MAX_BUCKETS: u64 = 1500;

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 60 * MINUTE_MS;

/// Which rollup a bucket size is computed from: the coarsest whose buckets nest in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Minute,
    Hour,
}

impl Source {
    pub fn table(self) -> &'static str {
        match self {
            Source::Minute => "rollup_minute",
            Source::Hour => "rollup_hour",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Source::Minute => "minute",
            Source::Hour => "hour",
        }
    }

    pub fn size_ms(self) -> i64 {
        match self {
            Source::Minute => MINUTE_MS,
            Source::Hour => HOUR_MS,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    M1,
    M5,
    M15,
    H1,
    H6,
    D1,
}

impl Bucket {
    pub const ALL: [Bucket; 6] = [
        Bucket::M1,
        Bucket::M5,
        Bucket::M15,
        Bucket::H1,
        Bucket::H6,
        Bucket::D1,
    ];

    pub fn parse(text: &str) -> Result<Bucket, &'static str> {
        Bucket::ALL
            .into_iter()
            .find(|b| b.label() == text)
            .ok_or("must be one of 1m, 5m, 15m, 1h, 6h, 1d")
    }

    pub fn label(self) -> &'static str {
        match self {
            Bucket::M1 => "1m",
            Bucket::M5 => "5m",
            Bucket::M15 => "15m",
            Bucket::H1 => "1h",
            Bucket::H6 => "6h",
            Bucket::D1 => "1d",
        }
    }

    pub fn size_ms(self) -> i64 {
        match self {
            Bucket::M1 => MINUTE_MS,
            Bucket::M5 => 5 * MINUTE_MS,
            Bucket::M15 => 15 * MINUTE_MS,
            Bucket::H1 => HOUR_MS,
            Bucket::H6 => 6 * HOUR_MS,
            Bucket::D1 => 24 * HOUR_MS,
        }
    }

    pub fn source(self) -> Source {
        if self.size_ms() >= HOUR_MS {
            Source::Hour
        } else {
            Source::Minute
        }
    }
}

/// The aggregates a query may ask for, in the order responses list them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Agg {
    Avg,
    Min,
    Max,
    Sum,
    Count,
    First,
    Last,
}

impl Agg {
    const ALL: [Agg; 7] = [
        Agg::Avg,
        Agg::Min,
        Agg::Max,
        Agg::Sum,
        Agg::Count,
        Agg::First,
        Agg::Last,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Agg::Avg => "avg",
            Agg::Min => "min",
            Agg::Max => "max",
            Agg::Sum => "sum",
            Agg::Count => "count",
            Agg::First => "first",
            Agg::Last => "last",
        }
    }

    /// `avg,min,max` (any order, repeats ignored); empty is 400.
    pub fn parse_list(text: &str) -> Result<Vec<Agg>, String> {
        let mut aggs = Vec::new();
        for item in text.split(',') {
            let agg = Agg::ALL
                .into_iter()
                .find(|a| a.name() == item.trim())
                .ok_or(
                    "must be a comma-separated list of avg, min, max, sum, count, first, last",
                )?;
            aggs.push(agg);
        }
        aggs.sort_unstable();
        aggs.dedup();
        Ok(aggs)
    }
}

/// The default `agg`.
pub const DEFAULT_AGGS: [Agg; 4] = [Agg::Avg, Agg::Min, Agg::Max, Agg::Count];

/// A series query's parameters, with the range widened to whole buckets.
#[derive(Debug, Clone)]
pub struct SeriesQuery {
    pub bucket: Bucket,
    pub aggs: Vec<Agg>,
    pub fill: bool,
    /// The first bucket's start (Unix ms, inclusive).
    pub start_ms: i64,
    /// The last bucket's end (Unix ms, exclusive).
    pub end_ms: i64,
}

impl SeriesQuery {
    /// Takes `from`, `to`, `bucket`, `agg` and `fill` from `query` (the caller takes
    /// its own parameters and calls `finish`). 400 for a bad value, 422 for too many
    /// buckets.
    pub fn take(query: &mut Query, max_buckets: u64) -> Result<SeriesQuery, Problem> {
        let (from_ms, to_ms) = take_range(query)?;
        let bucket = query
            .take_parsed("bucket", Bucket::parse)?
            .ok_or_else(|| Problem::bad_request("the query parameter bucket is required"))?;
        let aggs = query
            .take_parsed("agg", Agg::parse_list)?
            .unwrap_or_else(|| DEFAULT_AGGS.to_vec());
        let fill = query
            .take_parsed("fill", |v| match v {
                "null" => Ok(true),
                "none" => Ok(false),
                _ => Err("must be null or none"),
            })?
            .unwrap_or(false);
        let size = bucket.size_ms();
        let start_ms = from_ms.div_euclid(size) * size;
        let end_ms =
            to_ms.div_euclid(size) * size + if to_ms.rem_euclid(size) == 0 { 0 } else { size };
        check_buckets(bucket, start_ms, end_ms, max_buckets)?;
        Ok(SeriesQuery {
            bucket,
            aggs,
            fill,
            start_ms,
            end_ms,
        })
    }

    pub fn wants(&self, agg: Agg) -> bool {
        self.aggs.contains(&agg)
    }
}

/// `from` (required) and `to` (default: now), as Unix ms; `from` before `to`.
pub fn take_range(query: &mut Query) -> Result<(i64, i64), Problem> {
    let from = query
        .take_parsed("from", parse_instant)?
        .ok_or_else(|| Problem::bad_request("the query parameter from is required"))?;
    let to = query
        .take_parsed("to", parse_instant)?
        .unwrap_or_else(time::now_ms);
    if from >= to {
        return Err(Problem::bad_request("from must be before to"));
    }
    Ok((from, to))
}

/// 422 when `[start, end)` holds more than `max` buckets, saying what would fit.
pub fn check_buckets(bucket: Bucket, start_ms: i64, end_ms: i64, max: u64) -> Result<(), Problem> {
    let count = u64::try_from((end_ms - start_ms) / bucket.size_ms()).unwrap_or(u64::MAX);
    if count <= max {
        return Ok(());
    }
    let span = end_ms - start_ms;
    let larger = Bucket::ALL
        .into_iter()
        .find(|b| u64::try_from(span / b.size_ms()).unwrap_or(u64::MAX) <= max);
    let longest = duration_text(
        bucket
            .size_ms()
            .saturating_mul(i64::try_from(max).unwrap_or(i64::MAX)),
    );
    let mut advice = format!(
        "shorten the range to at most {longest} for bucket={}",
        bucket.label()
    );
    if let Some(larger) = larger {
        advice.push_str(&format!(", or use bucket={} or larger", larger.label()));
    }
    Err(Problem::unprocessable(vec![FieldError::new(
        "bucket",
        format!(
            "the range spans {count} buckets of {}; at most {max} are allowed \
             (variable {MAX_BUCKETS_VARIABLE}): {advice}",
            bucket.label()
        ),
    )])
    .with_detail(format!("too many buckets: {count} > {max}")))
}

fn duration_text(ms: i64) -> String {
    let minutes = ms / MINUTE_MS;
    let (days, hours, minutes) = (minutes / 1440, minutes / 60 % 24, minutes % 60);
    let mut parts = Vec::new();
    if days > 0 {
        parts.push(format!("{days}d"));
    }
    if hours > 0 {
        parts.push(format!("{hours}h"));
    }
    if minutes > 0 {
        parts.push(format!("{minutes}m"));
    }
    parts.join(" ")
}

/// `max_query_buckets`; the default when not granted, and (logged) when unusable.
pub fn max_buckets() -> u64 {
    let Ok(text) = variables::get(MAX_BUCKETS_VARIABLE) else {
        return DEFAULT_MAX_BUCKETS;
    };
    match text.trim().parse::<u64>() {
        Ok(value) if value > 0 => value,
        _ => {
            eprintln!(
                "aggregate: variable {MAX_BUCKETS_VARIABLE} must be a positive integer; using {DEFAULT_MAX_BUCKETS}"
            );
            DEFAULT_MAX_BUCKETS
        }
    }
}

/// An instant as telemetry timestamps are written: RFC 3339 with a zone, or integer
/// Unix milliseconds.
///
/// The one parser of these lives in `toaster_core::telemetry` and is private to it;
/// going through [`parse_batch`] with a one-reading body applies exactly its rules
/// (and messages) without a second copy of them.
pub fn parse_instant(text: &str) -> Result<i64, String> {
    let is_integer = {
        let digits = text.strip_prefix('-').unwrap_or(text);
        !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
    };
    let ts = if is_integer {
        text.to_owned()
    } else {
        serde_json::to_string(text).map_err(|_| "is not a timestamp".to_owned())?
    };
    let body = format!(r#"{{"readings":[{{"metric":"q","ts":{ts},"value":0}}]}}"#);
    let limits = BatchLimits { max_readings: 1 };
    match parse_batch(body.as_bytes(), &limits, i64::MAX - MAX_FUTURE_MS, i64::MIN) {
        Ok(batch) => batch
            .readings
            .first()
            .map(|r| r.ts_ms)
            .ok_or_else(|| "is not a timestamp".to_owned()),
        Err(BatchError::Invalid(errors)) => Err(errors
            .into_iter()
            .next()
            .map(|e| e.detail)
            .unwrap_or_else(|| "is not a timestamp".to_owned())),
        Err(BatchError::Malformed(_)) => Err(
            "must be an RFC 3339 date-time or integer milliseconds since the Unix epoch".to_owned(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_parse_like_telemetry_timestamps() {
        assert_eq!(parse_instant("1970-01-01T00:01:00Z"), Ok(60_000));
        assert_eq!(parse_instant("1970-01-01T01:00:00+01:00"), Ok(0));
        assert_eq!(parse_instant("1795255200123"), Ok(1_795_255_200_123));
        for bad in ["", "yesterday", "2026-11-21", "1e3", "\"", "12a"] {
            assert!(parse_instant(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bucket_limits_name_what_would_fit() {
        let day = 24 * HOUR_MS;
        assert!(check_buckets(Bucket::H1, 0, 30 * day, 720).is_ok());
        let problem = check_buckets(Bucket::M1, 0, 30 * day, 1500).unwrap_err();
        assert_eq!(problem.status, 422);
        let detail = &problem.errors[0].detail;
        assert!(detail.contains("43200 buckets"), "{detail}");
        assert!(detail.contains("bucket=1h"), "{detail}");
        assert!(detail.contains("1d 1h"), "{detail}");
    }
}
