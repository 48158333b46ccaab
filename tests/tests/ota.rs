//! OTA end to end: firmware, rollouts, device checks and reports through the real
//! `ota` component in the host, against a fresh database per test.
//!
//! Tenants are created through the API; fleets of devices are inserted with SQL
//! matching `0001_identity.sql` (as the ingest tests do), and device tokens minted with
//! the app's signing key (what `POST /v1/auth/token` hands out). Cohorts are compared
//! with `toaster_core::ota::in_cohort`, the documented function; manifest signatures
//! are checked against the key the API publishes, over canonical bytes built here.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::{RequestBuilder, StatusCode};
use serde_json::{Value, json};
use toaster_core::ids::{DeviceId, TenantId};
use toaster_core::ota::{ManifestVerifier, in_cohort};
use toaster_core::token::AccessClaims;
use toaster_tests::TestApp;

const SHA: &str = "5f2c9a0e5f2c9a0e5f2c9a0e5f2c9a0e5f2c9a0e5f2c9a0e5f2c9a0e5f2c9a0e";

async fn send(request: RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.expect("request");
    let status = response.status();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

struct Api<'a> {
    app: &'a TestApp,
}

impl<'a> Api<'a> {
    fn new(app: &'a TestApp) -> Self {
        Api { app }
    }

    fn post(&self, path: &str, token: &str, body: &Value) -> RequestBuilder {
        self.app
            .http()
            .post(self.app.url(path))
            .bearer_auth(token)
            .json(body)
    }

    fn get(&self, path: &str, token: &str) -> RequestBuilder {
        self.app.http().get(self.app.url(path)).bearer_auth(token)
    }

    /// Creates a tenant through the API; an admin token for it.
    async fn tenant(&self, id: &str) -> String {
        let operator = self.app.operator_token();
        let (status, body) = send(self.post(
            "/v1/tenants",
            &operator,
            &json!({"id": id, "name": format!("Tenant {id}")}),
        ))
        .await;
        assert_eq!(status, 201, "{body}");
        self.app.admin_token(id)
    }

    /// Inserts `ids` as active devices of `tenant`.
    async fn devices(
        &self,
        tenant: &str,
        ids: &[String],
        model: &str,
        channel: &str,
        tags: &[&str],
    ) {
        let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
        self.app
            .db
            .client()
            .await
            .execute(
                "INSERT INTO devices (tenant_id, device_id, model, channel, tags) \
                 SELECT $1, id, $3, $4, $5 FROM unnest($2::text[]) AS id",
                &[&tenant, &ids, &model, &channel, &tags],
            )
            .await
            .expect("insert devices");
    }

    fn device_token(&self, tenant: &str, device: &str) -> String {
        let claims = AccessClaims::device(
            TenantId::parse(tenant).unwrap(),
            &DeviceId::parse(device).unwrap(),
            1,
        );
        self.app
            .signer
            .mint(&claims, Duration::from_secs(600))
            .unwrap()
    }

    async fn firmware(&self, admin: &str, model: &str, version: &str) -> String {
        let (status, body) = send(self.post(
            "/v1/ota/firmware",
            admin,
            &json!({"model": model, "version": version,
                    "url": format!("https://cdn.example.com/{model}/{version}.bin"),
                    "sha256": SHA, "size": 1_048_576, "notes": "test build"}),
        ))
        .await;
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    async fn rollout(&self, admin: &str, body: Value) -> Value {
        let (status, body) = send(self.post("/v1/ota/rollouts", admin, &body)).await;
        assert_eq!(status, 201, "{body}");
        body
    }

    async fn check(&self, tenant: &str, device: &str, version: &str) -> (StatusCode, Value) {
        let token = self.device_token(tenant, device);
        // `+` (build metadata) would read as a space in a query string.
        let version = version.replace('+', "%2B");
        send(self.get(&format!("/v1/ota/check?version={version}"), &token)).await
    }

    async fn report(&self, tenant: &str, device: &str, body: Value) -> (StatusCode, Value) {
        let token = self.device_token(tenant, device);
        send(self.post("/v1/ota/report", &token, &body)).await
    }

    async fn rollout_state(&self, admin: &str, id: &str) -> Value {
        let (status, body) = send(self.get(&format!("/v1/ota/rollouts/{id}"), admin)).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    async fn act(&self, admin: &str, id: &str, action: &str) -> (StatusCode, Value) {
        send(self.post(
            &format!("/v1/ota/rollouts/{id}/{action}"),
            admin,
            &json!({}),
        ))
        .await
    }
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:04}")).collect()
}

fn rollout_body(firmware: &str, stages: &[u32], threshold: f64, min_reports: u32) -> Value {
    json!({
        "firmware_id": firmware,
        "selector": {"channel": "stable", "versions": ">=1.0.0, <2.0.0"},
        "stages": stages,
        "failure_threshold": threshold,
        "min_reports": min_reports,
        "report_timeout_secs": 3600,
    })
}

/// The canonical bytes of a manifest, written out here: members sorted by name, no
/// whitespace.
fn canonical(manifest: &Value) -> Vec<u8> {
    let object = manifest.as_object().expect("manifest object");
    let mut keys: Vec<&String> = object.keys().collect();
    keys.sort();
    let members: Vec<String> = keys
        .iter()
        .map(|k| format!("{}:{}", Value::String((*k).clone()), object[*k]))
        .collect();
    format!("{{{}}}", members.join(",")).into_bytes()
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    app.db
        .client()
        .await
        .query_one(sql, &[])
        .await
        .expect(sql)
        .get(0)
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn firmware_is_immutable_and_its_version_unique_per_model() {
    let app = TestApp::start().await;
    let api = Api::new(&app);
    let admin = api.tenant("acme").await;
    let id = api.firmware(&admin, "t1000", "1.4.0+build.7").await;

    let (status, body) = send(api.get(&format!("/v1/ota/firmware/{id}"), &admin)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], "1.4.0+build.7");
    assert_eq!(body["model"], "t1000");
    assert_eq!(body["sha256"], SHA);
    assert_eq!(body["size"], 1_048_576);

    // The same release again, with or without other build metadata: 409.
    for version in ["1.4.0", "1.4.0+build.8"] {
        let (status, body) = send(api.post(
            "/v1/ota/firmware",
            &admin,
            &json!({"model": "t1000", "version": version, "url": "https://x.example/a", "sha256": SHA, "size": 1}),
        ))
        .await;
        assert_eq!(status, 409, "{version}: {body}");
    }
    // A pre-release of it, or the same version for another model, is new.
    api.firmware(&admin, "t1000", "1.4.0-rc.1").await;
    api.firmware(&admin, "t2000", "1.4.0").await;

    // No way to change or delete it.
    for method in [
        reqwest::Method::PUT,
        reqwest::Method::PATCH,
        reqwest::Method::DELETE,
    ] {
        let response = app
            .http()
            .request(method.clone(), app.url(&format!("/v1/ota/firmware/{id}")))
            .bearer_auth(&admin)
            .json(&json!({"url": "https://evil.example/x"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 405, "{method}");
        assert_eq!(response.headers()["allow"], "GET", "{method}");
    }

    let (status, list) = send(api.get("/v1/ota/firmware?model=t1000", &admin)).await;
    assert_eq!(status, 200);
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    let (_, page) = send(api.get("/v1/ota/firmware?limit=1", &admin)).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, rest) = send(api.get(&format!("/v1/ota/firmware?cursor={cursor}"), &admin)).await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 2);

    let (_, audit) = send(api.get("/v1/audit", &admin)).await;
    let created = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "firmware.created")
        .count();
    assert_eq!(created, 3);
    app.stop().await;
}

#[tokio::test]
async fn checks_offer_only_devices_in_the_selector_a_signed_manifest() {
    let app = TestApp::start().await;
    let api = Api::new(&app);
    let admin = api.tenant("acme").await;
    api.devices(
        "acme",
        &["ok".into()],
        "t1000",
        "stable",
        &["site=berlin", "ring=1"],
    )
    .await;
    api.devices(
        "acme",
        &["other-model".into()],
        "t2000",
        "stable",
        &["site=berlin"],
    )
    .await;
    api.devices(
        "acme",
        &["other-channel".into()],
        "t1000",
        "beta",
        &["site=berlin"],
    )
    .await;
    api.devices("acme", &["no-tag".into()], "t1000", "stable", &[])
        .await;
    let firmware = api.firmware(&admin, "t1000", "1.4.0").await;
    let rollout = api
        .rollout(
            &admin,
            json!({
                "firmware_id": firmware,
                "selector": {"channel": "stable", "tags": ["site=berlin"], "versions": ">=1.2.0, <1.4.0"},
                "stages": [100], "failure_threshold": 0.5, "min_reports": 5,
            }),
        )
        .await;
    let rollout_id = rollout["id"].as_str().unwrap();
    assert_eq!(rollout["state"], "active");
    assert_eq!(rollout["stage_percent"], 100);

    let (status, body) = api.check("acme", "ok", "1.3.2").await;
    assert_eq!(status, 200, "{body}");
    let manifest = &body["manifest"];
    assert_eq!(
        manifest,
        &json!({"model": "t1000", "rollout_id": rollout_id, "version": "1.4.0",
                "url": "https://cdn.example.com/t1000/1.4.0.bin", "sha256": SHA, "size": 1_048_576})
    );

    // The signature verifies with the published key over the canonical bytes, and
    // fails when any one byte changes.
    let key = app
        .http()
        .get(app.url("/v1/ota/signing-key"))
        .send()
        .await
        .unwrap();
    assert_eq!(key.status(), 200);
    let key: Value = key.json().await.unwrap();
    assert_eq!(key["algorithm"], "Ed25519");
    assert_eq!(key["key_id"], body["key_id"]);
    let verifier = ManifestVerifier::from_pem(key["public_key"].as_str().unwrap()).unwrap();
    let signature = body["signature"].as_str().unwrap();
    let bytes = canonical(manifest);
    assert!(verifier.verify(&bytes, signature));
    for i in 0..bytes.len() {
        let mut changed = bytes.clone();
        changed[i] = changed[i].wrapping_add(1);
        assert!(!verifier.verify(&changed, signature), "byte {i}");
    }

    // Asking again gives the same manifest: the answer is stable.
    let (status, again) = api.check("acme", "ok", "1.3.2").await;
    assert_eq!(status, 200);
    assert_eq!(again["manifest"], body["manifest"]);

    // Never a downgrade, never the same release, never outside the range (and a
    // pre-release is outside a range that names none), never build-metadata-only.
    for version in [
        "1.4.0",
        "1.4.0+other",
        "1.5.0",
        "2.0.0",
        "1.1.9",
        "1.3.0-beta.1",
    ] {
        let (status, body) = api.check("acme", "ok", version).await;
        assert_eq!(status, 204, "{version}: {body}");
    }
    // Never another model, another channel, or a device without the selector's tags.
    for device in ["other-model", "other-channel", "no-tag"] {
        let (status, body) = api.check("acme", device, "1.3.2").await;
        assert_eq!(status, 204, "{device}: {body}");
    }
    assert_eq!(
        count(&app, "SELECT count(*) FROM rollout_devices").await,
        1,
        "only `ok` was offered"
    );
    let state = api.rollout_state(&admin, rollout_id).await;
    assert_eq!(state["counts"]["offered"], 1);
    assert_eq!(state["devices"], 1);
    app.stop().await;
}

#[tokio::test]
async fn a_later_stage_keeps_every_device_of_the_earlier_ones() {
    let app = TestApp::start().await;
    let api = Api::new(&app);
    let admin = api.tenant("acme").await;
    let fleet = ids("sn", 300);
    api.devices("acme", &fleet, "t1000", "stable", &[]).await;
    let firmware = api.firmware(&admin, "t1000", "1.1.0").await;
    let rollout = api
        .rollout(&admin, rollout_body(&firmware, &[10, 50, 100], 0.5, 1))
        .await;
    let id = rollout["id"].as_str().unwrap().to_owned();

    let mut previous: BTreeSet<String> = BTreeSet::new();
    let mut installed: BTreeSet<String> = BTreeSet::new();
    for (stage, percent) in [(0usize, 10u8), (1, 50), (2, 100)] {
        let mut offered = BTreeSet::new();
        for device in &fleet {
            let (status, body) = api.check("acme", device, "1.0.0").await;
            match status.as_u16() {
                200 => {
                    assert_eq!(body["manifest"]["rollout_id"], id.as_str());
                    offered.insert(device.clone());
                }
                204 => {}
                other => panic!("{other}: {body}"),
            }
        }
        // Exactly the cohort the documented hash gives, less devices that installed.
        let expected: BTreeSet<String> = fleet
            .iter()
            .filter(|d| in_cohort(&id, &DeviceId::parse(d).unwrap(), percent))
            .filter(|d| !installed.contains(*d))
            .cloned()
            .collect();
        assert_eq!(offered, expected, "stage {stage} ({percent}%)");
        assert!(
            offered.is_superset(&previous),
            "stage {stage} dropped a device"
        );
        previous = offered;
        if stage < 2 {
            // One success makes the stage healthy (min_reports 1).
            let first = previous.iter().next().unwrap().clone();
            let (status, body) = api
                .report(
                    "acme",
                    &first,
                    json!({"rollout_id": id, "status": "installed", "version": "1.1.0"}),
                )
                .await;
            assert_eq!(status, 200, "{body}");
            installed.insert(first.clone());
            previous.remove(&first);
            let (status, body) = api.act(&admin, &id, "advance").await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["stage"], stage + 1);
        }
    }
    assert_eq!(previous.len(), fleet.len() - 2);
    let (status, body) = api.act(&admin, &id, "advance").await;
    assert_eq!(status, 409, "the last stage: {body}");
    app.stop().await;
}

#[tokio::test]
async fn the_rollout_halts_itself_at_exactly_the_threshold_and_not_before_min_reports() {
    let app = TestApp::start().await;
    let api = Api::new(&app);
    let admin = api.tenant("acme").await;
    let fleet = ids("sn", 6);
    api.devices("acme", &fleet, "t1000", "stable", &[]).await;
    let firmware = api.firmware(&admin, "t1000", "1.1.0").await;
    let rollout = api
        .rollout(&admin, rollout_body(&firmware, &[100], 0.5, 4))
        .await;
    let id = rollout["id"].as_str().unwrap().to_owned();
    for device in &fleet {
        assert_eq!(api.check("acme", device, "1.0.0").await.0, 200);
    }
    let report = |device: usize, status: &str| {
        let version = if status == "installed" {
            "1.1.0"
        } else {
            "1.0.0"
        };
        let body = json!({"rollout_id": id, "status": status, "version": version, "error": "flash write failed"});
        let device = fleet[device].clone();
        let api = &api;
        async move { api.report("acme", &device, body).await }
    };
    // Three failures: every report a failure, but fewer than min_reports.
    for device in 0..3 {
        assert_eq!(report(device, "failed").await.0, 200);
    }
    assert_eq!(api.rollout_state(&admin, &id).await["state"], "active");
    // In-progress reports are not outcomes.
    assert_eq!(report(3, "downloading").await.0, 200);
    assert_eq!(api.rollout_state(&admin, &id).await["state"], "active");
    // The fourth outcome: 3 of 4 failed, over 0.5.
    assert_eq!(report(4, "installed").await.0, 200);
    let state = api.rollout_state(&admin, &id).await;
    assert_eq!(state["state"], "halted", "{state}");
    assert_eq!(state["counts"]["failed"], 3);
    assert_eq!(state["counts"]["installed"], 1);
    assert_eq!(state["counts"]["downloading"], 1);
    assert_eq!(state["counts"]["offered"], 1);
    assert_eq!(state["failure_rate"], 0.75);
    assert!(state["halt_reason"].as_str().unwrap().contains("3 of 4"));

    // Nothing is offered from a halted rollout, not even to a device offered before.
    assert_eq!(api.check("acme", &fleet[5], "1.0.0").await.0, 204);
    // It cannot be resumed or advanced; it can be aborted.
    assert_eq!(api.act(&admin, &id, "resume").await.0, 409);
    assert_eq!(api.act(&admin, &id, "advance").await.0, 409);

    let (_, audit) = send(api.get("/v1/audit", &admin)).await;
    let halted: Vec<&Value> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "rollout.halted")
        .collect();
    assert_eq!(halted.len(), 1, "{audit}");
    assert_eq!(halted[0]["target"], id.as_str());
    assert!(
        halted[0]["details"]["reason"]
            .as_str()
            .unwrap()
            .contains("threshold")
    );

    // Exactly at the threshold: 2 of 4 with threshold 0.5 halts; 1 of 3 did not.
    let firmware = api.firmware(&admin, "t2000", "1.1.0").await;
    let fleet2 = ids("t2", 4);
    api.devices("acme", &fleet2, "t2000", "stable", &[]).await;
    let rollout = api
        .rollout(&admin, rollout_body(&firmware, &[100], 0.5, 4))
        .await;
    let id2 = rollout["id"].as_str().unwrap().to_owned();
    for device in &fleet2 {
        assert_eq!(api.check("acme", device, "1.0.0").await.0, 200);
    }
    for (device, status) in [(0, "installed"), (1, "installed"), (2, "failed")] {
        let version = if status == "installed" {
            "1.1.0"
        } else {
            "1.0.0"
        };
        let (code, body) = api
            .report(
                "acme",
                &fleet2[device],
                json!({"rollout_id": id2, "status": status, "version": version}),
            )
            .await;
        assert_eq!(code, 200, "{body}");
    }
    assert_eq!(api.rollout_state(&admin, &id2).await["state"], "active");
    let (code, _) = api
        .report(
            "acme",
            &fleet2[3],
            json!({"rollout_id": id2, "status": "failed", "version": "1.0.0"}),
        )
        .await;
    assert_eq!(code, 200);
    let state = api.rollout_state(&admin, &id2).await;
    assert_eq!(state["state"], "halted", "{state}");
    assert_eq!(state["failure_rate"], 0.5);
    app.stop().await;
}

#[tokio::test]
async fn a_device_that_does_not_report_in_time_counts_as_failed() {
    let app = TestApp::start().await;
    let api = Api::new(&app);
    let admin = api.tenant("acme").await;
    let fleet = ids("sn", 2);
    api.devices("acme", &fleet, "t1000", "stable", &[]).await;
    let firmware = api.firmware(&admin, "t1000", "1.1.0").await;
    let mut body = rollout_body(&firmware, &[100], 0.5, 2);
    body["report_timeout_secs"] = json!(2);
    let id = api.rollout(&admin, body).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(api.check("acme", &fleet[0], "1.0.0").await.0, 200);
    assert_eq!(api.check("acme", &fleet[1], "1.0.0").await.0, 200);
    let (status, _) = api
        .report(
            "acme",
            &fleet[1],
            json!({"rollout_id": id, "status": "installed", "version": "1.1.0"}),
        )
        .await;
    assert_eq!(status, 200);
    let state = api.rollout_state(&admin, &id).await;
    assert_eq!(state["counts"]["offered"], 1);
    assert_eq!(state["counts"]["timed_out"], 0);
    assert_eq!(state["state"], "active");

    tokio::time::sleep(Duration::from_millis(2500)).await;
    // 1 installed, 1 silent past its deadline: 1 of 2 failed, at the threshold.
    let state = api.rollout_state(&admin, &id).await;
    assert_eq!(state["counts"]["timed_out"], 1, "{state}");
    assert_eq!(state["counts"]["offered"], 0);
    assert_eq!(state["failure_rate"], 0.5);
    assert_eq!(state["state"], "halted", "{state}");
    app.stop().await;
}

/// The tenant's cached active rollouts, as the check path reads them.
async fn cached_rollouts(app: &TestApp, tenant: &str) -> Option<Value> {
    app.host.kv().get_json("default", &format!("ota:{tenant}"))
}

#[tokio::test]
async fn a_silent_fleet_stops_offers_at_once_and_halts_the_rollout_when_read() {
    let app = TestApp::start().await;
    let api = Api::new(&app);
    let admin = api.tenant("acme").await;
    let fleet = ids("sn", 3);
    api.devices("acme", &fleet, "t1000", "stable", &[]).await;
    let firmware = api.firmware(&admin, "t1000", "1.1.0").await;
    let mut body = rollout_body(&firmware, &[100], 0.5, 2);
    body["report_timeout_secs"] = json!(2);
    let id = api.rollout(&admin, body).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(api.check("acme", &fleet[0], "1.0.0").await.0, 200);
    assert_eq!(api.check("acme", &fleet[1], "1.0.0").await.0, 200);
    // The check path cached the tenant's active rollouts.
    let cached = cached_rollouts(&app, "acme").await.expect("cached");
    assert_eq!(cached["rollouts"][0]["id"], id.as_str());
    assert_eq!(cached["rollouts"][0]["percent"], 100);

    // Both devices go silent (bricked toasters do not report).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // The entry expires (as it does after 10 s); the next check rebuilds it, leaves out
    // the rollout the halt rule stops, and offers nothing, though the third device is
    // in the cohort. The check writes nothing: the rollout is not halted by it.
    app.host.kv().delete("default", "ota:acme");
    let (status, body) = api.check("acme", &fleet[2], "1.0.0").await;
    assert_eq!(status, 204, "{body}");
    let cached = cached_rollouts(&app, "acme").await.expect("rebuilt");
    assert_eq!(cached["rollouts"], json!([]));
    assert_eq!(
        count(&app, "SELECT count(*) FROM rollouts WHERE state = 'active'").await,
        1
    );
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM audit_log WHERE action = 'rollout.halted'"
        )
        .await,
        0
    );

    // Reading the rollout processes the timeouts: it halts there, once.
    let state = api.rollout_state(&admin, &id).await;
    assert_eq!(state["state"], "halted", "{state}");
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM audit_log WHERE action = 'rollout.halted' AND details->>'trigger' = 'read'"
        )
        .await,
        1
    );
    app.stop().await;
}

#[tokio::test]
async fn concurrent_reports_lose_no_count_and_halt_once() {
    let app = TestApp::start().await;
    let api = Api::new(&app);
    let admin = api.tenant("acme").await;
    let fleet = ids("sn", 40);
    api.devices("acme", &fleet, "t1000", "stable", &[]).await;
    let firmware = api.firmware(&admin, "t1000", "1.1.0").await;
    // A threshold no count reaches: every report must be counted.
    let id = api
        .rollout(&admin, rollout_body(&firmware, &[100], 1.0, 1000))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for device in &fleet {
        assert_eq!(api.check("acme", device, "1.0.0").await.0, 200);
    }
    let reports = fleet.iter().enumerate().map(|(i, device)| {
        let (status, version) = if i % 2 == 0 {
            ("installed", "1.1.0")
        } else {
            ("failed", "1.0.0")
        };
        api.report(
            "acme",
            device,
            json!({"rollout_id": id, "status": status, "version": version}),
        )
    });
    for (status, body) in futures::future::join_all(reports).await {
        assert_eq!(status, 200, "{body}");
    }
    let state = api.rollout_state(&admin, &id).await;
    assert_eq!(state["counts"]["installed"], 20, "{state}");
    assert_eq!(state["counts"]["failed"], 20, "{state}");
    assert_eq!(state["state"], "active");

    // Concurrent failures reaching the threshold only all together halt the rollout,
    // from a report, exactly once; checks racing with them are either counted by the
    // halt or offered nothing.
    let firmware = api.firmware(&admin, "t2000", "1.1.0").await;
    let reporters = ids("t2", 20);
    let latecomers = ids("late", 200);
    api.devices("acme", &reporters, "t2000", "stable", &[])
        .await;
    api.devices("acme", &latecomers, "t2000", "stable", &[])
        .await;
    let id2 = api
        .rollout(&admin, rollout_body(&firmware, &[100], 0.5, 20))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for device in &reporters {
        assert_eq!(api.check("acme", device, "1.0.0").await.0, 200);
    }
    let reports = reporters.iter().map(|device| {
        api.report(
            "acme",
            device,
            json!({"rollout_id": id2, "status": "failed", "version": "1.0.0"}),
        )
    });
    let checks = latecomers
        .iter()
        .map(|device| api.check("acme", device, "1.0.0"));
    let (reports, checks) = futures::future::join(
        futures::future::join_all(reports),
        futures::future::join_all(checks),
    )
    .await;
    for (status, body) in reports {
        assert_eq!(status, 200, "{body}");
    }
    for (status, body) in checks {
        assert!(status == 200 || status == 204, "{status}: {body}");
    }
    // Halted by the last report, before anyone read the rollout.
    assert_eq!(
        count(
            &app,
            &format!(
                "SELECT count(*) FROM rollouts WHERE rollout_id = '{id2}' AND state = 'halted'"
            )
        )
        .await,
        1
    );
    let halts = app
        .db
        .client()
        .await
        .query(
            "SELECT details FROM audit_log WHERE action = 'rollout.halted'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(halts.len(), 1);
    let details: Value = halts[0].get(0);
    assert_eq!(details["trigger"], "report", "{details}");
    // Every device offered the rollout was counted when it halted: no offer was made
    // after the halt's count.
    let counts = &details["counts"];
    let counted: i64 = [
        "offered",
        "downloading",
        "installing",
        "installed",
        "failed",
        "timed_out",
    ]
    .iter()
    .map(|k| counts[*k].as_i64().unwrap())
    .sum();
    let offered = count(
        &app,
        &format!("SELECT count(*) FROM rollout_devices WHERE rollout_id = '{id2}'"),
    )
    .await;
    assert_eq!(counted, offered, "{details}");
    for device in latecomers.iter().take(50) {
        assert_eq!(api.check("acme", device, "1.0.0").await.0, 204);
    }
    let state = api.rollout_state(&admin, &id2).await;
    assert_eq!(state["state"], "halted");
    assert_eq!(state["counts"]["failed"], 20, "{state}");
    app.stop().await;
}

#[tokio::test]
async fn paused_halted_and_aborted_rollouts_offer_nothing() {
    let app = TestApp::start().await;
    let api = Api::new(&app);
    let admin = api.tenant("acme").await;
    api.devices("acme", &["d1".into(), "d2".into()], "t1000", "stable", &[])
        .await;
    let firmware = api.firmware(&admin, "t1000", "1.1.0").await;
    let id = api
        .rollout(&admin, rollout_body(&firmware, &[100], 0.5, 5))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // One open rollout per (model, channel).
    let (status, body) = send(api.post(
        "/v1/ota/rollouts",
        &admin,
        &rollout_body(&firmware, &[100], 0.5, 5),
    ))
    .await;
    assert_eq!(status, 409, "{body}");

    let (status, body) = api.act(&admin, &id, "pause").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "paused");
    assert_eq!(api.check("acme", "d1", "1.0.0").await.0, 204);
    assert_eq!(api.act(&admin, &id, "pause").await.0, 409);
    assert_eq!(api.act(&admin, &id, "advance").await.0, 409);
    let (status, body) = api.act(&admin, &id, "resume").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(api.check("acme", "d1", "1.0.0").await.0, 200);
    let (status, body) = api.act(&admin, &id, "abort").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "aborted");
    assert_eq!(api.check("acme", "d1", "1.0.0").await.0, 204);
    assert_eq!(api.check("acme", "d2", "1.0.0").await.0, 204);
    assert_eq!(api.act(&admin, &id, "resume").await.0, 409);
    assert_eq!(api.act(&admin, &id, "abort").await.0, 409);

    // Aborting frees the slot.
    let next = api
        .rollout(&admin, rollout_body(&firmware, &[100], 0.5, 5))
        .await;
    assert_eq!(next["state"], "active");
    assert_eq!(api.check("acme", "d2", "1.0.0").await.0, 200);

    let (_, list) = send(api.get("/v1/ota/rollouts?state=aborted", &admin)).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let (_, audit) = send(api.get("/v1/audit", &admin)).await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for action in [
        "rollout.created",
        "rollout.paused",
        "rollout.resumed",
        "rollout.aborted",
    ] {
        assert!(actions.contains(&action), "{action}: {actions:?}");
    }
    app.stop().await;
}

#[tokio::test]
async fn reports_follow_the_device_s_progress() {
    let app = TestApp::start().await;
    let api = Api::new(&app);
    let admin = api.tenant("acme").await;
    api.devices("acme", &["d1".into(), "d2".into()], "t1000", "stable", &[])
        .await;
    let firmware = api.firmware(&admin, "t1000", "1.1.0").await;
    let id = api
        .rollout(&admin, rollout_body(&firmware, &[100], 1.0, 100))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Not offered yet: 404.
    let report = |status: &str, version: &str| json!({"rollout_id": id, "status": status, "version": version});
    assert_eq!(
        api.report("acme", "d1", report("downloading", "1.0.0"))
            .await
            .0,
        404
    );
    assert_eq!(api.check("acme", "d1", "1.0.0").await.0, 200);
    assert_eq!(
        api.report("acme", "d1", report("installing", "1.0.0"))
            .await
            .0,
        200
    );
    // Retried: harmless. Backwards: 409.
    assert_eq!(
        api.report("acme", "d1", report("installing", "1.0.0"))
            .await
            .0,
        200
    );
    assert_eq!(
        api.report("acme", "d1", report("downloading", "1.0.0"))
            .await
            .0,
        409
    );
    // Installed must name the rollout's version.
    assert_eq!(
        api.report("acme", "d1", report("installed", "1.0.5"))
            .await
            .0,
        422
    );
    let (status, body) = api
        .report("acme", "d1", report("installed", "1.1.0+b3"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "installed");
    // Nothing after installed.
    assert_eq!(
        api.report("acme", "d1", report("failed", "1.0.0")).await.0,
        409
    );
    assert_eq!(
        api.report("acme", "d1", report("installed", "1.1.0"))
            .await
            .0,
        200
    );
    // An installed device is offered nothing more, even claiming its old version.
    assert_eq!(api.check("acme", "d1", "1.0.0").await.0, 204);

    // Erasing a device erases its rollout state.
    assert_eq!(api.check("acme", "d2", "1.0.0").await.0, 200);
    let response = app
        .http()
        .delete(app.url("/v1/devices/d2?erase=true"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM rollout_devices WHERE device_id = 'd2'"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM rollout_devices WHERE device_id = 'd1'"
        )
        .await,
        1
    );
    app.stop().await;
}

#[tokio::test]
async fn another_tenants_firmware_and_rollouts_are_invisible() {
    let app = TestApp::start().await;
    let api = Api::new(&app);
    let acme = api.tenant("acme").await;
    let globex = api.tenant("globex").await;
    api.devices("acme", &["a1".into()], "t1000", "stable", &[])
        .await;
    api.devices("globex", &["g1".into()], "t1000", "stable", &[])
        .await;
    let firmware = api.firmware(&acme, "t1000", "1.1.0").await;
    let id = api
        .rollout(&acme, rollout_body(&firmware, &[100], 0.5, 5))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(api.check("acme", "a1", "1.0.0").await.0, 200);

    assert_eq!(
        send(api.get(&format!("/v1/ota/firmware/{firmware}"), &globex))
            .await
            .0,
        404
    );
    assert_eq!(
        send(api.get(&format!("/v1/ota/rollouts/{id}"), &globex))
            .await
            .0,
        404
    );
    let (_, list) = send(api.get("/v1/ota/firmware", &globex)).await;
    assert_eq!(list["items"], json!([]));
    let (_, list) = send(api.get("/v1/ota/rollouts", &globex)).await;
    assert_eq!(list["items"], json!([]));
    for action in ["advance", "pause", "resume", "abort"] {
        assert_eq!(api.act(&globex, &id, action).await.0, 404, "{action}");
    }
    // Another tenant's firmware cannot be rolled out.
    let (status, body) = send(api.post(
        "/v1/ota/rollouts",
        &globex,
        &rollout_body(&firmware, &[100], 0.5, 5),
    ))
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"][0]["pointer"], "/firmware_id");
    // Its device, same model and channel, is offered nothing and cannot report.
    assert_eq!(api.check("globex", "g1", "1.0.0").await.0, 204);
    let (status, _) = api
        .report(
            "globex",
            "g1",
            json!({"rollout_id": id, "status": "failed", "version": "1.0.0"}),
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(api.rollout_state(&acme, &id).await["state"], "active");
    app.stop().await;
}

#[tokio::test]
async fn bad_input_is_refused_with_4xx() {
    let app = TestApp::start().await;
    let api = Api::new(&app);
    let admin = api.tenant("acme").await;
    api.devices("acme", &["d1".into()], "t1000", "stable", &[])
        .await;
    let device = api.device_token("acme", "d1");
    let firmware = api.firmware(&admin, "t1000", "1.1.0").await;

    let good = json!({"model": "t1000", "version": "2.0.0", "url": "https://x.example/a.bin", "sha256": SHA, "size": 10});
    let edits: [(&str, Value, &str); 13] = [
        ("version", json!("v2.0.0"), "/version"),
        ("version", json!("2.0"), "/version"),
        ("version", json!(2), "/version"),
        ("url", json!("http://x.example/a.bin"), "/url"),
        // Credentials would go to every device; the others no device could fetch.
        ("url", json!("https://user:pw@x.example/a.bin"), "/url"),
        ("url", json!("https://x.example/a\"b|c\\d"), "/url"),
        ("url", json!("https://[2001:db8::1/a.bin"), "/url"),
        ("sha256", json!("ABC"), "/sha256"),
        ("size", json!(0), "/size"),
        ("size", json!(-1), "/size"),
        ("model", json!("bad model"), "/model"),
        ("notes", json!("x".repeat(5000)), "/notes"),
        ("extra", json!(1), "/extra"),
    ];
    for (field, value, pointer) in edits {
        let mut body = good.clone();
        body[field] = value;
        let (status, problem) = send(api.post("/v1/ota/firmware", &admin, &body)).await;
        assert_eq!(status, 422, "{field}: {problem}");
        assert_eq!(problem["errors"][0]["pointer"], pointer, "{problem}");
    }
    let response = app
        .http()
        .post(app.url("/v1/ota/firmware"))
        .bearer_auth(&admin)
        .header("content-type", "text/plain")
        .body(good.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
    let response = app
        .http()
        .post(app.url("/v1/ota/firmware"))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body("{\"model\":")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);

    let rollout_edits: [(&str, Value, &str); 9] = [
        ("stages", json!([]), "/stages"),
        ("stages", json!([50, 10]), "/stages"),
        ("stages", json!([0, 100]), "/stages"),
        ("stages", json!([1, 101]), "/stages"),
        ("failure_threshold", json!(0), "/failure_threshold"),
        ("failure_threshold", json!(1.5), "/failure_threshold"),
        ("min_reports", json!(0), "/min_reports"),
        ("report_timeout_secs", json!(0), "/report_timeout_secs"),
        ("firmware_id", json!("fw_0000000000000000"), "/firmware_id"),
    ];
    for (field, value, pointer) in rollout_edits {
        let mut body = rollout_body(&firmware, &[1, 10, 100], 0.1, 5);
        body[field] = value;
        let (status, problem) = send(api.post("/v1/ota/rollouts", &admin, &body)).await;
        assert_eq!(status, 422, "{field}: {problem}");
        assert_eq!(problem["errors"][0]["pointer"], pointer, "{problem}");
    }
    let mut body = rollout_body(&firmware, &[100], 0.1, 5);
    body["selector"]["versions"] = json!(">>1");
    let (status, problem) = send(api.post("/v1/ota/rollouts", &admin, &body)).await;
    assert_eq!(status, 422);
    assert_eq!(problem["errors"][0]["pointer"], "/selector/versions");
    let mut body = rollout_body(&firmware, &[100], 0.1, 5);
    body["selector"].as_object_mut().unwrap().remove("channel");
    assert_eq!(
        send(api.post("/v1/ota/rollouts", &admin, &body)).await.0,
        422
    );
    assert_eq!(count(&app, "SELECT count(*) FROM rollouts").await, 0);

    // Checks: the version is required and must be semver; no unknown parameters.
    for query in [
        "",
        "?version=",
        "?version=1.2",
        "?version=v1.2.3",
        "?version=1.0.0&model=t1000",
        "?version=1.0.0&version=1.0.1",
    ] {
        let (status, body) = send(api.get(&format!("/v1/ota/check{query}"), &device)).await;
        assert_eq!(status, 400, "{query}: {body}");
    }
    // Reports.
    for body in [
        json!({"rollout_id": "ro_0000000000000000", "status": "exploded", "version": "1.0.0"}),
        json!({"rollout_id": "ro_0000000000000000", "status": "failed", "version": "1.0"}),
        json!({"rollout_id": "ro_0000000000000000", "status": "failed"}),
        json!({"rollout_id": "ro_0000000000000000", "status": "failed", "version": "1.0.0", "error": "x".repeat(2000)}),
    ] {
        let (status, problem) = send(api.post("/v1/ota/report", &device, &body)).await;
        assert_eq!(status, 422, "{body}: {problem}");
    }
    let (status, _) = send(api.post(
        "/v1/ota/report",
        &device,
        &json!({"rollout_id": "nope", "status": "failed", "version": "1.0.0"}),
    ))
    .await;
    assert_eq!(status, 404);

    // Roles and tokens.
    assert_eq!(
        send(api.get("/v1/ota/check?version=1.0.0", &admin)).await.0,
        403
    );
    assert_eq!(send(api.get("/v1/ota/firmware", &device)).await.0, 403);
    assert_eq!(
        send(api.post("/v1/ota/rollouts", &device, &json!({})))
            .await
            .0,
        403
    );
    assert_eq!(
        send(api.get("/v1/ota/firmware", "not-a-token")).await.0,
        401
    );
    let response = app
        .http()
        .get(app.url("/v1/ota/check?version=1.0.0"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(send(api.get("/v1/ota/rollouts/ro_zz", &admin)).await.0, 404);
    assert_eq!(
        send(api.get("/v1/ota/firmware/whatever", &admin)).await.0,
        404
    );
    assert_eq!(
        send(api.post(
            "/v1/ota/rollouts/ro_0000000000000000/explode",
            &admin,
            &json!({})
        ))
        .await
        .0,
        404
    );
    assert_eq!(send(api.get("/v1/ota/nothing-here", &admin)).await.0, 404);
    app.stop().await;
}

/// Hardening A and B: firmware, rollouts (and their nested selector) and reports are
/// objects, never serde's positional arrays, and no field is null.
#[tokio::test]
async fn bodies_are_objects_at_every_depth_and_no_field_is_null() {
    let app = TestApp::start().await;
    let api = Api::new(&app);
    let admin = api.tenant("acme").await;
    api.devices("acme", &["d1".into()], "t1000", "stable", &[])
        .await;
    let device = api.device_token("acme", "d1");
    let firmware = api.firmware(&admin, "t1000", "1.1.0").await;

    let cases: Vec<(&str, &str, Value, &str, &str)> = vec![
        // [model, version, url, sha256, size]: serde's sequence form of the release.
        (
            "/v1/ota/firmware",
            &admin,
            json!(["t1000", "2.0.0", "https://x.example/a.bin", SHA, 10]),
            "",
            "must be an object",
        ),
        (
            "/v1/ota/firmware",
            &admin,
            json!({"model": "t1000", "version": "2.0.0", "url": "https://x.example/a.bin", "sha256": SHA, "size": 10, "notes": null}),
            "/notes",
            "must not be null",
        ),
        (
            "/v1/ota/rollouts",
            &admin,
            json!([firmware, {"channel": "stable", "versions": "*"}]),
            "",
            "must be an object",
        ),
        // The nested selector as [channel, tags, versions].
        (
            "/v1/ota/rollouts",
            &admin,
            json!({"firmware_id": firmware, "selector": ["stable", [], "*"]}),
            "/selector",
            "must be an object",
        ),
        (
            "/v1/ota/rollouts",
            &admin,
            json!({"firmware_id": firmware, "selector": null}),
            "/selector",
            "must not be null",
        ),
        (
            "/v1/ota/rollouts",
            &admin,
            json!({"firmware_id": firmware, "selector": {"channel": "stable", "versions": "*", "tags": null}}),
            "/selector/tags",
            "must not be null",
        ),
        (
            "/v1/ota/rollouts",
            &admin,
            json!({"firmware_id": firmware, "selector": {"channel": "stable", "versions": "*"}, "stages": null}),
            "/stages",
            "must not be null",
        ),
        (
            "/v1/ota/report",
            &device,
            json!(["ro_0123456789abcdef", "failed", "1.0.0", "boom"]),
            "",
            "must be an object",
        ),
        (
            "/v1/ota/report",
            &device,
            json!({"rollout_id": "ro_0123456789abcdef", "status": "failed", "version": "1.0.0", "error": null}),
            "/error",
            "must not be null",
        ),
        (
            "/v1/ota/report",
            &device,
            json!({"rollout_id": "ro_0123456789abcdef", "status": {"failed": null}, "version": "1.0.0"}),
            "/status",
            "has the wrong type; expected one of `downloading`, `installing`, `installed`, `failed`",
        ),
    ];
    for (path, token, body, pointer, detail) in cases {
        let (status, problem) = send(api.post(path, token, &body)).await;
        assert_eq!(status, 422, "{path} {body}: {problem}");
        assert_eq!(
            problem["errors"][0]["pointer"], pointer,
            "{body}: {problem}"
        );
        assert_eq!(problem["errors"][0]["detail"], detail, "{body}: {problem}");
    }
    assert_eq!(count(&app, "SELECT count(*) FROM firmware").await, 1);
    assert_eq!(count(&app, "SELECT count(*) FROM rollouts").await, 0);
    app.stop().await;
}

/// Hardening C: every list checks its cursor (400), as the device list now does.
#[tokio::test]
async fn list_cursors_are_checked() {
    let app = TestApp::start().await;
    let api = Api::new(&app);
    let admin = api.tenant("acme").await;
    for path in [
        "/v1/ota/firmware?cursor=zzzz",
        "/v1/ota/firmware?cursor=fw_zz",
        "/v1/ota/rollouts?cursor=zzzz",
        "/v1/ota/rollouts?cursor=fw_0123456789abcdef",
    ] {
        let (status, problem) = send(api.get(path, &admin)).await;
        assert_eq!(status, 400, "{path}: {problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains("cursor"),
            "{problem}"
        );
    }
    app.stop().await;
}

/// Posts firmware `version` with `url`; the status and body.
async fn firmware_at(api: &Api<'_>, admin: &str, version: &str, url: &str) -> (StatusCode, Value) {
    send(api.post(
        "/v1/ota/firmware",
        admin,
        &json!({"model": "t1000", "version": version, "url": url, "sha256": SHA, "size": 10}),
    ))
    .await
}

/// Hardening D: devices fetch firmware inside customers' networks, so by default a
/// URL must not lead to loopback, private, link-local or other special-purpose
/// addresses in any spelling, nor to names that resolve inside the device's network.
#[tokio::test]
async fn firmware_urls_must_lead_to_the_public_internet_by_default() {
    let app = TestApp::start().await;
    let api = Api::new(&app);
    let admin = api.tenant("acme").await;
    let cases = [
        ("https://127.0.0.1/fw.bin", "loopback address (127.0.0.0/8)"),
        (
            "https://127.0.0.1:8443/fw.bin",
            "loopback address (127.0.0.0/8)",
        ),
        ("https://[::1]/fw.bin", "loopback address (::1/128)"),
        (
            "https://[::ffff:127.0.0.1]/fw.bin",
            "loopback address (127.0.0.0/8)",
        ),
        (
            "https://169.254.169.254/latest/meta-data/",
            "link-local address",
        ),
        ("https://10.0.0.1/fw.bin", "private address (10.0.0.0/8)"),
        (
            "https://192.168.0.10/fw.bin",
            "private address (192.168.0.0/16)",
        ),
        ("https://[fd00::1]/fw.bin", "unique local (private) address"),
        ("https://0.0.0.0/fw.bin", "this network"),
        ("https://0x7f000001/fw.bin", "four decimal numbers"),
        ("https://2130706433/fw.bin", "four decimal numbers"),
        ("https://0177.0.0.1/fw.bin", "four decimal numbers"),
        ("https://127.1/fw.bin", "four decimal numbers"),
        ("https://%31%32%37.0.0.1/fw.bin", "dot-separated labels"),
        ("https://localhost/fw.bin", "`localhost`"),
        ("https://fw.localhost/fw.bin", "`localhost`"),
        ("https://printer.local/fw.bin", "`.local`"),
        ("https://metadata.google.internal/fw.bin", "`.internal`"),
        ("https://fileserver/fw.bin", "single-label"),
    ];
    for (i, (url, why)) in cases.iter().enumerate() {
        let (status, problem) = firmware_at(&api, &admin, &format!("2.0.{i}"), url).await;
        assert_eq!(status, 422, "{url}: {problem}");
        assert_eq!(problem["errors"][0]["pointer"], "/url", "{url}: {problem}");
        let detail = problem["errors"][0]["detail"].as_str().unwrap();
        assert!(detail.contains(why), "{url}: {detail}");
    }
    assert_eq!(count(&app, "SELECT count(*) FROM firmware").await, 0);
    let (status, body) = firmware_at(&api, &admin, "3.0.0", "https://cdn.example.com/a.bin").await;
    assert_eq!(status, 201, "{body}");

    // Firmware stored before the check (or before the allowance was narrowed) is not
    // shipped: the rollout is refused at /firmware_id.
    let old = api.firmware(&admin, "t1000", "1.1.0").await;
    app.db
        .client()
        .await
        .execute(
            "UPDATE firmware SET url = 'https://169.254.169.254/fw.bin' WHERE firmware_id = $1",
            &[&old],
        )
        .await
        .unwrap();
    let (status, problem) = send(api.post(
        "/v1/ota/rollouts",
        &admin,
        &rollout_body(&old, &[100], 0.5, 1),
    ))
    .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["pointer"], "/firmware_id", "{problem}");
    let detail = problem["errors"][0]["detail"].as_str().unwrap();
    assert!(detail.contains("link-local"), "{detail}");
    assert_eq!(count(&app, "SELECT count(*) FROM rollouts").await, 0);
    app.stop().await;
}

/// Hardening D: `firmware_allowed_private` lets an on-premises deployment name its
/// private ranges and names; an invalid value fails private URLs with a 500 naming it,
/// and never stops public URLs.
#[tokio::test]
async fn an_operator_allows_private_firmware_destinations() {
    let app = TestApp::start_with(
        toaster_host::Limits::default(),
        std::collections::BTreeMap::from([(
            "firmware_allowed_private".to_owned(),
            "10.0.0.0/8, .plant.internal".to_owned(),
        )]),
    )
    .await;
    let api = Api::new(&app);
    let admin = api.tenant("acme").await;
    for (version, url) in [
        ("1.0.0", "https://10.20.30.40/fw.bin"),
        ("1.0.1", "https://fw.plant.internal/fw.bin"),
        ("1.0.2", "https://cdn.example.com/fw.bin"),
    ] {
        let (status, body) = firmware_at(&api, &admin, version, url).await;
        assert_eq!(status, 201, "{url}: {body}");
    }
    for (version, url, why) in [
        (
            "2.0.0",
            "https://192.168.1.1/fw.bin",
            "firmware_allowed_private variable",
        ),
        ("2.0.1", "https://127.0.0.1/fw.bin", "loopback"),
        ("2.0.2", "https://fw.other.internal/fw.bin", "`.internal`"),
        ("2.0.3", "https://012.0.0.1/fw.bin", "four decimal numbers"),
    ] {
        let (status, problem) = firmware_at(&api, &admin, version, url).await;
        assert_eq!(status, 422, "{url}: {problem}");
        let detail = problem["errors"][0]["detail"].as_str().unwrap();
        assert!(detail.contains(why), "{url}: {detail}");
    }
    app.stop().await;

    let app = TestApp::start_with(
        toaster_host::Limits::default(),
        std::collections::BTreeMap::from([(
            "firmware_allowed_private".to_owned(),
            "10.0.0.0/8, 192.168.0.0/33".to_owned(),
        )]),
    )
    .await;
    let api = Api::new(&app);
    let admin = api.tenant("acme").await;
    let (status, body) = firmware_at(&api, &admin, "1.0.0", "https://cdn.example.com/a.bin").await;
    assert_eq!(status, 201, "public URLs are not affected: {body}");
    // `toaster up` refuses to start with it; served anyway (as Spin would), a private
    // URL is a 500 naming the variable, never a default.
    let (status, problem) = firmware_at(&api, &admin, "1.0.1", "https://10.0.0.1/a.bin").await;
    assert_eq!(status, 500, "{problem}");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("variable firmware_allowed_private is invalid"),
        "{detail}"
    );
    assert!(!detail.contains("192.168.0.0/33"), "{detail}");
    app.stop().await;
}

/// `GET /v1/ota/devices/{id}/rollouts` for `admin`: status and body.
async fn history(api: &Api<'_>, admin: &str, device: &str, query: &str) -> (StatusCode, Value) {
    send(api.get(&format!("/v1/ota/devices/{device}/rollouts{query}"), admin)).await
}

#[tokio::test]
async fn stage_counts_split_the_counts_by_the_stage_each_device_was_offered_at() {
    let app = TestApp::start().await;
    let api = Api::new(&app);
    let admin = api.tenant("acme").await;
    let fleet = ids("sn", 60);
    api.devices("acme", &fleet, "t1000", "stable", &[]).await;
    let firmware = api.firmware(&admin, "t1000", "1.1.0").await;
    let rollout = api
        .rollout(&admin, rollout_body(&firmware, &[25, 100], 0.9, 1))
        .await;
    let id = rollout["id"].as_str().unwrap().to_owned();
    // At creation: one entry, for stage 0, all zeros.
    assert_eq!(
        rollout["stage_counts"],
        json!([{"stage": 0, "percent": 25, "offered": 0, "downloading": 0, "installing": 0,
                "installed": 0, "failed": 0, "timed_out": 0}])
    );

    let mut first_stage = Vec::new();
    for device in &fleet {
        if api.check("acme", device, "1.0.0").await.0 == 200 {
            first_stage.push(device.clone());
        }
    }
    assert!(first_stage.len() >= 3, "{first_stage:?}");
    let (ok, bad) = (&first_stage[0], &first_stage[1]);
    for (device, body) in [
        (
            ok,
            json!({"rollout_id": id, "status": "installed", "version": "1.1.0"}),
        ),
        (
            bad,
            json!({"rollout_id": id, "status": "failed", "version": "1.0.0", "error": "flash write failed"}),
        ),
    ] {
        let (status, body) = api.report("acme", device, body).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = api.act(&admin, &id, "advance").await;
    assert_eq!(status, 200, "{body}");
    // Stage 1: every device is checked again; the first stage's keep their stage.
    for device in &fleet {
        api.check("acme", device, "1.0.0").await;
    }
    let n0 = first_stage.len() as u64;
    let n1 = fleet.len() as u64 - n0;
    let body = api.rollout_state(&admin, &id).await;
    assert_eq!(
        body["stage_counts"],
        json!([
            {"stage": 0, "percent": 25, "offered": n0 - 2, "downloading": 0, "installing": 0,
             "installed": 1, "failed": 1, "timed_out": 0},
            {"stage": 1, "percent": 100, "offered": n1, "downloading": 0, "installing": 0,
             "installed": 0, "failed": 0, "timed_out": 0},
        ]),
        "{body}"
    );
    assert_eq!(body["counts"]["offered"], n0 - 2 + n1);
    assert_eq!(body["devices"], fleet.len());
    // Listings carry no counts.
    let (_, list) = send(api.get("/v1/ota/rollouts", &admin)).await;
    assert!(list["items"][0].get("stage_counts").is_none(), "{list}");

    // A device's history: what it was offered, its stage, its progress.
    let (status, body) = history(&api, &admin, bad, "").await;
    assert_eq!(status, 200, "{body}");
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{body}");
    assert_eq!(items[0]["rollout_id"], id.as_str());
    assert_eq!(items[0]["firmware_id"], firmware.as_str());
    assert_eq!(items[0]["version"], "1.1.0");
    assert_eq!(items[0]["from_version"], "1.0.0");
    assert_eq!(items[0]["state"], "failed");
    assert_eq!(items[0]["error"], "flash write failed");
    assert_eq!(items[0]["timed_out"], false);
    assert_eq!(items[0]["stage"], 0);
    assert!(items[0]["offered_at"].is_string() && items[0]["updated_at"].is_string());
    assert_eq!(body["next_cursor"], Value::Null);
    let late = fleet.iter().find(|d| !first_stage.contains(d)).unwrap();
    let (_, body) = history(&api, &admin, late, "").await;
    assert_eq!(body["items"][0]["stage"], 1, "{body}");
    assert_eq!(body["items"][0]["state"], "offered");
    assert_eq!(body["items"][0]["error"], Value::Null);
    app.stop().await;
}

#[tokio::test]
async fn a_device_s_ota_history_is_newest_first_paged_and_its_tenant_s_only() {
    let app = TestApp::start().await;
    let api = Api::new(&app);
    let acme = api.tenant("acme").await;
    let globex = api.tenant("globex").await;
    api.devices("acme", &["d1".into(), "d2".into()], "t1000", "stable", &[])
        .await;
    api.devices("globex", &["g1".into()], "t1000", "stable", &[])
        .await;

    // d1 is offered two rollouts, one after the other; d2 none.
    let mut rollouts = Vec::new();
    for version in ["1.1.0", "1.2.0"] {
        let firmware = api.firmware(&acme, "t1000", version).await;
        let id = api
            .rollout(&acme, rollout_body(&firmware, &[100], 0.5, 5))
            .await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(api.check("acme", "d1", "1.0.0").await.0, 200);
        assert_eq!(api.act(&acme, &id, "abort").await.0, 200);
        rollouts.push(id);
    }
    let (status, body) = history(&api, &acme, "d1", "").await;
    assert_eq!(status, 200, "{body}");
    let shown: Vec<&str> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["rollout_id"].as_str().unwrap())
        .collect();
    assert_eq!(shown, [rollouts[1].as_str(), rollouts[0].as_str()]);
    assert_eq!(body["items"][0]["version"], "1.2.0");

    // One per page: the cursor walks the same order and ends.
    let (status, page) = history(&api, &acme, "d1", "?limit=1").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["items"][0]["rollout_id"], rollouts[1].as_str());
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let (status, page) = history(&api, &acme, "d1", &format!("?limit=1&cursor={cursor}")).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["items"][0]["rollout_id"], rollouts[0].as_str());
    assert_eq!(page["next_cursor"], Value::Null, "the last page: {page}");

    // Known but never offered: empty. Unknown, or another tenant's: 404.
    let (status, body) = history(&api, &acme, "d2", "").await;
    assert_eq!(
        (status.as_u16(), &body["items"]),
        (200, &json!([])),
        "{body}"
    );
    for (admin, device) in [(&acme, "nope"), (&acme, "g1"), (&globex, "d1")] {
        let (status, body) = history(&api, admin, device, "").await;
        assert_eq!(status, 404, "{device}: {body}");
        assert_eq!(body["type"], "https://toaster.dev/problems/not-found");
    }
    // Bad input: 400 problems; a device token is 403.
    for query in [
        "?limit=0",
        "?limit=x",
        "?cursor=zzzz",
        &format!("?cursor={}", rollouts[0]),
        "?sort=id",
    ] {
        let (status, body) = history(&api, &acme, "d1", query).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["type"], "https://toaster.dev/problems/bad-request");
    }
    let device = api.device_token("acme", "d1");
    assert_eq!(history(&api, &device, "d1", "").await.0, 403);
    app.stop().await;
}
