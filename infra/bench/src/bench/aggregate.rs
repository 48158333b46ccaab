//! Scenario `aggregate` (issue 6): a 30-day, 1-hour-bucket query for one device and
//! for the fleet, served by the `aggregate` component from the rollups, against the
//! same aggregate computed from the raw rows in SQL, in the same run and database.
//!
//! The data: 1,000 devices of tenant `bench-agg`, one reading every 4 minutes each
//! (offset per device) for the 30 days up to the current hour: 10.8 million rows,
//! loaded straight into `telemetry` with `generate_series`, one day per statement.
//! Each day's minute and hour rollups are then built from that day's rows by the
//! same aggregation the ingest statement performs, as if every reading had come
//! through `POST /v1/telemetry` (days start on the hour, so no bucket spans two).
//! Days load in parallel, one PostgreSQL session per core. Loading takes a couple of
//! minutes; it is the price of a realistic table, so it is not counted in any figure.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use tokio_postgres::Client;
use tokio_postgres::types::ToSql;

use super::app::AppUnderTest;
use super::usage::CpuClock;
use super::{Measurement, load_with, summarize};
use toaster_setup::database;

const TENANT: &str = "bench-agg";
const DEVICES: i64 = 1000;
const DAYS: i64 = 30;
const EVERY_SECS: i64 = 240;
const METRIC: &str = "temp_c";
const DEVICE: &str = "agg-0042";
const AGGS: &str = "avg,min,max,sum,count";

/// The same buckets from the raw rows; `$1` tenant, `$2` metric, `$3`/`$4` range in
/// Unix ms, `$5` the device.
const RAW_DEVICE: &str = "SELECT date_bin(interval '1 hour', ts, timestamptz 'epoch') AS b, \
     count(*), sum(value), min(value), max(value) FROM telemetry \
     WHERE tenant_id = $1 AND metric = $2 AND device_id = $5 \
     AND ts >= timestamptz 'epoch' + $3::int8 * interval '1 millisecond' \
     AND ts < timestamptz 'epoch' + $4::int8 * interval '1 millisecond' \
     GROUP BY 1 ORDER BY 1";
const RAW_FLEET: &str = "SELECT date_bin(interval '1 hour', ts, timestamptz 'epoch') AS b, \
     count(*), sum(value), min(value), max(value), count(DISTINCT device_id) FROM telemetry \
     WHERE tenant_id = $1 AND metric = $2 \
     AND ts >= timestamptz 'epoch' + $3::int8 * interval '1 millisecond' \
     AND ts < timestamptz 'epoch' + $4::int8 * interval '1 millisecond' \
     GROUP BY 1 ORDER BY 1";

pub struct AggregateScenario {
    pub readings: i64,
    pub hour_rows: i64,
    pub minute_rows: i64,
    pub load_secs: f64,
    pub device_api: Measurement,
    pub device_raw: Measurement,
    pub fleet_api: Measurement,
    pub fleet_raw: Measurement,
    /// Fleet buckets whose count and reporting devices equal the raw computation.
    pub fleet_buckets_agreeing: usize,
    pub fleet_buckets: usize,
}

/// Loads the data into the app's database, then measures. `duration` is spent on
/// each API query; the raw queries run for the same time or at least 5 times.
pub async fn aggregate_scenario(
    app: &AppUnderTest,
    duration: Duration,
) -> anyhow::Result<AggregateScenario> {
    let client = database::connect(&app.db_url).await?;
    let hour_ms = 3_600_000i64;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let end_ms = now_ms.div_euclid(hour_ms) * hour_ms;
    let start_ms = end_ms - DAYS * 24 * hour_ms;

    let started = Instant::now();
    load(&client, &app.db_url, start_ms).await?;
    let load_secs = started.elapsed().as_secs_f64();
    let readings = count(&client, "telemetry").await?;
    let hour_rows = count(&client, "rollup_hour").await?;
    let minute_rows = count(&client, "rollup_minute").await?;

    let admin = {
        let tenant =
            toaster_core::ids::TenantId::parse(TENANT).map_err(|e| anyhow::anyhow!("{e}"))?;
        app.signer.mint(
            &toaster_core::token::AccessClaims::admin(tenant, "bench"),
            Duration::from_secs(3600),
        )?
    };
    let range = format!("from={start_ms}&to={end_ms}&bucket=1h&agg={AGGS}");
    let device_path = format!("/v1/metrics/devices/{DEVICE}/{METRIC}?{range}");
    let fleet_path = format!("/v1/metrics/fleet/{METRIC}?{range}");

    // Warm both paths (statements prepared, pages cached), then measure.
    api(app, &admin, &device_path, Duration::from_millis(500)).await?;
    let device_api = api(app, &admin, &device_path, duration).await?;
    let params: Vec<Box<dyn ToSql + Sync + Send>> = vec![
        Box::new(TENANT),
        Box::new(METRIC),
        Box::new(start_ms),
        Box::new(end_ms),
        Box::new(DEVICE),
    ];
    sql(&client, RAW_DEVICE, &params, 1, Duration::ZERO).await?;
    let device_raw = sql(&client, RAW_DEVICE, &params, 5, duration).await?;

    api(app, &admin, &fleet_path, Duration::from_millis(500)).await?;
    let fleet_api = api(app, &admin, &fleet_path, duration).await?;
    let fleet_params = &params[..4];
    sql(&client, RAW_FLEET, fleet_params, 1, Duration::ZERO).await?;
    let fleet_raw = sql(&client, RAW_FLEET, fleet_params, 5, duration).await?;

    let (fleet_buckets_agreeing, fleet_buckets) =
        compare_fleet(app, &admin, &fleet_path, &client, fleet_params).await?;
    Ok(AggregateScenario {
        readings,
        hour_rows,
        minute_rows,
        load_secs,
        device_api,
        device_raw,
        fleet_api,
        fleet_raw,
        fleet_buckets_agreeing,
        fleet_buckets,
    })
}

/// The markdown section for BENCHMARKS.md.
pub fn aggregate_table(s: &AggregateScenario) -> String {
    let row = |label: &str, m: &Measurement| {
        format!(
            "| {label} | {} | {:.1} ms | {:.1} ms | {} |\n",
            m.requests,
            m.p50_us as f64 / 1000.0,
            m.p99_us as f64 / 1000.0,
            m.cpu.cell()
        )
    };
    let ratio =
        |raw: &Measurement, api: &Measurement| raw.p50_us as f64 / (api.p50_us as f64).max(1.0);
    let mut out = format!(
        "{} readings of {DEVICES} devices over {DAYS} days (one every {} min each), tenant `{TENANT}`; {} hour and {} minute rollup rows; loading took {:.0} s (not measured).\n\n",
        s.readings,
        EVERY_SECS / 60,
        s.hour_rows,
        s.minute_rows,
        s.load_secs
    );
    out.push_str(
        "30-day query, 1-hour buckets, `agg=avg,min,max,sum,count`: through the API (component, from `rollup_hour`; one connection, sequential) and the same aggregate computed from the raw rows in SQL (tokio-postgres, sequential).\n\n| query | runs | p50 | p99 | CPU % gen / server / other |\n|---|---:|---:|---:|---:|\n",
    );
    out.push_str(&row("device: API (rollups)", &s.device_api));
    out.push_str(&row("device: SQL over raw rows", &s.device_raw));
    out.push_str(&row("fleet: API (rollups)", &s.fleet_api));
    out.push_str(&row("fleet: SQL over raw rows", &s.fleet_raw));
    out.push_str(&format!(
        "\nDevice query p99 through the API: {:.1} ms (target ≤ 20 ms). Fleet: the API is {:.1} × faster than raw SQL at p50 (target ≥ 20 ×). {} of {} fleet buckets have the same count and reporting devices as the raw computation.\n",
        s.device_api.p99_us as f64 / 1000.0,
        ratio(&s.fleet_raw, &s.fleet_api),
        s.fleet_buckets_agreeing,
        s.fleet_buckets,
    ));
    let errors =
        s.device_api.errors + s.fleet_api.errors + s.device_raw.errors + s.fleet_raw.errors;
    if errors > 0 {
        out.push_str(&format!(
            "\n{errors} request(s) failed during this scenario (see the log).\n"
        ));
    }
    out
}

async fn load(client: &Client, db_url: &str, start_ms: i64) -> anyhow::Result<()> {
    client
        .execute(
            "INSERT INTO tenants (tenant_id, name, created_by) VALUES ($1, 'Aggregation benchmark', 'bench') \
             ON CONFLICT DO NOTHING",
            &[&TENANT],
        )
        .await?;
    client
        .execute(
            "INSERT INTO devices (tenant_id, device_id, model, channel) \
             SELECT $1, 'agg-' || lpad(d::text, 4, '0'), 'bench-toaster', 'stable' \
             FROM generate_series(0, $2::int8 - 1) d ON CONFLICT DO NOTHING",
            &[&TENANT, &DEVICES],
        )
        .await?;
    client
        .execute(
            "SELECT toaster_ensure_telemetry_partitions(timestamptz 'epoch' + $1::int8 * interval '1 millisecond', now())",
            &[&start_ms],
        )
        .await?;
    // Days are independent (their own rows, their own buckets): one loader per core.
    let next_day = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let loaded = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let mut loaders = Vec::new();
    for _ in 0..super::usage::cores().max(1) {
        let (db_url, next_day, loaded) = (db_url.to_string(), next_day.clone(), loaded.clone());
        loaders.push(tokio::spawn(async move {
            let client = database::connect(&db_url).await?;
            loop {
                let day = next_day.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if day >= DAYS {
                    return anyhow::Ok(());
                }
                load_day(&client, start_ms, day)
                    .await
                    .with_context(|| format!("loading day {day}"))?;
                let done = loaded.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                eprintln!("bench aggregate: loaded {done}/{DAYS} days");
            }
        }));
    }
    for loader in loaders {
        loader.await??;
    }
    // As autovacuum would leave them, and so that it does not run during the
    // measurements: hint bits set, visibility map and statistics current.
    for table in ["telemetry", "rollup_minute", "rollup_hour"] {
        eprintln!("bench aggregate: VACUUM ANALYZE {table}");
        client
            .batch_execute(&format!("VACUUM ANALYZE {table}"))
            .await?;
    }
    Ok(())
}

/// Day `day`'s readings, then its minute and hour rollups from those rows.
async fn load_day(client: &Client, start_ms: i64, day: i64) -> anyhow::Result<()> {
    let per_day = 86_400 / EVERY_SECS;
    let day_ms = start_ms + day * 86_400_000;
    let next_ms = day_ms + 86_400_000;
    // Each device reads on its own second of the 4-minute cycle; values wander.
    client
        .execute(
            "INSERT INTO telemetry (tenant_id, device_id, metric, ts, value, value_is_bool) \
             SELECT $1, 'agg-' || lpad(d::text, 4, '0'), $2, \
                    timestamptz 'epoch' + ($3::int8 + (k * $4::int8 + (d * 7919) % $4::int8) * 1000) * interval '1 millisecond', \
                    round((20 + 10 * sin((k + $5::int8 * $6::int8) * 0.05 + d))::numeric, 3)::float8, false \
             FROM generate_series(0, $7::int8 - 1) d, generate_series(0, $6::int8 - 1) k",
            &[&TENANT, &METRIC, &day_ms, &EVERY_SECS, &day, &per_day, &DEVICES],
        )
        .await?;
    for (table, width) in [("rollup_minute", "1 minute"), ("rollup_hour", "1 hour")] {
        client
            .execute(
                &format!(
                    "INSERT INTO {table} (tenant_id, device_id, metric, bucket, readings, total, low, high, \
                     first_ts, first_value, last_ts, last_value) \
                     SELECT tenant_id, device_id, metric, date_bin(interval '{width}', ts, timestamptz 'epoch'), \
                            count(*), sum(value), min(value), max(value), \
                            min(ts), (array_agg(value ORDER BY ts))[1], max(ts), (array_agg(value ORDER BY ts DESC))[1] \
                     FROM telemetry WHERE tenant_id = $1 \
                     AND ts >= timestamptz 'epoch' + $2::int8 * interval '1 millisecond' \
                     AND ts < timestamptz 'epoch' + $3::int8 * interval '1 millisecond' \
                     GROUP BY 1, 2, 3, 4"
                ),
                &[&TENANT, &day_ms, &next_ms],
            )
            .await?;
    }
    Ok(())
}

async fn count(client: &Client, table: &str) -> anyhow::Result<i64> {
    let row = client
        .query_one(
            &format!("SELECT count(*) FROM {table} WHERE tenant_id = $1"),
            &[&TENANT],
        )
        .await?;
    Ok(row.get(0))
}

/// GET `path` over one keep-alive connection for `duration`.
async fn api(
    app: &AppUnderTest,
    token: &str,
    path: &str,
    duration: Duration,
) -> anyhow::Result<Measurement> {
    let auth = format!("Bearer {token}");
    let path = path.to_string();
    load_with(
        app.endpoint(),
        1,
        duration,
        Arc::new(move |_, _| {
            http::Request::get(path.as_str())
                .header(http::header::HOST, "127.0.0.1")
                .header("authorization", auth.as_str())
                .body(Full::new(Bytes::new()))
                .expect("request")
        }),
    )
    .await
}

/// Runs `sql` sequentially for `duration`, and at least `min_runs` times.
async fn sql(
    client: &Client,
    sql: &str,
    params: &[Box<dyn ToSql + Sync + Send>],
    min_runs: usize,
    duration: Duration,
) -> anyhow::Result<Measurement> {
    let statement = client.prepare(sql).await?;
    let params: Vec<&(dyn ToSql + Sync)> = params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect();
    let started = Instant::now();
    // PostgreSQL is the server here; its share shows as the machine's other.
    let clock = CpuClock::start(None);
    let mut latencies = Vec::new();
    while latencies.len() < min_runs || started.elapsed() < duration {
        let t = Instant::now();
        client.query(&statement, &params).await?;
        latencies.push(t.elapsed().as_micros() as u64);
    }
    let cpu = clock.stop();
    Ok(summarize(
        1,
        latencies,
        0,
        started.elapsed().as_secs_f64(),
        cpu,
    ))
}

/// How many of the API's fleet buckets have exactly the raw computation's count and
/// reporting devices (sums are compared in the tests; here the data is too big to
/// hold twice).
async fn compare_fleet(
    app: &AppUnderTest,
    token: &str,
    path: &str,
    client: &Client,
    params: &[Box<dyn ToSql + Sync + Send>],
) -> anyhow::Result<(usize, usize)> {
    use http_body_util::BodyExt;
    let request = http::Request::get(format!("http://{}{path}", app.addr()))
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))?;
    let response = app.client.request(request).await?;
    let bytes = response.into_body().collect().await?.to_bytes();
    let body: serde_json::Value = serde_json::from_slice(&bytes)?;
    let buckets = body["buckets"].as_array().cloned().unwrap_or_default();
    let params: Vec<&(dyn ToSql + Sync)> = params
        .iter()
        .map(|p| p.as_ref() as &(dyn ToSql + Sync))
        .collect();
    let rows = client.query(RAW_FLEET, &params).await?;
    let agreeing = buckets
        .iter()
        .zip(rows.iter())
        .filter(|(api, raw)| {
            api["count"].as_i64() == Some(raw.get::<_, i64>(1))
                && api["devices"].as_i64() == Some(raw.get::<_, i64>(5))
        })
        .count();
    Ok((agreeing, buckets.len().max(rows.len())))
}
