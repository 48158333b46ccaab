//! The simulated devices' side of talking back (`--control-interval`): every interval
//! each device reads its state with the tag of its last read (cheap when nothing
//! changed), reports the delta as done (so `reported` follows `desired`), and runs its
//! pending commands (`sim.echo` succeeds with its parameters as output; any other name
//! is rejected).
//!
//! With an admin token the run also plays the operator: `--commands N` sends N
//! `sim.echo` commands to devices in turn over the first 80% of the run, and
//! `--bulk-change` sets one desired value on the whole run's fleet (its claim tag)
//! half-way through. Round trips are measured from the moment a send starts to the
//! moment the device's result is stored (its `POST …/result` answered 2xx: what an
//! operator reading the command would see from then on); convergence from the moment
//! the bulk write starts to the moment each device's report of the new value is
//! stored.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};
use toaster_device::{Command, CommandOutcome, Device};
use tokio::sync::watch;

use super::summary::Latency;

/// The command the simulated devices carry out.
pub(super) const ECHO: &str = "sim.echo";
/// The desired member a bulk change sets.
pub(super) const SETPOINT: &str = "sim_setpoint";

/// What the devices and the operator task record, shared by all of them.
#[derive(Default)]
pub(super) struct Shared {
    /// When each command's send started, by id.
    sent: Mutex<HashMap<String, Instant>>,
    /// When each command's result was stored, by id.
    done: Mutex<HashMap<String, Instant>>,
    /// The bulk change: its value and when its write started.
    bulk: Mutex<Option<(i64, Instant)>>,
    /// When each device's report of the bulk value was stored.
    converged: Mutex<Vec<Instant>>,
    polls: Mutex<Vec<Duration>>,
    counts: Mutex<Counts>,
}

#[derive(Default, Clone, Copy)]
struct Counts {
    unchanged: u64,
    reports: u64,
    commands: u64,
    failed: u64,
}

/// What the control side of a run measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ControlSummary {
    /// State reads, and how many found nothing new (304).
    pub polls: u64,
    pub unchanged: u64,
    pub poll_latency: Latency,
    /// Reports of `reported` (a delta carried out).
    pub reports: u64,
    /// Commands the devices ran and answered.
    pub commands_handled: u64,
    /// Commands the operator task sent, and their round trips (send → result stored).
    pub commands_sent: u64,
    pub command_round_trip: Latency,
    /// Calls that failed for good.
    pub failed: u64,
    pub bulk: Option<BulkSummary>,
}

/// A desired change to the whole fleet by selector.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BulkSummary {
    /// Devices the write reached, and how long it took.
    pub devices: u64,
    pub write_ms: f64,
    /// Devices whose report of the new value was stored, and when the last one was
    /// (from the start of the write).
    pub converged: u64,
    pub convergence_ms: f64,
}

/// One device's poll loop until `stop`.
pub(super) async fn device_loop(
    device: Device,
    every: Duration,
    first: tokio::time::Instant,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tag: Option<String> = None;
    let mut next = first;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        next += every;
        poll_state(&device, &mut tag, &shared).await;
        run_commands(&device, &shared).await;
    }
}

async fn poll_state(device: &Device, tag: &mut Option<String>, shared: &Shared) {
    let started = Instant::now();
    let read = device.state(tag.as_deref()).await;
    shared.polls.lock().unwrap().push(started.elapsed());
    let state = match read {
        Ok(Some(state)) => state,
        Ok(None) => {
            shared.counts.lock().unwrap().unchanged += 1;
            return;
        }
        Err(_) => {
            shared.counts.lock().unwrap().failed += 1;
            return;
        }
    };
    *tag = state.etag.clone();
    if state.delta.is_empty() {
        return;
    }
    // The simulated device does what it is asked: the delta becomes its report.
    let delta = Value::Object(state.delta.clone());
    match device.report_state(&delta).await {
        Ok(after) => {
            let stored = Instant::now();
            *tag = after.etag;
            shared.counts.lock().unwrap().reports += 1;
            let bulk = *shared.bulk.lock().unwrap();
            if let Some((value, _)) = bulk
                && delta.get(SETPOINT).and_then(Value::as_i64) == Some(value)
            {
                shared.converged.lock().unwrap().push(stored);
            }
        }
        Err(_) => shared.counts.lock().unwrap().failed += 1,
    }
}

async fn run_commands(device: &Device, shared: &Shared) {
    let commands = match device.fetch_commands(toaster_device::COMMAND_PAGE).await {
        Ok(commands) => commands,
        Err(_) => {
            shared.counts.lock().unwrap().failed += 1;
            return;
        }
    };
    for command in commands {
        let outcome = carry_out(&command);
        match device.post_result(&command.id, &outcome).await {
            Ok(()) => {
                shared
                    .done
                    .lock()
                    .unwrap()
                    .insert(command.id.clone(), Instant::now());
                shared.counts.lock().unwrap().commands += 1;
            }
            Err(_) => shared.counts.lock().unwrap().failed += 1,
        }
    }
}

fn carry_out(command: &Command) -> CommandOutcome {
    if command.name == ECHO {
        CommandOutcome::Succeeded(Some(command.parameters.clone()))
    } else {
        CommandOutcome::Rejected(Some(json!({"error": "unknown command"})))
    }
}

/// The operator's part: `commands` sends spread over the first 80% of `duration`,
/// and the bulk change (to the devices tagged `tag`) half-way through.
pub(super) struct Operator {
    pub(super) http: reqwest::Client,
    pub(super) base: String,
    pub(super) admin: String,
    pub(super) devices: Vec<String>,
    pub(super) commands: usize,
    pub(super) bulk_tag: Option<String>,
    pub(super) duration: Duration,
}

impl Operator {
    /// Runs the sends and the bulk change; the bulk change's reach and write time.
    pub(super) async fn run(self, shared: Arc<Shared>) -> Option<(u64, Duration)> {
        let start = tokio::time::Instant::now();
        let spread = self.duration.mul_f64(0.8);
        let bulk_at = start + self.duration / 2;
        let mut bulk = None;
        for i in 0..self.commands {
            let at = start + spread.mul_f64(i as f64 / self.commands.max(1) as f64);
            if bulk.is_none() && at >= bulk_at {
                bulk = self.bulk(&shared).await;
            }
            tokio::time::sleep_until(at).await;
            let device = &self.devices[i % self.devices.len()];
            self.send(device, i, &shared).await;
        }
        if bulk.is_none() {
            tokio::time::sleep_until(bulk_at).await;
            bulk = self.bulk(&shared).await;
        }
        bulk
    }

    async fn send(&self, device: &str, i: usize, shared: &Shared) {
        let started = Instant::now();
        let url = format!("{}/v1/devices/{device}/commands", self.base);
        let body = json!({"name": ECHO, "parameters": {"i": i}, "ttl_seconds": 300});
        let answer = self
            .http
            .post(&url)
            .bearer_auth(&self.admin)
            .json(&body)
            .timeout(Duration::from_secs(30))
            .send()
            .await;
        let id = match answer {
            Ok(response) if response.status() == 201 => response
                .json::<Value>()
                .await
                .ok()
                .and_then(|b| b["id"].as_str().map(str::to_owned)),
            _ => None,
        };
        match id {
            Some(id) => {
                shared.sent.lock().unwrap().insert(id, started);
            }
            None => shared.counts.lock().unwrap().failed += 1,
        }
    }

    async fn bulk(&self, shared: &Shared) -> Option<(u64, Duration)> {
        let tag = self.bulk_tag.as_ref()?;
        let value = i64::from(rand::random::<u32>());
        let started = Instant::now();
        *shared.bulk.lock().unwrap() = Some((value, started));
        let url = format!("{}/v1/fleet/state/desired?tag={tag}", self.base);
        let answer = self
            .http
            .patch(&url)
            .bearer_auth(&self.admin)
            .header("content-type", "application/merge-patch+json")
            .body(json!({ SETPOINT: value }).to_string())
            .timeout(Duration::from_secs(120))
            .send()
            .await
            .ok()?;
        let took = started.elapsed();
        if answer.status() != 200 {
            shared.counts.lock().unwrap().failed += 1;
            return None;
        }
        let body: Value = answer.json().await.ok()?;
        Some((body["devices"].as_u64().unwrap_or(0), took))
    }
}

/// The summary of what `shared` recorded; `bulk`: the operator's bulk write.
pub(super) fn summarize(shared: &Shared, bulk: Option<(u64, Duration)>) -> ControlSummary {
    let counts = *shared.counts.lock().unwrap();
    let polls = std::mem::take(&mut *shared.polls.lock().unwrap());
    let sent = shared.sent.lock().unwrap();
    let done = shared.done.lock().unwrap();
    let round_trips: Vec<Duration> = sent
        .iter()
        .filter_map(|(id, start)| {
            done.get(id)
                .map(|end| end.saturating_duration_since(*start))
        })
        .collect();
    let bulk = bulk.map(|(devices, write)| {
        let started = shared.bulk.lock().unwrap().map(|(_, at)| at);
        let converged = shared.converged.lock().unwrap();
        let last = converged.iter().max().copied();
        BulkSummary {
            devices,
            write_ms: write.as_secs_f64() * 1000.0,
            converged: converged.len() as u64,
            convergence_ms: match (started, last) {
                (Some(start), Some(end)) => {
                    end.saturating_duration_since(start).as_secs_f64() * 1000.0
                }
                _ => 0.0,
            },
        }
    });
    ControlSummary {
        polls: polls.len() as u64,
        unchanged: counts.unchanged,
        poll_latency: Latency::of(polls),
        reports: counts.reports,
        commands_handled: counts.commands,
        commands_sent: sent.len() as u64,
        command_round_trip: Latency::of(round_trips),
        failed: counts.failed,
        bulk,
    }
}
