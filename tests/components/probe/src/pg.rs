//! `POST /probe/pg`: runs SQL steps on one `spin:postgres@4.0.0` connection.
//!
//! Request: `{"url": optional string (default: variable db_url), "steps": [{"op": "query" |
//! "execute", "sql": "...", "params": [<value>...]}]}`. All steps run in order on the same
//! connection, so `BEGIN` / `COMMIT` across steps work; a failing step is recorded and the next
//! one still runs. A malformed request is rejected as a whole (400) before anything runs.
//!
//! Response: `{"open_error": null | <error>, "results": [<result>...]}`, one result per step:
//! `{"rows": [[<value>...]...], "columns": [{"name": ..., "type": ...}]}` for a query,
//! `{"affected": n}` for an execute, `{"error": <error>}` for a failure. When the connection
//! cannot be opened (or `db_url` cannot be read), `open_error` is set and `results` is empty.
//!
//! `<error>` is `{"kind": "connection-failed" | "bad-parameter" | "query-failed" |
//! "value-conversion-failed" | "other", "message": ..., "code": <SQLSTATE> | null}`; `code` is
//! set only for a structured database error, whose `message` is PostgreSQL's primary message.
//!
//! A column `type` is the `db-data-type` case in kebab case (`int64`, `str`, `range-int32`,
//! ...), or `other:<name>` for `other(name)`.
//!
//! # Tagged values
//!
//! Parameters and row values are `{"t": <db-value case>, "v": <payload>}`:
//!
//! | `t` | `v` |
//! |---|---|
//! | `boolean` | `true` / `false` |
//! | `int8`, `int16`, `int32`, `int64`, `timestamp` | JSON integer (range-checked) |
//! | `floating32`, `floating64` | JSON number, or `"NaN"`, `"inf"`, `"-inf"` (values use these strings for non-finite floats) |
//! | `str`, `uuid`, `decimal` | string |
//! | `binary`, `unsupported` | array of byte values `0..=255` (not base64) |
//! | `date` | `[year, month, day]` |
//! | `time` | `[hour, minute, second, nanosecond]` |
//! | `datetime` | `[year, month, day, hour, minute, second, nanosecond]` |
//! | `jsonb` | any JSON (sent as its serialised bytes); a value whose bytes are not JSON comes back as `{"t": "jsonb", "raw": [bytes]}` |
//! | `range-int32`, `range-int64`, `range-decimal` | `[lower, upper]`, each `null` (unbounded) or `[bound, "inclusive" \| "exclusive"]`; decimal bounds are strings |
//! | `array-int32`, `array-int64` | array of integers or `null` |
//! | `array-decimal`, `array-str` | array of strings or `null` |
//! | `interval` | `{"micros": i64, "days": i32, "months": i32}` (missing members are 0) |
//! | `null` | no `v` |
//!
//! `unsupported` appears only in values, never as a parameter.

use serde_json::{Map, Number, Value, json};
use spin_sdk::pg4::{
    Column, Connection, DbDataType, DbValue, Interval, ParameterValue, PgError, QueryError,
    RangeBoundKind, RowSet,
};
use spin_sdk::variables;

enum Op {
    Query,
    Execute,
}

struct Step {
    op: Op,
    sql: String,
    params: Vec<ParameterValue>,
}

/// Runs a `/probe/pg` request body; `Err` is a message for a malformed request.
pub fn run(body: &[u8]) -> Result<Value, String> {
    let request: Value =
        serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    let url = match request.get("url") {
        None | Some(Value::Null) => None,
        Some(Value::String(url)) => Some(url.clone()),
        Some(_) => return Err("\"url\" must be a string".to_owned()),
    };
    let steps = match request.get("steps") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(steps)) => steps
            .iter()
            .enumerate()
            .map(|(i, step)| parse_step(step).map_err(|e| format!("steps[{i}]: {e}")))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("\"steps\" must be an array".to_owned()),
    };

    let url = match url {
        Some(url) => url,
        None => match variables::get("db_url") {
            Ok(url) => url,
            Err(e) => {
                let error = error_json("other", format!("variable db_url: {e:?}"), None);
                return Ok(json!({"open_error": error, "results": []}));
            }
        },
    };
    let connection = match Connection::open(&url) {
        Ok(connection) => connection,
        Err(e) => return Ok(json!({"open_error": pg_error(&e), "results": []})),
    };
    let results: Vec<Value> = steps
        .iter()
        .map(|step| match step.op {
            Op::Query => match connection.query(&step.sql, &step.params) {
                Ok(rows) => row_set(&rows),
                Err(e) => json!({"error": pg_error(&e)}),
            },
            Op::Execute => match connection.execute(&step.sql, &step.params) {
                Ok(affected) => json!({"affected": affected}),
                Err(e) => json!({"error": pg_error(&e)}),
            },
        })
        .collect();
    Ok(json!({"open_error": null, "results": results}))
}

fn parse_step(step: &Value) -> Result<Step, String> {
    let op = match step.get("op").and_then(Value::as_str) {
        Some("query") => Op::Query,
        Some("execute") => Op::Execute,
        _ => return Err("\"op\" must be \"query\" or \"execute\"".to_owned()),
    };
    let sql = step
        .get("sql")
        .and_then(Value::as_str)
        .ok_or("\"sql\" must be a string")?
        .to_owned();
    let params = match step.get("params") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(params)) => params
            .iter()
            .enumerate()
            .map(|(i, p)| parameter(p).map_err(|e| format!("params[{i}]: {e}")))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("\"params\" must be an array".to_owned()),
    };
    Ok(Step { op, sql, params })
}

fn row_set(rows: &RowSet) -> Value {
    let columns: Vec<Value> = rows.columns.iter().map(column).collect();
    let rows: Vec<Value> = rows
        .rows
        .iter()
        .map(|row| Value::Array(row.iter().map(db_value).collect()))
        .collect();
    json!({"rows": rows, "columns": columns})
}

fn column(column: &Column) -> Value {
    json!({"name": column.name, "type": type_name(&column.data_type)})
}

fn type_name(data_type: &DbDataType) -> String {
    let name = match data_type {
        DbDataType::Boolean => "boolean",
        DbDataType::Int8 => "int8",
        DbDataType::Int16 => "int16",
        DbDataType::Int32 => "int32",
        DbDataType::Int64 => "int64",
        DbDataType::Floating32 => "floating32",
        DbDataType::Floating64 => "floating64",
        DbDataType::Str => "str",
        DbDataType::Binary => "binary",
        DbDataType::Date => "date",
        DbDataType::Time => "time",
        DbDataType::Datetime => "datetime",
        DbDataType::Timestamp => "timestamp",
        DbDataType::Uuid => "uuid",
        DbDataType::Jsonb => "jsonb",
        DbDataType::Decimal => "decimal",
        DbDataType::RangeInt32 => "range-int32",
        DbDataType::RangeInt64 => "range-int64",
        DbDataType::RangeDecimal => "range-decimal",
        DbDataType::ArrayInt32 => "array-int32",
        DbDataType::ArrayInt64 => "array-int64",
        DbDataType::ArrayDecimal => "array-decimal",
        DbDataType::ArrayStr => "array-str",
        DbDataType::Interval => "interval",
        DbDataType::Other(name) => return format!("other:{name}"),
    };
    name.to_owned()
}

fn pg_error(error: &PgError) -> Value {
    match error {
        PgError::ConnectionFailed(m) => error_json("connection-failed", m.clone(), None),
        PgError::BadParameter(m) => error_json("bad-parameter", m.clone(), None),
        PgError::QueryFailed(QueryError::Text(m)) => error_json("query-failed", m.clone(), None),
        PgError::QueryFailed(QueryError::DbError(db)) => {
            error_json("query-failed", db.message.clone(), Some(db.code.clone()))
        }
        PgError::ValueConversionFailed(m) => error_json("value-conversion-failed", m.clone(), None),
        PgError::Other(m) => error_json("other", m.clone(), None),
    }
}

fn error_json(kind: &str, message: String, code: Option<String>) -> Value {
    json!({"kind": kind, "message": message, "code": code})
}

fn tagged(tag: &str, value: Value) -> Value {
    json!({"t": tag, "v": value})
}

/// A row value as tagged JSON (see the module docs).
pub fn db_value(value: &DbValue) -> Value {
    match value {
        DbValue::Boolean(b) => tagged("boolean", json!(b)),
        DbValue::Int8(n) => tagged("int8", json!(n)),
        DbValue::Int16(n) => tagged("int16", json!(n)),
        DbValue::Int32(n) => tagged("int32", json!(n)),
        DbValue::Int64(n) => tagged("int64", json!(n)),
        DbValue::Floating32(f) => tagged("floating32", f32_json(*f)),
        DbValue::Floating64(f) => tagged("floating64", f64_json(*f)),
        DbValue::Str(s) => tagged("str", json!(s)),
        DbValue::Binary(bytes) => tagged("binary", json!(bytes)),
        DbValue::Date((y, m, d)) => tagged("date", json!([y, m, d])),
        DbValue::Time((h, m, s, ns)) => tagged("time", json!([h, m, s, ns])),
        DbValue::Datetime((y, mo, d, h, mi, s, ns)) => {
            tagged("datetime", json!([y, mo, d, h, mi, s, ns]))
        }
        DbValue::Timestamp(t) => tagged("timestamp", json!(t)),
        DbValue::Uuid(s) => tagged("uuid", json!(s)),
        DbValue::Jsonb(bytes) => match serde_json::from_slice::<Value>(bytes) {
            Ok(v) => tagged("jsonb", v),
            Err(_) => json!({"t": "jsonb", "raw": bytes}),
        },
        DbValue::Decimal(s) => tagged("decimal", json!(s)),
        DbValue::RangeInt32((lower, upper)) => tagged("range-int32", range_json(lower, upper)),
        DbValue::RangeInt64((lower, upper)) => tagged("range-int64", range_json(lower, upper)),
        DbValue::RangeDecimal((lower, upper)) => tagged("range-decimal", range_json(lower, upper)),
        DbValue::ArrayInt32(items) => tagged("array-int32", json!(items)),
        DbValue::ArrayInt64(items) => tagged("array-int64", json!(items)),
        DbValue::ArrayDecimal(items) => tagged("array-decimal", json!(items)),
        DbValue::ArrayStr(items) => tagged("array-str", json!(items)),
        DbValue::Interval(i) => tagged(
            "interval",
            json!({"micros": i.micros, "days": i.days, "months": i.months}),
        ),
        DbValue::DbNull => json!({"t": "null"}),
        DbValue::Unsupported(bytes) => tagged("unsupported", json!(bytes)),
    }
}

fn f64_json(f: f64) -> Value {
    if f.is_nan() {
        json!("NaN")
    } else if f.is_infinite() {
        json!(if f > 0.0 { "inf" } else { "-inf" })
    } else {
        Number::from_f64(f).map_or(Value::Null, Value::Number)
    }
}

/// Goes through the shortest decimal form, so `1.1f32` reads back as `1.1`, not `1.100000023841858`.
fn f32_json(f: f32) -> Value {
    if f.is_finite() {
        f64_json(f.to_string().parse().unwrap_or(f64::from(f)))
    } else {
        f64_json(f64::from(f))
    }
}

type Bound<T> = Option<(T, RangeBoundKind)>;

fn range_json<T: Clone + Into<Value>>(lower: &Bound<T>, upper: &Bound<T>) -> Value {
    let bound = |b: &Bound<T>| match b {
        None => Value::Null,
        Some((v, RangeBoundKind::Inclusive)) => json!([v.clone().into(), "inclusive"]),
        Some((v, RangeBoundKind::Exclusive)) => json!([v.clone().into(), "exclusive"]),
    };
    json!([bound(lower), bound(upper)])
}

/// A parameter from tagged JSON (see the module docs).
pub fn parameter(param: &Value) -> Result<ParameterValue, String> {
    let object = param
        .as_object()
        .ok_or("a parameter is an object {\"t\": ..., \"v\": ...}")?;
    let tag = object
        .get("t")
        .and_then(Value::as_str)
        .ok_or("\"t\" must be a string")?;
    if tag == "null" {
        return Ok(ParameterValue::DbNull);
    }
    let v = object
        .get("v")
        .ok_or_else(|| format!("{tag}: missing \"v\""))?;
    let fail = |what: &str| format!("{tag}: \"v\" must be {what}, got {v}");
    let value = match tag {
        "boolean" => ParameterValue::Boolean(v.as_bool().ok_or_else(|| fail("a boolean"))?),
        "int8" => ParameterValue::Int8(int(v).ok_or_else(|| fail("an i8"))?),
        "int16" => ParameterValue::Int16(int(v).ok_or_else(|| fail("an i16"))?),
        "int32" => ParameterValue::Int32(int(v).ok_or_else(|| fail("an i32"))?),
        "int64" => ParameterValue::Int64(int(v).ok_or_else(|| fail("an i64"))?),
        "timestamp" => ParameterValue::Timestamp(int(v).ok_or_else(|| fail("an i64"))?),
        // Narrowing to f32 is the point of this variant.
        "floating32" => ParameterValue::Floating32(
            float(v).ok_or_else(|| fail("a number, \"NaN\", \"inf\" or \"-inf\""))? as f32,
        ),
        "floating64" => ParameterValue::Floating64(
            float(v).ok_or_else(|| fail("a number, \"NaN\", \"inf\" or \"-inf\""))?,
        ),
        "str" => ParameterValue::Str(string(v).ok_or_else(|| fail("a string"))?),
        "uuid" => ParameterValue::Uuid(string(v).ok_or_else(|| fail("a string"))?),
        "decimal" => ParameterValue::Decimal(string(v).ok_or_else(|| fail("a string"))?),
        "binary" => ParameterValue::Binary(bytes(v).ok_or_else(|| fail("an array of bytes"))?),
        "jsonb" => ParameterValue::Jsonb(v.to_string().into_bytes()),
        "date" => {
            let [y, m, d] = tuple(v).ok_or_else(|| fail("[year, month, day]"))?;
            let date = (int(y), int(m), int(d));
            match date {
                (Some(y), Some(m), Some(d)) => ParameterValue::Date((y, m, d)),
                _ => return Err(fail("[year, month, day]")),
            }
        }
        "time" => {
            let [h, m, s, ns] = tuple(v).ok_or_else(|| fail("[hour, minute, second, ns]"))?;
            match (int(h), int(m), int(s), int(ns)) {
                (Some(h), Some(m), Some(s), Some(ns)) => ParameterValue::Time((h, m, s, ns)),
                _ => return Err(fail("[hour, minute, second, ns]")),
            }
        }
        "datetime" => {
            let what = "[year, month, day, hour, minute, second, ns]";
            let [y, mo, d, h, mi, s, ns] = tuple(v).ok_or_else(|| fail(what))?;
            let date = (int(y), int(mo), int(d));
            let time = (int(h), int(mi), int(s), int(ns));
            match (date, time) {
                ((Some(y), Some(mo), Some(d)), (Some(h), Some(mi), Some(s), Some(ns))) => {
                    ParameterValue::Datetime((y, mo, d, h, mi, s, ns))
                }
                _ => return Err(fail(what)),
            }
        }
        "range-int32" => {
            ParameterValue::RangeInt32(range(v, int).ok_or_else(|| fail("[lower, upper]"))?)
        }
        "range-int64" => {
            ParameterValue::RangeInt64(range(v, int).ok_or_else(|| fail("[lower, upper]"))?)
        }
        "range-decimal" => {
            ParameterValue::RangeDecimal(range(v, string).ok_or_else(|| fail("[lower, upper]"))?)
        }
        "array-int32" => ParameterValue::ArrayInt32(
            array(v, int).ok_or_else(|| fail("an array of i32 or null"))?,
        ),
        "array-int64" => ParameterValue::ArrayInt64(
            array(v, int).ok_or_else(|| fail("an array of i64 or null"))?,
        ),
        "array-decimal" => ParameterValue::ArrayDecimal(
            array(v, string).ok_or_else(|| fail("an array of strings or null"))?,
        ),
        "array-str" => ParameterValue::ArrayStr(
            array(v, string).ok_or_else(|| fail("an array of strings or null"))?,
        ),
        "interval" => {
            ParameterValue::Interval(interval(v).ok_or_else(|| fail("{micros, days, months}"))?)
        }
        "unsupported" => return Err("unsupported: only a value, never a parameter".to_owned()),
        other => return Err(format!("unknown tag {other:?}")),
    };
    Ok(value)
}

fn int<T: TryFrom<i64>>(v: &Value) -> Option<T> {
    v.as_i64().and_then(|n| T::try_from(n).ok())
}

fn float(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.as_str() {
            "NaN" | "nan" => Some(f64::NAN),
            "inf" | "+inf" | "Infinity" => Some(f64::INFINITY),
            "-inf" | "-Infinity" => Some(f64::NEG_INFINITY),
            _ => None,
        },
        _ => None,
    }
}

fn string(v: &Value) -> Option<String> {
    v.as_str().map(str::to_owned)
}

fn bytes(v: &Value) -> Option<Vec<u8>> {
    v.as_array()?.iter().map(int::<u8>).collect()
}

fn tuple<const N: usize>(v: &Value) -> Option<[&Value; N]> {
    let items: Vec<&Value> = v.as_array()?.iter().collect();
    items.try_into().ok()
}

fn array<T>(v: &Value, item: fn(&Value) -> Option<T>) -> Option<Vec<Option<T>>> {
    v.as_array()?
        .iter()
        .map(|element| match element {
            Value::Null => Some(None),
            element => item(element).map(Some),
        })
        .collect()
}

fn range<T>(v: &Value, item: fn(&Value) -> Option<T>) -> Option<(Bound<T>, Bound<T>)> {
    let bound = |b: &Value| -> Option<Bound<T>> {
        match b {
            Value::Null => Some(None),
            b => {
                let [value, kind] = tuple(b)?;
                let kind = match kind.as_str()? {
                    "inclusive" => RangeBoundKind::Inclusive,
                    "exclusive" => RangeBoundKind::Exclusive,
                    _ => return None,
                };
                Some(Some((item(value)?, kind)))
            }
        }
    };
    let [lower, upper] = tuple(v)?;
    Some((bound(lower)?, bound(upper)?))
}

fn interval(v: &Value) -> Option<Interval> {
    let object: &Map<String, Value> = v.as_object()?;
    let member = |name: &str| -> Option<i64> {
        match object.get(name) {
            None => Some(0),
            Some(n) => n.as_i64(),
        }
    };
    Some(Interval {
        micros: member("micros")?,
        days: i32::try_from(member("days")?).ok()?,
        months: i32::try_from(member("months")?).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every parameter tag reads back, through the matching `DbValue`, as the JSON it came from.
    #[test]
    fn tagged_values_round_trip() {
        let cases = [
            json!({"t": "boolean", "v": true}),
            json!({"t": "int8", "v": -8}),
            json!({"t": "int16", "v": 16}),
            json!({"t": "int32", "v": -32}),
            json!({"t": "int64", "v": 9_007_199_254_740_993_i64}),
            json!({"t": "floating32", "v": 1.1}),
            json!({"t": "floating64", "v": "-inf"}),
            json!({"t": "str", "v": "s"}),
            json!({"t": "binary", "v": [0, 255]}),
            json!({"t": "date", "v": [2024, 2, 29]}),
            json!({"t": "time", "v": [23, 59, 58, 999]}),
            json!({"t": "datetime", "v": [2024, 2, 29, 23, 59, 58, 999]}),
            json!({"t": "timestamp", "v": -1}),
            json!({"t": "uuid", "v": "4f0a3c5e-0000-4000-8000-000000000000"}),
            json!({"t": "jsonb", "v": {"a": [1, null]}}),
            json!({"t": "decimal", "v": "1.50"}),
            json!({"t": "range-int32", "v": [[1, "inclusive"], null]}),
            json!({"t": "range-int64", "v": [null, [5, "exclusive"]]}),
            json!({"t": "range-decimal", "v": [["1.5", "inclusive"], ["2", "exclusive"]]}),
            json!({"t": "array-int32", "v": [1, null]}),
            json!({"t": "array-int64", "v": [null]}),
            json!({"t": "array-decimal", "v": ["1.0", null]}),
            json!({"t": "array-str", "v": ["a", null]}),
            json!({"t": "interval", "v": {"micros": 1, "days": 2, "months": 3}}),
            json!({"t": "null"}),
        ];
        for case in cases {
            let param = parameter(&case).unwrap_or_else(|e| panic!("{case}: {e}"));
            assert_eq!(db_value(&as_db_value(param)), case);
        }
    }

    #[test]
    fn malformed_parameters_are_rejected() {
        for bad in [
            json!({"t": "int8", "v": 128}),
            json!({"t": "date", "v": [2024, 2]}),
            json!({"t": "binary", "v": [256]}),
            json!({"t": "range-int32", "v": [[1, "open"], null]}),
            json!({"t": "unsupported", "v": []}),
            json!({"t": "nope", "v": 1}),
            json!({"t": "str"}),
            json!(5),
        ] {
            assert!(parameter(&bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn non_finite_and_unparseable_values() {
        assert_eq!(
            db_value(&DbValue::Floating64(f64::NAN)),
            json!({"t": "floating64", "v": "NaN"})
        );
        assert_eq!(
            db_value(&DbValue::Jsonb(b"{".to_vec())),
            json!({"t": "jsonb", "raw": [123]})
        );
        assert_eq!(
            type_name(&DbDataType::Other("money".to_owned())),
            "other:money"
        );
    }

    fn as_db_value(param: ParameterValue) -> DbValue {
        match param {
            ParameterValue::Boolean(v) => DbValue::Boolean(v),
            ParameterValue::Int8(v) => DbValue::Int8(v),
            ParameterValue::Int16(v) => DbValue::Int16(v),
            ParameterValue::Int32(v) => DbValue::Int32(v),
            ParameterValue::Int64(v) => DbValue::Int64(v),
            ParameterValue::Floating32(v) => DbValue::Floating32(v),
            ParameterValue::Floating64(v) => DbValue::Floating64(v),
            ParameterValue::Str(v) => DbValue::Str(v),
            ParameterValue::Binary(v) => DbValue::Binary(v),
            ParameterValue::Date(v) => DbValue::Date(v),
            ParameterValue::Time(v) => DbValue::Time(v),
            ParameterValue::Datetime(v) => DbValue::Datetime(v),
            ParameterValue::Timestamp(v) => DbValue::Timestamp(v),
            ParameterValue::Uuid(v) => DbValue::Uuid(v),
            ParameterValue::Jsonb(v) => DbValue::Jsonb(v),
            ParameterValue::Decimal(v) => DbValue::Decimal(v),
            ParameterValue::RangeInt32(v) => DbValue::RangeInt32(v),
            ParameterValue::RangeInt64(v) => DbValue::RangeInt64(v),
            ParameterValue::RangeDecimal(v) => DbValue::RangeDecimal(v),
            ParameterValue::ArrayInt32(v) => DbValue::ArrayInt32(v),
            ParameterValue::ArrayInt64(v) => DbValue::ArrayInt64(v),
            ParameterValue::ArrayDecimal(v) => DbValue::ArrayDecimal(v),
            ParameterValue::ArrayStr(v) => DbValue::ArrayStr(v),
            ParameterValue::Interval(v) => DbValue::Interval(v),
            ParameterValue::DbNull => DbValue::DbNull,
        }
    }
}
