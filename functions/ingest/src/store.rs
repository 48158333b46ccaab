//! Storing a batch: one statement, one round trip (see `store_batch.sql`). The same
//! statement folds the readings it inserted into the 1-minute and 1-hour rollups, so
//! they commit together and a resent reading is counted nowhere twice
//! (docs/aggregation.md has the measurements behind that choice).
//!
//! The statement text is the same for every batch size but one, so the host prepares
//! each once per pooled session: a batch of one reading has its own statement
//! (`store_one.sql`), the same writes without the grouping, which cost a one-reading
//! batch more than the writes themselves. Readings go as three parallel arrays
//! (`unnest`) rather than one `jsonb` parameter: no slower, and they spare the host a
//! JSON parse and re-serialisation of every batch (BENCHMARKS.md, "Measurements behind
//! code choices").
//!
//! The first batch that falls on a day without a partition fails with SQLSTATE 23514;
//! the partitions are then created (`toaster_ensure_telemetry_partitions`, which also
//! creates a week ahead) and the statement retried once.

use spin_sdk::pg4::ParameterValue;
use toaster_core::ids::{DeviceId, TenantId};
use toaster_core::problem::Problem;
use toaster_core::telemetry::{Reading, Value};
use toaster_platform::db::{self, Db};
use toaster_platform::respond;

/// The storing statement; `tests/tests/ingest.rs` runs the same file.
pub const STORE_BATCH: &str = include_str!("store_batch.sql");
/// The same for a batch of one reading, without the aggregation a batch needs
/// (`store_one.sql`): the usual shape of a device that sends as it measures.
pub const STORE_ONE: &str = include_str!("store_one.sql");

const ENSURE_PARTITIONS: &str = "SELECT toaster_ensure_telemetry_partitions(\
     timestamptz 'epoch' + $1::int8 * interval '1 millisecond', \
     timestamptz 'epoch' + $2::int8 * interval '1 millisecond')";

const OLDEST_MS: &str =
    "SELECT floor(extract(epoch FROM toaster_telemetry_oldest($1)) * 1000)::int8";

/// `check_violation`, which PostgreSQL raises for a row no partition accepts.
const NO_PARTITION: &str = "23514";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Committed; this many readings were new.
    Stored(u64),
    /// A reading is older than the tenant's retention window, which starts at
    /// `oldest_ms`: nothing was written.
    TooOld { oldest_ms: i64 },
}

/// Stores `readings` (valid, without repeats) for the device, in one statement that
/// commits before this returns.
pub fn store_batch(
    db: &Db,
    tenant: &TenantId,
    device: &DeviceId,
    readings: &[Reading],
) -> Result<Outcome, Problem> {
    let (Some(oldest), Some(newest)) = (
        readings.iter().map(|r| r.ts_ms).min(),
        readings.iter().map(|r| r.ts_ms).max(),
    ) else {
        // parse_batch refuses empty batches; nothing to store is nothing stored.
        return Ok(Outcome::Stored(0));
    };
    let params = parameters(tenant, device, readings);
    let statement = if readings.len() == 1 {
        STORE_ONE
    } else {
        STORE_BATCH
    };
    let rows = match db.try_query(statement, &params) {
        Ok(rows) => rows,
        Err(error) if db::sqlstate(&error) == Some(NO_PARTITION) => {
            db.query(ENSURE_PARTITIONS, &[db::int8(oldest), db::int8(newest)])?;
            db.query(statement, &params)?
        }
        Err(error) => return Err(db::unavailable_or_internal(&error)),
    };
    let Some(row) = rows.rows.first() else {
        eprintln!("ingest: the storing statement returned no row");
        return Err(respond::internal());
    };
    let stored: i64 = db::column(row, 0)?;
    let oldest_ms: i64 = db::column(row, 1)?;
    if oldest < oldest_ms {
        return Ok(Outcome::TooOld { oldest_ms });
    }
    Ok(Outcome::Stored(u64::try_from(stored).unwrap_or(0)))
}

/// The start of the tenant's retention window, Unix ms.
pub fn oldest_ms(db: &Db, tenant: &TenantId) -> Result<i64, Problem> {
    let rows = db.query(OLDEST_MS, &[db::text(tenant.as_str())])?;
    let Some(row) = rows.rows.first() else {
        eprintln!("ingest: the retention query returned no row");
        return Err(respond::internal());
    };
    db::column(row, 0)
}

fn parameters(tenant: &TenantId, device: &DeviceId, readings: &[Reading]) -> [ParameterValue; 5] {
    let metrics = readings
        .iter()
        .map(|r| Some(r.metric.as_str().to_owned()))
        .collect();
    let timestamps = readings.iter().map(|r| Some(r.ts_ms)).collect();
    let values = readings
        .iter()
        .map(|r| Some(value_literal(r.value)))
        .collect();
    [
        db::text(tenant.as_str()),
        db::text(device.as_str()),
        ParameterValue::ArrayStr(metrics),
        ParameterValue::ArrayInt64(timestamps),
        ParameterValue::ArrayStr(values),
    ]
}

/// A value as `store_batch.sql` reads it: `true`/`false`, or a float8 literal with
/// the shortest digits that read back as the same double (`2.15e1`). Values are
/// finite, so never `inf` or `NaN`.
fn value_literal(value: Value) -> String {
    match value {
        Value::Bool(true) => "true".to_owned(),
        Value::Bool(false) => "false".to_owned(),
        Value::Number(number) => format!("{number:e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_written_exactly() {
        for number in [
            21.5,
            -0.0,
            0.1,
            1.0 / 3.0,
            f64::MAX,
            f64::MIN_POSITIVE,
            5e-324,
            -1e300,
            123_456_789_012_345_680.0,
        ] {
            let text = value_literal(Value::Number(number));
            let back: f64 = text.parse().unwrap();
            assert_eq!(back.to_bits(), number.to_bits(), "{number} as {text}");
            assert!(!text.contains(['i', 'N']), "{text}");
        }
        assert_eq!(value_literal(Value::Number(21.5)), "2.15e1");
        assert_eq!(value_literal(Value::Bool(true)), "true");
        assert_eq!(value_literal(Value::Bool(false)), "false");
    }

    #[test]
    fn one_statement_text_for_every_batch() {
        for statement in [STORE_BATCH, STORE_ONE] {
            assert!(!statement.contains("BEGIN"));
            assert_eq!(statement.matches("INSERT INTO telemetry").count(), 1);
            assert!(statement.contains("ON CONFLICT DO NOTHING"));
            // The rollups are fed from the rows the INSERT returned, never from the input.
            assert!(statement.contains("FROM stored"));
            assert_eq!(statement.matches("INSERT INTO rollup_").count(), 2);
        }
    }
}
