//! The device library against the real app: its components in the real host,
//! a fresh PostgreSQL database per test. Faults (lost answers, 503s) come from a
//! small proxy between the library and the host (`support::Proxy`); rate limiting is
//! the app's own, with a tight `device_rate_limit`.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Action, MODEL, Proxy, config, readings, stored, tenant_with_claim};
use toaster_device::{
    Device, DeviceKey, Error, OtaError, Reading, ReportStatus, SigningKey, TelemetryBuffer,
};
use toaster_host::Limits;
use toaster_tests::TestApp;

async fn provision(base_url: &str, claim: &str, device_id: &str) -> Device {
    Device::provision(
        config(base_url),
        DeviceKey::generate(),
        claim,
        device_id,
        &[],
    )
    .await
    .expect("provisioning")
}

/// A firmware release for [`MODEL`] and a rollout of it to every stable device
/// running 1.x; the rollout id.
async fn rollout(app: &TestApp, admin: &str, version: &str) -> String {
    let http = app.http();
    let firmware: Value = http
        .post(app.url("/v1/ota/firmware"))
        .bearer_auth(admin)
        .json(&json!({"model": MODEL, "version": version,
                      "url": format!("https://cdn.example.com/{MODEL}/{version}.bin"),
                      "sha256": "ab".repeat(32), "size": 1_048_576}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rollout: Value = http
        .post(app.url("/v1/ota/rollouts"))
        .bearer_auth(admin)
        .json(&json!({"firmware_id": firmware["id"],
                      "selector": {"channel": "stable", "versions": ">=1.0.0, <2.0.0"},
                      "stages": [100], "failure_threshold": 0.5, "min_reports": 10,
                      "report_timeout_secs": 3600}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    rollout["id"].as_str().expect("rollout id").to_owned()
}

#[tokio::test]
async fn provision_login_post_check_and_report() {
    let app = TestApp::start().await;
    let (admin, claim) = tenant_with_claim(&app, "acme").await;

    // A key made and saved on the device, then loaded back as a device would at boot.
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("device.key");
    DeviceKey::load_or_generate(&key_file).unwrap();
    let key = DeviceKey::load(&key_file).unwrap();
    let device = Device::provision(
        config(&app.host.base),
        key,
        &claim,
        "toaster-0001",
        &["site=berlin".to_owned()],
    )
    .await
    .unwrap();
    let identity = device.identity().clone();
    assert_eq!(identity.tenant_id, "acme");
    assert_eq!(identity.model.as_deref(), Some(MODEL));
    assert!(identity.tags.contains(&"site=berlin".to_owned()));

    // Telemetry through the buffer, in batches of 4.
    let mut cfg = config(&app.host.base);
    cfg.batch_size = 4;
    let device = Device::new(cfg, DeviceKey::load(&key_file).unwrap(), identity.clone()).unwrap();
    let buffer = TelemetryBuffer::new(100);
    for reading in readings("temp_c", 10) {
        buffer.try_push(reading).unwrap();
    }
    buffer
        .try_push(Reading::now("door.open", true).unwrap())
        .unwrap();
    let sent = device.flush(&buffer).await.unwrap();
    assert_eq!((sent.batches, sent.stored, sent.duplicates), (3, 11, 0));
    assert!(buffer.is_empty());
    assert_eq!(stored(&app, "toaster-0001").await, 11);
    assert_eq!(device.stats().logins, 1, "one login for three batches");

    // OTA: the offer's signature checks against the published key...
    let rollout_id = rollout(&app, &admin, "1.4.0").await;
    let update = device
        .check_update("1.0.0")
        .await
        .unwrap()
        .expect("an offer");
    assert_eq!(update.manifest.version, "1.4.0");
    assert_eq!(update.manifest.rollout_id, rollout_id);
    assert_eq!(update.manifest.model.as_str(), MODEL);
    // ...which is the app's manifest signing key.
    let app_key = ed25519_compact::KeyPair::from_pem(&app.manifest_signing_key).unwrap();
    let pinned = SigningKey::from_pem(&app_key.pk.to_pem()).unwrap();
    assert_eq!(update.key_id, pinned.key_id());

    // Pinned, the right key passes and another is refused.
    let mut cfg = config(&app.host.base);
    cfg.signing_key = Some(pinned);
    let pinned_device =
        Device::new(cfg, DeviceKey::load(&key_file).unwrap(), identity.clone()).unwrap();
    assert_eq!(
        pinned_device.check_update("1.0.0").await.unwrap(),
        Some(update.clone())
    );
    let stranger = ed25519_compact::KeyPair::generate();
    let mut cfg = config(&app.host.base);
    cfg.signing_key = Some(SigningKey::from_pem(&stranger.pk.to_pem()).unwrap());
    let wary = Device::new(cfg, DeviceKey::load(&key_file).unwrap(), identity.clone()).unwrap();
    assert!(matches!(
        wary.check_update("1.0.0").await,
        Err(Error::Ota(OtaError::UnknownKey { .. }))
    ));
    // A device of another model refuses the manifest.
    let mut other_model = identity.clone();
    other_model.model = Some("t2000".into());
    let confused = Device::new(
        config(&app.host.base),
        DeviceKey::load(&key_file).unwrap(),
        other_model,
    )
    .unwrap();
    assert!(matches!(
        confused.check_update("1.0.0").await,
        Err(Error::Ota(OtaError::WrongModel { .. }))
    ));

    // Reports, the second one resent (the server takes the same status twice).
    for status in [
        ReportStatus::Downloading,
        ReportStatus::Installed,
        ReportStatus::Installed,
    ] {
        let version = if status == ReportStatus::Installed {
            "1.4.0"
        } else {
            "1.0.0"
        };
        let ack = device
            .report_update(&rollout_id, status, version, None)
            .await
            .unwrap();
        assert_eq!(ack.rollout_id, rollout_id);
    }
    assert_eq!(device.check_update("1.4.0").await.unwrap(), None);
    // Backwards is refused for good, not retried.
    let refused = device
        .report_update(&rollout_id, ReportStatus::Downloading, "1.4.0", None)
        .await
        .unwrap_err();
    assert_eq!(refused.status(), Some(409), "{refused}");
    let state: Value = app
        .http()
        .get(app.url(&format!("/v1/ota/rollouts/{rollout_id}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(state["counts"]["installed"], 1, "{state}");
    app.stop().await;
}

#[tokio::test]
async fn a_batch_whose_answer_was_lost_is_resent_and_stored_once() {
    let app = TestApp::start().await;
    let (_, claim) = tenant_with_claim(&app, "acme").await;
    let proxy = Proxy::start(&app.host.base).await;
    let device = provision(&proxy.url, &claim, "d1").await;

    proxy.plan("/v1/telemetry", Action::DropAnswer);
    let batch = readings("temp_c", 25);
    let receipt = device.post_telemetry(&batch).await.unwrap();

    // The first send was stored; its answer never arrived; the resend stored nothing.
    assert_eq!(receipt.attempts, 2);
    assert_eq!(
        (receipt.received, receipt.stored, receipt.duplicates),
        (25, 0, 25)
    );
    let sends = proxy.exchanges("/v1/telemetry");
    assert_eq!(sends.len(), 2, "{sends:?}");
    assert!(sends[0].status == 200 && !sends[0].delivered);
    assert!(sends[1].status == 200 && sends[1].delivered);
    assert_eq!(stored(&app, "d1").await, 25);
    let distinct: i64 = app
        .db
        .client()
        .await
        .query_one(
            "SELECT count(DISTINCT (metric, ts)) FROM telemetry WHERE device_id = 'd1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(distinct, 25);
    assert_eq!(device.stats().no_answer, 1);
    app.stop().await;
}

#[tokio::test]
async fn a_batch_whose_answer_timed_out_is_resent_and_stored_once() {
    let app = TestApp::start().await;
    let (_, claim) = tenant_with_claim(&app, "acme").await;
    let proxy = Proxy::start(&app.host.base).await;
    let provisioned = provision(&proxy.url, &claim, "d1").await;
    // The same device, now with a 1 s timeout per attempt.
    let mut cfg = config(&proxy.url);
    cfg.request_timeout = Duration::from_secs(1);
    let key = DeviceKey::from_pem(&provisioned.key().to_pem().unwrap()).unwrap();
    let device = Device::new(cfg, key, provisioned.identity().clone()).unwrap();

    proxy.plan("/v1/telemetry", Action::HoldAnswer(Duration::from_secs(5)));
    let receipt = device.post_telemetry(&readings("temp_c", 7)).await.unwrap();
    // Two sends, or more if the resend was slow too on a busy machine.
    assert!(receipt.attempts >= 2);
    assert_eq!((receipt.stored, receipt.duplicates), (0, 7));
    assert_eq!(stored(&app, "d1").await, 7);
    app.stop().await;
}

#[tokio::test]
async fn a_429_is_waited_out_for_retry_after_then_the_batch_goes_through() {
    // Two requests per device per 3 s window: the login and one batch.
    let app = TestApp::start_with(
        Limits::default(),
        BTreeMap::from([("device_rate_limit".to_owned(), "2/3s".to_owned())]),
    )
    .await;
    let (_, claim) = tenant_with_claim(&app, "acme").await;
    let proxy = Proxy::start(&app.host.base).await;
    let device = provision(&proxy.url, &claim, "d1").await;

    let mut sent = 0;
    for round in 0..6 {
        let batch = readings(&format!("m{round}"), 3);
        let receipt = device.post_telemetry(&batch).await.unwrap();
        assert_eq!(receipt.stored, 3);
        sent += 3;
        if proxy
            .exchanges("/v1/telemetry")
            .iter()
            .any(|e| e.status == 429)
        {
            break;
        }
    }
    let sends = proxy.exchanges("/v1/telemetry");
    let limited: Vec<usize> = (0..sends.len())
        .filter(|i| sends[*i].status == 429)
        .collect();
    assert!(!limited.is_empty(), "never rate limited: {sends:?}");
    for i in limited {
        let retry_after = Duration::from_secs(sends[i].retry_after.expect("Retry-After"));
        let next = sends.get(i + 1).expect("the batch was resent");
        let waited = next.at - sends[i].answered;
        assert!(
            waited >= retry_after,
            "resent after {waited:?}, Retry-After was {retry_after:?}"
        );
    }
    assert_eq!(sends.last().unwrap().status, 200);
    assert!(device.stats().rate_limited >= 1);
    assert_eq!(stored(&app, "d1").await, sent);
    app.stop().await;
}

#[tokio::test]
async fn a_503_is_waited_out_for_retry_after_then_the_batch_goes_through() {
    let app = TestApp::start().await;
    let (_, claim) = tenant_with_claim(&app, "acme").await;
    let proxy = Proxy::start(&app.host.base).await;
    let device = provision(&proxy.url, &claim, "d1").await;

    proxy.plan("/v1/telemetry", Action::Unavailable { retry_after: 1 });
    let started = Instant::now();
    let receipt = device.post_telemetry(&readings("temp_c", 5)).await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(receipt.attempts, 2);
    assert_eq!((receipt.stored, receipt.duplicates), (5, 0));
    let sends = proxy.exchanges("/v1/telemetry");
    assert_eq!(
        sends.iter().map(|e| e.status).collect::<Vec<_>>(),
        [503, 200]
    );
    assert!(sends[1].at - sends[0].answered >= Duration::from_secs(1));
    assert_eq!(device.stats().unavailable, 1);
    assert_eq!(stored(&app, "d1").await, 5);
    app.stop().await;
}

#[tokio::test]
async fn a_refusal_is_not_resent_and_a_flush_that_fails_keeps_the_readings() {
    let app = TestApp::start().await;
    let (_, claim) = tenant_with_claim(&app, "acme").await;
    let proxy = Proxy::start(&app.host.base).await;
    let device = provision(&proxy.url, &claim, "d1").await;

    // Older than the tenant's 30-day raw retention: 422, whatever the number of tries.
    let ancient = Reading::new("temp_c", toaster_device::now_ms() - 40 * 86_400_000, 1.0).unwrap();
    let mut batch = readings("temp_c", 2);
    batch.push(ancient);
    let error = device.post_telemetry(&batch).await.unwrap_err();
    assert_eq!(error.status(), Some(422), "{error}");
    assert!(error.is_batch_fault() && !error.is_transient());
    let problem = error.problem().expect("problem details");
    assert_eq!(problem.errors[0].pointer, "/readings/2/ts");
    assert_eq!(proxy.exchanges("/v1/telemetry").len(), 1, "not resent");

    // A failure that is not the batch's (here a key the server does not know, so
    // login is refused: a 401 is final) leaves every reading in the buffer.
    let mut cfg = config(&proxy.url);
    cfg.batch_size = 3;
    let device = Device::new(cfg, DeviceKey::generate(), device.identity().clone()).unwrap();
    let buffer = TelemetryBuffer::new(10);
    for r in readings("rpm", 3).into_iter().chain(batch.clone()) {
        buffer.try_push(r).unwrap();
    }
    let failed = device.flush(&buffer).await.unwrap_err();
    assert_eq!(failed.error.status(), Some(401));
    assert!(failed.dropped.is_empty());
    assert_eq!(
        buffer.len(),
        6,
        "nothing is lost on a failure that is not the batch's"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_flush_drops_only_the_batch_the_server_refuses() {
    let app = TestApp::start().await;
    let (_, claim) = tenant_with_claim(&app, "acme").await;
    let mut cfg = config(&app.host.base);
    cfg.batch_size = 3;
    let device = Device::provision(cfg, DeviceKey::generate(), &claim, "d1", &[])
        .await
        .unwrap();
    let ancient = Reading::new("temp_c", toaster_device::now_ms() - 40 * 86_400_000, 1.0).unwrap();
    let buffer = TelemetryBuffer::new(10);
    let good = readings("rpm", 3);
    let mut bad = readings("temp_c", 2);
    bad.push(ancient);
    for r in good
        .iter()
        .chain(bad.iter())
        .chain(readings("volts", 2).iter())
    {
        buffer.try_push(r.clone()).unwrap();
    }
    let failed = device.flush(&buffer).await.unwrap_err();
    assert_eq!(failed.error.status(), Some(422));
    assert_eq!(failed.flushed.stored, 3);
    assert_eq!(failed.dropped, bad);
    assert_eq!(buffer.len(), 2, "the batch after the refused one waits");
    let rest = device.flush(&buffer).await.unwrap();
    assert_eq!(rest.stored, 2);
    assert_eq!(stored(&app, "d1").await, 5);
    app.stop().await;
}

#[tokio::test]
async fn the_token_is_refreshed_before_it_expires() {
    let app = TestApp::start().await;
    let (_, claim) = tenant_with_claim(&app, "acme").await;
    let proxy = Proxy::start(&app.host.base).await;
    // The proxy tells the library its tokens live 4 s (the server's live 15 min, so
    // the old one would still be accepted: only a refresh makes a second login).
    proxy.token_lifetime(4);
    let device = provision(&proxy.url, &claim, "d1").await;

    device.post_telemetry(&readings("a", 1)).await.unwrap();
    device.post_telemetry(&readings("b", 1)).await.unwrap();
    assert_eq!(proxy.exchanges("/v1/auth/token").len(), 1, "still fresh");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    device.post_telemetry(&readings("c", 1)).await.unwrap();
    let logins = proxy.exchanges("/v1/auth/token");
    assert_eq!(logins.len(), 2, "refreshed once past half its life");
    assert!(logins.iter().all(|e| e.status == 200));
    assert!(
        proxy.exchanges("/v1/").iter().all(|e| e.status != 401),
        "refreshed before, not after, a refusal"
    );
    assert_eq!(device.stats().logins, 2);
    app.stop().await;
}

#[tokio::test]
async fn a_revoked_token_is_replaced_by_a_new_login() {
    let app = TestApp::start().await;
    let (admin, claim) = tenant_with_claim(&app, "acme").await;
    let proxy = Proxy::start(&app.host.base).await;
    let device = provision(&proxy.url, &claim, "d1").await;
    device.post_telemetry(&readings("a", 1)).await.unwrap();

    // Disabling bumps the key generation, enabling does not restore it: the token
    // the device holds is revoked, its key is still good.
    for status in ["disabled", "active"] {
        let response = app
            .http()
            .patch(app.url("/v1/devices/d1"))
            .bearer_auth(&admin)
            .json(&json!({"status": status}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    }
    let receipt = device.post_telemetry(&readings("b", 1)).await.unwrap();
    assert_eq!(receipt.stored, 1);
    let statuses: Vec<(String, u16)> = proxy
        .exchanges("/v1/")
        .iter()
        .map(|e| (e.path.clone(), e.status))
        .collect();
    assert_eq!(
        statuses,
        [
            ("/v1/provision".to_owned(), 201),
            ("/v1/auth/token".to_owned(), 200),
            ("/v1/telemetry".to_owned(), 200),
            ("/v1/telemetry".to_owned(), 401),
            ("/v1/auth/token".to_owned(), 200),
            ("/v1/telemetry".to_owned(), 200),
        ]
    );
    assert_eq!(device.stats().relogins, 1);
    app.stop().await;
}

#[tokio::test]
async fn a_device_follows_its_desired_state_and_answers_commands() {
    let app = TestApp::start().await;
    let (admin, claim) = tenant_with_claim(&app, "acme").await;
    let device = provision(&app.host.base, &claim, "lamp-7").await;
    let http = app.http();

    // Nothing desired yet: the state is empty, and a poll with its tag is "unchanged".
    let first = device.state(None).await.unwrap().expect("a first read");
    assert!(first.desired.is_empty() && first.delta.is_empty());
    let tag = first.etag.clone().expect("an ETag");
    assert_eq!(device.state(Some(&tag)).await.unwrap(), None);

    // The operator turns it off and sends a command.
    let patched = http
        .patch(app.url("/v1/devices/lamp-7/state/desired"))
        .bearer_auth(&admin)
        .header("content-type", "application/merge-patch+json")
        .body(json!({"power": "off", "level": 0}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
    let sent: Value = http
        .post(app.url("/v1/devices/lamp-7/commands"))
        .bearer_auth(&admin)
        .json(&json!({"name": "blink", "parameters": {"times": 2}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    // The device sees the change on its next poll, does it and reports it.
    let state = device.state(Some(&tag)).await.unwrap().expect("changed");
    assert_eq!(
        state.delta,
        *json!({"power": "off", "level": 0}).as_object().unwrap()
    );
    let after = device
        .report_state(&Value::Object(state.delta.clone()))
        .await
        .unwrap();
    assert!(after.delta.is_empty());
    assert_eq!(after.reported_version, 1);

    // The command loop hands the command to the handler and posts its outcome.
    let handled = device
        .run_commands(|command| async move {
            assert_eq!(command.name, "blink");
            toaster_device::CommandOutcome::Succeeded(Some(
                json!({"blinked": command.parameters["times"]}),
            ))
        })
        .await
        .unwrap();
    assert_eq!(handled, 1);
    assert_eq!(
        device
            .run_commands(|_| async { unreachable!("no more commands") })
            .await
            .unwrap(),
        0
    );

    // The operator sees both.
    let command: Value = http
        .get(app.url(&format!(
            "/v1/devices/lamp-7/commands/{}",
            sent["id"].as_str().unwrap()
        )))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(command["status"], "succeeded");
    assert_eq!(command["output"], json!({"blinked": 2}));
    let state: Value = http
        .get(app.url("/v1/devices/lamp-7/state"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(state["reported"], json!({"power": "off", "level": 0}));
    assert_eq!(state["delta"], json!({}));
}
