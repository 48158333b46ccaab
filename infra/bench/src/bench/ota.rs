//! Scenario `ota` (issue 5): `GET /v1/ota/check` for a fleet of 10,000 devices,
//! against the host's trivial component (`hello`) in the same run, and against
//! `GET /v1/auth/me` with the same device tokens (the platform's share of every device
//! request: token, revocation entry, rate window).
//!
//! The fleet: 10,000 devices of model `bench-ota` in the app's tenant, inserted with
//! SQL; each request is the next device's check (round robin over pre-minted device
//! tokens), reporting version 1.0.0 against a rollout of 1.1.0. Every device checks
//! once before measuring (so the platform's 30-second revocation cache is warm, as for
//! a fleet that checks more often than that). Two points:
//!
//! - stage 1%: about 99% of the devices are outside the cohort, answered 204 after
//!   the token check and one key-value read (no PostgreSQL);
//! - stage 100%: every check records (or repeats) the offer in PostgreSQL and signs a
//!   manifest.
//!
//! And the OTA component's floor: an unknown path under `/v1/ota` (404, no token, no
//! key-value), what any request to the component costs before it checks anything.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use toaster_core::ids::{DeviceId, TenantId};
use toaster_core::token::AccessClaims;

use super::app::AppUnderTest;
use super::{Measurement, load, load_expecting, load_with};

const DEVICES: usize = 10_000;
const MODEL: &str = "bench-ota";
const CONNECTIONS: usize = 16;
/// A path under the OTA component's route that no handler serves.
const FLOOR_PATH: &str = "/v1/ota/none";

/// Runs the scenario; the markdown section for BENCHMARKS.md.
pub async fn ota_check(
    app: &AppUnderTest,
    workspace: &Path,
    duration: Duration,
) -> anyhow::Result<String> {
    let (client, tenant, tokens) = fleet(app).await?;
    let admin = app.admin_token()?;
    let rollout = rollout(app, &admin).await?;
    let trivial = trivial_host(workspace, duration).await?;

    // Warm: every device checked once (the platform caches each device's revocation
    // state for 30 s, so a measured round over the fleet finds it cached, as a fleet
    // checking more often than that would), the rollouts entry, the compiled
    // component, the pools.
    let next = Arc::new(AtomicU64::new(0));
    while next.load(Ordering::Relaxed) < DEVICES as u64 {
        load_with(
            app.endpoint(),
            CONNECTIONS,
            Duration::from_secs(1),
            check(tokens.clone(), next.clone()),
        )
        .await?;
    }
    let stage1 = load_with(
        app.endpoint(),
        CONNECTIONS,
        duration,
        check(tokens.clone(), next.clone()),
    )
    .await?;
    // The platform's share: the same device tokens on `GET /v1/auth/me` (token check,
    // revocation entry, rate window), no OTA work.
    let me = load_with(
        app.endpoint(),
        CONNECTIONS,
        duration,
        device_me(tokens.clone()),
    )
    .await?;
    // The component's floor: a request the OTA component answers without a token, a
    // key-value read or PostgreSQL (an unknown path: 404 problem+json). What it costs
    // beyond `hello` is the size of the component and the platform's request and
    // response handling, which every request to it pays before any check.
    let floor = load_expecting(
        app.endpoint(),
        CONNECTIONS,
        duration,
        super::get(FLOOR_PATH),
        |status| status == http::StatusCode::NOT_FOUND,
    )
    .await?;
    let offered_at_1: i64 = client
        .query_one(
            "SELECT count(*) FROM rollout_devices WHERE rollout_id = $1",
            &[&rollout],
        )
        .await?
        .get(0);
    advance(app, &client, &tenant, &rollout, &admin).await?;
    load_with(
        app.endpoint(),
        CONNECTIONS,
        Duration::from_millis(500),
        check(tokens.clone(), next.clone()),
    )
    .await?;
    let stage100 = load_with(
        app.endpoint(),
        CONNECTIONS,
        duration,
        check(tokens.clone(), next.clone()),
    )
    .await?;

    Ok(table(
        &trivial,
        &floor,
        &me,
        &stage1,
        &stage100,
        offered_at_1,
    ))
}

/// The fleet: `DEVICES` devices of the tenant, and a device token for each.
async fn fleet(
    app: &AppUnderTest,
) -> anyhow::Result<(tokio_postgres::Client, TenantId, Arc<Vec<String>>)> {
    let (client, tokens) = app.device_fleet("ota", MODEL, DEVICES).await?;
    let tenant = TenantId::parse(&app.tenant).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((client, tenant, tokens))
}

/// Firmware 1.1.0 for the model and a rollout of it in stages 1% and 100%.
async fn rollout(app: &AppUnderTest, admin: &str) -> anyhow::Result<String> {
    let firmware = app.call("POST",
        "/v1/ota/firmware",
        admin,
        serde_json::json!({"model": MODEL, "version": "1.1.0", "url": "https://cdn.example.com/bench-ota/1.1.0.bin",
                           "sha256": "ab".repeat(32), "size": 4_194_304}),
    )
    .await?;
    let firmware = firmware["id"].as_str().context("firmware id")?.to_owned();
    let rollout = app.call("POST",
        "/v1/ota/rollouts",
        admin,
        serde_json::json!({"firmware_id": firmware, "selector": {"channel": "stable", "versions": "<1.1.0"},
                           "stages": [1, 100], "failure_threshold": 0.5, "min_reports": 1,
                           "report_timeout_secs": 86_400}),
    )
    .await?;
    let rollout = rollout["id"].as_str().context("rollout id")?.to_owned();
    Ok(rollout)
}

/// Checks round robin over the fleet, counted in `next`.
fn check(tokens: Arc<Vec<String>>, next: Arc<AtomicU64>) -> super::RequestFactory {
    Arc::new(move |_: usize, _: u64| {
        let n = next.fetch_add(1, Ordering::Relaxed) as usize;
        http::Request::get("/v1/ota/check?version=1.0.0")
            .header(http::header::HOST, "127.0.0.1")
            .header("authorization", tokens[n % tokens.len()].as_str())
            .body(Full::new(Bytes::new()))
            .expect("request")
    })
}

/// Takes the rollout to its 100% stage: one device reports success, which makes
/// stage 1% healthy, and the admin advances it.
async fn advance(
    app: &AppUnderTest,
    client: &tokio_postgres::Client,
    tenant: &TenantId,
    rollout: &str,
    admin: &str,
) -> anyhow::Result<()> {
    // One success makes stage 1% healthy; then every device is in the cohort.
    let first: String = client
        .query_one(
            "SELECT device_id FROM rollout_devices WHERE rollout_id = $1 LIMIT 1",
            &[&rollout],
        )
        .await
        .context("no device was offered at 1%")?
        .get(0);
    let first = DeviceId::parse(&first).map_err(|e| anyhow::anyhow!("{e}"))?;
    let device_token = app.signer.mint(
        &AccessClaims::device(tenant.clone(), &first, 1),
        Duration::from_secs(600),
    )?;
    app.call(
        "POST",
        "/v1/ota/report",
        &device_token,
        serde_json::json!({"rollout_id": rollout, "status": "installed", "version": "1.1.0"}),
    )
    .await?;
    app.call(
        "POST",
        &format!("/v1/ota/rollouts/{rollout}/advance"),
        admin,
        serde_json::json!({}),
    )
    .await?;
    Ok(())
}

/// The section: each row against the trivial component.
fn table(
    trivial: &Measurement,
    floor: &Measurement,
    me: &Measurement,
    stage1: &Measurement,
    stage100: &Measurement,
    offered_at_1: i64,
) -> String {
    let table = super::ratio_table(
        "trivial",
        trivial,
        &[
            ("trivial component (`hello`)", trivial),
            (
                "the OTA component's floor (`GET /v1/ota/none`: 404, no token, no key-value)",
                floor,
            ),
            ("device token check only (`GET /v1/auth/me`)", me),
            (
                "check, stage 1% (≈99% answered from the key-value store)",
                stage1,
            ),
            (
                "check, stage 100% (offer recorded, manifest signed)",
                stage100,
            ),
        ],
    );
    format!(
        "`GET /v1/ota/check?version=1.0.0` for {DEVICES} devices (round robin over pre-minted device tokens; each check verifies the token, reads the device's revocation entry and rate window from the key-value store, then the tenant's cached active rollouts), against the host's trivial component in the same run. Every device checked once before measuring. {offered_at_1} devices were offered the update at the 1% stage. The floor row is a request the OTA component answers without checking anything (an unknown path, 404): what every request to it costs beyond `hello`. Target: at least 0.8 × trivial.\n\n{table}"
    )
}

/// `GET /v1/auth/me` round robin over the fleet's tokens.
fn device_me(tokens: Arc<Vec<String>>) -> super::RequestFactory {
    let next = AtomicU64::new(0);
    Arc::new(move |_, _| {
        let n = next.fetch_add(1, Ordering::Relaxed) as usize;
        http::Request::get("/v1/auth/me")
            .header(http::header::HOST, "127.0.0.1")
            .header("authorization", tokens[n % tokens.len()].as_str())
            .body(Full::new(Bytes::new()))
            .expect("request")
    })
}

/// The trivial component served by its own host process, measured with the same load.
async fn trivial_host(workspace: &Path, duration: Duration) -> anyhow::Result<Measurement> {
    let host = super::HelloHost::start(workspace, "ota").await?;
    let at = host.server.endpoint();
    load(at, "/", CONNECTIONS, Duration::from_millis(500)).await?;
    let m = load(at, "/", CONNECTIONS, duration).await?;
    host.stop().await?;
    Ok(m)
}
