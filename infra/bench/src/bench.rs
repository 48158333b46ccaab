//! `toaster bench`: load generated on 127.0.0.1 against the host and, in the same
//! run, against a native baseline giving the same response, so every figure comes
//! with the ratio that makes it meaningful on whatever machine runs it.
//!
//! Every server under test (the toaster host, and the native hyper baselines too)
//! runs in a child process of its own (`server`); the load generator stays in this
//! process. So the kernel accounts each side's CPU separately, and every
//! measurement reports the generator's, the server's and the rest of the machine's
//! share (`usage`), next to the server's peak memory: on a small machine the
//! generator's limits are visible instead of passing for ours.
//!
//! Scenario `host`: the trivial `hello` component served by the toaster host
//! against a native hyper server answering the same `hello\n`, at 1, 16 and 64
//! keep-alive connections: requests/s, p50/p99 latency and each server's CPU per
//! request, then the host's own work per request without the network
//! ([`host_work_per_request`]), which tells the host's cost apart from what loopback
//! TCP and waking the generator cost on the machine at hand. The other scenarios
//! serve the workspace's app against a scratch database (`app`, `ota`,
//! `aggregate`), and `soak` holds a fixed rate for a while, sampling memory and
//! latency over time.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use bytes::Bytes;
use http_body_util::Full;

use toaster_setup::{database, localpg};

pub mod aggregate;
pub mod app;
pub mod console;
pub mod control;
pub mod hardening;
pub mod host;
pub mod load;
pub mod ota;
pub mod report;
pub mod server;
pub mod soak;
pub mod spin;
pub mod usage;

use host::peak;
pub use host::{
    HelloHost, HostScenario, hello_app, host_scenario, host_table, host_work_per_request,
    native_hello_server,
};
use load::summarize;
pub use load::{
    Endpoint, Measurement, RequestFactory, get, load, load_expecting, load_with, percentile,
};
use report::{command_line, errors_note, host_peak_note, minutes, row, run_summary, table_header};
pub use report::{machine, write_sections};

use server::{ServeSpec, ServerProcess};

/// Every scenario, in the order `toaster bench` runs them.
pub const SCENARIOS: [&str; 8] = [
    "host",
    "auth",
    "ota",
    "control",
    "console",
    "ingest",
    "aggregate",
    "soak",
];
/// Scenarios run only when asked for: `spin` needs a Spin binary (`--spin-bin`);
/// `hardening` idles a minute to see memory come back.
pub const OPTIONAL_SCENARIOS: [&str; 2] = ["spin", "hardening"];

/// A markdown table of measurements, each row's throughput also as a multiple of
/// `baseline`'s (the column headed `× {baseline_name}`).
pub fn ratio_table(
    baseline_name: &str,
    baseline: &Measurement,
    rows: &[(&str, &Measurement)],
) -> String {
    let mut table = format!(
        "| | connections | requests/s | × {baseline_name} | p50 | p99 | errors | CPU % gen / server / other |\n|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (label, m) in rows {
        table.push_str(&format!(
            "| {label} | {} | {:.0} | {:.2} | {} µs | {} µs | {} | {} |\n",
            m.connections,
            m.rps(),
            m.rps() / baseline.rps().max(f64::MIN_POSITIVE),
            m.p50_us,
            m.p99_us,
            m.errors,
            m.cpu.cell()
        ));
    }
    table
}

pub fn workspace_from(manifest: &Path) -> PathBuf {
    manifest
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `toaster bench`'s flags.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Seconds (or e.g. 10s) per measurement point.
    #[arg(long, default_value = "5s", value_parser = toaster_setup::duration::parse)]
    pub duration: Duration,
    /// Scenarios to run: host, auth, ota, control, console, ingest, aggregate, soak (repeatable; default
    /// all of these), spin (the same app on our host and on Spin; needs --spin-bin),
    /// hardening (the host under a stalled-body attack; memory after a burst).
    #[arg(long = "scenario")]
    pub scenarios: Vec<String>,
    /// The `spin` binary the spin scenario compares with (e.g. Spin 4.0.2 built from source).
    #[arg(long)]
    pub spin_bin: Option<PathBuf>,
    /// Spin scenario: also run Spin with its key-value store in this Redis database
    /// (e.g. redis://127.0.0.1:6379/13; keys of the benchmark's tenant are written there).
    #[arg(long)]
    pub spin_redis: Option<String>,
    /// Admin URL of a PostgreSQL server for a scratch database; default 127.0.0.1:5432 if it answers, else a local cluster under .toaster/.
    #[arg(long, env = "TOASTER_BENCH_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Replace the figures in this markdown file (between `<!-- bench:NAME -->` markers).
    #[arg(long)]
    pub write: Option<PathBuf>,
    /// Readings per batch in the ingest scenario.
    #[arg(long, value_delimiter = ',', default_value = "1,10,100,1000")]
    pub ingest_batches: Vec<usize>,
    /// Devices (one connection each) posting at once in the ingest scenario, and the
    /// native baseline's connections.
    #[arg(long, value_delimiter = ',', default_value = "16")]
    pub ingest_connections: Vec<usize>,
    /// Soak: requests per second, held for --soak-duration.
    #[arg(long, default_value_t = 500)]
    pub soak_rate: u32,
    /// Soak: how long to hold the rate (e.g. 2m, 10m, 1h).
    #[arg(long, default_value = "2m", value_parser = toaster_setup::duration::parse)]
    pub soak_duration: Duration,
    /// Soak: one sample (memory, latency, throughput) per this interval.
    #[arg(long, default_value = "10s", value_parser = toaster_setup::duration::parse)]
    pub soak_every: Duration,
    /// Soak: readings per request.
    #[arg(long, default_value_t = 10)]
    pub soak_batch: usize,
}

/// `toaster bench`: runs the scenarios, prints every section and the total time,
/// and rewrites them in `--write`'s file.
pub async fn command(args: BenchArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: this is a debug build; figures are meaningless. Use `cargo run --release -p toaster -- bench`."
        );
    }
    let workspace = std::env::current_dir()?;
    let (scenarios, spin_bin) = check_args(&args)?;
    let (admin_url, local_pg) = postgres(&args, &workspace).await?;
    let pg_version = server_version(&admin_url).await;
    let opts = BenchOptions {
        workspace: workspace.clone(),
        duration: args.duration,
        scenarios: scenarios.clone(),
        admin_url,
        ingest_batches: args.ingest_batches.clone(),
        ingest_connections: args.ingest_connections.clone(),
        spin_bin,
        spin_redis: args.spin_redis.clone(),
        soak: soak::SoakOptions {
            rate: args.soak_rate,
            duration: args.soak_duration,
            every: args.soak_every,
            batch: args.soak_batch,
        },
    };
    let sections = run(&opts).await;
    if let Some(pg) = local_pg {
        pg.stop().await?;
    }
    let Report {
        mut sections,
        timings,
    } = sections?;
    let command = command_line(&args, &scenarios);
    let preamble = format!(
        "Run on {} (UTC). Machine: {}, {pg_version} on the same machine. Command: `{command}`. Load generator: this process, keep-alive HTTP/1.1 to 127.0.0.1; each server under test (toaster host or native baseline) in a child process of its own (`toaster bench-serve`).",
        chrono::Utc::now().format("%Y-%m-%d"),
        machine()
    );
    let total = started.elapsed().as_secs_f64();
    // The `run` section is the whole suite's time against its budget: a partial run
    // prints its own but leaves the file's alone.
    let summary = ("run".to_string(), run_summary(&timings, total));
    println!("{preamble}\n");
    for (name, body) in sections.iter().chain([&summary]) {
        println!("## {name}\n\n{body}");
    }
    if SCENARIOS.iter().all(|s| scenarios.iter().any(|c| c == s)) {
        sections.push(summary);
    }
    if let Some(path) = &args.write {
        write_sections(path, &preamble, &sections)?;
        eprintln!("wrote {}", path.display());
    }
    eprintln!("bench: finished in {} ({:.0} s)", minutes(total), total);
    Ok(())
}

/// The scenarios to run, checked, and the Spin binary of the spin scenario; the
/// soak's flags checked too.
fn check_args(args: &BenchArgs) -> anyhow::Result<(Vec<String>, Option<PathBuf>)> {
    let scenarios: Vec<String> = if args.scenarios.is_empty() {
        SCENARIOS.iter().map(|s| s.to_string()).collect()
    } else {
        args.scenarios.clone()
    };
    for s in &scenarios {
        if !SCENARIOS.contains(&s.as_str()) && !OPTIONAL_SCENARIOS.contains(&s.as_str()) {
            bail!(
                "unknown scenario {s:?}: choose {}, {}",
                SCENARIOS.join(", "),
                OPTIONAL_SCENARIOS.join(", ")
            );
        }
    }
    let spin_bin = match (&args.spin_bin, scenarios.iter().any(|s| s == "spin")) {
        (Some(path), true) => {
            anyhow::ensure!(
                path.is_file(),
                "--spin-bin {}: no such file",
                path.display()
            );
            Some(path.canonicalize()?)
        }
        (None, true) => bail!("the spin scenario needs --spin-bin PATH (a spin binary)"),
        (_, false) => None,
    };
    anyhow::ensure!(args.soak_rate > 0, "--soak-rate must be at least 1");
    anyhow::ensure!(
        !args.soak_every.is_zero() && args.soak_every <= args.soak_duration,
        "--soak-every must be between 1s and --soak-duration"
    );
    Ok((scenarios, spin_bin))
}

/// An admin URL of a PostgreSQL server: `--database-url`, else one on 127.0.0.1:5432,
/// else a local cluster of the bench's own (returned, to be stopped at the end).
async fn postgres(
    args: &BenchArgs,
    workspace: &Path,
) -> anyhow::Result<(String, Option<localpg::LocalPostgres>)> {
    let mut local_pg = None;
    let admin_url = match &args.database_url {
        Some(url) => url.clone(),
        None => {
            let default = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable".to_string();
            if database::ping(&default).await.is_ok() {
                default
            } else {
                let pg = localpg::LocalPostgres::start(&workspace.join(".toaster/bench-postgres"))
                    .await?;
                let url = pg.url("postgres");
                local_pg = Some(pg);
                url
            }
        }
    };
    Ok((admin_url, local_pg))
}

/// The server's version, for the record.
async fn server_version(admin_url: &str) -> String {
    match database::connect(admin_url).await {
        Ok(c) => c
            .query_one("SHOW server_version", &[])
            .await
            .map(|r| format!("PostgreSQL {}", r.get::<_, String>(0)))
            .unwrap_or_else(|_| "PostgreSQL (version unknown)".into()),
        Err(_) => "PostgreSQL (unreachable)".into(),
    }
}

/// What `toaster bench` runs.
pub struct BenchOptions {
    pub workspace: PathBuf,
    pub duration: Duration,
    pub scenarios: Vec<String>,
    /// An admin URL of a PostgreSQL server where a scratch database may be created.
    pub admin_url: String,
    /// Readings per batch for the ingest scenario.
    pub ingest_batches: Vec<usize>,
    /// Concurrent devices for the ingest scenario.
    pub ingest_connections: Vec<usize>,
    /// The Spin binary of the spin scenario.
    pub spin_bin: Option<PathBuf>,
    /// A Redis database for Spin's key-value store, in a second Spin run.
    pub spin_redis: Option<String>,
    pub soak: soak::SoakOptions,
}

/// What a run produced.
#[derive(Default)]
pub struct Report {
    /// `(NAME, markdown)` for each `<!-- bench:NAME -->` section.
    pub sections: Vec<(String, String)>,
    /// Wall time of each step (scenarios, and the app's setup), in seconds.
    pub timings: Vec<(String, f64)>,
}

impl Report {
    fn add(&mut self, name: &str, body: String, started: Instant) {
        self.sections.push((name.to_string(), body));
        self.timings
            .push((name.to_string(), started.elapsed().as_secs_f64()));
    }
}

/// Runs the chosen scenarios; one section per scenario.
pub async fn run(opts: &BenchOptions) -> anyhow::Result<Report> {
    let mut report = Report::default();
    let d = opts.duration;
    let wants = |name: &str| opts.scenarios.iter().any(|s| s == name);
    if wants("host") {
        eprintln!("bench host: hello component vs native hyper");
        let started = Instant::now();
        let s = host_scenario(&opts.workspace, d).await?;
        report.add("host", host_table(&s), started);
    }
    // Every scenario but `host` runs against the app.
    if opts.scenarios.iter().all(|s| s == "host") {
        return Ok(report);
    }
    let dir = std::env::temp_dir().join(format!("toaster-bench-app-{}", std::process::id()));
    eprintln!("bench: starting the app against a scratch database");
    let started = Instant::now();
    let mut app = app::AppUnderTest::start(
        &opts.workspace,
        &opts.admin_url,
        &dir,
        &opts.workspace.join("target/toaster-bench-cache"),
    )
    .await?;
    report
        .timings
        .push(("app setup".into(), started.elapsed().as_secs_f64()));
    let result = app_scenarios(opts, &mut app, &mut report).await;
    let stopped = app.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    result?;
    stopped?;
    Ok(report)
}

/// The app scenarios, each on a fresh host process (so its peak memory is its own)
/// serving the same database.
async fn app_scenarios(
    opts: &BenchOptions,
    app: &mut app::AppUnderTest,
    report: &mut Report,
) -> anyhow::Result<()> {
    let d = opts.duration;
    let wants = |name: &str| opts.scenarios.iter().any(|s| s == name);
    if wants("auth") {
        eprintln!("bench auth: token exchange, access-token verification");
        let started = Instant::now();
        app.fresh_server().await?;
        let body = auth(app, d).await?;
        report.add("auth", body, started);
    }
    if wants("ota") {
        eprintln!("bench ota: update checks vs the trivial component");
        let started = Instant::now();
        app.fresh_server().await?;
        let mut body = ota::ota_check(app, &opts.workspace, d).await?;
        body.push_str(&host_peak_note(app.peak_rss()));
        report.add("ota", body, started);
    }
    if wants("control") {
        eprintln!("bench control: a device's poll with nothing new vs auth/me");
        let started = Instant::now();
        app.fresh_server().await?;
        let mut body = control::control_poll(app, d).await?;
        body.push_str(&host_peak_note(app.peak_rss()));
        report.add("control", body, started);
    }
    if wants("console") {
        eprintln!(
            "bench console: static answers vs the trivial component; first loads in Chromium"
        );
        let started = Instant::now();
        app.fresh_server().await?;
        let mut body = console::console(app, &opts.workspace, d).await?;
        body.push_str(&host_peak_note(app.peak_rss()));
        report.add("console", body, started);
    }
    if wants("aggregate") {
        eprintln!("bench aggregate: loading 10.8M readings, then 30-day 1h queries vs raw SQL");
        let started = Instant::now();
        app.fresh_server().await?;
        let s = aggregate::aggregate_scenario(app, d).await?;
        let mut body = aggregate::aggregate_table(&s);
        body.push_str(&host_peak_note(app.peak_rss()));
        report.add("aggregate", body, started);
    }
    if wants("ingest") {
        eprintln!("bench ingest: batches of 1, 10, 100, 1000 vs tokio-postgres");
        let started = Instant::now();
        app.fresh_server().await?;
        let mut body = ingest(opts, app).await?;
        body.push_str(&host_peak_note(app.peak_rss()));
        report.add("ingest", body, started);
    }
    if wants("soak") {
        eprintln!(
            "bench soak: {} requests/s of {} readings for {} s",
            opts.soak.rate,
            opts.soak.batch,
            opts.soak.duration.as_secs()
        );
        let started = Instant::now();
        app.fresh_server().await?;
        let body = soak::soak(app, &opts.soak).await?;
        report.add("soak", body, started);
    }
    if wants("hardening") {
        eprintln!("bench hardening: stalled bodies, connection caps, memory after a burst");
        let started = Instant::now();
        app.fresh_server().await?;
        let body = hardening::hardening(app, d).await?;
        report.add("hardening", body, started);
    }
    if let (true, Some(spin_bin)) = (wants("spin"), &opts.spin_bin) {
        eprintln!(
            "bench spin: the same app on our host and on {}",
            spin_bin.display()
        );
        let started = Instant::now();
        app.fresh_server().await?;
        let body = spin::spin_comparison(
            &opts.workspace,
            app,
            spin_bin,
            opts.spin_redis.as_deref(),
            d,
        )
        .await?;
        report.add("spin", body, started);
    }
    Ok(())
}

async fn auth(app: &app::AppUnderTest, d: Duration) -> anyhow::Result<String> {
    let exchange = app::token_exchange(app, 16, d).await?;
    let native = ServerProcess::spawn(&ServeSpec::NativeVerifier {
        token_secret: app.signer_secret.clone(),
    })
    .await?;
    let admin = app.admin_token()?;
    let device = app.login(0).await?;
    let mut table = String::from(table_header());
    let mut all = vec![exchange.clone()];
    for c in [1usize, 16] {
        let n = load_with(native.endpoint(), c, d, bearer_get("/v1/auth/me", &admin)).await?;
        let t = app::verify_in_component(app.endpoint(), admin.clone(), c, d).await?;
        table.push_str(&row("admin token", 1.0, &n, &t));
        let td = app::verify_in_component(app.endpoint(), device.clone(), c, d).await?;
        table.push_str(&row(
            "device token (+ revocation, rate limit)",
            1.0,
            &n,
            &td,
        ));
        all.extend([n, t, td]);
    }
    let native_peak = native.stop().await?;
    Ok(format!(
        "Token exchange (`POST /v1/auth/token`, ES256 assertions pre-signed, 16 connections): **{:.0} exchanges/s**, p50 {} µs, p99 {} µs; CPU % gen / server / other: {}.\n\nAccess-token verification: `GET /v1/auth/me` (the component verifies the HS256 token; for a device token also its key generation through the key-value store and its rate budget) against a native hyper server running the same `TokenSigner::verify` and answering the same JSON.\n\n{table}{}{}Peak memory (VmHWM) of the native verifier: {}.\n",
        exchange.rps(),
        exchange.p50_us,
        exchange.p99_us,
        exchange.cpu.cell(),
        errors_note(&all.iter().collect::<Vec<_>>()),
        host_peak_note(app.peak_rss()),
        peak(native_peak),
    ))
}

async fn ingest(opts: &BenchOptions, app: &app::AppUnderTest) -> anyhow::Result<String> {
    let d = opts.duration;
    let most = opts.ingest_connections.iter().copied().max().unwrap_or(16);
    anyhow::ensure!(
        (1..app::DEVICES).contains(&most) && !opts.ingest_connections.contains(&0),
        "--ingest-connections: between 1 and {} devices",
        app::DEVICES - 1
    );
    let mut tokens = Vec::new();
    for i in 1..=most {
        tokens.push(app.login(i).await?);
    }
    // Every point writes its own 2-hour range within the last day (partitions exist
    // from yesterday on), so nothing is a duplicate.
    let points = opts.ingest_connections.len() * opts.ingest_batches.len();
    anyhow::ensure!(
        points <= 10,
        "at most 10 ingest points (connections x batches)"
    );
    let base_ms = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64)
        - 22 * 3600 * 1000;
    let mut table = String::from(
        "| readings/batch | connections | native readings/s | toaster readings/s | ratio | toaster requests/s | native p50 | toaster p50 | native p99 | toaster p99 | native CPU % gen / server / other | toaster CPU % gen / server / other |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut all = Vec::new();
    let mut k = 0i64;
    for connections in opts.ingest_connections.iter().copied() {
        for size in opts.ingest_batches.iter().copied() {
            let base = base_ms + k * 2 * 3600 * 1000;
            k += 1;
            let n = app::ingest_native(
                &opts.workspace,
                &app.db_url,
                &app.tenant,
                size,
                connections,
                d,
                base,
            )
            .await?;
            let t = app::ingest_http(
                app.endpoint(),
                &tokens[..connections],
                size,
                connections,
                d,
                base,
            )
            .await?;
            table.push_str(&format!(
                "| {size} | {connections} | {:.0} | {:.0} | {:.2} | {:.0} | {} µs | {} µs | {} µs | {} µs | {} | {} |\n",
                n.rps() * size as f64,
                t.rps() * size as f64,
                t.rps() / n.rps().max(f64::MIN_POSITIVE),
                t.rps(),
                n.p50_us,
                t.p50_us,
                n.p99_us,
                t.p99_us,
                n.cpu.cell(),
                t.cpu.cell(),
            ));
            all.extend([n, t]);
        }
    }
    Ok(format!(
        "`POST /v1/telemetry` from N devices (the connections column; one connection each), against the same statement (`functions/ingest/src/store_batch.sql`; `store_one.sql` for one reading, as the component does) with the same batches and concurrency sent by tokio-postgres over N connections. The host's PostgreSQL pool holds at most 16 sessions. Each point writes fresh readings (no duplicates). For the native baseline the generator is the tokio-postgres client and there is no server process of ours: PostgreSQL's work is under other.\n\n{table}{}",
        errors_note(&all.iter().collect::<Vec<_>>())
    ))
}

fn bearer_get(path: &'static str, token: &str) -> RequestFactory {
    let auth = format!("Bearer {token}");
    Arc::new(move |_, _| {
        http::Request::get(path)
            .header(http::header::HOST, "127.0.0.1")
            .header("authorization", auth.as_str())
            .body(Full::new(Bytes::new()))
            .expect("request")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_replaced_between_their_markers_and_appended_when_missing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("B.md");
        std::fs::write(
            &path,
            "# B\n\nprose\n<!-- bench:host -->\nold\n<!-- /bench:host -->\nmore prose\n",
        )
        .unwrap();
        write_sections(
            &path,
            "Machine: m.",
            &[
                ("host".into(), "new\n".into()),
                ("soak".into(), "series\n".into()),
            ],
        )
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "# B\n\nprose\n<!-- bench:host -->\nMachine: m.\n\nnew\n<!-- /bench:host -->\nmore prose\n\n<!-- bench:soak -->\nMachine: m.\n\nseries\n<!-- /bench:soak -->\n"
        );
    }

    #[test]
    fn percentiles_of_sorted_latencies() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), 51);
        assert_eq!(percentile(&v, 0.99), 100);
        assert_eq!(percentile(&[], 0.99), 0);
    }
}
