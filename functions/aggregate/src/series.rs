//! Bucketed aggregates of one device's metric, or of a metric across the tenant's
//! fleet, read from the rollups (`rollup_minute` for buckets under an hour,
//! `rollup_hour` for the rest). Each bucket merges the rollup rows inside it exactly
//! as the ingest statement merges readings into a rollup row, so the answer is the
//! one computing from the raw readings would give (sums up to the order in which
//! floating-point additions happen, see docs/aggregation.md).
//!
//! One statement per request. Its text depends only on the bucket's source, the
//! aggregates asked for and the fleet filters given, so the host prepares a handful
//! of statements per session.
//!
//! Sums never fail: PostgreSQL's `sum(float8)` raises an error on overflow, which
//! totals stored before readings were bounded to ±1e100 could cause, so the statement
//! sums rollup totals in two parts and [`SplitSum`] puts them together (a `sum` beyond
//! a double is null; the `avg` is always given).

use serde_json::{Map, Value, json};
use spin_sdk::http::Request;
use toaster_core::ids::{Channel, MetricName, Model, Tag, TenantId};
use toaster_core::problem::Problem;
use toaster_core::telemetry::query::{LARGE_TOTAL, LARGE_TOTAL_SCALE, SplitSum};
use toaster_core::token::Role;
use toaster_platform::db::{self, Db, DbValue, Param};
use toaster_platform::query::Query;
use toaster_platform::{auth, respond, time};

use crate::params::{self, Agg, SeriesQuery, Source};

/// `GET /v1/metrics/devices/{id}/{metric}`
pub fn device(
    req: &Request,
    device: &str,
    metric: &str,
) -> Result<spin_sdk::http::Response, Problem> {
    let subject = crate::device_subject(req, device)?;
    let metric = crate::metric_in_path(metric)?;
    let mut query = Query::parse(req.query())?;
    let series = SeriesQuery::take(&mut query, params::max_buckets()?)?;
    query.finish()?;

    let scope = Scope::Device(subject.device.as_str());
    let buckets = load(&subject.db, &subject.tenant, &metric, &series, &scope)?;
    let mut body = envelope(&metric, &series, buckets, false);
    body.insert("device".to_owned(), json!(subject.device));
    Ok(respond::json(200, &body))
}

/// Which devices' rows a bucket merges.
enum Scope<'a> {
    Device(&'a str),
    Fleet {
        model: Option<Model>,
        channel: Option<Channel>,
        tag: Option<Tag>,
    },
}

/// `GET /v1/metrics/fleet/{metric}`
pub fn fleet(req: &Request, metric: &str) -> Result<spin_sdk::http::Response, Problem> {
    let caller = auth::authenticate(req, &[Role::Admin])?;
    let tenant = caller.tenant()?.clone();
    let metric = crate::metric_in_path(metric)?;
    let mut query = Query::parse(req.query())?;
    let model = query.take_parsed("model", Model::parse)?;
    let channel = query.take_parsed("channel", Channel::parse)?;
    let tag = query.take_parsed("tag", Tag::parse)?;
    let series = SeriesQuery::take(&mut query, params::max_buckets()?)?;
    query.finish()?;

    let filters = json!({"model": model, "channel": channel, "tag": tag});
    let scope = Scope::Fleet {
        model,
        channel,
        tag,
    };
    let db = Db::open()?;
    // The statement is prepared once per session, and after a few runs PostgreSQL may
    // switch to a generic plan, which cannot see how much of the table the range
    // covers, and picks a slower scan (BENCHMARKS.md, "Measurements behind code
    // choices"). `SET LOCAL` ends with the transaction.
    let buckets = db.transaction(|db| {
        db.execute("SET LOCAL plan_cache_mode = force_custom_plan", &[])?;
        load(db, &tenant, &metric, &series, &scope)
    })?;
    let mut body = envelope(&metric, &series, buckets, true);
    body.insert("filters".to_owned(), filters);
    Ok(respond::json(200, &body))
}

/// One bucket's values, by the columns [`statement`] selects.
struct Row {
    start_ms: i64,
    values: Map<String, Value>,
}

fn load(
    db: &Db,
    tenant: &TenantId,
    metric: &MetricName,
    series: &SeriesQuery,
    scope: &Scope<'_>,
) -> Result<Vec<Row>, Problem> {
    let source = series.bucket.source();
    let (sql, params) = statement(tenant, metric, series, scope, source);
    let rows = db.query(&sql, &params)?;
    let fleet = matches!(scope, Scope::Fleet { .. });
    let mut out = Vec::with_capacity(rows.rows.len());
    for row in &rows.rows {
        out.push(read_row(row, series, fleet)?);
    }
    Ok(out)
}

/// The statement and its parameters: `$1` tenant, `$2` metric, `$3` bucket size (ms),
/// `$4`/`$5` range (ms), then `$6` device or the fleet filters that are set.
fn statement(
    tenant: &TenantId,
    metric: &MetricName,
    series: &SeriesQuery,
    scope: &Scope<'_>,
    source: Source,
) -> (String, Vec<Param>) {
    let mut params = vec![
        db::text(tenant.as_str()),
        db::text(metric.as_str()),
        db::int8(series.bucket.size_ms()),
        db::int8(series.start_ms),
        db::int8(series.end_ms),
    ];
    // Grouped by a timestamp (cheap integer math per row), turned into Unix ms once per
    // bucket: `extract` is numeric arithmetic, which per row doubled a fleet query.
    let mut columns = vec![
        "(extract(epoch FROM b) * 1000)::int8".to_owned(),
        "sum(readings)::int8".to_owned(),
    ];
    if series.wants(Agg::Avg) || series.wants(Agg::Sum) {
        // A plain `sum(total)` when no total is over 1e200 (always, for data stored
        // under the ±1e100 rule); the larger ones are summed apart, scaled by 2^-600.
        columns.push(format!(
            "sum(total) FILTER (WHERE abs(total) <= {LARGE_TOTAL:e}::float8)"
        ));
        columns.push(format!(
            "sum(total * {LARGE_TOTAL_SCALE:e}::float8) \
             FILTER (WHERE abs(total) > {LARGE_TOTAL:e}::float8)"
        ));
    }
    if series.wants(Agg::Min) {
        columns.push("min(low)".to_owned());
    }
    if series.wants(Agg::Max) {
        columns.push("max(high)".to_owned());
    }
    // Of two devices' readings at the same instant, the greater device id's is "last"
    // (and the smaller's "first"): a fixed rule, so the answer never depends on plans.
    if series.wants(Agg::First) {
        columns.push("(array_agg(first_value ORDER BY first_ts, device_id))[1]".to_owned());
    }
    if series.wants(Agg::Last) {
        columns.push("(array_agg(last_value ORDER BY last_ts DESC, device_id DESC))[1]".to_owned());
    }
    let mut filter = String::new();
    match scope {
        Scope::Device(device) => {
            params.push(db::text(*device));
            filter.push_str(" AND device_id = $6");
        }
        Scope::Fleet {
            model,
            channel,
            tag,
        } => {
            // One rollup row per device and source bucket: when the bucket is the
            // source's, rows are devices.
            columns.push(if series.bucket.size_ms() == source.size_ms() {
                "count(*)".to_owned()
            } else {
                "count(DISTINCT device_id)".to_owned()
            });
            let mut conditions = Vec::new();
            if let Some(model) = model {
                params.push(db::text(model.as_str()));
                conditions.push(format!("d.model = ${}", params.len()));
            }
            if let Some(channel) = channel {
                params.push(db::text(channel.as_str()));
                conditions.push(format!("d.channel = ${}", params.len()));
            }
            if let Some(tag) = tag {
                params.push(db::text(tag.as_str()));
                conditions.push(format!("d.tags @> ARRAY[${}::text]", params.len()));
            }
            if !conditions.is_empty() {
                filter.push_str(&format!(
                    " AND device_id IN (SELECT d.device_id FROM devices d WHERE d.tenant_id = $1 AND {})",
                    conditions.join(" AND ")
                ));
            }
        }
    }
    let sql = format!(
        "SELECT {} FROM (SELECT date_bin($3::int8 * interval '1 millisecond', bucket, \
         timestamptz 'epoch') AS b, * FROM {} WHERE tenant_id = $1 AND metric = $2{filter} \
         AND bucket >= timestamptz 'epoch' + $4::int8 * interval '1 millisecond' \
         AND bucket < timestamptz 'epoch' + $5::int8 * interval '1 millisecond') r \
         GROUP BY b ORDER BY b",
        columns.join(", "),
        source.table(),
    );
    (sql, params)
}

fn read_row(row: &[DbValue], series: &SeriesQuery, fleet: bool) -> Result<Row, Problem> {
    let start_ms: i64 = db::column(row, 0)?;
    let count: i64 = db::column(row, 1)?;
    let mut at = 2;
    // The sum's two parts (see `statement`), when avg or sum was asked for.
    let total = if series.wants(Agg::Avg) || series.wants(Agg::Sum) {
        at += 2;
        SplitSum {
            small: db::column(row, 2)?,
            large_scaled: db::column(row, 3)?,
        }
    } else {
        SplitSum::default()
    };
    let mut next_f64 = |row: &[DbValue]| -> Result<f64, Problem> {
        let value = db::column(row, at)?;
        at += 1;
        Ok(value)
    };
    let mut values = Map::new();
    for agg in &series.aggs {
        let value = match agg {
            Agg::Avg => json!(total.mean(count)),
            Agg::Sum => json!(total.sum()),
            Agg::Count => json!(count),
            Agg::Min | Agg::Max | Agg::First | Agg::Last => continue,
        };
        values.insert(agg.name().to_owned(), value);
    }
    // The remaining columns come in the order `statement` added them.
    for agg in [Agg::Min, Agg::Max, Agg::First, Agg::Last] {
        if series.wants(agg) {
            values.insert(agg.name().to_owned(), json!(next_f64(row)?));
        }
    }
    if fleet {
        let devices: i64 = db::column(row, at)?;
        values.insert("devices".to_owned(), json!(devices));
    }
    Ok(Row { start_ms, values })
}

/// The response body: the query as understood, and the buckets in time order (with
/// the empty ones as nulls when `fill=null`).
fn envelope(
    metric: &MetricName,
    series: &SeriesQuery,
    rows: Vec<Row>,
    fleet: bool,
) -> Map<String, Value> {
    let buckets = if series.fill {
        let size = series.bucket.size_ms();
        let mut rows = rows.into_iter().peekable();
        let mut buckets = Vec::new();
        let mut start = series.start_ms;
        while start < series.end_ms {
            match rows.next_if(|r| r.start_ms == start) {
                Some(row) => buckets.push(bucket_json(start, row.values)),
                None => {
                    let mut empty = Map::new();
                    for agg in &series.aggs {
                        let value = if *agg == Agg::Count {
                            json!(0)
                        } else {
                            Value::Null
                        };
                        empty.insert(agg.name().to_owned(), value);
                    }
                    if fleet {
                        empty.insert("devices".to_owned(), json!(0));
                    }
                    buckets.push(bucket_json(start, empty));
                }
            }
            start += size;
        }
        buckets
    } else {
        rows.into_iter()
            .map(|row| bucket_json(row.start_ms, row.values))
            .collect()
    };
    let mut body = Map::new();
    body.insert("metric".to_owned(), json!(metric));
    body.insert("bucket".to_owned(), json!(series.bucket.label()));
    body.insert("from".to_owned(), json!(time::rfc3339_ms(series.start_ms)));
    body.insert("to".to_owned(), json!(time::rfc3339_ms(series.end_ms)));
    body.insert("source".to_owned(), json!(series.bucket.source().name()));
    body.insert(
        "agg".to_owned(),
        json!(series.aggs.iter().map(|a| a.name()).collect::<Vec<_>>()),
    );
    body.insert("buckets".to_owned(), Value::Array(buckets));
    body
}

fn bucket_json(start_ms: i64, values: Map<String, Value>) -> Value {
    let mut bucket = Map::new();
    bucket.insert("start".to_owned(), json!(time::rfc3339_ms(start_ms)));
    bucket.extend(values);
    Value::Object(bucket)
}
