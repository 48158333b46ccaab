//! Telemetry ingest: turning a device's `POST /v1/telemetry` body into readings the
//! ingest component can store in one statement.
//!
//! ```json
//! {"readings": [
//!   {"metric": "temp_c", "ts": "2026-11-21T10:00:00.123Z", "value": 21.5},
//!   {"metric": "door.open", "ts": 1795255200123, "value": true}
//! ]}
//! ```
//!
//! - `metric`: a [`MetricName`].
//! - `ts`: an RFC 3339 date-time with a zone, or integer milliseconds since the Unix
//!   epoch; no older than the retention window and at most [`MAX_FUTURE_MS`] ahead.
//! - `value`: a number from -[`MAX_ABS_VALUE`] to [`MAX_ABS_VALUE`] (1e100), or a
//!   boolean. JSON has no NaN or infinity, but a literal such as `1e400` overflows
//!   `f64`; it is refused with the same message, not stored as infinity.
//!
//! A body that is not JSON is [`BatchError::Malformed`] (400). A JSON body that breaks
//! the rules is [`BatchError::Invalid`] (422) listing every bad field, each with a
//! JSON pointer such as `/readings/3/ts`, so a device fixes its batch in one round
//! trip. Unknown and repeated fields are refused. Too many readings is a 422 at
//! `/readings` (the byte size of the body is the component's 413).
//!
//! Within a batch, readings repeating an earlier `(metric, ts)` are dropped and
//! counted in [`Batch::duplicates`]: the first wins, as storage keeps the first copy
//! when a batch is retried, so the outcome is the same whichever way a device resends.

pub mod query;
mod timestamp;

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use thiserror::Error;

use crate::ids::MetricName;
use crate::problem::{FieldError, Problem};

/// How far ahead of the server's clock a reading may be, for devices whose clock runs
/// fast.
pub const MAX_FUTURE_MS: i64 = 5 * 60 * 1000;

/// The largest absolute value a numeric reading may have (the double nearest 1e100).
///
/// Rollups and queries add readings up in `float8`, and PostgreSQL raises an error
/// (SQLSTATE 22003) rather than return infinity when a sum overflows: two readings
/// near `f64::MAX` in one minute would make every later batch for that minute fail.
/// Under 1e100, a sum of n readings stays under n × 1e100, so more than 1e208
/// readings would be needed to reach `f64::MAX`, in a bucket, a device or a fleet;
/// and no physical quantity a device measures comes near it.
pub const MAX_ABS_VALUE: f64 = 1e100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    pub max_readings: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        Self { max_readings: 5000 }
    }
}

/// A reading's value. Booleans stay booleans, so that queries can tell a door that
/// was open from a counter that read 1; [`Value::as_f64`] is for numeric rollups.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Value {
    /// Always finite.
    Number(f64),
    Bool(bool),
}

impl Value {
    /// The value as a number; `true` is 1.0 and `false` is 0.0.
    pub fn as_f64(self) -> f64 {
        match self {
            Value::Number(number) => number,
            Value::Bool(true) => 1.0,
            Value::Bool(false) => 0.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reading {
    pub metric: MetricName,
    /// Milliseconds since the Unix epoch, UTC.
    pub ts_ms: i64,
    pub value: Value,
}

/// A valid batch, in request order, without duplicates.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub readings: Vec<Reading>,
    /// Readings dropped because an earlier one had the same metric and timestamp.
    pub duplicates: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BatchError {
    /// Not JSON (or not UTF-8): 400. The message says where, never what.
    #[error("the request body is not valid JSON: {0}")]
    Malformed(String),
    /// JSON, but against the schema: 422, one entry per bad field.
    #[error("the batch has {} invalid field(s)", .0.len())]
    Invalid(Vec<FieldError>),
}

impl From<BatchError> for Problem {
    fn from(error: BatchError) -> Self {
        match error {
            BatchError::Malformed(_) => Problem::bad_request(error.to_string()),
            BatchError::Invalid(errors) => Problem::unprocessable(errors),
        }
    }
}

/// Validates a telemetry body. `now_ms` is the server's clock and `oldest_ms` the
/// start of the retention window, both in Unix milliseconds.
pub fn parse_batch(
    body: &[u8],
    limits: &BatchLimits,
    now_ms: i64,
    oldest_ms: i64,
) -> Result<Batch, BatchError> {
    let text = std::str::from_utf8(body).map_err(|error| {
        BatchError::Malformed(format!("invalid UTF-8 at byte {}", error.valid_up_to()))
    })?;
    // Syntax first, without interpreting numbers: `1e400` is valid JSON, and refusing
    // it belongs to the value's own field error.
    serde_json::from_str::<IgnoredAny>(text)
        .map_err(|error| BatchError::Malformed(error.to_string()))?;

    let mut errors = Vec::new();
    let readings = match readings_array(text, limits, &mut errors) {
        Some(items) => items,
        None => return Err(BatchError::Invalid(errors)),
    };
    let max_ts = now_ms.saturating_add(MAX_FUTURE_MS);
    let parsed: Vec<Reading> = readings
        .iter()
        .enumerate()
        .filter_map(|(index, raw)| parse_reading(index, raw, oldest_ms, max_ts, &mut errors))
        .collect();
    if !errors.is_empty() {
        return Err(BatchError::Invalid(errors));
    }

    let mut seen = HashSet::with_capacity(parsed.len());
    let mut batch = Batch {
        readings: Vec::with_capacity(parsed.len()),
        duplicates: 0,
    };
    for reading in parsed {
        if seen.insert((reading.metric.clone(), reading.ts_ms)) {
            batch.readings.push(reading);
        } else {
            batch.duplicates += 1;
        }
    }
    Ok(batch)
}

/// The `readings` array of the top-level object, or `None` with the reasons recorded.
fn readings_array<'a>(
    text: &'a str,
    limits: &BatchLimits,
    errors: &mut Vec<FieldError>,
) -> Option<Vec<&'a RawValue>> {
    let Some(fields) = object_fields(text) else {
        errors.push(FieldError::new("", "must be an object"));
        return None;
    };
    let mut readings = None;
    for (name, raw) in fields {
        if name != "readings" {
            errors.push(unknown_field("", &name));
        } else if readings.is_some() {
            errors.push(FieldError::new("/readings", "appears more than once"));
        } else {
            readings = Some(raw);
        }
    }
    // Which of two `readings` was meant is anyone's guess: report the envelope alone.
    if !errors.is_empty() {
        return None;
    }
    let Some(raw) = readings else {
        errors.push(FieldError::new("/readings", "is required"));
        return None;
    };
    let Ok(items) = serde_json::from_str::<Vec<&RawValue>>(raw.get()) else {
        errors.push(FieldError::new("/readings", "must be an array"));
        return None;
    };
    if items.is_empty() {
        errors.push(FieldError::new(
            "/readings",
            "must contain at least one reading",
        ));
        return None;
    }
    if items.len() > limits.max_readings {
        errors.push(FieldError::new(
            "/readings",
            format!("must contain at most {} readings", limits.max_readings),
        ));
        return None;
    }
    Some(items)
}

fn parse_reading(
    index: usize,
    raw: &RawValue,
    oldest_ms: i64,
    max_ts: i64,
    errors: &mut Vec<FieldError>,
) -> Option<Reading> {
    // Pointers are formatted only for errors: a valid batch builds none.
    let base = || format!("/readings/{index}");
    let Some(fields) = object_fields(raw.get()) else {
        errors.push(FieldError::new(base(), "must be an object"));
        return None;
    };
    let (mut metric, mut ts, mut value) = (None, None, None);
    for (name, raw) in fields {
        let slot = match &*name {
            "metric" => &mut metric,
            "ts" => &mut ts,
            "value" => &mut value,
            _ => {
                errors.push(unknown_field(&base(), &name));
                continue;
            }
        };
        if slot.is_some() {
            errors.push(FieldError::new(
                format!("{}/{name}", base()),
                "appears more than once",
            ));
        } else {
            *slot = Some(raw);
        }
    }

    let metric = required(index, "metric", metric, errors, parse_metric);
    let ts_ms = required(index, "ts", ts, errors, |raw| {
        parse_ts(raw, oldest_ms, max_ts)
    });
    let value = required(index, "value", value, errors, parse_value);
    Some(Reading {
        metric: metric?,
        ts_ms: ts_ms?,
        value: value?,
    })
}

/// Parses a member of reading `index` that must be present, recording why when it is
/// absent or bad.
fn required<T>(
    index: usize,
    name: &str,
    raw: Option<&RawValue>,
    errors: &mut Vec<FieldError>,
    parse: impl FnOnce(&RawValue) -> Result<T, String>,
) -> Option<T> {
    let pointer = || format!("/readings/{index}/{name}");
    let Some(raw) = raw else {
        errors.push(FieldError::new(pointer(), "is required"));
        return None;
    };
    parse(raw)
        .map_err(|detail| errors.push(FieldError::new(pointer(), detail)))
        .ok()
}

fn parse_metric(raw: &RawValue) -> Result<MetricName, String> {
    let text: String =
        serde_json::from_str(raw.get()).map_err(|_| "must be a string".to_owned())?;
    MetricName::parse(&text).map_err(|error| error.to_string())
}

fn parse_ts(raw: &RawValue, oldest_ms: i64, max_ts: i64) -> Result<i64, String> {
    let ts_ms = if raw.get().starts_with('"') {
        let text: String = serde_json::from_str(raw.get()).map_err(|error| error.to_string())?;
        timestamp::parse_rfc3339_ms(&text).map_err(|error| error.to_string())?
    } else {
        serde_json::from_str::<i64>(raw.get()).map_err(|_| {
            "must be an RFC 3339 date-time string or integer milliseconds since the Unix epoch"
                .to_owned()
        })?
    };
    if ts_ms < oldest_ms {
        return Err("is older than the retention period".to_owned());
    }
    if ts_ms > max_ts {
        return Err("is more than 5 minutes in the future".to_owned());
    }
    Ok(ts_ms)
}

fn parse_value(raw: &RawValue) -> Result<Value, String> {
    match raw.get() {
        "true" => return Ok(Value::Bool(true)),
        "false" => return Ok(Value::Bool(false)),
        _ => {}
    }
    let is_number = raw
        .get()
        .bytes()
        .next()
        .is_some_and(|b| b == b'-' || b.is_ascii_digit());
    if !is_number {
        return Err("must be a number or a boolean".to_owned());
    }
    match serde_json::from_str::<f64>(raw.get()) {
        // NaN fails the comparison; infinities (a literal overflowing f64) exceed it.
        Ok(number) if number.abs() <= MAX_ABS_VALUE => Ok(Value::Number(number)),
        _ => Err(value_range_detail()),
    }
}

/// The detail of a number out of range, naming the range.
fn value_range_detail() -> String {
    format!("must be a number from -{MAX_ABS_VALUE:e} to {MAX_ABS_VALUE:e}")
}

/// An RFC 6901 pointer to an unknown member. Very long names are not echoed: the
/// pointer is for finding the mistake, not for reflecting arbitrary input back.
fn unknown_field(parent: &str, name: &str) -> FieldError {
    const MAX_ECHOED: usize = 64;
    if name.len() > MAX_ECHOED {
        return FieldError::new(parent, "has an unknown field (name too long to show)");
    }
    let escaped = name.replace('~', "~0").replace('/', "~1");
    FieldError::new(format!("{parent}/{escaped}"), "is not a known field")
}

/// The members of a JSON object in document order, repeats included (a map would
/// hide them), or `None` if the text is not an object. Names without escapes are
/// borrowed from `text`.
fn object_fields(text: &str) -> Option<Vec<(Cow<'_, str>, &RawValue)>> {
    serde_json::from_str::<ObjectFields<'_>>(text)
        .ok()
        .map(|fields| fields.0)
}

struct ObjectFields<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

/// A member name: borrowed when the JSON string has no escapes, else unescaped.
struct Name<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor;

        impl<'de> Visitor<'de> for NameVisitor {
            type Value = Name<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }

            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Name(Cow::Borrowed(v)))
            }

            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Name(Cow::Owned(v.to_owned())))
            }

            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Name(Cow::Owned(v)))
            }
        }

        deserializer.deserialize_str(NameVisitor)
    }
}

impl<'de> Deserialize<'de> for ObjectFields<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldsVisitor;

        impl<'de> Visitor<'de> for FieldsVisitor {
            type Value = ObjectFields<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut fields = Vec::new();
                while let Some((name, raw)) = map.next_entry::<Name<'de>, &'de RawValue>()? {
                    fields.push((name.0, raw));
                }
                Ok(ObjectFields(fields))
            }
        }

        deserializer.deserialize_map(FieldsVisitor)
    }
}

#[cfg(test)]
mod tests;
