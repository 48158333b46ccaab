//! Conversions between the interface's values and PostgreSQL's, as Spin's: see
//! [`super`] for the rules.

// The error type is the interface's generated `error` variant, which every function
// here must return as is; boxing it would only move the cost.
#![allow(clippy::result_large_err)]

use std::error::Error as _;

use bytes::BytesMut;
use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime, Timelike};
use postgres_types::{FromSql, IsNull, ToSql, Type, to_sql_checked};

use crate::bindings::postgres::{
    DbDataType, DbError, DbValue, Error, Interval, ParameterValue, QueryError,
};

pub(super) fn pg_error(e: tokio_postgres::Error) -> Error {
    if let Some(db) = e.as_db_error() {
        return Error::QueryFailed(QueryError::DbError(DbError {
            as_text: db.to_string(),
            severity: db.severity().to_string(),
            code: db.code().code().to_string(),
            message: db.message().to_string(),
            detail: db.detail().map(str::to_string),
            extras: [
                ("hint", db.hint()),
                ("table", db.table()),
                ("column", db.column()),
                ("constraint", db.constraint()),
                ("schema", db.schema()),
            ]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_string(), v.to_string())))
            .collect(),
        }));
    }
    if e.is_closed() {
        return Error::ConnectionFailed(format!("the database connection was lost: {e}"));
    }
    // A parameter tokio-postgres could not serialise for the prepared type.
    let text = match e.source() {
        Some(s) => format!("{e}: {s}"),
        None => e.to_string(),
    };
    if text.contains("error serializing parameter") {
        return Error::BadParameter(text);
    }
    if text.contains("error deserializing column") {
        return Error::ValueConversionFailed(text);
    }
    if text.contains("timed out") || text.contains("connection") {
        return Error::ConnectionFailed(text);
    }
    Error::QueryFailed(QueryError::Text(text))
}

pub(super) type Param = Box<dyn ToSql + Sync + Send>;

pub(super) fn to_sql_params(params: Vec<ParameterValue>) -> Result<Vec<Param>, Error> {
    params
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            to_sql(p).map_err(|m| Error::BadParameter(format!("parameter ${}: {m}", i + 1)))
        })
        .collect()
}

fn to_sql(p: ParameterValue) -> Result<Param, String> {
    Ok(match p {
        ParameterValue::Boolean(v) => Box::new(v),
        ParameterValue::Int8(v) => Box::new(v),
        ParameterValue::Int16(v) => Box::new(v),
        ParameterValue::Int32(v) => Box::new(v),
        ParameterValue::Int64(v) => Box::new(v),
        ParameterValue::Floating32(v) => Box::new(v),
        ParameterValue::Floating64(v) => Box::new(v),
        ParameterValue::Str(v) => Box::new(v),
        ParameterValue::Binary(v) => Box::new(v),
        ParameterValue::Date((y, m, d)) => Box::new(date(y, m, d)?),
        ParameterValue::Time((h, mi, s, ns)) => Box::new(time(h, mi, s, ns)?),
        ParameterValue::Datetime((y, mo, d, h, mi, s, ns)) => {
            Box::new(NaiveDateTime::new(date(y, mo, d)?, time(h, mi, s, ns)?))
        }
        ParameterValue::Timestamp(secs) => Box::new(
            chrono::DateTime::<chrono::Utc>::from_timestamp(secs, 0)
                .ok_or_else(|| format!("timestamp {secs} is out of range"))?,
        ),
        ParameterValue::Uuid(s) => {
            Box::new(uuid::Uuid::parse_str(&s).map_err(|e| format!("invalid uuid: {e}"))?)
        }
        ParameterValue::Jsonb(bytes) => Box::new(
            serde_json::from_slice::<serde_json::Value>(&bytes)
                .map_err(|e| format!("invalid JSON: {e}"))?,
        ),
        ParameterValue::Decimal(s) => Box::new(decimal(&s)?),
        ParameterValue::ArrayInt32(v) => Box::new(v),
        ParameterValue::ArrayInt64(v) => Box::new(v),
        ParameterValue::ArrayStr(v) => Box::new(v),
        ParameterValue::ArrayDecimal(v) => Box::new(
            v.iter()
                .map(|d| d.as_deref().map(decimal).transpose())
                .collect::<Result<Vec<_>, _>>()?,
        ),
        ParameterValue::Interval(i) => Box::new(PgInterval(i.micros, i.days, i.months)),
        ParameterValue::DbNull => Box::new(Null),
        ParameterValue::RangeInt32(_)
        | ParameterValue::RangeInt64(_)
        | ParameterValue::RangeDecimal(_) => {
            return Err("range parameters are not supported by the toaster host".into());
        }
    })
}

fn date(y: i32, m: u8, d: u8) -> Result<NaiveDate, String> {
    NaiveDate::from_ymd_opt(y, m.into(), d.into())
        .ok_or_else(|| format!("invalid date {y}-{m}-{d}"))
}

fn time(h: u8, mi: u8, s: u8, ns: u32) -> Result<NaiveTime, String> {
    NaiveTime::from_hms_nano_opt(h.into(), mi.into(), s.into(), ns)
        .ok_or_else(|| format!("invalid time {h}:{mi}:{s}.{ns}"))
}

fn decimal(s: &str) -> Result<rust_decimal::Decimal, String> {
    rust_decimal::Decimal::from_str_exact(s).map_err(|e| format!("invalid decimal {s:?}: {e}"))
}

/// SQL NULL of whatever type the statement expects.
#[derive(Debug)]
struct Null;

impl ToSql for Null {
    fn to_sql(
        &self,
        _: &Type,
        _: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        Ok(IsNull::Yes)
    }
    fn accepts(_: &Type) -> bool {
        true
    }
    to_sql_checked!();
}

/// PostgreSQL's binary interval: microseconds, days, months.
#[derive(Debug)]
struct PgInterval(i64, i32, i32);

impl ToSql for PgInterval {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.extend_from_slice(&self.0.to_be_bytes());
        out.extend_from_slice(&self.1.to_be_bytes());
        out.extend_from_slice(&self.2.to_be_bytes());
        Ok(IsNull::No)
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::INTERVAL
    }
    to_sql_checked!();
}

impl<'a> FromSql<'a> for PgInterval {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        if raw.len() != 16 {
            return Err("invalid interval".into());
        }
        let micros = i64::from_be_bytes(raw[0..8].try_into()?);
        let days = i32::from_be_bytes(raw[8..12].try_into()?);
        let months = i32::from_be_bytes(raw[12..16].try_into()?);
        Ok(PgInterval(micros, days, months))
    }
    fn accepts(ty: &Type) -> bool {
        *ty == Type::INTERVAL
    }
}

/// The raw bytes of a value of a type we don't convert.
struct Raw(Vec<u8>);

impl<'a> FromSql<'a> for Raw {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(raw.to_vec()))
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

pub(super) fn data_type(t: &Type) -> DbDataType {
    match *t {
        Type::BOOL => DbDataType::Boolean,
        Type::CHAR => DbDataType::Int8,
        Type::INT2 => DbDataType::Int16,
        Type::INT4 => DbDataType::Int32,
        Type::INT8 => DbDataType::Int64,
        Type::FLOAT4 => DbDataType::Floating32,
        Type::FLOAT8 => DbDataType::Floating64,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => DbDataType::Str,
        Type::BYTEA => DbDataType::Binary,
        Type::DATE => DbDataType::Date,
        Type::TIME => DbDataType::Time,
        Type::TIMESTAMP | Type::TIMESTAMPTZ => DbDataType::Datetime,
        Type::UUID => DbDataType::Uuid,
        Type::JSONB | Type::JSON => DbDataType::Jsonb,
        Type::NUMERIC => DbDataType::Decimal,
        Type::INT4_ARRAY => DbDataType::ArrayInt32,
        Type::INT8_ARRAY => DbDataType::ArrayInt64,
        Type::NUMERIC_ARRAY => DbDataType::ArrayDecimal,
        Type::TEXT_ARRAY | Type::VARCHAR_ARRAY => DbDataType::ArrayStr,
        Type::INTERVAL => DbDataType::Interval,
        ref other => DbDataType::Other(other.name().to_string()),
    }
}

fn conv<T>(
    r: Result<Option<T>, tokio_postgres::Error>,
    f: impl FnOnce(T) -> Result<DbValue, String>,
) -> Result<DbValue, Error> {
    match r {
        Ok(Some(v)) => f(v).map_err(Error::ValueConversionFailed),
        Ok(None) => Ok(DbValue::DbNull),
        Err(e) => Err(Error::ValueConversionFailed(match e.source() {
            Some(s) => format!("{e}: {s}"),
            None => e.to_string(),
        })),
    }
}

fn datetime(v: NaiveDateTime) -> DbValue {
    DbValue::Datetime((
        v.year(),
        v.month() as u8,
        v.day() as u8,
        v.hour() as u8,
        v.minute() as u8,
        v.second() as u8,
        v.nanosecond(),
    ))
}

pub(super) fn db_value(row: &tokio_postgres::Row, i: usize, t: &Type) -> Result<DbValue, Error> {
    match *t {
        Type::BOOL => conv(row.try_get::<_, Option<bool>>(i), |v| {
            Ok(DbValue::Boolean(v))
        }),
        Type::CHAR => conv(row.try_get::<_, Option<i8>>(i), |v| Ok(DbValue::Int8(v))),
        Type::INT2 => conv(row.try_get::<_, Option<i16>>(i), |v| Ok(DbValue::Int16(v))),
        Type::INT4 => conv(row.try_get::<_, Option<i32>>(i), |v| Ok(DbValue::Int32(v))),
        Type::INT8 => conv(row.try_get::<_, Option<i64>>(i), |v| Ok(DbValue::Int64(v))),
        Type::FLOAT4 => conv(row.try_get::<_, Option<f32>>(i), |v| {
            Ok(DbValue::Floating32(v))
        }),
        Type::FLOAT8 => conv(row.try_get::<_, Option<f64>>(i), |v| {
            Ok(DbValue::Floating64(v))
        }),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
            conv(row.try_get::<_, Option<String>>(i), |v| Ok(DbValue::Str(v)))
        }
        Type::BYTEA => conv(row.try_get::<_, Option<Vec<u8>>>(i), |v| {
            Ok(DbValue::Binary(v))
        }),
        Type::DATE => conv(row.try_get::<_, Option<NaiveDate>>(i), |v| {
            Ok(DbValue::Date((v.year(), v.month() as u8, v.day() as u8)))
        }),
        Type::TIME => conv(row.try_get::<_, Option<NaiveTime>>(i), |v| {
            Ok(DbValue::Time((
                v.hour() as u8,
                v.minute() as u8,
                v.second() as u8,
                v.nanosecond(),
            )))
        }),
        Type::TIMESTAMP => conv(row.try_get::<_, Option<NaiveDateTime>>(i), |v| {
            Ok(datetime(v))
        }),
        Type::TIMESTAMPTZ => conv(
            row.try_get::<_, Option<chrono::DateTime<chrono::Utc>>>(i),
            |v| Ok(datetime(v.naive_utc())),
        ),
        Type::UUID => conv(row.try_get::<_, Option<uuid::Uuid>>(i), |v| {
            Ok(DbValue::Uuid(v.to_string()))
        }),
        Type::JSONB | Type::JSON => conv(row.try_get::<_, Option<serde_json::Value>>(i), |v| {
            serde_json::to_vec(&v)
                .map(DbValue::Jsonb)
                .map_err(|e| e.to_string())
        }),
        Type::NUMERIC => conv(row.try_get::<_, Option<rust_decimal::Decimal>>(i), |v| {
            Ok(DbValue::Decimal(v.to_string()))
        }),
        Type::INT4_ARRAY => conv(row.try_get::<_, Option<Vec<Option<i32>>>>(i), |v| {
            Ok(DbValue::ArrayInt32(v))
        }),
        Type::INT8_ARRAY => conv(row.try_get::<_, Option<Vec<Option<i64>>>>(i), |v| {
            Ok(DbValue::ArrayInt64(v))
        }),
        Type::NUMERIC_ARRAY => conv(
            row.try_get::<_, Option<Vec<Option<rust_decimal::Decimal>>>>(i),
            |v| {
                Ok(DbValue::ArrayDecimal(
                    v.into_iter().map(|d| d.map(|d| d.to_string())).collect(),
                ))
            },
        ),
        Type::TEXT_ARRAY | Type::VARCHAR_ARRAY => {
            conv(row.try_get::<_, Option<Vec<Option<String>>>>(i), |v| {
                Ok(DbValue::ArrayStr(v))
            })
        }
        Type::INTERVAL => conv(row.try_get::<_, Option<PgInterval>>(i), |v| {
            Ok(DbValue::Interval(Interval {
                micros: v.0,
                days: v.1,
                months: v.2,
            }))
        }),
        _ => conv(row.try_get::<_, Option<Raw>>(i), |v| {
            Ok(DbValue::Unsupported(v.0))
        }),
    }
}
