//! What a simulation measured, as JSON (`--json`) and as the lines it prints.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use toaster_device::Error as DeviceError;

// ------------------------------------------------------------------------- results

/// Latency of one kind of call, in milliseconds (the library's whole call, retries
/// included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latency {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    /// Nearest-rank percentiles of `samples`.
    pub fn of(mut samples: Vec<Duration>) -> Latency {
        if samples.is_empty() {
            return Latency::default();
        }
        samples.sort_unstable();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let rank = |p: f64| {
            let index = ((p / 100.0) * samples.len() as f64).ceil() as usize;
            ms(samples[index.clamp(1, samples.len()) - 1])
        };
        let total: Duration = samples.iter().sum();
        Latency {
            count: samples.len() as u64,
            mean_ms: ms(total) / samples.len() as f64,
            p50_ms: rank(50.0),
            p95_ms: rank(95.0),
            p99_ms: rank(99.0),
            max_ms: ms(samples[samples.len() - 1]),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Provisioning {
    pub devices: u64,
    pub failed: u64,
    pub seconds: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Telemetry {
    pub batches: u64,
    /// Readings the server confirmed (stored + duplicates).
    pub readings: u64,
    pub stored: u64,
    pub duplicates: u64,
    /// Batches that failed for good, and their readings.
    pub failed_batches: u64,
    pub failed_readings: u64,
    pub readings_per_sec: f64,
    pub batches_per_sec: f64,
    pub latency: Latency,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Ota {
    pub checks: u64,
    pub offers: u64,
    pub reports: u64,
    pub failed: u64,
    pub latency: Latency,
}

/// The library's own counters, summed over the devices.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ClientCounters {
    pub requests: u64,
    pub logins: u64,
    pub relogins: u64,
    pub retries: u64,
    pub rate_limited: u64,
    pub unavailable: u64,
    pub no_answer: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Errors {
    /// Calls that failed for good.
    pub total: u64,
    /// By the HTTP status of the refusal (or of the last attempt), else `no_answer`
    /// or `other`.
    pub by_status: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub url: String,
    pub devices: usize,
    pub batch_size: usize,
    pub concurrency: usize,
    pub rate_target: Option<f64>,
    /// How long telemetry was sent.
    pub seconds: f64,
    pub provisioning: Provisioning,
    pub telemetry: Telemetry,
    pub ota: Ota,
    /// `--control-interval`: state polls, reports, commands.
    pub control: Option<super::ControlSummary>,
    pub client: ClientCounters,
    pub errors: Errors,
}

pub(super) fn error_key(error: &DeviceError) -> String {
    match (error.status(), error) {
        (Some(status), _) => status.to_string(),
        (None, DeviceError::GaveUp { .. }) => "no_answer".into(),
        (None, DeviceError::Ota(_)) => "bad_manifest".into(),
        _ => "other".into(),
    }
}

pub(super) fn add_telemetry(total: &mut Telemetry, part: &Telemetry) {
    total.batches += part.batches;
    total.readings += part.readings;
    total.stored += part.stored;
    total.duplicates += part.duplicates;
    total.failed_batches += part.failed_batches;
    total.failed_readings += part.failed_readings;
}

pub(super) fn print_summary(s: &Summary) {
    let t = &s.telemetry;
    println!(
        "simulated {} device(s) against {} for {:.1} s ({})",
        s.devices,
        s.url,
        s.seconds,
        match s.rate_target {
            Some(rate) => format!("target {rate} readings/s"),
            None => "as fast as possible".into(),
        }
    );
    println!(
        "  provisioning: {} ok, {} failed, {:.2} s",
        s.provisioning.devices, s.provisioning.failed, s.provisioning.seconds
    );
    println!(
        "  telemetry:    {} batches of {}, {} readings ({} stored, {} duplicates), {:.1} readings/s, {:.1} batches/s",
        t.batches,
        s.batch_size,
        t.readings,
        t.stored,
        t.duplicates,
        t.readings_per_sec,
        t.batches_per_sec
    );
    let latency = |l: &Latency| {
        format!(
            "p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            l.p50_ms, l.p95_ms, l.p99_ms, l.max_ms
        )
    };
    println!("  post latency: {}", latency(&t.latency));
    if s.ota.checks > 0 {
        println!(
            "  ota:          {} checks, {} offers, {} reports; {}",
            s.ota.checks,
            s.ota.offers,
            s.ota.reports,
            latency(&s.ota.latency)
        );
    }
    if let Some(c) = &s.control {
        println!(
            "  state:        {} polls ({} unchanged), {} reports; {}",
            c.polls,
            c.unchanged,
            c.reports,
            latency(&c.poll_latency)
        );
        println!(
            "  commands:     {} sent, {} handled, {} failed calls; round trip {}",
            c.commands_sent,
            c.commands_handled,
            c.failed,
            latency(&c.command_round_trip)
        );
        if let Some(b) = &c.bulk {
            println!(
                "  bulk change:  {} devices written in {:.0} ms; {} reported it, the last after {:.0} ms",
                b.devices, b.write_ms, b.converged, b.convergence_ms
            );
        }
    }
    println!(
        "  client:       {} requests, {} logins, {} retries ({} rate limited, {} unavailable, {} without answer)",
        s.client.requests,
        s.client.logins,
        s.client.retries,
        s.client.rate_limited,
        s.client.unavailable,
        s.client.no_answer
    );
    if s.errors.total == 0 {
        println!("  errors:       none");
    } else {
        let by: Vec<String> = s
            .errors
            .by_status
            .iter()
            .map(|(k, n)| format!("{k}: {n}"))
            .collect();
        println!("  errors:       {} ({})", s.errors.total, by.join(", "));
    }
}
