//! Scenario `soak` (issue 7): telemetry posted at a fixed rate for a given time,
//! sampling the host's memory and the latency and throughput of each interval, to
//! show that neither grows.
//!
//! The load is open-loop: request `n` is due at `n / rate` seconds after the start,
//! whatever happened to the ones before, and its latency is counted from when it
//! was due, not from when it was sent. A server (or generator) that falls behind
//! shows it as latency instead of quietly lowering the rate. Requests rotate over a
//! fleet of devices, each posting a batch of readings stamped with the time it was
//! due, so every reading is new.
//!
//! Before the first sample, the same load runs for one interval (at most 10 s)
//! unrecorded, so pools and caches are filled when the first window starts.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use toaster_core::ids::{DeviceId, TenantId};
use toaster_core::token::{AccessClaims, MAX_DEVICE_TTL, TokenSigner};
use tokio::time::Instant;

use super::app::AppUnderTest;
use super::usage::{self, CpuClock, CpuShare};
use super::{Endpoint, percentile};
use toaster_setup::database;

const DEVICES: usize = 1000;
const MODEL: &str = "bench-soak";
/// Connections the schedule is spread over: enough that a slow answer on one does
/// not hold back the requests due on the others.
const CONNECTIONS: usize = 32;
const WARMUP: Duration = Duration::from_secs(10);
/// The verdict's thresholds: memory first window to last; latency the median of the
/// first third of the windows to the median of the last third (one window's p99 is a
/// handful of requests, and a single slow one would decide).
const MEMORY_GROWTH_LIMIT: f64 = 0.10;
const P99_GROWTH_LIMIT: f64 = 2.0;

/// `--soak-*`.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    /// Requests per second.
    pub rate: u32,
    /// How long the rate is held and sampled (after the warm-up).
    pub duration: Duration,
    /// One sample per interval.
    pub every: Duration,
    /// Readings per request.
    pub batch: usize,
}

/// Answers and latencies of the current interval.
#[derive(Default)]
struct Window {
    latencies_us: Vec<u64>,
    errors: u64,
}

/// One interval.
struct Sample {
    /// Seconds since the end of the warm-up, at the end of the interval.
    at_s: f64,
    served_per_s: f64,
    p50_us: u64,
    p99_us: u64,
    errors: u64,
    rss: Option<u64>,
    cpu: CpuShare,
}

/// Runs the scenario; the markdown section for BENCHMARKS.md.
pub async fn soak(app: &AppUnderTest, opts: &SoakOptions) -> anyhow::Result<String> {
    anyhow::ensure!(opts.batch >= 1, "--soak-batch must be at least 1");
    let warmup = WARMUP.min(opts.every);
    let fleet = Arc::new(Fleet::insert(app).await?);
    let target = app.endpoint();

    let window = Arc::new(Mutex::new(Window::default()));
    let warned = Arc::new(AtomicBool::new(false));
    let start = Instant::now() + Duration::from_millis(200);
    let end = start + warmup + opts.duration;
    let start_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64
        + 200;
    let mut tasks = Vec::new();
    for c in 0..CONNECTIONS {
        let schedule = Schedule {
            first: c as u64,
            step: CONNECTIONS as u64,
            rate: opts.rate as f64,
            start,
            end,
            start_ms,
            batch: opts.batch,
        };
        tasks.push(tokio::spawn(connection(
            target,
            schedule,
            fleet.clone(),
            window.clone(),
            warned.clone(),
        )));
    }

    let take = || std::mem::take(&mut *window.lock().expect("window lock"));
    tokio::time::sleep_until(start + warmup).await;
    take();
    let mut samples = Vec::new();
    let mut from = start + warmup;
    while from + opts.every <= end {
        let clock = CpuClock::start(target.pid);
        tokio::time::sleep_until(from + opts.every).await;
        let cpu = clock.stop();
        let mut w = take();
        let rss = target.pid.and_then(usage::rss);
        w.latencies_us.sort_unstable();
        from += opts.every;
        samples.push(Sample {
            at_s: (from - start - warmup).as_secs_f64(),
            served_per_s: w.latencies_us.len() as f64 / opts.every.as_secs_f64(),
            p50_us: percentile(&w.latencies_us, 0.50),
            p99_us: percentile(&w.latencies_us, 0.99),
            errors: w.errors,
            rss,
            cpu,
        });
    }
    for t in tasks {
        t.await??;
    }
    Ok(report(opts, &samples, app.peak_rss()))
}

/// 1,000 devices inserted with SQL, and an access token for each, renewed when half
/// its lifetime (at most an hour for a device) has passed, so a soak may run for
/// longer than a token lives.
struct Fleet {
    signer: TokenSigner,
    tenant: TenantId,
    devices: Vec<DeviceId>,
    tokens: Mutex<Vec<(Instant, Arc<str>)>>,
}

impl Fleet {
    async fn insert(app: &AppUnderTest) -> anyhow::Result<Fleet> {
        let ids: Vec<String> = (0..DEVICES).map(|i| format!("soak-{i:04}")).collect();
        let client = database::connect(&app.db_url).await?;
        client
            .execute(
                "INSERT INTO devices (tenant_id, device_id, model, channel) \
                 SELECT $1, id, $3, 'stable' FROM unnest($2::text[]) AS id ON CONFLICT DO NOTHING",
                &[&app.tenant, &ids, &MODEL],
            )
            .await
            .context("inserting the soak fleet")?;
        let tenant = TenantId::parse(&app.tenant).map_err(|e| anyhow::anyhow!("{e}"))?;
        let devices = ids
            .iter()
            .map(|id| DeviceId::parse(id).map_err(|e| anyhow::anyhow!("{e}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let fleet = Fleet {
            signer: app.signer.clone(),
            tenant,
            devices,
            tokens: Mutex::new(Vec::new()),
        };
        let tokens = (0..DEVICES)
            .map(|i| Ok((Instant::now(), fleet.mint(i)?)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        *fleet.tokens.lock().expect("tokens lock") = tokens;
        Ok(fleet)
    }

    fn mint(&self, i: usize) -> anyhow::Result<Arc<str>> {
        let token = self.signer.mint(
            &AccessClaims::device(self.tenant.clone(), &self.devices[i], 1),
            MAX_DEVICE_TTL,
        )?;
        Ok(format!("Bearer {token}").into())
    }

    /// The `authorization` header of device `i`.
    fn authorization(&self, i: usize) -> anyhow::Result<Arc<str>> {
        let i = i % self.devices.len();
        let mut tokens = self.tokens.lock().expect("tokens lock");
        if tokens[i].0.elapsed() > MAX_DEVICE_TTL / 2 {
            tokens[i] = (Instant::now(), self.mint(i)?);
        }
        Ok(tokens[i].1.clone())
    }
}

/// The requests one connection sends: numbers `first`, `first + step`, ...
#[derive(Clone, Copy)]
struct Schedule {
    first: u64,
    step: u64,
    rate: f64,
    start: Instant,
    end: Instant,
    /// Unix ms at `start`: readings are stamped with the time they were due.
    start_ms: i64,
    batch: usize,
}

impl Schedule {
    /// When request `n` is due, as an offset from the start.
    fn due(&self, n: u64) -> Duration {
        Duration::from_secs_f64(n as f64 / self.rate)
    }
}

/// `POST /v1/telemetry` of request `n`: device `n mod fleet`, `batch` metrics, all
/// stamped `ts_ms`.
fn telemetry_body(n: u64, ts_ms: i64, batch: usize) -> String {
    let mut body = String::with_capacity(16 + batch * 48);
    body.push_str("{\"readings\":[");
    for i in 0..batch {
        if i > 0 {
            body.push(',');
        }
        let value = 20.0 + ((n % 977) as f64 + i as f64) / 100.0;
        body.push_str(&format!(
            "{{\"metric\":\"m{i}\",\"ts\":{ts_ms},\"value\":{value}}}"
        ));
    }
    body.push_str("]}");
    body
}

async fn connection(
    target: Endpoint,
    schedule: Schedule,
    fleet: Arc<Fleet>,
    window: Arc<Mutex<Window>>,
    warned: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let mut sender: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>> = None;
    let mut n = schedule.first;
    loop {
        let offset = schedule.due(n);
        let due = schedule.start + offset;
        if due >= schedule.end {
            return Ok(());
        }
        tokio::time::sleep_until(due).await;
        if sender.is_none() {
            sender = connect(target).await.ok();
        }
        let outcome = match sender.as_mut() {
            None => Err("cannot connect".to_string()),
            Some(s) => {
                let req = http::Request::post("/v1/telemetry")
                    .header(http::header::HOST, "127.0.0.1")
                    .header("authorization", &*fleet.authorization(n as usize)?)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(telemetry_body(
                        n,
                        schedule.start_ms + offset.as_millis() as i64,
                        schedule.batch,
                    ))))?;
                match s.send_request(req).await {
                    Ok(resp) => {
                        let status = resp.status();
                        let body = resp.into_body().collect().await.map(|b| b.to_bytes());
                        if status.is_success() {
                            Ok(due.elapsed())
                        } else {
                            Err(format!(
                                "{status}: {}",
                                String::from_utf8_lossy(&body.unwrap_or_default())
                            ))
                        }
                    }
                    Err(e) => {
                        sender = None;
                        Err(e.to_string())
                    }
                }
            }
        };
        {
            let mut w = window.lock().expect("window lock");
            match outcome {
                Ok(latency) => w.latencies_us.push(latency.as_micros() as u64),
                Err(e) => {
                    w.errors += 1;
                    if !warned.swap(true, Ordering::Relaxed) {
                        tracing::warn!("bench soak: {e}");
                    }
                }
            }
        }
        n += schedule.step;
    }
}

async fn connect(
    target: Endpoint,
) -> anyhow::Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(target.addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

fn ms(us: u64) -> String {
    format!("{:.1} ms", us as f64 / 1000.0)
}

fn report(opts: &SoakOptions, samples: &[Sample], peak: Option<u64>) -> String {
    let mut out = format!(
        "`POST /v1/telemetry` at a fixed **{} requests/s** of {} readings each ({} readings/s) from {DEVICES} devices over {CONNECTIONS} connections, for {} s after a {} s warm-up; one row per {} s. Open loop: each request is due at a fixed time and its latency counts from then, so falling behind shows as latency.\n\n",
        opts.rate,
        opts.batch,
        opts.rate as u64 * opts.batch as u64,
        opts.duration.as_secs(),
        WARMUP.min(opts.every).as_secs(),
        opts.every.as_secs(),
    );
    out.push_str(
        "| t | served req/s | p50 | p99 | errors | host RSS | CPU % gen / server / other |\n|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for s in samples {
        out.push_str(&format!(
            "| {:.0} s | {:.1} | {} | {} | {} | {} | {} |\n",
            s.at_s,
            s.served_per_s,
            ms(s.p50_us),
            ms(s.p99_us),
            s.errors,
            s.rss.map(usage::mib).unwrap_or_else(|| "?".into()),
            s.cpu.cell(),
        ));
    }
    out.push('\n');
    out.push_str(&verdict(opts, samples));
    out.push_str(&format!(
        "\nPeak memory (VmHWM) of the toaster host process during this scenario (warm-up included): {}.\n",
        peak.map(usage::mib).unwrap_or_else(|| "unknown".into())
    ));
    out
}

/// The median of `values` (the upper one of an even count); 0 when empty.
fn median(mut values: Vec<u64>) -> u64 {
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or(0)
}

/// Memory first window against last, latency first third against last third, and
/// whether the rate was held.
fn verdict(opts: &SoakOptions, samples: &[Sample]) -> String {
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
        return "Verdict: no sample (the soak was shorter than one interval).\n".into();
    };
    let third = (samples.len() / 3).max(1);
    let early = &samples[..third];
    let late = &samples[samples.len() - third..];
    let p50 = |w: &[Sample]| median(w.iter().map(|s| s.p50_us).collect());
    let p99 = |w: &[Sample]| median(w.iter().map(|s| s.p99_us).collect());
    let (early_p50, late_p50, early_p99, late_p99) = (p50(early), p50(late), p99(early), p99(late));
    let served: f64 = samples.iter().map(|s| s.served_per_s).sum::<f64>() / samples.len() as f64;
    let errors: u64 = samples.iter().map(|s| s.errors).sum();
    let rss_growth = match (first.rss, last.rss) {
        (Some(a), Some(b)) if a > 0 => Some(b as f64 / a as f64 - 1.0),
        _ => None,
    };
    let p99_ratio = late_p99 as f64 / (early_p99 as f64).max(1.0);
    let held = served >= opts.rate as f64 * 0.99 && errors == 0;
    let steady =
        held && rss_growth.is_some_and(|g| g < MEMORY_GROWTH_LIMIT) && p99_ratio < P99_GROWTH_LIMIT;
    let memory = match (first.rss, last.rss, rss_growth) {
        (Some(a), Some(b), Some(g)) => format!(
            "host memory {} in the first window, {} in the last ({:+.1}%)",
            usage::mib(a),
            usage::mib(b),
            g * 100.0
        ),
        _ => "host memory unknown".into(),
    };
    format!(
        "Verdict: **{}**. {memory}; median of the windows' p50 {} → {}, p99 {} → {} (first {third} windows → last {third}); {served:.1} of {} requests/s served on average, {errors} errors. (Steady means: the rate held with no errors, memory grew less than {:.0}% from the first window to the last, and the median p99 less than {P99_GROWTH_LIMIT:.0}× from the first third of the windows to the last.)\n",
        if steady { "steady" } else { "not steady" },
        ms(early_p50),
        ms(late_p50),
        ms(early_p99),
        ms(late_p99),
        opts.rate,
        MEMORY_GROWTH_LIMIT * 100.0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(rss_mib: u64, p99_us: u64, served: f64) -> Sample {
        Sample {
            at_s: 10.0,
            served_per_s: served,
            p50_us: p99_us / 3,
            p99_us,
            errors: 0,
            rss: Some(rss_mib * 1024 * 1024),
            cpu: CpuShare::default(),
        }
    }

    fn opts() -> SoakOptions {
        SoakOptions {
            rate: 500,
            duration: Duration::from_secs(60),
            every: Duration::from_secs(10),
            batch: 10,
        }
    }

    #[test]
    fn flat_memory_and_latency_at_the_offered_rate_is_steady() {
        let v = verdict(&opts(), &[sample(60, 4000, 500.0), sample(61, 4200, 499.8)]);
        assert!(v.starts_with("Verdict: **steady**"), "{v}");
    }

    #[test]
    fn growing_memory_or_latency_or_a_missed_rate_is_not_steady() {
        for samples in [
            [sample(60, 4000, 500.0), sample(70, 4000, 500.0)],
            [sample(60, 4000, 500.0), sample(60, 9000, 500.0)],
            [sample(60, 4000, 450.0), sample(60, 4000, 450.0)],
        ] {
            let v = verdict(&opts(), &samples);
            assert!(v.starts_with("Verdict: **not steady**"), "{v}");
        }
    }

    #[test]
    fn one_slow_window_is_noise_but_a_slower_last_third_is_growth() {
        let mut samples: Vec<Sample> = (0..12).map(|_| sample(60, 4000, 500.0)).collect();
        samples[11] = sample(60, 12_000, 500.0);
        let v = verdict(&opts(), &samples);
        assert!(v.starts_with("Verdict: **steady**"), "{v}");
        for s in &mut samples[8..] {
            *s = sample(60, 9000, 500.0);
        }
        let v = verdict(&opts(), &samples);
        assert!(v.starts_with("Verdict: **not steady**"), "{v}");
    }

    #[test]
    fn requests_are_due_at_fixed_times_and_readings_are_distinct() {
        let s = Schedule {
            first: 3,
            step: 32,
            rate: 500.0,
            start: Instant::now(),
            end: Instant::now(),
            start_ms: 0,
            batch: 2,
        };
        assert_eq!(s.due(500), Duration::from_secs(1));
        assert_eq!(s.due(250), Duration::from_millis(500));
        let body: serde_json::Value =
            serde_json::from_str(&telemetry_body(7, 1_700_000_000_123, 2)).unwrap();
        let readings = body["readings"].as_array().unwrap();
        assert_eq!(readings.len(), 2);
        assert_eq!(readings[0]["metric"], "m0");
        assert_eq!(readings[1]["metric"], "m1");
        assert_eq!(readings[1]["ts"], 1_700_000_000_123i64);
    }
}
