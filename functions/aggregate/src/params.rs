//! The query parameters of the series routes: `from`, `to`, `bucket`, `agg`, `fill`,
//! and the bound on the number of buckets (variable `max_query_buckets`).
//!
//! Bucket edges are UTC instants counted from the Unix epoch: a `1h` bucket starts on
//! the hour, `6h` at 00:00, 06:00, 12:00 and 18:00 UTC, `1d` at 00:00 UTC. The range
//! `[from, to)` is widened to whole buckets (`from` rounded down, `to` up), so every
//! bucket returned covers its full interval, and the same bucket always has the same
//! value whatever range asked for it.
//!
//! `from` and `to` must lie between 0000-01-01T00:00:00Z and 9999-12-31T00:00:00Z
//! (`toaster_core::telemetry::query`): outside, 422 naming the parameter and the range,
//! before any arithmetic or SQL sees them.

use crate::error::AggregateError;
use toaster_core::problem::Problem;
use toaster_core::telemetry::query::{InstantError, bucket_count, parse_instant, whole_buckets};
use toaster_platform::query::Query;
use toaster_platform::time;

/// The variable bounding the buckets one query may return.
pub const MAX_BUCKETS_VARIABLE: &str = "max_query_buckets";

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
            .ok_or(AggregateError::Missing("bucket"))?;
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
        // Instants in range widen to instants in range (both ends are UTC midnights and
        // no bucket is longer than a day): `None` cannot happen, and is still a 422.
        let (start_ms, end_ms) = whole_buckets(from_ms, to_ms, bucket.size_ms())
            .ok_or_else(|| out_of_range(&["from", "to"]))?;
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

/// `from` (required) and `to` (default: now), as Unix ms; `from` before `to`. Not an
/// instant: 400. An instant outside the range queries may name: 422 naming each such
/// parameter and the range.
pub fn take_range(query: &mut Query) -> Result<(i64, i64), Problem> {
    let mut outside = Vec::new();
    let from = take_instant(query, "from", &mut outside)?;
    let to = take_instant(query, "to", &mut outside)?;
    if !outside.is_empty() {
        return Err(out_of_range(&outside));
    }
    let from = from.ok_or(AggregateError::Missing("from"))?;
    let to = to.unwrap_or_else(time::now_ms);
    if from >= to {
        return Err(AggregateError::EmptyRange.into());
    }
    Ok((from, to))
}

/// The instant in parameter `name`, if given and within range. 400 when it is not an
/// instant; when it is one out of range, `name` goes into `outside` (the 422 names
/// every such parameter) and the answer is `None`.
fn take_instant(
    query: &mut Query,
    name: &'static str,
    outside: &mut Vec<&'static str>,
) -> Result<Option<i64>, Problem> {
    let Some(text) = query.take(name)? else {
        return Ok(None);
    };
    match parse_instant(&text) {
        Ok(ms) => Ok(Some(ms)),
        Err(InstantError::OutOfRange) => {
            outside.push(name);
            Ok(None)
        }
        Err(InstantError::Format(detail)) => {
            Err(AggregateError::BadInstant { name, detail }.into())
        }
    }
}

/// 422: the parameters `names` are instants outside the range a query may name.
fn out_of_range(names: &[&'static str]) -> Problem {
    AggregateError::OutOfRange(names.to_vec()).into()
}

/// 422 when `[start, end)` holds more than `max` buckets, saying what would fit.
pub fn check_buckets(bucket: Bucket, start_ms: i64, end_ms: i64, max: u64) -> Result<(), Problem> {
    let count = bucket_count(start_ms, end_ms, bucket.size_ms());
    if count <= max {
        return Ok(());
    }
    // The same range widened to a larger bucket: exactly the buckets it would return.
    let larger = Bucket::ALL.into_iter().find(|b| {
        whole_buckets(start_ms, end_ms, b.size_ms())
            .is_some_and(|(start, end)| bucket_count(start, end, b.size_ms()) <= max)
    });
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
    Err(AggregateError::TooManyBuckets {
        count,
        max,
        detail: format!(
            "the range spans {count} buckets of {}; at most {max} are allowed \
             (variable {MAX_BUCKETS_VARIABLE}): {advice}",
            bucket.label()
        ),
    }
    .into())
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

/// `max_query_buckets`: spin.toml's default when not granted; a bad value is a 500
/// naming it ([`toaster_platform::config::get`]).
pub fn max_buckets() -> Result<u64, Problem> {
    toaster_platform::config::get(MAX_BUCKETS_VARIABLE, |text| {
        toaster_core::config::count(text).map(u64::from)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
