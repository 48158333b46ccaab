//! Backups that restore: a database filled through the real app (a tenant, devices
//! provisioned with a claim, readings over several days so several daily partitions and
//! their rollups, firmware, a rollout with offers and reports, the audit trail), backed
//! up with `toaster_cli::backup::backup` (what `toaster backup` runs: the real pg_dump),
//! restored into a fresh empty database, and found again: the same tables with the same
//! rows, and the app started against the restored database answers as before.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::{RequestBuilder, StatusCode};
use serde_json::{Value, json};
use toaster_cli::backup::{self, BackupError, RestoreOptions};
use toaster_core::ids::{DeviceId, TenantId};
use toaster_core::token::AccessClaims;
use toaster_tests::{TestApp, TestDb, TestHost, serve_app};

const HOUR: i64 = 3_600_000;
const SHA: &str = "5f2c9a0e5f2c9a0e5f2c9a0e5f2c9a0e5f2c9a0e5f2c9a0e5f2c9a0e5f2c9a0e";

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

async fn send(request: RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.expect("request");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The app under test, reached at `base` with tokens from `signer`.
struct Api {
    http: reqwest::Client,
    base: String,
    signer: toaster_core::token::TokenSigner,
}

impl Api {
    fn of(host: &TestHost, signing_key: &str) -> Api {
        Api {
            http: host.http.clone(),
            base: host.base.clone(),
            signer: toaster_core::token::TokenSigner::from_secret(signing_key).unwrap(),
        }
    }

    fn post(&self, path: &str, token: &str, body: &Value) -> RequestBuilder {
        self.http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(body)
    }

    fn get(&self, path: &str, token: &str) -> RequestBuilder {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
    }

    fn operator(&self) -> String {
        self.signer
            .mint(&AccessClaims::operator("test"), Duration::from_secs(600))
            .unwrap()
    }

    fn admin(&self, tenant: &str) -> String {
        let claims = AccessClaims::admin(TenantId::parse(tenant).unwrap(), "test");
        self.signer.mint(&claims, Duration::from_secs(600)).unwrap()
    }

    /// What `POST /v1/auth/token` hands a device (key generation 1).
    fn device(&self, tenant: &str, device: &str) -> String {
        let claims = AccessClaims::device(
            TenantId::parse(tenant).unwrap(),
            &DeviceId::parse(device).unwrap(),
            1,
        );
        self.signer.mint(&claims, Duration::from_secs(600)).unwrap()
    }
}

/// Everything a tenant's fleet leaves in the database, made through the API.
async fn fill(api: &Api) -> (Vec<String>, i64) {
    let operator = api.operator();
    let (status, body) = send(api.post(
        "/v1/tenants",
        &operator,
        &json!({"id": "acme", "name": "Acme"}),
    ))
    .await;
    assert_eq!(status, 201, "{body}");
    let admin = api.admin("acme");

    let (status, claim) = send(api.post(
        "/v1/claims",
        &admin,
        &json!({"model": "t1000", "quota": 10, "expires_in_secs": 3600, "tags": ["site=berlin"]}),
    ))
    .await;
    assert_eq!(status, 201, "{claim}");
    let mut devices = Vec::new();
    for i in 0..3 {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let id = format!("toaster-{i:04}");
        let (status, body) = send(api.http.post(format!("{}/v1/provision", api.base)).json(&json!({
            "claim_token": claim["claim_token"], "device_id": id, "public_key": key.public_key_pem(),
        })))
        .await;
        assert_eq!(status, 201, "{body}");
        devices.push(id);
    }

    // Readings over the last four days: partitions made on demand, minute and hour rollups.
    let now = now_ms();
    for (n, device) in devices.iter().enumerate() {
        let token = api.device("acme", device);
        let readings: Vec<Value> = (0..96)
            .map(|i| {
                let ts = now - 4 * 24 * HOUR + i * HOUR + n as i64 * 1000;
                json!({"metric": "temp_c", "ts": ts, "value": 20.0 + (i % 7) as f64 * 0.25})
            })
            .chain([json!({"metric": "door.open", "ts": now - 60_000, "value": n % 2 == 0})])
            .collect();
        let (status, body) =
            send(api.post("/v1/telemetry", &token, &json!({ "readings": readings }))).await;
        assert_eq!(status, 200, "{body}");
    }

    let (status, firmware) = send(api.post(
        "/v1/ota/firmware",
        &admin,
        &json!({"model": "t1000", "version": "1.1.0", "url": "https://cdn.example.com/t1000/1.1.0.bin",
                "sha256": SHA, "size": 1_048_576, "notes": "backup test"}),
    ))
    .await;
    assert_eq!(status, 201, "{firmware}");
    let (status, rollout) = send(api.post(
        "/v1/ota/rollouts",
        &admin,
        &json!({"firmware_id": firmware["id"], "selector": {"channel": "stable", "versions": ">=1.0.0, <2.0.0"},
                "stages": [100], "failure_threshold": 0.5, "min_reports": 10, "report_timeout_secs": 3600}),
    ))
    .await;
    assert_eq!(status, 201, "{rollout}");
    for device in &devices {
        let token = api.device("acme", device);
        let (status, body) = send(api.get("/v1/ota/check?version=1.0.0", &token)).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = send(api.post(
        "/v1/ota/report",
        &api.device("acme", &devices[0]),
        &json!({"rollout_id": rollout["id"], "status": "installed", "version": "1.1.0"}),
    ))
    .await;
    assert_eq!(status, 200, "{body}");
    (devices, now)
}

/// Every table of the database (partitions included) → (rows, digest of all rows).
async fn contents(db: &TestDb) -> BTreeMap<String, (i64, String)> {
    let client = db.client().await;
    let tables: Vec<String> = client
        .query(
            "SELECT c.relname::text FROM pg_class c \
             WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p') ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut out = BTreeMap::new();
    for table in tables {
        // Partitions by their own name: each one's rows, not the parent's union.
        let row = client
            .query_one(
                &format!(
                    "SELECT count(*), coalesce(md5(string_agg(t::text, E'\\n' ORDER BY t::text)), '') \
                     FROM ONLY \"{table}\" t"
                ),
                &[],
            )
            .await
            .unwrap();
        out.insert(table, (row.get(0), row.get(1)));
    }
    out
}

/// The schema's other objects: functions, sequences' positions, partition bounds.
async fn schema_facts(db: &TestDb) -> Vec<String> {
    db.client()
        .await
        .query(
            "SELECT 'function ' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')' \
             FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace \
             UNION ALL SELECT 'sequence ' || sequencename || ' at ' || coalesce(last_value, 0) \
             FROM pg_sequences WHERE schemaname = 'public' \
             UNION ALL SELECT 'partition ' || c.relname || ' ' || pg_get_expr(c.relpartbound, c.oid) \
             FROM pg_class c WHERE c.relispartition AND c.relkind = 'r' AND c.relnamespace = 'public'::regnamespace \
             UNION ALL SELECT 'index ' || indexname FROM pg_indexes WHERE schemaname = 'public' \
             ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The app's own spin.toml served against `db` with the given keys and a fresh
/// key-value store (as after losing Redis along with the database).
async fn serve(db: &TestDb, app: &TestApp) -> TestHost {
    let variables = BTreeMap::from([
        ("db_url".to_string(), db.url.clone()),
        ("db_host".to_string(), db.host_port()),
        (
            "token_signing_key".to_string(),
            app.token_signing_key.clone(),
        ),
        (
            "manifest_signing_key".to_string(),
            app.manifest_signing_key.clone(),
        ),
    ]);
    serve_app(variables, toaster_host::Limits::default())
        .await
        .expect("the app starts against the restored database")
}

/// What the API answers about the fleet, from PostgreSQL.
async fn answers(api: &Api, devices: &[String], now: i64) -> Vec<Value> {
    let admin = api.admin("acme");
    let mut out = Vec::new();
    for device in devices {
        let (status, mut body) = send(api.get(&format!("/v1/devices/{device}"), &admin)).await;
        assert_eq!(status, 200, "{body}");
        // Last-known values live in the key-value store, not in PostgreSQL: see below.
        body.as_object_mut().unwrap().remove("last_seen");
        body.as_object_mut().unwrap().remove("metrics");
        out.push(body);
        let from = now - 5 * 24 * HOUR;
        for bucket in ["1h", "1d"] {
            let (status, body) = send(api.get(
                &format!("/v1/metrics/devices/{device}/temp_c?from={from}&to={now}&bucket={bucket}&agg=avg,min,max,sum,count,first,last"),
                &admin,
            ))
            .await;
            assert_eq!(status, 200, "{body}");
            out.push(body);
        }
    }
    let (status, body) = send(api.get(
        &format!(
            "/v1/metrics/fleet/temp_c?from={}&to={now}&bucket=6h&agg=avg,count",
            now - 5 * 24 * HOUR
        ),
        &admin,
    ))
    .await;
    assert_eq!(status, 200, "{body}");
    out.push(body);
    for path in [
        "/v1/audit?limit=100",
        "/v1/ota/rollouts",
        "/v1/ota/firmware",
    ] {
        let (status, body) = send(api.get(path, &admin)).await;
        assert_eq!(status, 200, "{body}");
        out.push(body);
    }
    out
}

#[tokio::test]
async fn a_backup_restored_into_an_empty_database_holds_everything_and_serves_the_same() {
    let app = TestApp::start().await;
    let api = Api::of(&app.host, &app.token_signing_key);
    let (devices, now) = fill(&api).await;
    let before = contents(&app.db).await;
    let facts_before = schema_facts(&app.db).await;
    let answers_before = answers(&api, &devices, now).await;

    // What there is to lose, so that the comparisons below compare something.
    let rows = |table: &str| before.get(table).map(|t| t.0).unwrap_or(0);
    assert_eq!(rows("devices"), 3);
    assert_eq!(rows("device_keys"), 3);
    assert_eq!(rows("claims"), 1);
    assert!(rows("rollup_minute") >= 3 * 97, "{before:?}");
    assert!(rows("rollup_hour") >= 3 * 97, "{before:?}");
    assert_eq!(rows("rollout_devices"), 3);
    assert!(rows("audit_log") >= 7, "{before:?}");
    let partitions_with_rows = before
        .iter()
        .filter(|(t, (n, _))| t.starts_with("telemetry_") && *n > 0)
        .count();
    assert!(partitions_with_rows >= 5, "{before:?}");
    assert!(rows("toaster_migrations") >= 5);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("toaster.dump");
    let report = backup::backup(&app.db.url, &file).await.expect("backup");
    assert_eq!(report.file, file);
    assert!(report.bytes > 0 && file.exists());
    assert!(
        !dir.path().join("toaster.dump.partial").exists(),
        "the partial file is renamed into place"
    );
    assert_eq!(
        report.tables,
        before.len() - 1,
        "the rows of every table but the partitioned parent"
    );
    let original_host = app.host.base.clone();

    let restored = TestDb::empty().await;
    let report = backup::restore(&restored.url, &file, RestoreOptions::default())
        .await
        .expect("restore");
    assert_eq!(report.tables, before.len(), "{report}");
    // The newest migration of schemas/sql, by number.
    let newest = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas/sql"))
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".sql").map(str::to_owned))
        .max()
        .unwrap();
    assert_eq!(
        report.latest_migration.as_deref(),
        Some(newest.as_str()),
        "{report}"
    );

    let after = contents(&restored).await;
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "the same tables and partitions"
    );
    for (table, (n, digest)) in &before {
        assert_eq!(
            (n, digest),
            (&after[table].0, &after[table].1),
            "{table}: row count and every row"
        );
    }
    assert_eq!(facts_before, schema_facts(&restored).await);

    // The app against the restored database, with a fresh key-value store.
    let host = serve(&restored, &app).await;
    assert_ne!(host.base, original_host);
    let restored_api = Api::of(&host, &app.token_signing_key);
    assert_eq!(answers(&restored_api, &devices, now).await, answers_before);
    // Last-known values were in the key-value store, which a backup does not hold: they
    // come back with the device's next batch, and `latest` reads PostgreSQL meanwhile.
    let admin = restored_api.admin("acme");
    let (status, device) =
        send(restored_api.get(&format!("/v1/devices/{}", devices[0]), &admin)).await;
    assert_eq!(status, 200);
    assert_eq!(device["last_seen"], Value::Null);
    let (status, latest) = send(restored_api.get(
        &format!("/v1/metrics/devices/{}/latest", devices[0]),
        &admin,
    ))
    .await;
    assert_eq!(status, 200, "{latest}");
    assert_eq!(latest["source"], "database");
    assert_eq!(latest["metrics"]["door.open"]["value"], json!(true));

    // It keeps working: sequences were restored (a new audit entry does not collide),
    // and so were partitions and the partition function (a new batch lands).
    let (status, body) = send(restored_api.post(
        "/v1/claims",
        &admin,
        &json!({"model": "t2000", "quota": 1, "expires_in_secs": 600}),
    ))
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = send(restored_api.post(
        "/v1/telemetry",
        &restored_api.device("acme", &devices[1]),
        &json!({"readings": [{"metric": "temp_c", "ts": now_ms() - 1000, "value": 21.5}]}),
    ))
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["stored"], 1, "{body}");

    host.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn restore_refuses_a_database_that_holds_tables_unless_clean() {
    let source = TestDb::new().await;
    source
        .client()
        .await
        .execute(
            "INSERT INTO tenants (tenant_id, name, created_by) VALUES ('acme', 'Acme', 'test')",
            &[],
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("b.dump");
    backup::backup(&source.url, &file).await.expect("backup");

    // A migrated database with a tenant of its own.
    let target = TestDb::new().await;
    target
        .client()
        .await
        .execute(
            "INSERT INTO tenants (tenant_id, name, created_by) VALUES ('globex', 'Globex', 'test')",
            &[],
        )
        .await
        .unwrap();
    let err = backup::restore(&target.url, &file, RestoreOptions::default())
        .await
        .expect_err("a non-empty database is refused");
    let text = err.to_string();
    assert!(matches!(err, BackupError::NotEmpty { .. }), "{text}");
    assert!(text.contains(&target.name), "{text}");
    assert!(text.contains("toaster_migrations"), "{text}");
    assert!(text.contains("--clean"), "{text}");
    assert!(text.contains("CREATE DATABASE"), "{text}");
    let tenants = |db: &TestDb| {
        let db = db.url.clone();
        async move {
            let client = toaster_setup::database::connect(&db).await.unwrap();
            client
                .query("SELECT tenant_id FROM tenants ORDER BY 1", &[])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<_, String>(0))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(tenants(&target).await, ["globex"], "nothing was touched");

    // --clean replaces what the backup holds, in one transaction.
    let report = backup::restore(&target.url, &file, RestoreOptions { clean: true })
        .await
        .expect("restore --clean");
    assert!(report.latest_migration.is_some(), "{report}");
    assert_eq!(tenants(&target).await, ["acme"]);
    // And again: --clean is repeatable.
    backup::restore(&target.url, &file, RestoreOptions { clean: true })
        .await
        .expect("restore --clean twice");
    assert_eq!(tenants(&target).await, ["acme"]);
}

#[tokio::test]
async fn failures_say_what_happened_and_show_no_password() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("b.dump");

    // A database that does not exist, reached with a password in the URL.
    let admin = toaster_tests::admin_url().await;
    let mut url = url::Url::parse(&admin).unwrap();
    url.set_password(Some("Sup3r-s3cret")).unwrap();
    url.set_path("/toaster_no_such_database");
    let err = backup::backup(url.as_str(), &file)
        .await
        .expect_err("no such database");
    let text = err.to_string();
    assert!(text.contains("toaster_no_such_database"), "{text}");
    assert!(text.contains("does not exist"), "{text}");
    assert!(!text.contains("Sup3r-s3cret"), "{text}");
    assert!(!file.exists() && !dir.path().join("b.dump.partial").exists());

    // Not a backup: refused before the database is touched.
    let target = TestDb::empty().await;
    std::fs::write(&file, "not a backup").unwrap();
    let err = backup::restore(&target.url, &file, RestoreOptions::default())
        .await
        .expect_err("not an archive");
    assert!(
        matches!(err, BackupError::NotAnArchive { .. }),
        "{err}: {err:?}"
    );

    // A backup cut short (a full disk, a copy interrupted): its table of contents reads,
    // its data ends halfway. Nothing of it is committed.
    let source = TestDb::new().await;
    source
        .client()
        .await
        .batch_execute(
            "INSERT INTO tenants (tenant_id, name, created_by) VALUES ('acme', 'Acme', 'test'); \
             INSERT INTO audit_log (tenant_id, actor_role, actor, action, target, details) \
             SELECT 'acme', 'admin', 'a', 'x', 't', jsonb_build_object('n', i, 'pad', repeat(md5(i::text), 20)) \
             FROM generate_series(1, 20000) i",
        )
        .await
        .unwrap();
    let whole = dir.path().join("whole.dump");
    backup::backup(&source.url, &whole).await.expect("backup");
    let bytes = std::fs::read(&whole).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let err = backup::restore(&target.url, &file, RestoreOptions::default())
        .await
        .expect_err("a truncated backup");
    assert!(err.to_string().contains("rolled back"), "{err}");
    let tables: i64 = target
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 0, "nothing of a failed restore stays");

    let err = backup::restore(
        &target.url,
        &dir.path().join("missing.dump"),
        RestoreOptions::default(),
    )
    .await
    .expect_err("no file");
    assert!(err.to_string().contains("missing.dump"), "{err}");
}
