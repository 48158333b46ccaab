//! Scenario `control` (issue 24): a device's poll when nothing changed, for a fleet
//! of 10,000 devices, against `GET /v1/auth/me` with the same device tokens in the
//! same run (the platform's share of every device request: token, revocation entry,
//! rate window). Target: each poll at least 0.9 × `auth/me`.
//!
//! The fleet: 10,000 devices of model `bench-control` in the app's tenant, inserted
//! with SQL, with one desired change written to all of them by one fleet write (whose
//! time is reported). Every device then reads its state and fetches its commands once
//! (as a polling fleet does), which leaves its key-value marker; the measured polls
//! are `GET /v1/device/state` with `If-None-Match` (304) and `GET /v1/device/commands`
//! (an empty page), round robin over the fleet, neither touching PostgreSQL.
//!
//! Command round trips and a fleet's convergence after a fleet write are measured by
//! `toaster simulate --control-interval 1s --commands N --bulk-change`
//! (BENCHMARKS.md, "Control").

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;

use super::app::AppUnderTest;
use super::{Measurement, load_expecting, load_with};

const DEVICES: usize = 10_000;
const MODEL: &str = "bench-control";
const CONNECTIONS: usize = 16;
/// Every device's state tag after the one fleet write.
const TAG: &str = "\"d1.r0\"";

/// Runs the scenario; the markdown section for BENCHMARKS.md.
pub async fn control_poll(app: &AppUnderTest, duration: Duration) -> anyhow::Result<String> {
    let (_, tokens) = app.device_fleet("ctl", MODEL, DEVICES).await?;
    let admin = app.admin_token()?;
    let started = Instant::now();
    let written = app
        .call(
            "PATCH",
            &format!("/v1/fleet/state/desired?model={MODEL}"),
            &admin,
            serde_json::json!({"setpoint": 21.5, "mode": "eco"}),
        )
        .await?;
    let bulk = started.elapsed();
    anyhow::ensure!(
        written["devices"] == DEVICES,
        "the fleet write reached {} devices",
        written["devices"]
    );

    // Warm: every device polls once the long way (PostgreSQL), which leaves its
    // marker, as a fleet polling every few seconds keeps it.
    for path in ["/v1/device/state", "/v1/device/commands"] {
        let next = Arc::new(AtomicU64::new(0));
        while next.load(Ordering::Relaxed) < DEVICES as u64 {
            load_with(
                app.endpoint(),
                CONNECTIONS,
                Duration::from_secs(1),
                poll(tokens.clone(), next.clone(), path, None),
            )
            .await?;
        }
    }
    let me = load_with(
        app.endpoint(),
        CONNECTIONS,
        duration,
        poll(tokens.clone(), Arc::default(), "/v1/auth/me", None),
    )
    .await?;
    let state = load_expecting(
        app.endpoint(),
        CONNECTIONS,
        duration,
        poll(
            tokens.clone(),
            Arc::default(),
            "/v1/device/state",
            Some(TAG),
        ),
        |status| status == http::StatusCode::NOT_MODIFIED,
    )
    .await?;
    let commands = load_with(
        app.endpoint(),
        CONNECTIONS,
        duration,
        poll(tokens.clone(), Arc::default(), "/v1/device/commands", None),
    )
    .await?;
    Ok(table(&me, &state, &commands, bulk))
}

/// `GET path` round robin over the fleet (counted in `next`), with `If-None-Match`.
fn poll(
    tokens: Arc<Vec<String>>,
    next: Arc<AtomicU64>,
    path: &'static str,
    tag: Option<&'static str>,
) -> super::RequestFactory {
    Arc::new(move |_: usize, _: u64| {
        let n = next.fetch_add(1, Ordering::Relaxed) as usize;
        let mut request = http::Request::get(path)
            .header(http::header::HOST, "127.0.0.1")
            .header("authorization", tokens[n % tokens.len()].as_str());
        if let Some(tag) = tag {
            request = request.header("if-none-match", tag);
        }
        request.body(Full::new(Bytes::new())).expect("request")
    })
}

/// The section: each poll against `auth/me`.
fn table(me: &Measurement, state: &Measurement, commands: &Measurement, bulk: Duration) -> String {
    let table = super::ratio_table(
        "auth/me",
        me,
        &[
            ("device token check only (`GET /v1/auth/me`)", me),
            (
                "state poll, nothing new (`GET /v1/device/state`, `If-None-Match` → 304)",
                state,
            ),
            (
                "command poll, nothing pending (`GET /v1/device/commands` → empty page)",
                commands,
            ),
        ],
    );
    format!(
        "A device's poll when nothing changed, for {DEVICES} devices (round robin over pre-minted device tokens), against `GET /v1/auth/me` with the same tokens in the same run. Each device polled once the long way first (its key-value marker written), so the measured polls are answered from the key-value store. Target: at least 0.9 × auth/me. The fleet write that set one desired change on all {DEVICES} devices (`PATCH /v1/fleet/state/desired?model=…`, one statement, then a marker per device) took {:.0} ms.\n\n{table}",
        bulk.as_secs_f64() * 1000.0
    )
}
