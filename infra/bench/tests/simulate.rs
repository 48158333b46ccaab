//! `toaster simulate` end to end: the command's code (in-process, parsed from the
//! same flags) against the real app, then its JSON results checked against what
//! PostgreSQL holds.

use serde_json::{Value, json};
use toaster_bench::simulate::{SimulateArgs, run};
use toaster_tests::TestApp;

async fn count(app: &TestApp, sql: &str) -> i64 {
    app.db
        .client()
        .await
        .query_one(sql, &[])
        .await
        .expect(sql)
        .get(0)
}

async fn post(app: &TestApp, path: &str, token: &str, body: Value) -> Value {
    let response = app
        .http()
        .post(app.url(path))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{path}: {}",
        response.status()
    );
    response.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_provisions_posts_checks_and_reports_its_results() {
    let app = TestApp::start().await;
    let operator = app.operator_token();
    post(
        &app,
        "/v1/tenants",
        &operator,
        json!({"id": "sim", "name": "Sim"}),
    )
    .await;
    let admin = app.admin_token("sim");
    let claim = post(
        &app,
        "/v1/claims",
        &admin,
        json!({"model": "t1000", "quota": 3, "expires_in_secs": 3600}),
    )
    .await;
    // A rollout every simulated device is in: each should be offered it, verify it
    // and report it installed.
    let firmware = post(
        &app,
        "/v1/ota/firmware",
        &admin,
        json!({"model": "t1000", "version": "1.1.0", "url": "https://cdn.example.com/fw.bin",
               "sha256": "cd".repeat(32), "size": 1024}),
    )
    .await;
    let rollout = post(
        &app,
        "/v1/ota/rollouts",
        &admin,
        json!({"firmware_id": firmware["id"],
               "selector": {"channel": "stable", "versions": "^1.0"},
               "stages": [100], "failure_threshold": 0.5, "min_reports": 10,
               "report_timeout_secs": 3600}),
    )
    .await;

    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results.json");
    let args = SimulateArgs::try_parse_from([
        "simulate",
        "--url",
        &app.host.base,
        "--claim-token",
        claim["claim_token"].as_str().unwrap(),
        "--devices",
        "3",
        "--rate",
        "100",
        "--batch-size",
        "5",
        "--concurrency",
        "2",
        "--duration",
        "2s",
        "--ota-interval",
        "500ms",
        "--json",
        results.to_str().unwrap(),
    ])
    .unwrap();
    run(args).await.expect("the simulation runs");

    let summary: Value = serde_json::from_slice(&std::fs::read(&results).unwrap()).unwrap();
    assert_eq!(summary["devices"], 3, "{summary:#}");
    assert_eq!(summary["provisioning"]["devices"], 3);
    assert_eq!(summary["errors"]["total"], 0, "{summary:#}");
    let telemetry = &summary["telemetry"];
    let readings = telemetry["readings"].as_i64().unwrap();
    // At most 100 readings/s for 2 s (a batch more at the edge); fewer only if the
    // machine is too busy to keep the pace.
    assert!((25..=210).contains(&readings), "{summary:#}");
    assert_eq!(telemetry["stored"].as_i64().unwrap(), readings);
    assert_eq!(telemetry["batches"].as_i64().unwrap() * 5, readings);
    let latency = &telemetry["latency"];
    let ms = |k: &str| latency[k].as_f64().unwrap();
    assert!(ms("p50_ms") > 0.0);
    assert!(ms("p50_ms") <= ms("p95_ms") && ms("p95_ms") <= ms("p99_ms"));
    assert!(ms("p99_ms") <= ms("max_ms"));
    assert_eq!(latency["count"], telemetry["batches"]);

    // Every reading it counted is in PostgreSQL, under its provisioned devices.
    assert_eq!(
        count(&app, "SELECT count(*) FROM telemetry").await,
        readings
    );
    assert_eq!(
        count(
            &app,
            "SELECT count(DISTINCT device_id) FROM telemetry WHERE tenant_id = 'sim'"
        )
        .await,
        3
    );
    assert_eq!(
        count(&app, "SELECT count(*) FROM devices WHERE tenant_id = 'sim'").await,
        3
    );

    // Each device checked, was offered the update once, and installed it.
    let ota = &summary["ota"];
    assert!(ota["checks"].as_i64().unwrap() >= 3, "{summary:#}");
    assert_eq!(ota["offers"], 3);
    assert_eq!(ota["reports"], 3);
    let rollout_id = rollout["id"].as_str().unwrap();
    assert_eq!(
        count(
            &app,
            &format!(
                "SELECT count(*) FROM rollout_devices WHERE rollout_id = '{rollout_id}' AND state = 'installed'"
            )
        )
        .await,
        3
    );
    assert_eq!(summary["client"]["logins"], 3);
    app.stop().await;
}

#[tokio::test]
async fn simulate_creates_its_own_claim_with_an_admin_token() {
    let app = TestApp::start().await;
    post(
        &app,
        "/v1/tenants",
        &app.operator_token(),
        json!({"id": "acme", "name": "Acme"}),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results.json");
    let admin = app.admin_token("acme");
    let args = SimulateArgs::try_parse_from([
        "simulate",
        "--url",
        &app.host.base,
        "--admin-token",
        &admin,
        "--devices",
        "2",
        "--batch-size",
        "20",
        // Well under the app's per-device rate limit (600 requests a minute).
        "--rate",
        "2000",
        "--duration",
        "1s",
        "--json",
        results.to_str().unwrap(),
    ])
    .unwrap();
    run(args).await.expect("the simulation runs");
    let summary: Value = serde_json::from_slice(&std::fs::read(&results).unwrap()).unwrap();
    assert_eq!(summary["devices"], 2);
    assert_eq!(summary["errors"]["total"], 0, "{summary:#}");
    let readings = summary["telemetry"]["readings"].as_i64().unwrap();
    assert!(readings > 0);
    assert_eq!(
        count(&app, "SELECT count(*) FROM telemetry").await,
        readings
    );
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM devices WHERE tenant_id = 'acme' AND model = 'sim'"
        )
        .await,
        2
    );
    app.stop().await;
}
