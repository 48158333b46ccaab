//! Telemetry ingest end to end: `POST /v1/telemetry` served by the real app, against a
//! fresh database per test; plus the storing statement and the partition function
//! run directly against PostgreSQL.
//!
//! Tenants and devices are inserted with SQL matching `0001_identity.sql`, and device
//! tokens minted with the app's signing key (what `POST /v1/auth/token` hands out).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use toaster_core::ids::{DeviceId, TenantId};
use toaster_core::token::{AccessClaims, TokenSigner};
use toaster_setup::localpg::LocalPostgres;
use toaster_setup::{database, migrate};
use toaster_tests::{TestApp, TestDb, serve_app, workspace_root};

const STORE_BATCH: &str = include_str!("../../functions/ingest/src/store_batch.sql");
const DAY_MS: i64 = 86_400_000;

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

async fn add_device(db: &TestDb, tenant: &str, device: &str) {
    db.client()
        .await
        .execute(
            "INSERT INTO devices (tenant_id, device_id, model, channel) VALUES ($1, $2, 't1000', 'stable')",
            &[&tenant, &device],
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

/// The app with tenant `acme` and its device `d1`, and a token for it.
async fn app_with_device() -> (TestApp, String) {
    let app = TestApp::start().await;
    add_tenant(&app.db, "acme").await;
    add_device(&app.db, "acme", "d1").await;
    let token = device_token(&app.signer, "acme", "d1");
    (app, token)
}

struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

async fn post_raw(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> Answer {
    let mut request = http.post(url).body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
    }
}

async fn post(app: &TestApp, token: &str, body: &Value) -> Answer {
    post_raw(
        app.http(),
        &app.url("/v1/telemetry"),
        Some(token),
        Some("application/json"),
        body.to_string(),
    )
    .await
}

type Row = (String, String, String, i64, f64, bool);

/// Every stored reading: tenant, device, metric, ts (Unix ms), value, value_is_bool.
async fn rows(client: &tokio_postgres::Client) -> Vec<Row> {
    client
        .query(
            "SELECT tenant_id, device_id, metric, (extract(epoch FROM ts) * 1000)::int8, value, value_is_bool \
             FROM telemetry ORDER BY tenant_id, device_id, metric, ts",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
        .collect()
}

async fn count(db: &TestDb) -> i64 {
    db.client()
        .await
        .query_one("SELECT count(*) FROM telemetry", &[])
        .await
        .unwrap()
        .get(0)
}

fn row(device: &str, metric: &str, ts: i64, value: f64, is_bool: bool) -> Row {
    (
        "acme".into(),
        device.into(),
        metric.into(),
        ts,
        value,
        is_bool,
    )
}

/// RFC 3339 UTC with milliseconds, written out here so that the tests do not share
/// the code under test.
fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
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

fn pointers(answer: &Answer) -> Vec<String> {
    answer.body["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no errors in {}", answer.body))
        .iter()
        .map(|e| e["pointer"].as_str().unwrap().to_owned())
        .collect()
}

/// The device's `last:{tenant}:{device}` entry in the host's key-value store.
async fn last_known(app: &TestApp, tenant: &str, device: &str) -> Option<Value> {
    app.host
        .kv()
        .get_json("default", &format!("last:{tenant}:{device}"))
}

#[tokio::test]
async fn a_valid_batch_is_stored_exactly() {
    let (app, token) = app_with_device().await;
    let t = now_ms() - 60_000;
    let batch = json!({"readings": [
        {"metric": "temp_c", "ts": rfc3339(t), "value": 21.5},
        {"metric": "temp_c", "ts": t + 1000, "value": -0.1},
        {"metric": "door.open", "ts": t, "value": true},
        {"metric": "door.open", "ts": t + 1, "value": false},
        {"metric": "extreme.max", "ts": t, "value": 1e100},
        {"metric": "extreme.tiny", "ts": t, "value": 5e-324},
        {"metric": "extreme.third", "ts": t, "value": 1.0 / 3.0},
        {"metric": "count", "ts": t, "value": -9007199254740993i64},
    ]});
    let answer = post(&app, &token, &batch).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.headers["content-type"].to_str().unwrap(),
        "application/json"
    );
    assert_eq!(
        answer.body,
        json!({"received": 8, "stored": 8, "duplicates": 0})
    );

    let stored = rows(&app.db.client().await).await;
    assert_eq!(
        stored,
        vec![
            row("d1", "count", t, -9007199254740992.0, false),
            row("d1", "door.open", t, 1.0, true),
            row("d1", "door.open", t + 1, 0.0, true),
            row("d1", "extreme.max", t, 1e100, false),
            row("d1", "extreme.third", t, 1.0 / 3.0, false),
            row("d1", "extreme.tiny", t, 5e-324, false),
            row("d1", "temp_c", t, 21.5, false),
            row("d1", "temp_c", t + 1000, -0.1, false),
        ]
    );
    // Exactly, not approximately.
    assert_eq!(stored[4].4.to_bits(), (1.0f64 / 3.0).to_bits());

    // Last-known values and last-seen, after the commit.
    let last = last_known(&app, "acme", "d1")
        .await
        .expect("last-known entry");
    assert_eq!(
        last["metrics"]["temp_c"],
        json!({"ts_ms": t + 1000, "value": -0.1})
    );
    assert_eq!(
        last["metrics"]["door.open"],
        json!({"ts_ms": t + 1, "value": false})
    );
    let seen = last["last_seen_ms"].as_i64().unwrap();
    assert!((now_ms() - 60_000..=now_ms()).contains(&seen), "{last}");
    app.stop().await;
}

#[tokio::test]
async fn the_same_batch_twice_is_stored_once() {
    let (app, token) = app_with_device().await;
    let t = now_ms() - 10_000;
    let batch = json!({"readings": [
        {"metric": "temp_c", "ts": t, "value": 1},
        {"metric": "temp_c", "ts": t + 1, "value": 2},
        {"metric": "rpm", "ts": t, "value": 3},
    ]});
    let first = post(&app, &token, &batch).await;
    assert_eq!(
        first.body,
        json!({"received": 3, "stored": 3, "duplicates": 0})
    );
    let second = post(&app, &token, &batch).await;
    assert_eq!(second.status, 200);
    assert_eq!(
        second.body,
        json!({"received": 3, "stored": 0, "duplicates": 3})
    );
    assert_eq!(count(&app.db).await, 3);

    // The same reading twice in one batch (the same instant written two ways): the
    // first is kept, the repeat reported as a duplicate.
    let repeated = json!({"readings": [
        {"metric": "level", "ts": t, "value": 10},
        {"metric": "level", "ts": rfc3339(t), "value": 99},
    ]});
    let answer = post(&app, &token, &repeated).await;
    assert_eq!(
        answer.body,
        json!({"received": 2, "stored": 1, "duplicates": 1})
    );
    let stored = rows(&app.db.client().await).await;
    assert!(stored.contains(&row("d1", "level", t, 10.0, false)));
    assert_eq!(stored.len(), 4);
    app.stop().await;
}

#[tokio::test]
async fn a_batch_mixing_new_and_old_readings_stores_only_the_new() {
    let (app, token) = app_with_device().await;
    let t = now_ms() - 10_000;
    let first = json!({"readings": [
        {"metric": "temp_c", "ts": t, "value": 20},
        {"metric": "temp_c", "ts": t + 1000, "value": 21},
    ]});
    assert_eq!(post(&app, &token, &first).await.body["stored"], 2);
    let mixed = json!({"readings": [
        {"metric": "temp_c", "ts": t, "value": 20},
        // Already there with another value: the stored copy is kept.
        {"metric": "temp_c", "ts": t + 1000, "value": 99},
        {"metric": "temp_c", "ts": t + 2000, "value": 22},
        {"metric": "humidity", "ts": t, "value": 40},
    ]});
    let answer = post(&app, &token, &mixed).await;
    assert_eq!(
        answer.body,
        json!({"received": 4, "stored": 2, "duplicates": 2})
    );
    assert_eq!(
        rows(&app.db.client().await).await,
        vec![
            row("d1", "humidity", t, 40.0, false),
            row("d1", "temp_c", t, 20.0, false),
            row("d1", "temp_c", t + 1000, 21.0, false),
            row("d1", "temp_c", t + 2000, 22.0, false),
        ]
    );
    app.stop().await;
}

#[tokio::test]
async fn each_invalid_batch_is_refused_whole_and_nothing_is_written() {
    let (app, token) = app_with_device().await;
    let now = now_ms();
    let good = json!({"metric": "temp_c", "ts": now - 1000, "value": 1});
    let good = || good.clone();
    let cases: Vec<(Value, Vec<&str>)> = vec![
        (
            json!({"readings": [good(), {"metric": "Temp C", "ts": now, "value": 1}]}),
            vec!["/readings/1/metric"],
        ),
        (
            json!({"readings": [good(), {"metric": "m", "ts": now + 6 * 60_000, "value": 1}]}),
            vec!["/readings/1/ts"],
        ),
        (
            json!({"readings": [good(), {"metric": "m", "ts": now - 31 * DAY_MS, "value": 1}]}),
            vec!["/readings/1/ts"],
        ),
        (
            json!({"readings": [good(), {"metric": "m", "ts": "yesterday", "value": 1}]}),
            vec!["/readings/1/ts"],
        ),
        (
            json!({"readings": [good(), {"metric": "m", "ts": now, "value": "1"}]}),
            vec!["/readings/1/value"],
        ),
        (
            json!({"readings": [good(), {"metric": "m", "ts": now, "value": null}]}),
            vec!["/readings/1/value"],
        ),
        (
            json!({"readings": [good(), {"metric": "m", "ts": now}]}),
            vec!["/readings/1/value"],
        ),
        (
            json!({"readings": [good(), {"metric": "m", "ts": now, "value": 1, "unit": "C"}]}),
            vec!["/readings/1/unit"],
        ),
        (json!({"readings": [good(), 7]}), vec!["/readings/1"]),
        (json!({"readings": []}), vec!["/readings"]),
        (
            json!({"readings": [good()], "device": "d2"}),
            vec!["/device"],
        ),
        (json!([good()]), vec![""]),
        (json!({"readings": vec![good(); 5001]}), vec!["/readings"]),
        // Every bad reading is named, the one too old for the tenant's window among them.
        (
            json!({"readings": [
                {"metric": "m", "ts": now - 40 * DAY_MS, "value": 1},
                good(),
                {"metric": "bad-name", "ts": now, "value": 1},
                {"metric": "m", "ts": now + DAY_MS, "value": 1},
            ]}),
            vec!["/readings/0/ts", "/readings/2/metric", "/readings/3/ts"],
        ),
    ];
    for (body, expected) in cases {
        let answer = post(&app, &token, &body).await;
        assert_eq!(answer.status, 422, "{body:.200} → {}", answer.body);
        assert_eq!(
            answer.headers["content-type"].to_str().unwrap(),
            "application/problem+json"
        );
        assert_eq!(
            answer.body["type"],
            "https://toaster.dev/problems/validation"
        );
        assert_eq!(pointers(&answer), expected, "{body:.200}");
    }
    // A number beyond a double (JSON allows it; it would be stored as infinity).
    let answer = post_raw(
        app.http(),
        &app.url("/v1/telemetry"),
        Some(&token),
        Some("application/json"),
        format!(r#"{{"readings": [{{"metric": "m", "ts": {now}, "value": 1e400}}]}}"#),
    )
    .await;
    assert_eq!(answer.status, 422);
    assert_eq!(pointers(&answer), ["/readings/0/value"]);
    // Not JSON at all: 400.
    for body in ["{\"readings\": [", "not json", ""] {
        let answer = post_raw(
            app.http(),
            &app.url("/v1/telemetry"),
            Some(&token),
            Some("application/json"),
            body,
        )
        .await;
        assert_eq!(answer.status, 400, "{body:?}");
    }
    assert_eq!(count(&app.db).await, 0, "nothing of any refused batch");
    assert_eq!(last_known(&app, "acme", "d1").await, None);
    app.stop().await;
}

/// Readings beyond ±1e100 would let a rollup sum overflow a double, which PostgreSQL
/// raises as an error on every later batch of that bucket: they are refused whole.
#[tokio::test]
async fn values_beyond_1e100_are_refused_whole_naming_the_range() {
    let (app, token) = app_with_device().await;
    let t = now_ms() - 10_000;
    let at_bound = json!({"readings": [
        {"metric": "huge", "ts": t, "value": 1e100},
        {"metric": "huge", "ts": t + 1, "value": -1e100},
    ]});
    let answer = post(&app, &token, &at_bound).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    for value in [
        "1.7976931348623157e308",
        "-1.7976931348623157e308",
        "1.0000000000000002e100",
        "1e101",
        "1e400",
    ] {
        // The second of two in one minute is what overflowed the rollup sum.
        for body in [
            format!(
                r#"{{"readings": [{{"metric": "huge", "ts": {}, "value": {value}}}]}}"#,
                t + 2
            ),
            format!(
                r#"{{"readings": [{{"metric": "ok", "ts": {t}, "value": 1}},
                                  {{"metric": "huge", "ts": {}, "value": {value}}}]}}"#,
                t + 3
            ),
        ] {
            let answer = post_raw(
                app.http(),
                &app.url("/v1/telemetry"),
                Some(&token),
                Some("application/json"),
                body.clone(),
            )
            .await;
            assert_eq!(answer.status, 422, "{body} → {}", answer.body);
            assert_eq!(
                answer.body["type"],
                "https://toaster.dev/problems/validation"
            );
            let errors = answer.body["errors"].as_array().unwrap();
            assert_eq!(errors.len(), 1, "{}", answer.body);
            assert!(
                errors[0]["pointer"].as_str().unwrap().ends_with("/value"),
                "{}",
                answer.body
            );
            assert_eq!(errors[0]["detail"], "must be a number from -1e100 to 1e100");
        }
    }
    assert_eq!(count(&app.db).await, 2, "nothing of the refused batches");
    app.stop().await;
}

/// A database from before the ±1e100 rule may hold totals up to `f64::MAX`; in-range
/// batches (one reading, or many) into those buckets still store, never 500.
#[tokio::test]
async fn batches_into_buckets_holding_old_huge_totals_are_stored() {
    let (app, token) = app_with_device().await;
    let client = app.db.client().await;
    // One second into a minute: every reading below is in the same minute and hour.
    let t = (now_ms() - 120_000) / 60_000 * 60_000 + 1000;
    // As the same statement stored them before values were bounded.
    for (metric, value) in [
        ("up", "1.7976931348623157e308"),
        ("down", "-1.7976931348623157e308"),
    ] {
        let (stored, _) = store(&client, "acme", "d1", &[(metric, t, value)])
            .await
            .unwrap();
        assert_eq!(stored, 1);
    }
    let batch = json!({"readings": [
        {"metric": "up", "ts": t + 1, "value": 1e100},
        {"metric": "up", "ts": t + 2, "value": 1e100},
        {"metric": "down", "ts": t + 1, "value": -1e100},
    ]});
    let answer = post(&app, &token, &batch).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let single = json!({"readings": [{"metric": "down", "ts": t + 2, "value": -1e100}]});
    let answer = post(&app, &token, &single).await;
    assert_eq!(answer.status, 200, "{}", answer.body);

    for table in ["rollup_minute", "rollup_hour"] {
        let totals: Vec<(String, i64, f64)> = client
            .query(
                &format!("SELECT metric, readings, total FROM {table} ORDER BY metric"),
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        assert_eq!(
            totals,
            [("down".into(), 3, -f64::MAX), ("up".into(), 3, f64::MAX)],
            "{table}"
        );
    }
    app.stop().await;
}

/// Timestamps PostgreSQL cannot hold are refused like any other too old or too new:
/// 422 at the reading's `ts`, never a 500 from the database.
#[tokio::test]
async fn timestamps_far_outside_the_window_are_422() {
    let (app, token) = app_with_device().await;
    for ts in [
        json!(i64::MAX),
        json!(i64::MIN),
        json!(9_300_000_000_000_000_i64),
        json!(-9_000_000_000_000_000_000_i64),
        json!(-210_866_803_200_001_i64),
        json!("0000-01-01T00:00:00Z"),
        json!("9999-12-31T23:59:59.999Z"),
    ] {
        let body = json!({"readings": [{"metric": "m", "ts": ts, "value": 1}]});
        let answer = post(&app, &token, &body).await;
        assert_eq!(answer.status, 422, "{ts} → {}", answer.body);
        assert_eq!(pointers(&answer), ["/readings/0/ts"], "{ts}");
    }
    assert_eq!(count(&app.db).await, 0);
    app.stop().await;
}

#[tokio::test]
async fn the_retention_window_is_the_tenants() {
    let (app, token) = app_with_device().await;
    let client = app.db.client().await;
    let now = now_ms();
    // 20 days back: inside the default 30-day window, on a day that has no partition
    // yet (the migration creates yesterday onwards), so it is created on demand.
    let old = now - 20 * DAY_MS;
    let batch = json!({"readings": [
        {"metric": "m", "ts": old, "value": 1},
        {"metric": "m", "ts": now, "value": 2},
    ]});
    let answer = post(&app, &token, &batch).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["stored"], 2);
    let partition: Option<String> = client
        .query_one(
            "SELECT tableoid::regclass::text FROM telemetry WHERE ts < now() - interval '10 days'",
            &[],
        )
        .await
        .map(|r| r.get(0))
        .ok();
    let day = &rfc3339(old)[..10].replace('-', "");
    assert_eq!(
        partition.as_deref(),
        Some(format!("telemetry_{day}").as_str())
    );

    // A tenant keeping 7 days refuses the same batch whole.
    client
        .execute(
            "INSERT INTO tenant_retention (tenant_id, raw_days) VALUES ('acme', 7)",
            &[],
        )
        .await
        .unwrap();
    let batch = json!({"readings": [
        {"metric": "n", "ts": now, "value": 2},
        {"metric": "n", "ts": now - 8 * DAY_MS, "value": 1},
    ]});
    let answer = post(&app, &token, &batch).await;
    assert_eq!(answer.status, 422, "{}", answer.body);
    assert_eq!(pointers(&answer), ["/readings/1/ts"]);
    assert_eq!(
        answer.body["errors"][0]["detail"],
        "is older than the retention period"
    );
    assert_eq!(count(&app.db).await, 2, "nothing of the refused batch");
    app.stop().await;
}

#[tokio::test]
async fn only_an_active_device_with_a_valid_token_may_send() {
    let (app, token) = app_with_device().await;
    add_device(&app.db, "acme", "off").await;
    app.db
        .client()
        .await
        .execute(
            "UPDATE devices SET status = 'disabled', key_generation = 2 WHERE device_id = 'off'",
            &[],
        )
        .await
        .unwrap();
    let now = now_ms();
    let body = json!({"readings": [{"metric": "m", "ts": now, "value": 1}]}).to_string();
    let tenant = TenantId::parse("acme").unwrap();
    let forger = TokenSigner::from_secret("another-secret-another-secret-0123456789").unwrap();
    let expired = app
        .signer
        .mint_at(
            &AccessClaims::device(tenant.clone(), &DeviceId::parse("d1").unwrap(), 1),
            Duration::from_secs(60),
            (now / 1000) as u64 - 3600,
        )
        .unwrap();
    let cases: Vec<(Option<String>, u16)> = vec![
        (None, 401),
        (Some("not-a-jwt".into()), 401),
        (Some(device_token(&forger, "acme", "d1")), 401),
        (Some(expired), 401),
        (Some(app.admin_token("acme")), 403),
        (Some(app.operator_token()), 403),
        // Disabled (its generation moved on), stale generation, unknown device.
        (Some(device_token(&app.signer, "acme", "off")), 401),
        (
            Some(
                app.signer
                    .mint(
                        &AccessClaims::device(tenant.clone(), &DeviceId::parse("off").unwrap(), 2),
                        Duration::from_secs(600),
                    )
                    .unwrap(),
            ),
            401,
        ),
        (Some(device_token(&app.signer, "acme", "ghost")), 401),
        (Some(device_token(&app.signer, "nowhere", "d1")), 401),
    ];
    for (i, (token, status)) in cases.into_iter().enumerate() {
        let answer = post_raw(
            app.http(),
            &app.url("/v1/telemetry"),
            token.as_deref(),
            Some("application/json"),
            body.clone(),
        )
        .await;
        assert_eq!(answer.status, status, "case {i}: {}", answer.body);
        assert_eq!(
            answer.headers["content-type"].to_str().unwrap(),
            "application/problem+json"
        );
        if status == 401 {
            assert!(answer.headers.contains_key("www-authenticate"), "case {i}");
        }
    }
    assert_eq!(count(&app.db).await, 0);
    // The valid token still works.
    assert_eq!(
        post_raw(
            app.http(),
            &app.url("/v1/telemetry"),
            Some(&token),
            Some("application/json"),
            body
        )
        .await
        .status,
        200
    );
    app.stop().await;
}

#[tokio::test]
async fn bodies_over_max_body_bytes_are_413() {
    let (app, token) = app_with_device().await;
    let url = app.url("/v1/telemetry");
    let limit = 1024 * 1024;
    // A valid batch padded with whitespace to exactly the limit is accepted...
    let batch = json!({"readings": [{"metric": "m", "ts": now_ms(), "value": 1}]}).to_string();
    let exact = format!("{batch}{}", " ".repeat(limit - batch.len()));
    let answer = post_raw(
        app.http(),
        &url,
        Some(&token),
        Some("application/json"),
        exact,
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    // ...one byte more is not, whether the length is declared or streamed.
    let over = format!("{batch}{}", " ".repeat(limit + 1 - batch.len()));
    let answer = post_raw(
        app.http(),
        &url,
        Some(&token),
        Some("application/json"),
        over.clone(),
    )
    .await;
    assert_eq!(answer.status, 413, "{}", answer.body);
    assert_eq!(
        answer.body["type"],
        "https://toaster.dev/problems/payload-too-large"
    );
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = over
        .into_bytes()
        .chunks(64 * 1024)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let streamed = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let answer = post_raw(
        app.http(),
        &url,
        Some(&token),
        Some("application/json"),
        streamed,
    )
    .await;
    assert_eq!(answer.status, 413, "{}", answer.body);
    assert_eq!(count(&app.db).await, 1);
    app.stop().await;
}

#[tokio::test]
async fn max_body_bytes_and_max_batch_readings_are_variables() {
    let app = TestApp::start_with(
        toaster_host::Limits::default(),
        BTreeMap::from([
            ("max_body_bytes".to_string(), "300".to_string()),
            ("max_batch_readings".to_string(), "2".to_string()),
        ]),
    )
    .await;
    add_tenant(&app.db, "acme").await;
    add_device(&app.db, "acme", "d1").await;
    let token = device_token(&app.signer, "acme", "d1");
    // One base time: two calls to now_ms() may fall on the same millisecond.
    let base = now_ms();
    let reading = |i: i64| json!({"metric": "m", "ts": base - i, "value": 1});
    let answer = post(&app, &token, &json!({"readings": [reading(0), reading(1)]})).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let answer = post(
        &app,
        &token,
        &json!({"readings": [reading(2), reading(3), reading(4)]}),
    )
    .await;
    assert_eq!(answer.status, 422);
    assert_eq!(pointers(&answer), ["/readings"]);
    let answer = post(
        &app,
        &token,
        &json!({"readings": [reading(5)], "padding": "x".repeat(300)}),
    )
    .await;
    assert_eq!(answer.status, 413);
    assert_eq!(count(&app.db).await, 2);
    app.stop().await;
}

#[tokio::test]
async fn only_json_is_accepted_at_the_one_route() {
    let (app, token) = app_with_device().await;
    let url = app.url("/v1/telemetry");
    let body = json!({"readings": [{"metric": "m", "ts": now_ms(), "value": 1}]}).to_string();
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let answer = post_raw(app.http(), &url, Some(&token), content_type, body.clone()).await;
        assert_eq!(answer.status, 415, "{content_type:?}");
        assert_eq!(
            answer.body["type"],
            "https://toaster.dev/problems/unsupported-media-type"
        );
    }
    let answer = post_raw(
        app.http(),
        &url,
        Some(&token),
        Some("application/json; charset=utf-8"),
        body.clone(),
    )
    .await;
    assert_eq!(answer.status, 200);

    let response = app
        .http()
        .get(&url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "POST");
    let response = app
        .http()
        .post(app.url("/v1/telemetry/elsewhere"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(count(&app.db).await, 1);
    app.stop().await;
}

#[tokio::test]
async fn devices_and_tenants_never_mix() {
    let app = TestApp::start().await;
    for tenant in ["acme", "globex"] {
        add_tenant(&app.db, tenant).await;
        add_device(&app.db, tenant, "d1").await;
    }
    add_device(&app.db, "acme", "d2").await;
    let t = now_ms() - 5000;
    // The same metric and instant from three devices, two of them named alike.
    let senders = [
        ("acme", "d1", 1.0),
        ("acme", "d2", 2.0),
        ("globex", "d1", 3.0),
    ];
    for (tenant, device, value) in senders {
        let token = device_token(&app.signer, tenant, device);
        let answer = post(
            &app,
            &token,
            &json!({"readings": [{"metric": "temp_c", "ts": t, "value": value}]}),
        )
        .await;
        assert_eq!(
            answer.body,
            json!({"received": 1, "stored": 1, "duplicates": 0}),
            "{tenant}/{device}"
        );
    }
    let stored = rows(&app.db.client().await).await;
    assert_eq!(
        stored,
        vec![
            ("acme".into(), "d1".into(), "temp_c".into(), t, 1.0, false),
            ("acme".into(), "d2".into(), "temp_c".into(), t, 2.0, false),
            ("globex".into(), "d1".into(), "temp_c".into(), t, 3.0, false),
        ]
    );
    for (tenant, device, value) in senders {
        let last = last_known(&app, tenant, device).await.unwrap();
        assert_eq!(last["metrics"]["temp_c"]["value"], json!(value));
    }
    app.stop().await;
}

/// A directory PostgreSQL's own user can reach when the tests run as root.
fn reachable_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

#[tokio::test]
async fn storage_down_is_503_and_a_resend_after_it_returns_is_stored_once() {
    // The app against a cluster of its own, so that it can be stopped.
    let tmp = reachable_tempdir();
    let pg_dir = tmp.path().join("pg");
    let pg = LocalPostgres::builder(&pg_dir)
        .ephemeral(true)
        .start()
        .await
        .unwrap();
    let url = database::create_database(&pg.url("postgres"), "toaster")
        .await
        .unwrap();
    let mut client = database::connect(&url).await.unwrap();
    migrate::migrate(&mut client, &workspace_root().join("schemas/sql"))
        .await
        .unwrap();
    client
        .batch_execute(
            "INSERT INTO tenants (tenant_id, name, created_by) VALUES ('acme', 'acme', 'test');
             INSERT INTO devices (tenant_id, device_id, model, channel) VALUES ('acme', 'd1', 't1000', 'stable');",
        )
        .await
        .unwrap();
    drop(client);

    let signing_key = toaster_setup::keys::new_token_secret();
    let signer = TokenSigner::from_secret(&signing_key).unwrap();
    let host = serve_app(
        BTreeMap::from([
            ("db_url".to_string(), url.clone()),
            ("db_host".to_string(), format!("127.0.0.1:{}", pg.port())),
            ("token_signing_key".to_string(), signing_key),
            (
                "manifest_signing_key".to_string(),
                toaster_setup::keys::new_ed25519_pem(),
            ),
        ]),
        toaster_host::Limits::default(),
    )
    .await
    .unwrap();
    let token = device_token(&signer, "acme", "d1");
    let endpoint = host.url("/v1/telemetry");
    let send = |body: Value| {
        let (http, endpoint, token) = (host.http.clone(), endpoint.clone(), token.clone());
        async move {
            post_raw(
                &http,
                &endpoint,
                Some(&token),
                Some("application/json"),
                body.to_string(),
            )
            .await
        }
    };

    let t = now_ms() - 60_000;
    let before = json!({"readings": [{"metric": "m", "ts": t, "value": 1}]});
    assert_eq!(send(before.clone()).await.body["stored"], 1);

    pg.stop().await.unwrap();
    let during = json!({"readings": [
        {"metric": "m", "ts": t + 1, "value": 2},
        {"metric": "m", "ts": t + 2, "value": 3},
    ]});
    let answer = send(during.clone()).await;
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert_eq!(
        answer.body["type"],
        "https://toaster.dev/problems/unavailable"
    );
    assert!(answer.headers.contains_key("retry-after"));
    let body = answer.body.to_string();
    assert!(
        !body.contains("postgres://") && !body.contains("127.0.0.1"),
        "{body}"
    );

    // Back on the same directory and port; the device retries as told.
    let pg = LocalPostgres::builder(&pg_dir)
        .ephemeral(true)
        .start()
        .await
        .unwrap();
    let mut answer = send(during.clone()).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while answer.status == 503 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        answer = send(during.clone()).await;
    }
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["received"], 2);
    // And once more, as a device whose response was lost would.
    assert_eq!(
        send(during).await.body,
        json!({"received": 2, "stored": 0, "duplicates": 2})
    );
    assert_eq!(
        send(before).await.body,
        json!({"received": 1, "stored": 0, "duplicates": 1})
    );

    let client = database::connect(&url).await.unwrap();
    let values: Vec<f64> = client
        .query("SELECT value FROM telemetry ORDER BY ts", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(values, [1.0, 2.0, 3.0]);
    drop(client);
    host.stop().await;
    pg.stop().await.unwrap();
}

// The storing statement and the partition function, straight against PostgreSQL.

async fn store(
    client: &tokio_postgres::Client,
    tenant: &str,
    device: &str,
    readings: &[(&str, i64, &str)],
) -> Result<(i64, i64), tokio_postgres::Error> {
    let metrics: Vec<&str> = readings.iter().map(|r| r.0).collect();
    let ts: Vec<i64> = readings.iter().map(|r| r.1).collect();
    let values: Vec<&str> = readings.iter().map(|r| r.2).collect();
    let row = client
        .query_one(STORE_BATCH, &[&tenant, &device, &metrics, &ts, &values])
        .await?;
    Ok((row.get(0), row.get(1)))
}

#[tokio::test]
async fn the_statement_stores_new_rows_and_counts_them() {
    let db = TestDb::new().await;
    add_tenant(&db, "acme").await;
    let client = db.client().await;
    let t = now_ms();
    let (stored, oldest) = store(
        &client,
        "acme",
        "d1",
        &[("a", t, "2.15e1"), ("b", t, "true"), ("c", t, "5e-324")],
    )
    .await
    .unwrap();
    assert_eq!(stored, 3);
    let expected_oldest = t - 30 * DAY_MS;
    assert!((expected_oldest - 60_000..=expected_oldest + 60_000).contains(&oldest));
    let (stored, _) = store(&client, "acme", "d1", &[("a", t, "0"), ("a", t + 1, "1")])
        .await
        .unwrap();
    assert_eq!(stored, 1, "the first copy of a reading wins");
    assert_eq!(
        rows(&client).await,
        vec![
            row("d1", "a", t, 21.5, false),
            row("d1", "a", t + 1, 1.0, false),
            row("d1", "b", t, 1.0, true),
            row("d1", "c", t, 5e-324, false),
        ]
    );
    // One reading outside the window: nothing of the batch is written.
    let (stored, _) = store(
        &client,
        "acme",
        "d1",
        &[("z", t, "1"), ("z", t - 31 * DAY_MS, "1")],
    )
    .await
    .unwrap();
    assert_eq!(stored, 0);
    assert_eq!(count(&db).await, 4);
}

#[tokio::test]
async fn a_day_without_a_partition_is_sqlstate_23514_until_it_is_ensured() {
    let db = TestDb::new().await;
    add_tenant(&db, "acme").await;
    let client = db.client().await;
    let old = now_ms() - 20 * DAY_MS;
    let error = store(&client, "acme", "d1", &[("m", old, "1")])
        .await
        .unwrap_err();
    assert_eq!(error.code().unwrap().code(), "23514");

    // Concurrent callers: each day is created once, and both succeed.
    let from = old - 2 * DAY_MS;
    let ensure = "SELECT toaster_ensure_telemetry_partitions(\
                  timestamptz 'epoch' + $1::int8 * interval '1 millisecond', \
                  timestamptz 'epoch' + $2::int8 * interval '1 millisecond')";
    let (other, mine) = (db.client().await, db.client().await);
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&from, &old];
    let (a, b) = tokio::join!(
        other.query_one(ensure, &params),
        mine.query_one(ensure, &params)
    );
    let created: i32 = a.unwrap().get::<_, i32>(0) + b.unwrap().get::<_, i32>(0);
    assert_eq!(created, 3, "three days, once each");
    assert_eq!(
        store(&client, "acme", "d1", &[("m", old, "1")])
            .await
            .unwrap()
            .0,
        1
    );
    // Idempotent, and always a week ahead.
    let again: i32 = client
        .query_one(ensure, &[&old, &old])
        .await
        .unwrap()
        .get(0);
    assert_eq!(again, 0);
    let ahead: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'telemetry'::regclass \
             AND inhrelid::regclass::text = 'telemetry_' || to_char((now() AT TIME ZONE 'UTC') + interval '7 days', 'YYYYMMDD')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(ahead, 1);
}

#[test]
fn the_json_schemas_agree_with_the_component() {
    use toaster_core::telemetry::{BatchLimits, MAX_ABS_VALUE, parse_batch};
    let read = |name: &str| -> Value {
        let path = workspace_root().join("schemas/json").join(name);
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    let batch = read("telemetry-batch.schema.json");
    assert_eq!(
        batch["properties"]["readings"]["maxItems"],
        BatchLimits::default().max_readings
    );
    let value = &batch["$defs"]["reading"]["properties"]["value"];
    assert_eq!(value["maximum"].as_f64(), Some(MAX_ABS_VALUE));
    assert_eq!(value["minimum"].as_f64(), Some(-MAX_ABS_VALUE));
    // The documented example is accepted (at the time it was written).
    let example = batch["examples"][0].to_string();
    let written = 1_795_255_200_000;
    let parsed = parse_batch(
        example.as_bytes(),
        &BatchLimits::default(),
        written,
        written - 30 * DAY_MS,
    )
    .unwrap();
    assert_eq!(parsed.readings.len(), 2);

    let receipt = read("telemetry-receipt.schema.json");
    let mut names: Vec<&str> = receipt["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["duplicates", "received", "stored"]);
}

/// Through the identity API: the device's last-seen and last-known values, and a
/// device disabled by an admin refused on its very next batch.
#[tokio::test]
async fn the_registry_shows_last_seen_and_a_disabled_device_is_refused_at_once() {
    let (app, token) = app_with_device().await;
    let admin = app.admin_token("acme");
    let t = now_ms() - 1000;
    let batch = json!({"readings": [{"metric": "temp_c", "ts": t, "value": 21.5}]});
    assert_eq!(post(&app, &token, &batch).await.status, 200);

    let response = app
        .http()
        .get(app.url("/v1/devices/d1"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let device: Value = response.json().await.unwrap();
    assert!(device["last_seen"].is_string(), "{device}");
    assert_eq!(device["metrics"]["temp_c"]["value"], 21.5, "{device}");
    assert_eq!(device["metrics"]["temp_c"]["ts"], rfc3339(t), "{device}");

    let response = app
        .http()
        .patch(app.url("/v1/devices/d1"))
        .bearer_auth(&admin)
        .json(&json!({"status": "disabled"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    let later = json!({"readings": [{"metric": "temp_c", "ts": t + 1, "value": 22}]});
    assert_eq!(post(&app, &token, &later).await.status, 401);
    assert_eq!(count(&app.db).await, 1);
    app.stop().await;
}
