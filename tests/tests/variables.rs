//! A bad variable value reaching the components, as it does on Spin, which has no
//! start hook (`toaster up` refuses to start with one: infra/cli/tests/variables.rs).
//! The request that needs the variable is answered 500 naming it and what it takes,
//! never its value; it is never served with a default; requests that do not need it
//! are served.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use toaster_core::ids::{DeviceId, TenantId};
use toaster_core::token::AccessClaims;
use toaster_host::Limits;
use toaster_tests::TestApp;

async fn start(extra: &[(&str, &str)]) -> TestApp {
    let extra: BTreeMap<String, String> = extra
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    TestApp::start_with(Limits::default(), extra).await
}

async fn with_device(app: &TestApp) -> String {
    let client = app.db.client().await;
    client
        .batch_execute(
            "INSERT INTO tenants (tenant_id, name, created_by) VALUES ('acme', 'acme', 'test');
             INSERT INTO devices (tenant_id, device_id, model, channel) VALUES ('acme', 'd1', 't1000', 'stable');",
        )
        .await
        .unwrap();
    let claims = AccessClaims::device(
        TenantId::parse("acme").unwrap(),
        &DeviceId::parse("d1").unwrap(),
        1,
    );
    app.signer.mint(&claims, Duration::from_secs(600)).unwrap()
}

async fn send(app: &TestApp, request: reqwest::RequestBuilder) -> (u16, Value) {
    let _ = app;
    let r = request.send().await.expect("request");
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// The 500 for `variable`, whose bad value was `value`.
fn assert_names(status: u16, body: &Value, variable: &str, value: &str) {
    assert_eq!(status, 500, "{body}");
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(&format!("variable {variable} is invalid")),
        "{detail}"
    );
    assert!(!detail.contains(value), "the value stays out: {detail}");
}

fn telemetry(app: &TestApp, token: &str) -> reqwest::RequestBuilder {
    app.http()
        .post(app.url("/v1/telemetry"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(r#"{"readings":[{"metric":"m","ts":"2026-01-01T00:00:00Z","value":1}]}"#)
}

#[tokio::test]
async fn rate_limits_and_counts() {
    let app = start(&[
        ("device_rate_limit", "lots"),
        ("max_query_buckets", "-5"),
        ("unauthenticated_failure_rate_limit", "0/61s"),
    ])
    .await;
    let device = with_device(&app).await;
    let admin = app.admin_token("acme");

    let (status, body) = send(&app, telemetry(&app, &device)).await;
    assert_names(status, &body, "device_rate_limit", "lots");
    // Again: every request that needs it fails, none is served with 600/60s.
    let (status, body) = send(&app, telemetry(&app, &device)).await;
    assert_names(status, &body, "device_rate_limit", "lots");

    let metrics = app
        .http()
        .get(app.url("/v1/metrics/fleet/m?from=0&to=3600000&bucket=1h"))
        .bearer_auth(&admin);
    let (status, body) = send(&app, metrics).await;
    assert_names(status, &body, "max_query_buckets", "-5");

    let login = app
        .http()
        .post(app.url("/v1/auth/token"))
        .header("content-type", "application/json")
        .body("{}");
    let (status, body) = send(&app, login).await;
    assert_names(status, &body, "unauthenticated_failure_rate_limit", "0/61s");

    // What needs none of them is served.
    let firmware = app
        .http()
        .get(app.url("/v1/ota/firmware"))
        .bearer_auth(&admin);
    let (status, body) = send(&app, firmware).await;
    assert_eq!(status, 200, "{body}");
    app.stop().await;
}

#[tokio::test]
async fn keys_and_sizes() {
    let app = start(&[
        ("token_signing_key", "short"),
        ("manifest_signing_key", "not a key"),
    ])
    .await;
    let (status, body) = send(&app, app.http().get(app.url("/v1/ota/signing-key"))).await;
    assert_names(status, &body, "manifest_signing_key", "not a key");
    let firmware = app
        .http()
        .get(app.url("/v1/ota/firmware"))
        .bearer_auth(app.admin_token("acme"));
    let (status, body) = send(&app, firmware).await;
    assert_names(status, &body, "token_signing_key", "short");
    app.stop().await;

    let app = start(&[("max_body_bytes", "0"), ("max_batch_readings", "many")]).await;
    let device = with_device(&app).await;
    let (status, body) = send(&app, telemetry(&app, &device)).await;
    assert_names(status, &body, "max_body_bytes", "\"0\"");
    app.stop().await;
}
