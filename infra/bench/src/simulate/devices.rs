//! The simulated devices: what each worker saw, the pace readings go at, a worker
//! running its share of the fleet, and the tokens provisioning needs (see [`super`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use toaster_device::{Device, Error as DeviceError, Reading, ReportStatus};
use tokio::sync::watch;

use super::summary::{Ota, Telemetry, error_key};
use super::{METRICS, SimulateArgs};

/// What one worker saw.
#[derive(Default)]
pub(super) struct Tally {
    pub(super) post_latency: Vec<Duration>,
    pub(super) check_latency: Vec<Duration>,
    pub(super) telemetry: Telemetry,
    pub(super) ota: Ota,
    pub(super) errors: BTreeMap<String, u64>,
}

impl Tally {
    pub(super) fn error(&mut self, error: &DeviceError) {
        *self.errors.entry(error_key(error)).or_default() += 1;
    }
}

/// Live counters for the progress bar.
#[derive(Default)]
pub(super) struct Live {
    pub(super) readings: AtomicU64,
    pub(super) errors: AtomicU64,
}

// ------------------------------------------------------------------------- pacing

/// Spreads `rate` readings a second over the run: each batch reserves its slot in
/// one schedule shared by every worker.
pub(super) struct Pacer {
    pub(super) start: tokio::time::Instant,
    pub(super) per_reading: Option<Duration>,
    pub(super) reserved: AtomicU64,
}

impl Pacer {
    pub(super) fn new(rate: Option<f64>) -> Pacer {
        Pacer {
            start: tokio::time::Instant::now(),
            per_reading: rate.map(|r| Duration::from_secs_f64(1.0 / r)),
            reserved: AtomicU64::new(0),
        }
    }

    /// When a batch of `n` readings may go.
    pub(super) fn slot(&self, n: usize) -> Option<tokio::time::Instant> {
        let per = self.per_reading?;
        let before = self.reserved.fetch_add(n as u64, Ordering::Relaxed);
        Some(self.start + per.mul_f64(before as f64))
    }
}

// ------------------------------------------------------------------------- the run

pub(super) struct SimDevice {
    pub(super) device: Device,
    pub(super) version: String,
    pub(super) next_check: Option<tokio::time::Instant>,
    pub(super) last_ts: i64,
    pub(super) sequence: u64,
}

impl SimDevice {
    pub(super) fn batch(&mut self, size: usize) -> Vec<Reading> {
        let now = toaster_device::now_ms();
        (0..size)
            .filter_map(|_| {
                // Strictly increasing per device: no two readings share a key, so
                // every one is stored.
                self.last_ts = now.max(self.last_ts + 1);
                self.sequence += 1;
                let metric = METRICS[(self.sequence % METRICS.len() as u64) as usize];
                let value = 20.0 + (self.sequence % 100) as f64 / 10.0;
                Reading::new(metric, self.last_ts, value).ok()
            })
            .collect()
    }
}

pub(super) async fn worker(
    mut devices: Vec<SimDevice>,
    batch_size: usize,
    ota_interval: Option<Duration>,
    pacer: Arc<Pacer>,
    deadline: tokio::time::Instant,
    mut stop: watch::Receiver<bool>,
    live: Arc<Live>,
) -> Tally {
    let mut tally = Tally::default();
    'run: loop {
        for sim in devices.iter_mut() {
            if tokio::time::Instant::now() >= deadline || *stop.borrow() {
                break 'run;
            }
            if let (Some(every), Some(due)) = (ota_interval, sim.next_check)
                && tokio::time::Instant::now() >= due
            {
                sim.next_check = Some(due + every);
                check(sim, &mut tally, &live).await;
            }
            if let Some(slot) = pacer.slot(batch_size) {
                if slot >= deadline {
                    break 'run;
                }
                tokio::select! {
                    _ = tokio::time::sleep_until(slot) => {}
                    _ = stop.changed() => break 'run,
                }
            }
            let batch = sim.batch(batch_size);
            let started = Instant::now();
            let result = sim.device.post_telemetry(&batch).await;
            tally.post_latency.push(started.elapsed());
            match result {
                Ok(receipt) => {
                    let t = &mut tally.telemetry;
                    t.batches += 1;
                    t.readings += receipt.received;
                    t.stored += receipt.stored;
                    t.duplicates += receipt.duplicates;
                    live.readings.fetch_add(receipt.received, Ordering::Relaxed);
                }
                Err(e) => {
                    tally.telemetry.failed_batches += 1;
                    tally.telemetry.failed_readings += batch.len() as u64;
                    tally.error(&e);
                    live.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    tally
}

/// One check; an offer is verified by the library, then reported installed and
/// the device "runs" the new version.
pub(super) async fn check(sim: &mut SimDevice, tally: &mut Tally, live: &Live) {
    let started = Instant::now();
    let result = sim.device.check_update(&sim.version).await;
    tally.check_latency.push(started.elapsed());
    tally.ota.checks += 1;
    let failed = |tally: &mut Tally, e: &DeviceError| {
        tally.ota.failed += 1;
        tally.error(e);
        live.errors.fetch_add(1, Ordering::Relaxed);
    };
    match result {
        Ok(None) => {}
        Ok(Some(update)) => {
            tally.ota.offers += 1;
            let m = &update.manifest;
            match sim
                .device
                .report_update(&m.rollout_id, ReportStatus::Installed, &m.version, None)
                .await
            {
                Ok(_) => {
                    tally.ota.reports += 1;
                    sim.version = m.version.clone();
                }
                Err(e) => failed(tally, &e),
            }
        }
        Err(e) => failed(tally, &e),
    }
}

/// The claim token to provision with (given, or created for the run with the tags
/// `simulated` and `run_tag`), and the admin token if the run has one.
pub(super) async fn claim_token(
    args: &SimulateArgs,
    http: &reqwest::Client,
    base: &str,
    run_tag: &str,
) -> anyhow::Result<(String, Option<String>)> {
    if let Some(claim) = &args.claim_token {
        return Ok((claim.clone(), None));
    }
    let admin = match (&args.admin_token, &args.operator_token, &args.tenant) {
        (Some(admin), _, _) => admin.clone(),
        (None, Some(operator), Some(tenant)) => admin_token(http, base, operator, tenant).await?,
        _ => bail!(
            "pass --claim-token, or --admin-token, or --operator-token with --tenant (toaster up prints an operator token)"
        ),
    };
    let body = json!({
        "model": args.model,
        "quota": args.devices,
        "expires_in_secs": 86_400,
        "tags": ["simulated", run_tag],
    });
    let (status, answer) = post(http, &format!("{base}/v1/claims"), &admin, &body).await?;
    if status != 201 {
        bail!("creating a claim token: {status} {answer}");
    }
    let claim = answer["claim_token"]
        .as_str()
        .map(str::to_owned)
        .context("the claim answer has no claim_token")?;
    Ok((claim, Some(admin)))
}

/// Creates `tenant` unless it exists, and an admin token for the run.
pub(super) async fn admin_token(
    http: &reqwest::Client,
    base: &str,
    operator: &str,
    tenant: &str,
) -> anyhow::Result<String> {
    let (status, answer) = post(
        http,
        &format!("{base}/v1/tenants"),
        operator,
        &json!({"id": tenant, "name": tenant}),
    )
    .await?;
    if status != 201 && status != 409 {
        bail!("creating tenant {tenant}: {status} {answer}");
    }
    let (status, answer) = post(
        http,
        &format!("{base}/v1/tenants/{tenant}/tokens"),
        operator,
        &json!({"subject": "toaster-simulate", "ttl_secs": 86_400}),
    )
    .await?;
    if status != 201 {
        bail!("minting an admin token for {tenant}: {status} {answer}");
    }
    answer["access_token"]
        .as_str()
        .map(str::to_owned)
        .context("the token answer has no access_token")
}

pub(super) async fn post(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    body: &Value,
) -> anyhow::Result<(u16, Value)> {
    let response = http
        .post(url)
        .bearer_auth(token)
        .json(body)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    Ok((status, body))
}
