//! Aggregation end to end: readings posted through `POST /v1/telemetry`, read back
//! through `/v1/metrics/...` from the real app against a fresh database per test, and
//! checked against aggregates computed here, in Rust, from the readings themselves.
//!
//! Values are multiples of 0.25 of modest size, so every partial sum is exact in a
//! double and sums compare exactly whatever order they were added in.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use toaster_core::ids::{DeviceId, TenantId};
use toaster_core::token::{AccessClaims, TokenSigner};
use toaster_host::Limits;
use toaster_tests::api::Api;
use toaster_tests::{TestApp, TestDb};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;
const ALL_AGGS: &str = "avg,min,max,sum,count,first,last";
/// The ingest component's storing statement, run directly to store what the API no
/// longer accepts (values beyond ±1e100, as older versions stored them).
const STORE_BATCH: &str = include_str!("../../functions/ingest/src/store_batch.sql");

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

async fn add_tenant(db: &TestDb, tenant: &str) {
    db.client()
        .await
        .execute(
            "INSERT INTO tenants (tenant_id, name, created_by) VALUES ($1, $1, 'test')",
            &[&tenant],
        )
        .await
        .unwrap();
}

async fn add_device(db: &TestDb, tenant: &str, device: &str, model: &str, tags: &[&str]) {
    let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
    db.client()
        .await
        .execute(
            "INSERT INTO devices (tenant_id, device_id, model, channel, tags) VALUES ($1, $2, $3, 'stable', $4)",
            &[&tenant, &device, &model, &tags],
        )
        .await
        .unwrap();
}

fn device_token(signer: &TokenSigner, tenant: &str, device: &str) -> String {
    let claims = AccessClaims::device(
        TenantId::parse(tenant).unwrap(),
        &DeviceId::parse(device).unwrap(),
        1,
    );
    signer.mint(&claims, Duration::from_secs(600)).unwrap()
}

/// Percent-encodes a query value (RFC 3339 offsets carry `+`).
fn enc(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// RFC 3339 UTC with milliseconds, written out here so that the tests do not share
/// the code under test.
fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

async fn get(app: &TestApp, token: &str, path: &str) -> (u16, Value) {
    let response = app
        .http()
        .get(app.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn post_readings(app: &TestApp, token: &str, readings: &[Reading]) -> Value {
    let body = json!({"readings": readings
        .iter()
        .map(|(metric, ts, value)| json!({"metric": metric, "ts": ts, "value": value}))
        .collect::<Vec<_>>()});
    let response = app
        .http()
        .post(app.url("/v1/telemetry"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// metric, ts (Unix ms), value: one reading as posted.
type Reading = (String, i64, f64);

/// What the database should hold: (device, metric, ts) → the first value sent.
type Stored = BTreeMap<(String, String, i64), f64>;

fn remember(stored: &mut Stored, device: &str, readings: &[Reading]) {
    for (metric, ts, value) in readings {
        stored
            .entry((device.to_owned(), metric.clone(), *ts))
            .or_insert(*value);
    }
}

/// The buckets of `[start, end)` computed from `stored`, as the API writes them.
fn expected(
    stored: &Stored,
    devices: &[&str],
    metric: &str,
    size: i64,
    start: i64,
    end: i64,
    fleet: bool,
) -> Vec<Value> {
    // bucket → (ts, device, value) in key order
    let mut buckets: BTreeMap<i64, Vec<(i64, &str, f64)>> = BTreeMap::new();
    for ((device, m, ts), value) in stored {
        if m == metric && devices.contains(&device.as_str()) && (start..end).contains(ts) {
            buckets
                .entry(ts.div_euclid(size) * size)
                .or_default()
                .push((*ts, device.as_str(), *value));
        }
    }
    buckets
        .into_iter()
        .map(|(bucket, mut readings)| {
            readings.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
            let count = readings.len() as i64;
            let sum: f64 = readings.iter().map(|r| r.2).sum();
            let min = readings.iter().map(|r| r.2).fold(f64::INFINITY, f64::min);
            let max = readings
                .iter()
                .map(|r| r.2)
                .fold(f64::NEG_INFINITY, f64::max);
            let mut out = json!({
                "start": rfc3339(bucket),
                "avg": sum / count as f64,
                "min": min,
                "max": max,
                "sum": sum,
                "count": count,
                "first": readings[0].2,
                "last": readings[readings.len() - 1].2,
            });
            if fleet {
                let devices: BTreeSet<&str> = readings.iter().map(|r| r.1).collect();
                out["devices"] = json!(devices.len());
            }
            out
        })
        .collect()
}

/// Compares bucket lists, naming the first bucket that differs.
#[track_caller]
fn assert_buckets(actual: &Value, expected: Vec<Value>, context: &str) {
    let actual = actual
        .as_array()
        .unwrap_or_else(|| panic!("{context}: no buckets"));
    // Through text as the response came: serde_json's default float parsing may be a
    // bit off for some numbers, so both sides go through the same parse.
    let expected: Vec<Value> =
        serde_json::from_str(&serde_json::to_string(&expected).unwrap()).unwrap();
    for (index, (a, e)) in actual.iter().zip(&expected).enumerate() {
        assert_eq!(a, e, "{context}: bucket {index}");
    }
    assert_eq!(actual.len(), expected.len(), "{context}: number of buckets");
}

/// Random batches for one device: quarter values, timestamps over the last 3 hours.
fn random_batch(rng: &mut StdRng, now: i64, size: usize) -> Vec<Reading> {
    (0..size)
        .map(|_| {
            let metric = ["temp_c", "rpm"][rng.random_range(0..2)].to_owned();
            let ts = now - rng.random_range(1_000..3 * HOUR);
            let value = f64::from(rng.random_range(-4000..4000)) / 4.0;
            (metric, ts, value)
        })
        .collect()
}

/// The app with tenant `acme`: devices d1 (model t1000, tag site=berlin) and d2 (model
/// t2000), tokens for both, and the admin's.
struct Fleet {
    app: TestApp,
    admin: String,
    d1: String,
    d2: String,
}

async fn fleet() -> Fleet {
    fleet_with(BTreeMap::new()).await
}

async fn fleet_with(variables: BTreeMap<String, String>) -> Fleet {
    let app = TestApp::start_with(Limits::default(), variables).await;
    add_tenant(&app.db, "acme").await;
    add_device(&app.db, "acme", "d1", "t1000", &["site=berlin"]).await;
    add_device(&app.db, "acme", "d2", "t2000", &[]).await;
    let admin = app.admin_token("acme");
    let d1 = device_token(&app.signer, "acme", "d1");
    let d2 = device_token(&app.signer, "acme", "d2");
    Fleet { app, admin, d1, d2 }
}

fn series_path(device: &str, metric: &str, start: i64, end: i64, bucket: &str) -> String {
    format!(
        "/v1/metrics/devices/{device}/{metric}?from={start}&to={end}&bucket={bucket}&agg={ALL_AGGS}"
    )
}

#[tokio::test]
async fn rollups_equal_raw_aggregates_with_late_duplicate_and_concurrent_readings() {
    let seed: u64 = rand::random();
    eprintln!("seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let Fleet { app, admin, d1, d2 } = fleet().await;
    let now = now_ms();
    let mut stored = Stored::new();
    let mut sent: Vec<(&str, Vec<Reading>)> = Vec::new();

    // Batches in random time order: every one after the first is "late" for some
    // bucket already rolled up.
    for _ in 0..12 {
        for (device, token) in [("d1", &d1), ("d2", &d2)] {
            let size = rng.random_range(1..60);
            let mut batch = random_batch(&mut rng, now, size);
            // A repeat inside the batch with another value: the first wins.
            let (metric, ts, _) = batch[0].clone();
            batch.push((metric, ts, 1000.25));
            post_readings(&app, token, &batch).await;
            remember(&mut stored, device, &batch);
            sent.push((device, batch));
        }
    }
    // Single readings, one per request (a statement of their own, store_one.sql), in
    // random time order, some in buckets the batches filled and some in new ones; the
    // same one again with another value stores nothing.
    for _ in 0..30 {
        for (device, token) in [("d1", &d1), ("d2", &d2)] {
            let reading = random_batch(&mut rng, now, 1);
            let receipt = post_readings(&app, token, &reading).await;
            let new =
                !stored.contains_key(&(device.to_owned(), reading[0].0.clone(), reading[0].1));
            assert_eq!(receipt["stored"], i64::from(new), "{receipt}");
            remember(&mut stored, device, &reading);
            sent.push((device, reading.clone()));
            let resent = vec![(reading[0].0.clone(), reading[0].1, reading[0].2 + 0.25)];
            assert_eq!(post_readings(&app, token, &resent).await["stored"], 0);
        }
    }
    // Resends with other values: stored nothing, changed nothing.
    for index in [0usize, 3, 7] {
        let (device, batch) = &sent[index];
        let changed: Vec<_> = batch
            .iter()
            .map(|(m, t, v)| (m.clone(), *t, v + 0.5))
            .collect();
        let token = if *device == "d1" { &d1 } else { &d2 };
        let receipt = post_readings(&app, token, &changed).await;
        assert_eq!(receipt["stored"], 0, "{receipt}");
    }
    // The same new batch twice at once, and a second overlapping one: each reading is
    // counted once whichever request stores it.
    let fresh = random_batch(&mut rng, now, 40);
    let overlap: Vec<_> = fresh[20..]
        .iter()
        .cloned()
        .chain(random_batch(&mut rng, now, 20))
        .collect();
    let (a, b, c) = tokio::join!(
        post_readings(&app, &d1, &fresh),
        post_readings(&app, &d1, &fresh),
        post_readings(&app, &d1, &overlap),
    );
    remember(&mut stored, "d1", &fresh);
    remember(&mut stored, "d1", &overlap);
    let total: i64 = [a, b, c]
        .iter()
        .map(|r| r["stored"].as_i64().unwrap())
        .sum();
    let expected_rows = stored.keys().filter(|k| k.0 == "d1").count() as i64;
    let before: i64 = sent
        .iter()
        .filter(|s| s.0 == "d1")
        .flat_map(|s| s.1.iter().map(|r| (r.0.clone(), r.1)))
        .collect::<BTreeSet<_>>()
        .len() as i64;
    assert_eq!(before + total, expected_rows);

    // The rollup tables themselves, against the raw rows in SQL.
    let client = app.db.client().await;
    for (table, width) in [("rollup_minute", "1 minute"), ("rollup_hour", "1 hour")] {
        let sql = format!(
            "WITH raw AS ( \
               SELECT tenant_id, device_id, metric, date_bin(interval '{width}', ts, timestamptz 'epoch') AS bucket, \
                      count(*) AS readings, sum(value) AS total, min(value) AS low, max(value) AS high, \
                      min(ts) AS first_ts, (array_agg(value ORDER BY ts))[1] AS first_value, \
                      max(ts) AS last_ts, (array_agg(value ORDER BY ts DESC))[1] AS last_value \
               FROM telemetry GROUP BY 1, 2, 3, 4) \
             SELECT (SELECT count(*) FROM raw), (SELECT count(*) FROM {table}), \
                    (SELECT count(*) FROM raw NATURAL JOIN {table})"
        );
        let row = client.query_one(&sql, &[]).await.unwrap();
        let (raw, rollup, equal): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
        assert!(raw > 0);
        assert_eq!(
            (rollup, equal),
            (raw, raw),
            "{table} differs from the raw rows"
        );
    }

    // Through the API, for every bucket size, per device and across the fleet.
    let (start, end) = (now - 3 * HOUR - MINUTE, now + MINUTE);
    for (bucket, size) in [
        ("1m", MINUTE),
        ("5m", 5 * MINUTE),
        ("15m", 15 * MINUTE),
        ("1h", HOUR),
        ("6h", 6 * HOUR),
        ("1d", DAY),
    ] {
        let (s, e) = (
            start.div_euclid(size) * size,
            (end + size - 1).div_euclid(size) * size,
        );
        for metric in ["temp_c", "rpm"] {
            for device in ["d1", "d2"] {
                let (status, body) = get(
                    &app,
                    &admin,
                    &series_path(device, metric, start, end, bucket),
                )
                .await;
                assert_eq!(status, 200, "{body}");
                assert_eq!(body["from"], rfc3339(s));
                assert_eq!(body["to"], rfc3339(e));
                assert_eq!(body["source"], if size < HOUR { "minute" } else { "hour" });
                assert_buckets(
                    &body["buckets"],
                    expected(&stored, &[device], metric, size, s, e, false),
                    &format!("{device} {metric} {bucket} (seed {seed})"),
                );
            }
            let path = format!(
                "/v1/metrics/fleet/{metric}?from={start}&to={end}&bucket={bucket}&agg={ALL_AGGS}"
            );
            let (status, body) = get(&app, &admin, &path).await;
            assert_eq!(status, 200, "{body}");
            assert_buckets(
                &body["buckets"],
                expected(&stored, &["d1", "d2"], metric, size, s, e, true),
                &format!("fleet {metric} {bucket} (seed {seed})"),
            );
            for filter in ["model=t1000", "tag=site%3Dberlin"] {
                let (status, body) = get(&app, &admin, &format!("{path}&{filter}")).await;
                assert_eq!(status, 200, "{body}");
                assert_buckets(
                    &body["buckets"],
                    expected(&stored, &["d1"], metric, size, s, e, true),
                    &format!("fleet {metric} {bucket} {filter} (seed {seed})"),
                );
            }
        }
    }
    // A device reads its own series.
    let (status, body) = get(&app, &d2, &series_path("d2", "rpm", start, end, "15m")).await;
    assert_eq!(status, 200, "{body}");
    assert_buckets(
        &body["buckets"],
        expected(
            &stored,
            &["d2"],
            "rpm",
            15 * MINUTE,
            start.div_euclid(15 * MINUTE) * 15 * MINUTE,
            end,
            false,
        ),
        &format!("d2 reading its own rpm (seed {seed})"),
    );
    app.stop().await;
}

#[tokio::test]
async fn bucket_edges_are_utc_from_the_epoch() {
    let Fleet { app, admin, d1, .. } = fleet().await;
    let now = now_ms();
    // The last UTC midnight and hour at least two minutes ago.
    let midnight = (now - 2 * MINUTE).div_euclid(DAY) * DAY;
    let hour = (now - 2 * MINUTE).div_euclid(HOUR) * HOUR;
    let readings = vec![
        ("m".to_owned(), midnight - 1, 1.0),
        ("m".to_owned(), midnight, 2.0),
        ("m".to_owned(), hour - 1, 4.0),
        ("m".to_owned(), hour, 8.0),
        ("m".to_owned(), hour + MINUTE - 1, 16.0),
        ("m".to_owned(), hour + MINUTE, 32.0),
    ];
    post_readings(&app, &d1, &readings).await;
    let mut stored = Stored::new();
    remember(&mut stored, "d1", &readings);

    for (bucket, size) in [("1m", MINUTE), ("1h", HOUR), ("6h", 6 * HOUR), ("1d", DAY)] {
        // `from` in another zone names the same instant; edges stay UTC.
        let from = midnight - DAY;
        let from_text = {
            let utc = rfc3339(from + 5 * HOUR + 30 * MINUTE);
            format!("{}+05:30", utc.trim_end_matches('Z'))
        };
        let to = now + MINUTE;
        let (s, e) = (
            from.div_euclid(size) * size,
            (to + size - 1).div_euclid(size) * size,
        );
        if (e - s) / size > 1500 {
            continue;
        }
        let path = format!(
            "/v1/metrics/devices/d1/m?from={}&to={to}&bucket={bucket}&agg={ALL_AGGS}",
            enc(&from_text)
        );
        let (status, body) = get(&app, &admin, &path).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["from"], rfc3339(s), "{bucket}");
        assert_buckets(
            &body["buckets"],
            expected(&stored, &["d1"], "m", size, s, e, false),
            bucket,
        );
        for b in body["buckets"].as_array().unwrap() {
            let start = b["start"].as_str().unwrap();
            assert!(start.ends_with(":00.000Z"), "{start}");
        }
    }
    // The day bucket holding `midnight` starts at it, and the reading a millisecond
    // earlier is in the day before.
    let path = format!(
        "/v1/metrics/devices/d1/m?from={}&to={}&bucket=1d&agg=sum,count",
        midnight - DAY,
        midnight + DAY
    );
    let (_, body) = get(&app, &admin, &path).await;
    let days = body["buckets"].as_array().unwrap();
    assert_eq!(days.len(), 2, "{body}");
    assert_eq!(days[0]["start"], rfc3339(midnight - DAY));
    assert_eq!(days.last().unwrap()["start"], rfc3339(midnight));
    app.stop().await;
}

#[tokio::test]
async fn fill_null_lists_every_bucket_and_empty_ones_are_left_out_by_default() {
    let Fleet { app, admin, d1, .. } = fleet().await;
    let now = now_ms();
    let base = (now - 30 * MINUTE).div_euclid(5 * MINUTE) * 5 * MINUTE;
    post_readings(
        &app,
        &d1,
        &[
            ("m".to_owned(), base + 1000, 1.5),
            ("m".to_owned(), base + 10 * MINUTE, 2.5),
        ],
    )
    .await;
    let range = format!("from={base}&to={}&bucket=5m", base + 15 * MINUTE);
    let (_, body) = get(&app, &admin, &format!("/v1/metrics/devices/d1/m?{range}")).await;
    let buckets = body["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 2, "{body}");
    assert_eq!(body["agg"], json!(["avg", "min", "max", "count"]));
    assert_eq!(
        buckets[0],
        json!({"start": rfc3339(base), "avg": 1.5, "min": 1.5, "max": 1.5, "count": 1})
    );

    let (_, body) = get(
        &app,
        &admin,
        &format!("/v1/metrics/devices/d1/m?{range}&fill=null&agg=sum,count,last"),
    )
    .await;
    assert_eq!(
        body["buckets"],
        json!([
            {"start": rfc3339(base), "sum": 1.5, "count": 1, "last": 1.5},
            {"start": rfc3339(base + 5 * MINUTE), "sum": null, "count": 0, "last": null},
            {"start": rfc3339(base + 10 * MINUTE), "sum": 2.5, "count": 1, "last": 2.5},
        ])
    );
    let (_, body) = get(
        &app,
        &admin,
        &format!("/v1/metrics/fleet/m?{range}&fill=null&agg=count"),
    )
    .await;
    assert_eq!(
        body["buckets"],
        json!([
            {"start": rfc3339(base), "count": 1, "devices": 1},
            {"start": rfc3339(base + 5 * MINUTE), "count": 0, "devices": 0},
            {"start": rfc3339(base + 10 * MINUTE), "count": 1, "devices": 1},
        ])
    );
    app.stop().await;
}

#[tokio::test]
async fn raw_readings_come_page_by_page_and_booleans_stay_booleans() {
    let Fleet { app, admin, d1, .. } = fleet().await;
    let t = now_ms() - 10 * MINUTE;
    let body = json!({"readings": [
        {"metric": "door.open", "ts": t, "value": true},
        {"metric": "door.open", "ts": t + 1, "value": false},
        {"metric": "door.open", "ts": t + 2, "value": 0.5},
        {"metric": "door.open", "ts": t + 3, "value": true},
        {"metric": "door.open", "ts": t + 4, "value": -1},
        {"metric": "other", "ts": t, "value": 9},
    ]});
    let response = app
        .http()
        .post(app.url("/v1/telemetry"))
        .bearer_auth(&d1)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let mut values = Vec::new();
    let mut timestamps = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut path = format!(
            "/v1/metrics/devices/d1/door.open/raw?from={}&to={}&limit=2",
            t,
            t + 4
        );
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={}", enc(c)));
        }
        let (status, page) = get(&app, &d1, &path).await;
        assert_eq!(status, 200, "{page}");
        pages += 1;
        for item in page["items"].as_array().unwrap() {
            values.push(item["value"].clone());
            timestamps.push(item["ts"].clone());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    // `to` is exclusive.
    assert_eq!(values, [json!(true), json!(false), json!(0.5), json!(true)]);
    assert_eq!(timestamps[0], rfc3339(t));
    assert_eq!(pages, 2);
    let (status, _) = get(
        &app,
        &admin,
        &format!("/v1/metrics/devices/d1/door.open/raw?from={t}&cursor=x"),
    )
    .await;
    assert_eq!(status, 400);
    app.stop().await;
}

#[tokio::test]
async fn latest_reads_the_cache_first_and_postgresql_on_a_miss() {
    let Fleet { app, admin, d1, .. } = fleet().await;
    let t = now_ms() - 5 * MINUTE;
    post_readings(
        &app,
        &d1,
        &[
            ("temp_c".to_owned(), t, 20.0),
            ("temp_c".to_owned(), t + 1000, 21.5),
        ],
    )
    .await;
    let response = app
        .http()
        .post(app.url("/v1/telemetry"))
        .bearer_auth(&d1)
        .json(&json!({"readings": [{"metric": "door.open", "ts": t - HOUR, "value": true}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    let (status, cached) = get(&app, &admin, "/v1/metrics/devices/d1/latest").await;
    assert_eq!(status, 200, "{cached}");
    assert_eq!(cached["source"], "cache");
    let metrics = json!({
        "temp_c": {"ts": rfc3339(t + 1000), "value": 21.5},
        "door.open": {"ts": rfc3339(t - HOUR), "value": true},
    });
    assert_eq!(cached["metrics"], metrics);
    assert!(cached["last_seen"].is_string());

    app.host.kv().delete("default", "last:acme:d1");
    let (status, fresh) = get(&app, &d1, "/v1/metrics/devices/d1/latest").await;
    assert_eq!(status, 200, "{fresh}");
    assert_eq!(fresh["source"], "database");
    assert_eq!(fresh["metrics"], metrics);
    assert_eq!(fresh["last_seen"], rfc3339(t + 1000));

    // A device without readings.
    let (status, none) = get(&app, &admin, "/v1/metrics/devices/d2/latest").await;
    assert_eq!(status, 200);
    assert_eq!(none["metrics"], json!({}));
    assert_eq!(none["last_seen"], Value::Null);
    app.stop().await;
}

#[tokio::test]
async fn tenants_and_devices_only_see_their_own() {
    let Fleet { app, admin, d1, d2 } = fleet().await;
    add_tenant(&app.db, "globex").await;
    add_device(&app.db, "globex", "d1", "t1000", &[]).await;
    let globex_admin = app.admin_token("globex");
    let globex_d1 = device_token(&app.signer, "globex", "d1");
    let t = now_ms() - 10 * MINUTE;
    post_readings(&app, &d1, &[("m".to_owned(), t, 1.0)]).await;
    post_readings(&app, &globex_d1, &[("m".to_owned(), t, 100.0)]).await;
    let q = format!("from={}&to={}&bucket=1h&agg=sum,count", t - HOUR, t + HOUR);

    let (_, acme) = get(&app, &admin, &format!("/v1/metrics/devices/d1/m?{q}")).await;
    assert_eq!(acme["buckets"][0]["sum"], 1.0, "{acme}");
    let (_, globex) = get(
        &app,
        &globex_admin,
        &format!("/v1/metrics/devices/d1/m?{q}"),
    )
    .await;
    assert_eq!(globex["buckets"][0]["sum"], 100.0, "{globex}");
    let (_, fleet) = get(&app, &globex_admin, &format!("/v1/metrics/fleet/m?{q}")).await;
    assert_eq!(fleet["buckets"][0]["count"], 1, "{fleet}");
    assert_eq!(fleet["buckets"][0]["devices"], 1, "{fleet}");
    let (_, raw) = get(
        &app,
        &globex_admin,
        &format!("/v1/metrics/devices/d1/m/raw?from={}", t - HOUR),
    )
    .await;
    assert_eq!(raw["items"], json!([{"ts": rfc3339(t), "value": 100.0}]));

    // Another tenant's device, another device, an unknown one: all 404.
    let (status, _) = get(
        &app,
        &globex_admin,
        &format!("/v1/metrics/devices/d2/m?{q}"),
    )
    .await;
    assert_eq!(status, 404);
    for path in [
        format!("/v1/metrics/devices/d1/m?{q}"),
        format!("/v1/metrics/devices/d1/m/raw?from={t}"),
        "/v1/metrics/devices/d1/latest".to_owned(),
    ] {
        let (status, body) = get(&app, &d2, &path).await;
        assert_eq!(status, 404, "{path}: {body}");
    }
    let (status, _) = get(&app, &admin, &format!("/v1/metrics/devices/nobody/m?{q}")).await;
    assert_eq!(status, 404);
    // The fleet is the admin's; operators have no tenant.
    let (status, _) = get(&app, &d1, &format!("/v1/metrics/fleet/m?{q}")).await;
    assert_eq!(status, 403);
    let (status, _) = get(
        &app,
        &app.operator_token(),
        &format!("/v1/metrics/fleet/m?{q}"),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = get(&app, "not-a-token", &format!("/v1/metrics/fleet/m?{q}")).await;
    assert_eq!(status, 401);
    app.stop().await;
}

#[tokio::test]
async fn bad_parameters_are_4xx_and_too_many_buckets_say_what_to_change() {
    let Fleet { app, admin, .. } = fleet_with(BTreeMap::from([(
        "max_query_buckets".to_owned(),
        "48".to_owned(),
    )]))
    .await;
    let now = now_ms();
    let ok = format!("from={}&to={now}", now - DAY);
    for (query, status) in [
        (format!("{ok}&bucket=1h"), 200),
        (format!("to={now}&bucket=1h"), 400),
        (ok.clone(), 400),
        (format!("{ok}&bucket=2h"), 400),
        (format!("{ok}&bucket=1h&agg=median"), 400),
        (format!("{ok}&bucket=1h&agg="), 400),
        (format!("{ok}&bucket=1h&fill=zero"), 400),
        (format!("{ok}&bucket=1h&colour=red"), 400),
        (format!("{ok}&bucket=1h&bucket=1h"), 400),
        (format!("from=yesterday&to={now}&bucket=1h"), 400),
        (format!("from={now}&to={}&bucket=1h", now - 1), 400),
        (format!("{ok}&bucket=1m"), 422),
    ] {
        let (got, body) = get(&app, &admin, &format!("/v1/metrics/devices/d1/m?{query}")).await;
        assert_eq!(got, status, "{query}: {body}");
        if status >= 400 {
            assert!(
                body["type"]
                    .as_str()
                    .unwrap()
                    .starts_with("https://toaster.dev/problems/")
            );
        }
    }
    let (_, body) = get(&app, &admin, &format!("/v1/metrics/fleet/m?{ok}&bucket=5m")).await;
    assert_eq!(body["status"], 422, "{body}");
    let detail = body["errors"][0]["detail"].as_str().unwrap();
    assert!(detail.contains("max_query_buckets"), "{detail}");
    assert!(detail.contains("bucket=1h"), "{detail}");
    assert!(detail.contains("at most 4h"), "{detail}");

    for (path, status) in [
        ("/v1/metrics/devices/d1/Not-A-Metric?from=0&bucket=1h", 404),
        ("/v1/metrics/fleet/m?from=0&bucket=1h&model=%20", 400),
        ("/v1/metrics/devices/d1/m/raw?from=0&limit=0", 400),
        ("/v1/metrics/nowhere", 404),
    ] {
        let (got, body) = get(&app, &admin, path).await;
        assert_eq!(got, status, "{path}: {body}");
    }
    let response = app
        .http()
        .delete(app.url("/v1/metrics/retention"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "GET, PUT");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["title"], "Method Not Allowed");
    app.stop().await;
}

#[tokio::test]
async fn retention_removes_exactly_what_is_past_each_policy() {
    let Fleet { app, admin, d1, .. } = fleet().await;
    add_tenant(&app.db, "globex").await;
    let client = app.db.client().await;
    let now = now_ms();

    // The policy: defaults, then acme's own; a bad one is refused.
    let (status, policy) = get(&app, &admin, "/v1/metrics/retention").await;
    assert_eq!(status, 200);
    assert_eq!(
        policy,
        json!({"raw_days": 30, "minute_days": 90, "hour_days": 730})
    );
    let put = |body: Value| {
        app.http()
            .put(app.url("/v1/metrics/retention"))
            .bearer_auth(&admin)
            .json(&body)
            .send()
    };
    for bad in [
        json!({"raw_days": 5, "minute_days": 3, "hour_days": 10}),
        json!({"raw_days": 0, "minute_days": 3, "hour_days": 10}),
        json!({"raw_days": 1, "minute_days": 3}),
        json!({"raw_days": 1, "minute_days": 3, "hour_days": 9999}),
    ] {
        assert_eq!(put(bad.clone()).await.unwrap().status(), 422, "{bad}");
    }
    let response = put(json!({"raw_days": 2, "minute_days": 3, "hour_days": 5}))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (_, policy) = get(&app, &admin, "/v1/metrics/retention").await;
    assert_eq!(
        policy,
        json!({"raw_days": 2, "minute_days": 3, "hour_days": 5})
    );

    // Ingest now refuses what acme no longer keeps.
    let response = app
        .http()
        .post(app.url("/v1/telemetry"))
        .bearer_auth(&d1)
        .json(&json!({"readings": [{"metric": "m", "ts": now - 3 * DAY, "value": 1}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);

    // Old data straight into the tables (ingest would refuse it).
    client
        .execute(
            "SELECT toaster_ensure_telemetry_partitions(now() - interval '45 days', now() - interval '40 days')",
            &[],
        )
        .await
        .unwrap();
    client
        .execute(
            "SELECT toaster_ensure_telemetry_partitions(now() - interval '21 days', now() - interval '1 day')",
            &[],
        )
        .await
        .unwrap();
    let raw = [
        ("acme", DAY, true),
        ("acme", 2 * DAY - HOUR, true),
        ("acme", 2 * DAY + HOUR, false),
        ("acme", 20 * DAY, false),
        ("acme", 42 * DAY, false),
        ("globex", 20 * DAY, true),
        ("globex", 42 * DAY, false),
    ];
    for (tenant, age, _) in raw {
        client
            .execute(
                "INSERT INTO telemetry VALUES ($1, 'd1', 'm', now() - $2::int8 * interval '1 millisecond', 1, false)",
                &[&tenant, &age],
            )
            .await
            .unwrap();
    }
    let rollups = [
        ("rollup_minute", "acme", 3 * DAY - HOUR, true),
        ("rollup_minute", "acme", 3 * DAY + HOUR, false),
        ("rollup_minute", "globex", 3 * DAY + HOUR, true),
        ("rollup_hour", "acme", 5 * DAY - 2 * HOUR, true),
        ("rollup_hour", "acme", 5 * DAY + HOUR, false),
        ("rollup_hour", "globex", 5 * DAY + HOUR, true),
    ];
    for (table, tenant, age, _) in rollups {
        let width = if table == "rollup_minute" {
            "1 minute"
        } else {
            "1 hour"
        };
        client
            .execute(
                &format!(
                    "INSERT INTO {table} VALUES ($1, 'd1', 'm', \
                     date_bin(interval '{width}', now() - $2::int8 * interval '1 millisecond', timestamptz 'epoch'), \
                     1, 1, 1, 1, now(), 1, now(), 1)"
                ),
                &[&tenant, &age],
            )
            .await
            .unwrap();
    }
    let old_day = {
        let row = client
            .query_one("SELECT 'telemetry_' || to_char((now() - interval '42 days') AT TIME ZONE 'UTC', 'YYYYMMDD')", &[])
            .await
            .unwrap();
        row.get::<_, String>(0)
    };

    // Devices may not run it.
    let run = |token: String| {
        app.http()
            .post(app.url("/v1/metrics/retention/run"))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(run(d1.clone()).await.unwrap().status(), 403);
    let response = run(admin.clone()).await.unwrap();
    assert_eq!(response.status(), 200);
    let report: Value = response.json().await.unwrap();
    assert_eq!(report["tenant"], "acme");
    assert_eq!(report["tenants"], 1);
    assert!(
        report["partitions_dropped"]
            .as_array()
            .unwrap()
            .contains(&json!(old_day)),
        "{report}"
    );
    // acme's 2 days + 1 h and 20 days old rows; the 42-day-old rows went with their
    // partition, globex's too (past every tenant's window).
    assert_eq!(report["raw_rows_deleted"], 2, "{report}");
    assert_eq!(report["minute_rows_deleted"], 1, "{report}");
    assert_eq!(report["hour_rows_deleted"], 1, "{report}");

    let expect = |rows: &[(&str, bool)]| -> Vec<String> {
        rows.iter()
            .filter(|r| r.1)
            .map(|r| r.0.to_owned())
            .collect()
    };
    assert_eq!(
        kept(&client, "telemetry").await,
        expect(&raw.iter().map(|r| (r.0, r.2)).collect::<Vec<_>>())
    );
    let minute: Vec<_> = rollups
        .iter()
        .filter(|r| r.0 == "rollup_minute")
        .map(|r| (r.1, r.3))
        .collect();
    assert_eq!(kept(&client, "rollup_minute").await, expect(&minute));
    let hour: Vec<_> = rollups
        .iter()
        .filter(|r| r.0 == "rollup_hour")
        .map(|r| (r.1, r.3))
        .collect();
    assert_eq!(kept(&client, "rollup_hour").await, expect(&hour));

    // The operator's run covers every tenant; nothing is left to remove, and a second
    // run changes nothing.
    let response = run(app.operator_token()).await.unwrap();
    assert_eq!(response.status(), 200);
    let report: Value = response.json().await.unwrap();
    assert_eq!(report["tenants"], 2, "{report}");
    assert_eq!(report["tenant"], Value::Null);
    assert_eq!(report["raw_rows_deleted"], 0, "{report}");
    assert_eq!(report["partitions_dropped"], json!([]), "{report}");
    app.stop().await;
}

/// The tenants of `table`'s rows, oldest last within each tenant.
async fn kept(client: &tokio_postgres::Client, table: &str) -> Vec<String> {
    let column = if table == "telemetry" { "ts" } else { "bucket" };
    client
        .query(
            &format!("SELECT tenant_id FROM {table} ORDER BY tenant_id, {column} DESC"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect()
}

/// Stores one reading with the ingest statement itself, without the API's checks:
/// what a database from before the ±1e100 rule may hold.
async fn store_unchecked(app: &TestApp, device: &str, metric: &str, ts: i64, value: &str) {
    let client = app.db.client().await;
    client
        .query_one(
            "SELECT toaster_ensure_telemetry_partitions(\
             timestamptz 'epoch' + $1::int8 * interval '1 millisecond', \
             timestamptz 'epoch' + $1::int8 * interval '1 millisecond')",
            &[&ts],
        )
        .await
        .unwrap();
    let row = client
        .query_one(
            STORE_BATCH,
            &[&"acme", &device, &vec![metric], &vec![ts], &vec![value]],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 1);
}

/// Rollup totals up to `f64::MAX` (stored before values were bounded) never make a
/// query 500: PostgreSQL's `sum(float8)` raises on overflow, so the queries sum large
/// totals apart. A sum beyond a double is `null`; the average is always given.
#[tokio::test]
async fn old_values_beyond_1e100_never_make_a_query_or_a_batch_fail() {
    let Fleet { app, admin, d1, d2 } = fleet().await;
    let max = f64::MAX;
    let hour = (now_ms() - 2 * HOUR) / HOUR * HOUR;
    let t0 = hour + 10 * MINUTE;
    // What the old API accepted (each rollup row's total still within a double, or the
    // old statement would have failed): f64::MAX for d1; f64::MAX, then -f64::MAX / 2
    // a minute later for d2.
    store_unchecked(&app, "d1", "m", t0, "1.7976931348623157e308").await;
    store_unchecked(&app, "d2", "m", t0 + 1000, "1.7976931348623157e308").await;
    store_unchecked(&app, "d2", "m", t0 + MINUTE, "-8.988465674311579e307").await;
    // Readings in range into the same rollup rows: a batch, and a single reading.
    post_readings(
        &app,
        &d1,
        &[
            ("m".into(), t0 + 2000, 1.5),
            ("m".into(), t0 + MINUTE + 2000, 2.0),
        ],
    )
    .await;
    post_readings(&app, &d2, &[("m".into(), t0 + 3000, -0.25)]).await;

    let bucket = |start: i64, values: Value| {
        let mut bucket = json!({"start": rfc3339(start)});
        bucket
            .as_object_mut()
            .unwrap()
            .extend(values.as_object().unwrap().clone());
        bucket
    };
    let range = format!("from={t0}&to={}", t0 + 2 * MINUTE);
    let (status, body) = get(
        &app,
        &admin,
        &format!("/v1/metrics/fleet/m?{range}&bucket=1m&agg={ALL_AGGS}"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_buckets(
        &body["buckets"],
        vec![
            // 2 × f64::MAX + 1.25 is beyond a double; its mean is not.
            bucket(
                t0,
                json!({"avg": max / 2.0, "min": -0.25, "max": max, "sum": null, "count": 4,
                       "first": max, "last": -0.25, "devices": 2}),
            ),
            bucket(
                t0 + MINUTE,
                json!({"avg": -max / 4.0, "min": -max / 2.0, "max": 2.0, "sum": -max / 2.0,
                       "count": 2, "first": -max / 2.0, "last": 2.0, "devices": 2}),
            ),
        ],
        "fleet, 1m",
    );
    // The same from the hour rollups.
    let (status, body) = get(
        &app,
        &admin,
        &format!(
            "/v1/metrics/fleet/m?from={hour}&to={}&bucket=1h&agg={ALL_AGGS}",
            hour + HOUR
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let only = &body["buckets"][0];
    assert_eq!(only["sum"], Value::Null, "{body}");
    assert_eq!(
        (only["count"].clone(), only["devices"].clone()),
        (json!(6), json!(2))
    );
    let avg = only["avg"].as_f64().unwrap();
    assert!(((avg - max / 4.0) / (max / 4.0)).abs() < 1e-12, "{body}");

    // One device: its sums fit.
    let (status, body) = get(
        &app,
        &d1,
        &series_path("d1", "m", t0, t0 + 2 * MINUTE, "1m"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_buckets(
        &body["buckets"],
        vec![
            bucket(
                t0,
                json!({"avg": max / 2.0, "min": 1.5, "max": max, "sum": max, "count": 2,
                       "first": max, "last": 1.5}),
            ),
            bucket(
                t0 + MINUTE,
                json!({"avg": 2.0, "min": 2.0, "max": 2.0, "sum": 2.0, "count": 1,
                       "first": 2.0, "last": 2.0}),
            ),
        ],
        "d1, 1m",
    );
    let (status, body) = get(
        &app,
        &admin,
        &series_path("d2", "m", hour, hour + HOUR, "1h"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_buckets(
        &body["buckets"],
        vec![bucket(
            hour,
            json!({"avg": max / 2.0 / 3.0, "min": -max / 2.0, "max": max, "sum": max / 2.0,
                   "count": 3, "first": max, "last": -max / 2.0}),
        )],
        "d2, 1h",
    );
    let (status, body) = get(
        &app,
        &admin,
        &format!("/v1/metrics/devices/d1/m/raw?{range}"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["items"][0]["value"].as_f64(), Some(max), "{body}");
    app.stop().await;
}

/// Times outside 0000-01-01T00:00:00Z .. 9999-12-31T00:00:00Z are 422 naming the
/// parameter and the range, on every route that takes them; they never reach the
/// bucket arithmetic or PostgreSQL (whose timestamps end in 294276 AD and start in
/// 4714 BC), and the edges of the range work.
#[tokio::test]
async fn times_outside_the_years_0000_to_9999_are_422_naming_the_parameter() {
    let Fleet { app, admin, d1, .. } = fleet().await;
    const MIN: i64 = -62_167_219_200_000;
    const MAX: i64 = 253_402_214_400_000;
    let routes = [
        "/v1/metrics/devices/d1/m/raw?",
        "/v1/metrics/devices/d1/m?bucket=1h&",
        "/v1/metrics/fleet/m?bucket=1h&",
    ];
    let cases: Vec<(String, Vec<&str>)> = vec![
        ("from=0&to=9223372036854775807".into(), vec!["to"]),
        ("from=-9000000000000000000".into(), vec!["from"]),
        ("from=0&to=9300000000000000".into(), vec!["to"]),
        ("from=-210866803200001".into(), vec!["from"]),
        (format!("from={}", MIN - 1), vec!["from"]),
        (format!("from=0&to={}", MAX + 1), vec!["to"]),
        (
            "from=-99999999999999999999&to=99999999999999999999".into(),
            vec!["from", "to"],
        ),
        (
            format!("from={}&to={}", enc("0000-01-01T00:00:00+00:01"), MAX),
            vec!["from"],
        ),
        (
            format!("from=0&to={}", enc("9999-12-31T00:00:00.001Z")),
            vec!["to"],
        ),
    ];
    for route in routes {
        for (query, names) in &cases {
            let path = format!("{route}{query}");
            let (status, body) = get(&app, &admin, &path).await;
            assert_eq!(status, 422, "{path}: {body}");
            assert_eq!(
                body["type"], "https://toaster.dev/problems/validation",
                "{path}"
            );
            let detail = body["detail"].as_str().unwrap();
            assert!(
                detail.starts_with("the time range is invalid"),
                "{path}: {detail}"
            );
            let errors = body["errors"].as_array().unwrap();
            let pointers: Vec<&str> = errors
                .iter()
                .map(|e| e["pointer"].as_str().unwrap())
                .collect();
            assert_eq!(&pointers, names, "{path}: {body}");
            for error in errors {
                let detail = error["detail"].as_str().unwrap();
                assert!(
                    detail.contains("0000-01-01T00:00:00Z")
                        && detail.contains("9999-12-31T00:00:00Z")
                        && detail.contains(&MIN.to_string())
                        && detail.contains(&MAX.to_string()),
                    "{path}: {detail}"
                );
            }
        }
        // Not an instant at all is still 400.
        let (status, _) = get(&app, &admin, &format!("{route}from=12a")).await;
        assert_eq!(status, 400, "{route}");
    }

    // The whole range: raw readings answer, a series says how many buckets it spans.
    let (status, body) = get(
        &app,
        &d1,
        &format!("/v1/metrics/devices/d1/m/raw?from={MIN}&to={MAX}"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["from"].clone(), body["to"].clone()),
        (
            json!("0000-01-01T00:00:00.000Z"),
            json!("9999-12-31T00:00:00.000Z")
        )
    );
    for cursor in [i64::MAX, i64::MIN, MAX, MIN] {
        let (status, body) = get(
            &app,
            &d1,
            &format!("/v1/metrics/devices/d1/m/raw?from={MIN}&to={MAX}&cursor={cursor}"),
        )
        .await;
        assert_eq!(status, 200, "cursor {cursor}: {body}");
        assert_eq!(body["items"], json!([]));
    }
    let (status, body) = get(&app, &d1, &series_path("d1", "m", MIN, MAX, "1d")).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["detail"], "too many buckets: 3652424 > 1500", "{body}");
    assert_eq!(body["errors"][0]["pointer"], "bucket");

    // The edges, widened to whole buckets, are still inside and written as they are.
    for (route, from, to, bucket, first_start, end) in [
        (
            "/v1/metrics/devices/d1/m",
            MAX - 1,
            MAX,
            "1d",
            MAX - DAY,
            MAX,
        ),
        (
            "/v1/metrics/fleet/m",
            MAX - 7 * HOUR,
            MAX,
            "6h",
            MAX - 12 * HOUR,
            MAX,
        ),
        (
            "/v1/metrics/devices/d1/m",
            MIN,
            MIN + 1,
            "1d",
            MIN,
            MIN + DAY,
        ),
        (
            "/v1/metrics/fleet/m",
            MIN,
            MIN + 90 * MINUTE,
            "1h",
            MIN,
            MIN + 2 * HOUR,
        ),
    ] {
        let path = format!("{route}?from={from}&to={to}&bucket={bucket}&fill=null&agg={ALL_AGGS}");
        let (status, body) = get(&app, &admin, &path).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(body["from"], rfc3339(first_start), "{path}");
        assert_eq!(body["to"], rfc3339(end), "{path}");
        let buckets = body["buckets"].as_array().unwrap();
        assert_eq!(buckets[0]["start"], rfc3339(first_start), "{path}");
        assert!(buckets.iter().all(|b| b["count"] == 0), "{path}: {body}");
    }
    app.stop().await;
}

#[test]
fn the_json_schemas_agree_with_the_component() {
    let read = |name: &str| -> Value {
        let path = toaster_tests::workspace_root()
            .join("schemas/json")
            .join(name);
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    let retention = read("metrics-retention.json");
    for field in ["raw_days", "minute_days", "hour_days"] {
        assert_eq!(retention["properties"][field]["maximum"], 3650, "{field}");
    }
    // The documented example is the default a tenant without a policy gets.
    assert_eq!(
        retention["examples"][0],
        json!({"raw_days": 30, "minute_days": 90, "hour_days": 730})
    );
    let series = read("metrics-series.json");
    assert_eq!(
        series["properties"]["bucket"]["enum"],
        json!(["1m", "5m", "15m", "1h", "6h", "1d"])
    );
    let run = read("metrics-retention-run.json");
    let mut required: Vec<&str> = run["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    required.sort_unstable();
    assert_eq!(
        required,
        [
            "hour_rows_deleted",
            "minute_rows_deleted",
            "partitions_dropped",
            "raw_rows_deleted",
            "tenant",
            "tenants"
        ]
    );
}

/// Hardening A and B: a retention policy is an object (serde would also take
/// `[raw, minute, hour]`), and none of its fields is null.
#[tokio::test]
async fn a_retention_policy_is_an_object_without_nulls() {
    let Fleet { app, admin, .. } = fleet().await;
    for (body, pointer, detail) in [
        (json!([2, 3, 5]), "", "must be an object"),
        (json!([]), "", "must be an object"),
        (
            json!({"raw_days": null, "minute_days": 3, "hour_days": 5}),
            "/raw_days",
            "must not be null",
        ),
    ] {
        let response = app
            .http()
            .put(app.url("/v1/metrics/retention"))
            .bearer_auth(&admin)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 422, "{body}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["errors"][0]["pointer"], pointer, "{problem}");
        assert_eq!(problem["errors"][0]["detail"], detail, "{problem}");
    }
    let (status, policy) = get(&app, &admin, "/v1/metrics/retention").await;
    assert_eq!(status, 200);
    assert_eq!(
        policy,
        json!({"raw_days": 30, "minute_days": 90, "hour_days": 730}),
        "nothing was stored"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_fleet_summary_counts_devices_seen_devices_and_readings_per_minute() {
    let app = TestApp::start().await;
    for tenant in ["acme", "globex"] {
        add_tenant(&app.db, tenant).await;
    }
    for (device, model) in [
        ("d1", "t1000"),
        ("d2", "t1000"),
        ("d3", "t2000"),
        ("d4", "t2000"),
        ("d5", "t1000"),
    ] {
        add_device(&app.db, "acme", device, model, &[]).await;
    }
    add_device(&app.db, "globex", "g1", "t1000", &[]).await;
    let client = app.db.client().await;
    client
        .batch_execute(
            "UPDATE devices SET channel = 'beta' WHERE device_id = 'd2';
             UPDATE devices SET status = 'disabled' WHERE device_id = 'd4';
             UPDATE devices SET status = 'decommissioned', last_seen_at = now() WHERE device_id = 'd5';",
        )
        .await
        .unwrap();
    let admin = app.admin_token("acme");
    let summary = |token: String| {
        let app = &app;
        async move {
            let before = now_ms();
            let (status, body) = get(app, &token, "/v1/fleet/summary").await;
            assert_eq!(status, 200, "{body}");
            // 60 consecutive minutes, the one the request ran in last.
            let minutes = body["ingest"]["minute_readings"]
                .as_array()
                .unwrap()
                .clone();
            assert_eq!(minutes.len(), 60, "{body}");
            let last = minutes[59]["minute"].as_str().unwrap();
            let (first_ok, last_ok) = (
                rfc3339((before / MINUTE - 59) * MINUTE),
                rfc3339((now_ms() / MINUTE) * MINUTE),
            );
            assert!(
                minutes[0]["minute"].as_str().unwrap() >= first_ok.as_str()
                    && last <= last_ok.as_str(),
                "{first_ok} .. {last_ok}: {body}"
            );
            for pair in minutes.windows(2) {
                assert!(
                    pair[0]["minute"].as_str() < pair[1]["minute"].as_str(),
                    "{body}"
                );
            }
            let readings: i64 = minutes
                .iter()
                .map(|m| m["readings"].as_i64().unwrap())
                .sum();
            (body, readings)
        }
    };

    let (body, readings) = summary(admin.clone()).await;
    assert_eq!(
        body["devices"],
        json!({"total": 4,
               "by_status": {"active": 3, "disabled": 1, "decommissioned": 1},
               "by_model": {"t1000": 2, "t2000": 2},
               "by_channel": {"stable": 3, "beta": 1}})
    );
    assert_eq!(
        body["seen"],
        json!({"last_5m": 0, "last_1h": 0, "last_24h": 0})
    );
    assert_eq!(readings, 0);

    // d1 sends 3 readings and resends them (nothing new), d2 sends 2, globex's g1 4.
    let t = now_ms() - MINUTE;
    let batch = |n: i64| -> Vec<Reading> {
        (0..n)
            .map(|i| ("temp_c".to_owned(), t + i, 20.0 + i as f64))
            .collect()
    };
    let d1 = device_token(&app.signer, "acme", "d1");
    assert_eq!(post_readings(&app, &d1, &batch(3)).await["stored"], 3);
    assert_eq!(post_readings(&app, &d1, &batch(3)).await["stored"], 0);
    let d2 = device_token(&app.signer, "acme", "d2");
    assert_eq!(post_readings(&app, &d2, &batch(1)).await["stored"], 1);
    // A batch of one and a batch of several take different statements.
    assert_eq!(post_readings(&app, &d2, &batch(2)).await["stored"], 1);
    let g1 = device_token(&app.signer, "globex", "g1");
    assert_eq!(post_readings(&app, &g1, &batch(4)).await["stored"], 4);
    // d3 seen half an hour ago, d4 (disabled) three hours ago.
    client
        .batch_execute(
            "UPDATE devices SET last_seen_at = now() - interval '30 minutes' WHERE device_id = 'd3';
             UPDATE devices SET last_seen_at = now() - interval '3 hours' WHERE device_id = 'd4';",
        )
        .await
        .unwrap();

    let (body, readings) = summary(admin.clone()).await;
    assert_eq!(readings, 5, "{body}");
    assert_eq!(
        body["seen"],
        json!({"last_5m": 2, "last_1h": 3, "last_24h": 4})
    );
    assert_eq!(body["devices"]["total"], 4);
    let (body, readings) = summary(app.admin_token("globex")).await;
    assert_eq!(readings, 4, "{body}");
    assert_eq!(
        body["devices"],
        json!({"total": 1,
               "by_status": {"active": 1, "disabled": 0, "decommissioned": 0},
               "by_model": {"t1000": 1}, "by_channel": {"stable": 1}})
    );
    assert_eq!(body["seen"]["last_5m"], 1);
    // Spread over shards, summed per minute: one row per (tenant, minute, shard).
    assert_eq!(
        Api::new(&app)
            .count("SELECT sum(readings)::int8 FROM ingest_minutes WHERE tenant_id = 'acme'")
            .await,
        5
    );

    // Older minutes are outside the hour; the retention run keeps two days.
    client
        .batch_execute(
            "INSERT INTO ingest_minutes (tenant_id, minute, shard, readings) VALUES
               ('acme', date_bin('1 minute', now(), timestamptz 'epoch') - interval '90 minutes', 0, 7),
               ('acme', date_bin('1 minute', now(), timestamptz 'epoch') - interval '3 days', 0, 9),
               ('globex', date_bin('1 minute', now(), timestamptz 'epoch') - interval '3 days', 0, 9);",
        )
        .await
        .unwrap();
    assert_eq!(summary(admin.clone()).await.1, 5);
    let response = app
        .http()
        .post(app.url("/v1/metrics/retention/run"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        Api::new(&app)
            .count("SELECT count(*) FROM ingest_minutes WHERE minute < now() - interval '2 days'")
            .await,
        1,
        "acme's old row went, globex's stays until a run for it"
    );
    assert_eq!(
        Api::new(&app)
            .count("SELECT count(*) FROM ingest_minutes WHERE readings = 7")
            .await,
        1
    );

    // Admins only; no query parameters.
    assert_eq!(get(&app, &d1, "/v1/fleet/summary").await.0, 403);
    assert_eq!(
        get(&app, &app.operator_token(), "/v1/fleet/summary")
            .await
            .0,
        403
    );
    let (status, problem) = get(&app, &admin, "/v1/fleet/summary?minutes=10").await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(problem["type"], "https://toaster.dev/problems/bad-request");
    let response = app
        .http()
        .get(app.url("/v1/fleet/summary"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    app.stop().await;
}
