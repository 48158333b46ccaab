//! Readings as they were sent: one metric's raw readings, page by page, and a device's
//! latest value of each metric.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use spin_sdk::http::{Request, Response};
use toaster_core::ids::{DeviceId, TenantId};
use toaster_core::problem::Problem;
use toaster_platform::db::{self, Db};
use toaster_platform::kv::{self, LastKnown, LastValue};
use toaster_platform::query::Query;
use toaster_platform::{respond, time};

use crate::params;

/// `GET /v1/metrics/devices/{id}/{metric}/raw?from&to&limit&cursor`: readings in
/// `[from, to)` in time order. `next_cursor` (opaque) fetches the page after; it is
/// absent on the last page.
pub fn raw(req: &Request, device: &str, metric: &str) -> Result<Response, Problem> {
    let subject = crate::device_subject(req, device)?;
    let metric = crate::metric_in_path(metric)?;
    let mut query = Query::parse(req.query())?;
    let (from_ms, to_ms) = params::take_range(&mut query)?;
    let limit = query.take_limit()?;
    let cursor = query.take_parsed("cursor", parse_cursor)?;
    query.finish()?;
    // Timestamps are whole milliseconds and unique per device and metric, so the page
    // after the one ending at `cursor` starts a millisecond later. Kept within
    // `[from, to]` (at `to` the page is empty): any integer parses as a cursor, and
    // only instants in range may reach the SQL's millisecond arithmetic.
    let lower = cursor.map_or(from_ms, |c| c.saturating_add(1).clamp(from_ms, to_ms));

    let rows = subject.db.query(
        "SELECT (extract(epoch FROM ts) * 1000)::int8, value, value_is_bool FROM telemetry \
         WHERE tenant_id = $1 AND device_id = $2 AND metric = $3 \
         AND ts >= timestamptz 'epoch' + $4::int8 * interval '1 millisecond' \
         AND ts < timestamptz 'epoch' + $5::int8 * interval '1 millisecond' \
         ORDER BY ts LIMIT $6",
        &[
            db::text(subject.tenant.as_str()),
            db::text(subject.device.as_str()),
            db::text(metric.as_str()),
            db::int8(lower),
            db::int8(to_ms),
            db::int8(i64::from(limit) + 1),
        ],
    )?;
    let mut items = Vec::with_capacity(rows.rows.len());
    let mut last_ms = None;
    for row in rows.rows.iter().take(limit as usize) {
        let ts_ms: i64 = db::column(row, 0)?;
        let value: f64 = db::column(row, 1)?;
        let is_bool: bool = db::column(row, 2)?;
        items.push(json!({"ts": time::rfc3339_ms(ts_ms), "value": reading_value(value, is_bool)}));
        last_ms = Some(ts_ms);
    }
    let next_cursor = (rows.rows.len() > limit as usize)
        .then(|| last_ms.map(|ms| ms.to_string()))
        .flatten();
    Ok(respond::json(
        200,
        &json!({
            "device": subject.device,
            "metric": metric,
            "from": time::rfc3339_ms(from_ms),
            "to": time::rfc3339_ms(to_ms),
            "items": items,
            "next_cursor": next_cursor,
        }),
    ))
}

fn parse_cursor(text: &str) -> Result<i64, &'static str> {
    text.parse::<i64>()
        .map_err(|_| "is not a cursor this endpoint returned")
}

fn reading_value(value: f64, is_bool: bool) -> Value {
    if is_bool {
        json!(value != 0.0)
    } else {
        json!(value)
    }
}

/// `GET /v1/metrics/devices/{id}/latest`: the newest reading of each metric and when
/// the device was last seen, from the key-value entry ingest keeps
/// (`last:{tenant}:{device}`), or from PostgreSQL when there is none.
///
/// `last_seen` differs by source: the cache has the server's time of the device's last
/// batch; PostgreSQL has the newest reading's own timestamp.
pub fn latest(req: &Request, device: &str) -> Result<Response, Problem> {
    let subject = crate::device_subject(req, device)?;
    let query = Query::parse(req.query())?;
    query.finish()?;
    let (source, last) = match cached(&subject.tenant, &subject.device) {
        Some(last) => ("cache", last),
        None => (
            "database",
            from_database(&subject.db, &subject.tenant, &subject.device)?,
        ),
    };
    let metrics: BTreeMap<&str, Value> = last
        .metrics
        .iter()
        .map(|(name, reading)| {
            let value = match reading.value {
                LastValue::Bool(b) => json!(b),
                LastValue::Number(n) => json!(n),
            };
            (
                name.as_str(),
                json!({"ts": time::rfc3339_ms(reading.ts_ms), "value": value}),
            )
        })
        .collect();
    let last_seen = (!last.metrics.is_empty() || last.last_seen_ms > 0)
        .then(|| time::rfc3339_ms(last.last_seen_ms));
    Ok(respond::json(
        200,
        &json!({
            "device": subject.device,
            "last_seen": last_seen,
            "metrics": metrics,
            "source": source,
        }),
    ))
}

fn cached(tenant: &TenantId, device: &DeviceId) -> Option<LastKnown> {
    let key = kv::last_key(tenant, device);
    match kv::open().and_then(|store| kv::get_json::<LastKnown>(&store, &key)) {
        Ok(last) => last,
        Err(e) => {
            eprintln!("aggregate: cannot read {key}: {}", kv::describe(&e));
            None
        }
    }
}

/// Each metric's newest reading: the newest hour rollup of each metric names it (its
/// `last_ts`), and the raw row gives back whether it was a boolean. Once the raw row
/// is past retention the rollup's value stands in, as a number.
fn from_database(db: &Db, tenant: &TenantId, device: &DeviceId) -> Result<LastKnown, Problem> {
    let rows = db.query(
        "SELECT h.metric, (extract(epoch FROM h.last_ts) * 1000)::int8, \
                coalesce(t.value, h.last_value), coalesce(t.value_is_bool, false) \
         FROM (SELECT DISTINCT ON (metric) metric, last_ts, last_value FROM rollup_hour \
               WHERE tenant_id = $1 AND device_id = $2 ORDER BY metric, bucket DESC) h \
         LEFT JOIN telemetry t ON t.tenant_id = $1 AND t.device_id = $2 \
              AND t.metric = h.metric AND t.ts = h.last_ts",
        &[db::text(tenant.as_str()), db::text(device.as_str())],
    )?;
    let mut last = LastKnown::default();
    for row in &rows.rows {
        let metric: String = db::column(row, 0)?;
        let ts_ms: i64 = db::column(row, 1)?;
        let value: f64 = db::column(row, 2)?;
        let is_bool: bool = db::column(row, 3)?;
        last.last_seen_ms = last.last_seen_ms.max(ts_ms);
        let value = if is_bool {
            LastValue::Bool(value != 0.0)
        } else {
            LastValue::Number(value)
        };
        last.metrics
            .insert(metric, kv::LastReading { ts_ms, value });
    }
    Ok(last)
}
