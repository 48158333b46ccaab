//! `toaster simulate`: a fleet of simulated devices against a running Toaster, built
//! on the device library (`toaster-device`) so the load behaves like real devices:
//! each provisions itself with a claim token (keys made in memory), logs in with a
//! signed assertion, posts telemetry in batches with the library's retry rules,
//! checks for firmware at an interval, verifying and reporting what it is offered, and
//! (with `--control-interval`) follows its desired state and answers its commands
//! ([`control`]).
//!
//! Load goes to loopback only (127.0.0.0/8, ::1, `localhost`) unless
//! `--allow-remote` says otherwise: pointing a load generator at a shared or
//! production server by a typo should take more than a typo.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use toaster_device::{Config, Device, DeviceKey, RetryPolicy};
use tokio::sync::watch;

mod control;
mod devices;
mod summary;

pub use control::{BulkSummary, ControlSummary};

use devices::{Live, Pacer, SimDevice, Tally, claim_token, worker};
pub use summary::{ClientCounters, Errors, Latency, Ota, Provisioning, Summary, Telemetry};
use summary::{add_telemetry, error_key, print_summary};

/// Readings per request the server takes by default (`max_batch_readings`).
const MAX_BATCH: usize = 5000;
/// Metrics each simulated device reports, in turn.
const METRICS: [&str; 3] = ["sim.temp_c", "sim.humidity", "sim.power_w"];

#[derive(clap::Args, Debug, Clone)]
pub struct SimulateArgs {
    /// The Toaster to load.
    #[arg(long, default_value = "http://127.0.0.1:3000")]
    pub url: String,
    /// Claim token the devices provision with (quota at least --devices).
    #[arg(long, env = "TOASTER_CLAIM_TOKEN")]
    pub claim_token: Option<String>,
    /// Instead of --claim-token: an admin token of the tenant; a claim for the run is created with it.
    #[arg(long, env = "TOASTER_ADMIN_TOKEN", conflicts_with = "claim_token")]
    pub admin_token: Option<String>,
    /// Instead of --claim-token: an operator token (`toaster up` prints one) and --tenant;
    /// the tenant is created if it does not exist, then an admin token and a claim.
    #[arg(long, env = "TOASTER_OPERATOR_TOKEN", conflicts_with_all = ["claim_token", "admin_token"], requires = "tenant")]
    pub operator_token: Option<String>,
    /// The tenant for --operator-token.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Device model of the claim the run creates.
    #[arg(long, default_value = "sim")]
    pub model: String,
    /// Devices to provision and run.
    #[arg(long, default_value_t = 10)]
    pub devices: usize,
    /// Readings per second, all devices together; as fast as possible without it.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Readings per telemetry request.
    #[arg(long, default_value_t = 10)]
    pub batch_size: usize,
    /// Requests in flight at once (each device sends one at a time).
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// How long to send telemetry, e.g. 30s, 5m.
    #[arg(long, default_value = "10s", value_parser = toaster_setup::duration::parse)]
    pub duration: Duration,
    /// How often each device checks for an update (e.g. 30s); never without it.
    #[arg(long, value_parser = toaster_setup::duration::parse)]
    pub ota_interval: Option<Duration>,
    /// The firmware version the devices start with.
    #[arg(long, default_value = "1.0.0")]
    pub firmware_version: String,
    /// How often each device reads its state and fetches its commands (e.g. 1s);
    /// never without it.
    #[arg(long, value_parser = toaster_setup::duration::parse)]
    pub control_interval: Option<Duration>,
    /// Commands to send to the devices over the run (needs --control-interval and an
    /// admin or operator token): their round trips are measured.
    #[arg(long, default_value_t = 0, requires = "control_interval")]
    pub commands: usize,
    /// Half-way through, set one desired value on the whole run's fleet and measure
    /// how long the devices take to report it (needs --control-interval and an admin or
    /// operator token).
    #[arg(long, requires = "control_interval")]
    pub bulk_change: bool,
    /// Attempts per request, the first included (the library retries the rest).
    #[arg(long, default_value_t = 3)]
    pub max_attempts: u32,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Allow a --url that is not on this machine.
    #[arg(long)]
    pub allow_remote: bool,
}

impl SimulateArgs {
    /// Parses `toaster simulate`'s flags (for tests and tools; `args` starts with the
    /// program name).
    pub fn try_parse_from<I, T>(args: I) -> Result<SimulateArgs, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        #[derive(clap::Parser)]
        struct Command {
            #[command(flatten)]
            args: SimulateArgs,
        }
        <Command as clap::Parser>::try_parse_from(args).map(|c| c.args)
    }
}

/// Whether `url` names this machine: a loopback address or `localhost`.
pub fn is_local(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(name)) => {
            let name = name.trim_end_matches('.');
            name.eq_ignore_ascii_case("localhost")
        }
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

fn progress(show: bool, length: u64, what: &'static str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(length).with_prefix(what);
    let style = ProgressStyle::with_template("{prefix:>12} [{elapsed_precise}] {wide_bar} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

/// Runs the simulation and prints its summary (and writes `--json`).
pub async fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let summary = simulate(&args).await?;
    print_summary(&summary);
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&summary)?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// Runs the simulation: provisioning, then telemetry (and checks) for `--duration`.
pub async fn simulate(args: &SimulateArgs) -> anyhow::Result<Summary> {
    check_args(args)?;
    let concurrency = args.concurrency.min(args.devices);
    let (config, http) = device_config(args, concurrency)?;
    let run_id = format!("{:08x}", rand::random::<u32>());
    let run_tag = format!("sim-run-{run_id}");
    let (claim, admin) = claim_token(args, &http, config.base_url(), &run_tag).await?;
    if (args.commands > 0 || args.bulk_change) && admin.is_none() {
        bail!(
            "--commands and --bulk-change play the operator: pass --admin-token or --operator-token with --tenant"
        );
    }
    let show = std::io::stdout().is_terminal();
    let (fleet, provisioning, mut errors) =
        provision(args, &config, &claim, &run_id, concurrency, show).await?;

    let concurrency = concurrency.min(fleet.len());
    let talk_back = args.control_interval.map(|every| {
        let operator = admin.map(|admin| control::Operator {
            http: http.clone(),
            base: config.base_url().to_owned(),
            admin,
            devices: fleet
                .iter()
                .map(|d| d.identity().device_id.clone())
                .collect(),
            commands: args.commands,
            bulk_tag: args.bulk_change.then(|| run_tag.clone()),
            duration: args.duration,
        });
        start_control(&fleet, every, operator)
    });
    let (tally, seconds) = run_telemetry(args, &fleet, concurrency, show).await?;
    let control = match talk_back {
        Some(running) => Some(running.finish().await?),
        None => None,
    };
    for (key, n) in tally.errors {
        *errors.entry(key).or_default() += n;
    }
    let mut telemetry = tally.telemetry;
    telemetry.readings_per_sec = telemetry.readings as f64 / seconds.max(0.001);
    telemetry.batches_per_sec = telemetry.batches as f64 / seconds.max(0.001);
    telemetry.latency = Latency::of(tally.post_latency);
    let mut ota = tally.ota;
    ota.latency = Latency::of(tally.check_latency);
    Ok(Summary {
        url: config.base_url().to_owned(),
        devices: fleet.len(),
        batch_size: args.batch_size,
        concurrency,
        rate_target: args.rate,
        seconds,
        provisioning,
        telemetry,
        ota,
        control,
        client: client_counters(&fleet),
        errors: Errors {
            total: errors.values().sum(),
            by_status: errors,
        },
    })
}

/// Refuses what would not be a sensible run, before anything is sent.
fn check_args(args: &SimulateArgs) -> anyhow::Result<()> {
    let base = url::Url::parse(&args.url).with_context(|| format!("--url {}", args.url))?;
    if !is_local(&base) && !args.allow_remote {
        bail!(
            "--url {} is not on this machine: simulate sends load only to 127.0.0.1, ::1 or localhost unless you pass --allow-remote",
            args.url
        );
    }
    if args.devices == 0 || args.devices > 100_000 {
        bail!("--devices must be 1 to 100000");
    }
    if args.batch_size == 0 || args.batch_size > MAX_BATCH {
        bail!("--batch-size must be 1 to {MAX_BATCH}");
    }
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    if let Some(rate) = args.rate
        && !(rate.is_finite() && rate > 0.0)
    {
        bail!("--rate must be a positive number of readings per second");
    }
    Ok(())
}

/// The device library's configuration: one HTTP client shared by the fleet.
fn device_config(
    args: &SimulateArgs,
    concurrency: usize,
) -> anyhow::Result<(Config, reqwest::Client)> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .connect_timeout(Duration::from_secs(10))
        .build()?;
    let mut config = Config::new(&args.url)?;
    config.http = Some(http.clone());
    config.batch_size = args.batch_size;
    config.request_timeout = Duration::from_secs(10);
    config.retry = RetryPolicy {
        max_attempts: args.max_attempts.max(1),
        // Waiting out a Retry-After longer than the run would only hide the refusal.
        max_retry_after: args.duration.min(Duration::from_secs(60)),
        ..RetryPolicy::default()
    };
    Ok((config, http))
}

/// Provisioning: `concurrency` devices at a time. The devices that made it, how it
/// went, and the errors of those that did not, by kind.
async fn provision(
    args: &SimulateArgs,
    config: &Config,
    claim: &str,
    run_id: &str,
    concurrency: usize,
    show: bool,
) -> anyhow::Result<(Vec<Device>, Provisioning, BTreeMap<String, u64>)> {
    let bar = progress(show, args.devices as u64, "provisioning");
    let started = Instant::now();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut fleet = Vec::with_capacity(args.devices);
    let mut provisioned = futures::stream::iter(0..args.devices)
        .map(|i| {
            let (config, claim) = (config.clone(), claim.to_string());
            let id = format!("sim-{run_id}-{i:05}");
            async move { Device::provision(config, DeviceKey::generate(), &claim, &id, &[]).await }
        })
        .buffer_unordered(concurrency);
    let mut first_error = None;
    while let Some(result) = provisioned.next().await {
        bar.inc(1);
        match result {
            Ok(device) => fleet.push(device),
            Err(e) => {
                *errors.entry(error_key(&e)).or_default() += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    drop(provisioned);
    bar.finish_and_clear();
    let provisioning = Provisioning {
        devices: fleet.len() as u64,
        failed: (args.devices - fleet.len()) as u64,
        seconds: started.elapsed().as_secs_f64(),
    };
    if fleet.is_empty() {
        let e = first_error.map(|e| e.to_string()).unwrap_or_default();
        bail!("no device could provision: {e}");
    }
    Ok((fleet, provisioning, errors))
}

/// Telemetry: each worker runs its share of the devices, one request at a time, until
/// `--duration` has passed (or Ctrl-C). What the workers saw, and for how long.
async fn run_telemetry(
    args: &SimulateArgs,
    fleet: &[Device],
    concurrency: usize,
    show: bool,
) -> anyhow::Result<(Tally, f64)> {
    let shares = shares(args, fleet, concurrency);
    let live = Arc::new(Live::default());
    let pacer = Arc::new(Pacer::new(args.rate));
    let deadline = tokio::time::Instant::now() + args.duration;
    let (stop_tx, stop_rx) = watch::channel(false);
    let load_started = Instant::now();
    let bar = progress(show, args.duration.as_millis() as u64, "telemetry");
    let ticker = {
        let (bar, live) = (bar.clone(), live.clone());
        tokio::spawn(async move {
            loop {
                let elapsed = load_started.elapsed();
                bar.set_position(elapsed.as_millis() as u64);
                let readings = live.readings.load(Ordering::Relaxed);
                bar.set_message(format!(
                    "{readings} readings, {:.0}/s, {} errors",
                    readings as f64 / elapsed.as_secs_f64().max(0.001),
                    live.errors.load(Ordering::Relaxed)
                ));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let interrupt = {
        let stop_tx = stop_tx.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                let _ = stop_tx.send(true);
            }
        })
    };
    let workers: Vec<_> = shares
        .into_iter()
        .map(|share| {
            tokio::spawn(worker(
                share,
                args.batch_size,
                args.ota_interval,
                pacer.clone(),
                deadline,
                stop_rx.clone(),
                live.clone(),
            ))
        })
        .collect();
    let mut tally = Tally::default();
    for worker in workers {
        let part = worker.await.context("a simulation worker panicked")?;
        tally.post_latency.extend(part.post_latency);
        tally.check_latency.extend(part.check_latency);
        add_telemetry(&mut tally.telemetry, &part.telemetry);
        tally.ota.checks += part.ota.checks;
        tally.ota.offers += part.ota.offers;
        tally.ota.reports += part.ota.reports;
        tally.ota.failed += part.ota.failed;
        for (key, n) in part.errors {
            *tally.errors.entry(key).or_default() += n;
        }
    }
    let seconds = load_started.elapsed().as_secs_f64();
    ticker.abort();
    interrupt.abort();
    drop(stop_tx);
    bar.finish_and_clear();
    Ok((tally, seconds))
}

/// The devices' control loops and the operator task, running beside telemetry.
struct Talking {
    loops: Vec<tokio::task::JoinHandle<()>>,
    operator: Option<tokio::task::JoinHandle<Option<(u64, Duration)>>>,
    shared: Arc<control::Shared>,
    stop: watch::Sender<bool>,
}

/// Starts one control loop per device (their first polls spread over the first
/// interval) and the operator task.
fn start_control(
    fleet: &[Device],
    every: Duration,
    operator: Option<control::Operator>,
) -> Talking {
    let shared = Arc::new(control::Shared::default());
    let (stop, stop_rx) = watch::channel(false);
    let now = tokio::time::Instant::now();
    let fleet_size = fleet.len().max(1) as f64;
    let loops = fleet
        .iter()
        .enumerate()
        .map(|(i, device)| {
            let first = now + every.mul_f64(i as f64 / fleet_size);
            tokio::spawn(control::device_loop(
                device.clone(),
                every,
                first,
                shared.clone(),
                stop_rx.clone(),
            ))
        })
        .collect();
    let operator = operator.map(|o| tokio::spawn(o.run(shared.clone())));
    Talking {
        loops,
        operator,
        shared,
        stop,
    }
}

impl Talking {
    /// Stops the loops (after the operator's part) and summarizes.
    async fn finish(self) -> anyhow::Result<ControlSummary> {
        let bulk = match self.operator {
            Some(task) => task.await.context("the operator task panicked")?,
            None => None,
        };
        let _ = self.stop.send(true);
        for task in self.loops {
            task.await.context("a control loop panicked")?;
        }
        Ok(control::summarize(&self.shared, bulk))
    }
}

/// The fleet dealt out to `concurrency` workers, each device with its first check
/// (spread over the first interval, not all at once).
fn shares(args: &SimulateArgs, fleet: &[Device], concurrency: usize) -> Vec<Vec<SimDevice>> {
    let mut shares: Vec<Vec<SimDevice>> = (0..concurrency).map(|_| Vec::new()).collect();
    let now = tokio::time::Instant::now();
    let fleet_size = fleet.len() as u32;
    for (i, device) in fleet.iter().enumerate() {
        let next_check = args
            .ota_interval
            .map(|every| now + every.mul_f64(f64::from(i as u32) / f64::from(fleet_size)));
        shares[i % concurrency].push(SimDevice {
            device: device.clone(),
            version: args.firmware_version.clone(),
            next_check,
            last_ts: 0,
            sequence: 0,
        });
    }
    shares
}

/// The device library's counters, over the fleet.
fn client_counters(fleet: &[Device]) -> ClientCounters {
    let mut client = ClientCounters::default();
    for device in fleet {
        let s = device.stats();
        client.requests += s.requests;
        client.logins += s.logins;
        client.relogins += s.relogins;
        client.retries += s.retries;
        client.rate_limited += s.rate_limited;
        client.unavailable += s.unavailable;
        client.no_answer += s.no_answer;
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> url::Url {
        url::Url::parse(text).unwrap()
    }

    #[test]
    fn only_loopback_is_local() {
        for local in [
            "http://127.0.0.1:3000",
            "http://127.8.9.10",
            "http://localhost:3000",
            "https://LOCALHOST/",
            "http://[::1]:3000",
        ] {
            assert!(is_local(&url(local)), "{local}");
        }
        for remote in [
            "http://10.0.0.1:3000",
            "http://192.168.1.2",
            "https://toaster.example.com",
            "http://localhost.example.com",
            "http://[::2]",
            "http://0.0.0.0:3000",
        ] {
            assert!(!is_local(&url(remote)), "{remote}");
        }
    }

    #[tokio::test]
    async fn a_remote_url_is_refused_before_anything_is_sent() {
        // 192.0.2.0/24 is TEST-NET-1: nothing answers there, and nothing is tried.
        let args = SimulateArgs::try_parse_from([
            "simulate",
            "--url",
            "http://192.0.2.1:3000",
            "--claim-token",
            "tclaim_x",
        ])
        .unwrap();
        let started = Instant::now();
        let error = simulate(&args).await.unwrap_err().to_string();
        assert!(error.contains("--allow-remote"), "{error}");
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn flags_parse_and_conflict() {
        let args = SimulateArgs::try_parse_from([
            "simulate",
            "--claim-token",
            "tclaim_x",
            "--devices",
            "5",
            "--rate",
            "250",
            "--duration",
            "1500ms",
            "--ota-interval",
            "2s",
        ])
        .unwrap();
        assert_eq!(args.url, "http://127.0.0.1:3000");
        assert_eq!(args.devices, 5);
        assert_eq!(args.rate, Some(250.0));
        assert_eq!(args.duration, Duration::from_millis(1500));
        assert_eq!(args.ota_interval, Some(Duration::from_secs(2)));
        assert!(
            SimulateArgs::try_parse_from(["simulate", "--claim-token", "a", "--admin-token", "b"])
                .is_err()
        );
        assert!(SimulateArgs::try_parse_from(["simulate", "--operator-token", "o"]).is_err());
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        let l = Latency::of(samples);
        assert_eq!(l.count, 100);
        assert_eq!(
            (l.p50_ms, l.p95_ms, l.p99_ms, l.max_ms),
            (50.0, 95.0, 99.0, 100.0)
        );
        assert!((l.mean_ms - 50.5).abs() < 1e-9);
        let one = Latency::of(vec![Duration::from_millis(7)]);
        assert_eq!((one.p50_ms, one.p99_ms, one.max_ms), (7.0, 7.0, 7.0));
        assert_eq!(Latency::of(Vec::new()), Latency::default());
    }

    #[tokio::test]
    async fn the_pacer_spreads_readings_over_time() {
        let pacer = Pacer::new(Some(100.0));
        let first = pacer.slot(10).unwrap();
        let second = pacer.slot(10).unwrap();
        let third = pacer.slot(10).unwrap();
        assert_eq!(first, pacer.start);
        assert_eq!(second - first, Duration::from_millis(100));
        assert_eq!(third - second, Duration::from_millis(100));
        assert!(Pacer::new(None).slot(10).is_none());
    }

    #[test]
    fn a_device_never_repeats_a_timestamp() {
        // Batches made faster than a millisecond each still get distinct keys.
        let device = Device::new(
            Config::new("http://127.0.0.1:1").unwrap(),
            DeviceKey::generate(),
            toaster_device::Identity::new("t", "d"),
        )
        .unwrap();
        let mut sim = SimDevice {
            device,
            version: "1.0.0".into(),
            next_check: None,
            last_ts: 0,
            sequence: 0,
        };
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..5 {
            for r in sim.batch(100) {
                assert!(seen.insert(r.ts_ms()));
            }
        }
        assert_eq!(seen.len(), 500);
    }
}
