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

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use toaster_setup::{database, localpg};

pub mod aggregate;
pub mod app;
pub mod hardening;
pub mod ota;
pub mod server;
pub mod soak;
pub mod spin;
pub mod usage;

use server::{ServeSpec, ServerProcess};
use usage::{CpuClock, CpuShare};

/// Every scenario, in the order `toaster bench` runs them.
pub const SCENARIOS: [&str; 6] = ["host", "auth", "ota", "ingest", "aggregate", "soak"];
/// Scenarios run only when asked for: `spin` needs a Spin binary (`--spin-bin`);
/// `hardening` idles a minute to see memory come back.
pub const OPTIONAL_SCENARIOS: [&str; 2] = ["spin", "hardening"];

/// Where load goes: a server's address on 127.0.0.1 and, when it is a child
/// process, its pid (for its CPU time and memory).
#[derive(Debug, Clone, Copy)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub pid: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct Measurement {
    pub connections: usize,
    pub requests: u64,
    pub errors: u64,
    pub seconds: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    /// The machine's CPU during the measurement.
    pub cpu: CpuShare,
}

impl Measurement {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.seconds
    }
}

/// Builds the request a connection sends next: `(connection index, sequence number)`.
pub type RequestFactory = Arc<dyn Fn(usize, u64) -> http::Request<Full<Bytes>> + Send + Sync>;

/// Sends GET `path` over `connections` keep-alive HTTP/1.1 connections for `duration`.
pub async fn load(
    target: Endpoint,
    path: &str,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<Measurement> {
    load_with(target, connections, duration, get(path)).await
}

/// Every request a plain `GET path`.
pub fn get(path: &str) -> RequestFactory {
    let path = path.to_string();
    Arc::new(move |_, _| {
        http::Request::get(&path)
            .header(http::header::HOST, "127.0.0.1")
            .body(Full::new(Bytes::new()))
            .expect("request")
    })
}

/// Sends the requests `make` builds over `connections` keep-alive connections for
/// `duration`; only 2xx answers count as requests (and latencies), the rest as errors.
pub async fn load_with(
    target: Endpoint,
    connections: usize,
    duration: Duration,
    make: RequestFactory,
) -> anyhow::Result<Measurement> {
    load_expecting(target, connections, duration, make, |s| s.is_success()).await
}

/// [`load_with`], counting as requests the answers whose status `expected` accepts
/// (for a point that measures an error answer on purpose) and the rest as errors.
pub async fn load_expecting(
    target: Endpoint,
    connections: usize,
    duration: Duration,
    make: RequestFactory,
    expected: fn(http::StatusCode) -> bool,
) -> anyhow::Result<Measurement> {
    anyhow::ensure!(
        target.addr.ip().is_loopback(),
        "load goes to 127.0.0.1 only"
    );
    let addr = target.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for conn_index in 0..connections {
        let stop = stop.clone();
        let make = make.clone();
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            let mut latencies = Vec::with_capacity(100_000);
            let mut errors = 0u64;
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let req = make(conn_index, seq);
                seq += 1;
                let t = Instant::now();
                match sender.send_request(req).await {
                    Ok(resp) => {
                        let status = resp.status();
                        let ok = expected(status);
                        let body = resp.into_body().collect().await;
                        if ok {
                            latencies.push(t.elapsed().as_micros() as u64);
                        } else {
                            if errors == 0 {
                                let text = body.map(|b| b.to_bytes()).unwrap_or_default();
                                tracing::warn!(
                                    "bench: {status}: {}",
                                    String::from_utf8_lossy(&text)
                                );
                            }
                            errors += 1;
                        }
                    }
                    Err(_) => {
                        errors += 1;
                        break;
                    }
                }
            }
            anyhow::Ok((latencies, errors))
        }));
    }
    let started = Instant::now();
    let clock = CpuClock::start(target.pid);
    tokio::time::sleep(duration).await;
    let cpu = clock.stop();
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await??;
        all.extend(l);
        errors += e;
    }
    Ok(summarize(
        connections,
        all,
        errors,
        started.elapsed().as_secs_f64(),
        cpu,
    ))
}

/// The `p` quantile (0..1) of sorted latencies; 0 when there are none.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted
        .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0)
}

fn summarize(
    connections: usize,
    mut all: Vec<u64>,
    errors: u64,
    seconds: f64,
    cpu: CpuShare,
) -> Measurement {
    all.sort_unstable();
    Measurement {
        connections,
        requests: all.len() as u64,
        errors,
        seconds,
        p50_us: percentile(&all, 0.50),
        p99_us: percentile(&all, 0.99),
        cpu,
    }
}

/// A native hyper server answering every request with `hello\n`: the baseline.
pub async fn native_hello_server() -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req| async {
                    let mut r = http::Response::new(Full::new(Bytes::from_static(b"hello\n")));
                    r.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("text/plain"),
                    );
                    Ok::<_, std::convert::Infallible>(r)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

const HELLO_APP: &str = r#"
spin_manifest_version = 2
[application]
name = "bench-hello"
[[trigger.http]]
route = "/..."
component = "hello"
[component.hello]
source = "{hello}"
"#;

/// A scratch directory `toaster-bench-TAG-PID` holding a manifest that serves the
/// workspace's built `hello.wasm`: (directory, manifest path).
fn hello_app(workspace: &Path, tag: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
    let hello = workspace.join("target/wasm32-wasip2/release/hello.wasm");
    anyhow::ensure!(
        hello.exists(),
        "{} is missing: run scripts/build-wasm",
        hello.display()
    );
    let dir = std::env::temp_dir().join(format!("toaster-bench-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let manifest = dir.join("spin.toml");
    std::fs::write(
        &manifest,
        HELLO_APP.replace("{hello}", &hello.display().to_string()),
    )?;
    Ok((dir, manifest))
}

/// The trivial `hello` component served by a toaster host in its own process.
pub struct HelloHost {
    pub server: ServerProcess,
    dir: PathBuf,
}

impl HelloHost {
    pub async fn start(workspace: &Path, tag: &str) -> anyhow::Result<HelloHost> {
        let (dir, manifest) = hello_app(workspace, tag)?;
        let server = ServerProcess::spawn(&ServeSpec::Host {
            manifest,
            variables: Default::default(),
            state_dir: dir.join("state"),
            cache_dir: Some(workspace.join("target/toaster-bench-cache")),
        })
        .await
        .context("starting the host for the trivial component")?;
        Ok(HelloHost { server, dir })
    }

    /// Stops the host and removes its scratch directory; its peak memory.
    pub async fn stop(self) -> anyhow::Result<Option<u64>> {
        let peak = self.server.stop().await;
        let _ = std::fs::remove_dir_all(&self.dir);
        peak
    }
}

pub struct HostScenario {
    pub rows: Vec<(Measurement, Measurement)>,
    pub native_peak: Option<u64>,
    pub toaster_peak: Option<u64>,
    /// CPU µs per request of the host's own work without the network
    /// ([`host_work_per_request`]).
    pub host_work_us: f64,
}

/// The host's own work for one request, without the network: `App::handle` for
/// `GET /` on `hello`, called in a loop on one thread of this process for
/// `duration`. That is everything the host adds to a native server's request
/// (routing, the `spin-*` headers, a fresh `Store` and instance from the pool, the
/// guest's call, its response buffered, the `Store` dropped and its memory reset)
/// and nothing the two share (reading and parsing the request, writing the
/// response, waking the client). Returns CPU µs per request, measured with the
/// thread's own CPU clock.
pub fn host_work_per_request(workspace: &Path, duration: Duration) -> anyhow::Result<f64> {
    let (dir, manifest_path) = hello_app(workspace, "work")?;
    let cache = workspace.join("target/toaster-bench-cache");
    let result = std::thread::scope(|scope| {
        // Named, so that a profile of the bench process can pick its samples out.
        std::thread::Builder::new()
            .name("host-work".into())
            .spawn_scoped(scope, || -> anyhow::Result<f64> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async {
                    let limits = toaster_host::Limits::default();
                    let runtime = toaster_host::Runtime::new(&limits, Some(cache))?;
                    let manifest = toaster_host::manifest::Manifest::load(&manifest_path)?;
                    let vars = toaster_host::variables::Variables::resolve(
                        &manifest.variables,
                        &Default::default(),
                        |_| None,
                    )?;
                    let kv = toaster_host::kv::KvStores::configure(
                        [],
                        &dir.join("state"),
                        &Default::default(),
                    )?;
                    let app = toaster_host::App::load(&runtime, &manifest, &vars, kv, limits)?;
                    let client: SocketAddr = "127.0.0.1:40000".parse()?;
                    let one = || async {
                        let (parts, ()) = http::Request::get("/")
                            .header(http::header::HOST, "127.0.0.1")
                            .body(())?
                            .into_parts();
                        let (resp, _) = app
                            .handle(
                                parts,
                                Bytes::new(),
                                client,
                                wasmtime_wasi_http::p2::bindings::http::types::Scheme::Http,
                                toaster_host::guest_output::RequestId::next(),
                            )
                            .await;
                        anyhow::ensure!(resp.status() == 200, "hello answered {}", resp.status());
                        let body = resp
                            .into_body()
                            .collect()
                            .await
                            .map_err(|e| anyhow::anyhow!("hello's body failed: {e:?}"))?
                            .to_bytes();
                        anyhow::ensure!(body.as_ref() == b"hello\n", "hello answered {body:?}");
                        Ok(())
                    };
                    // Warm: pool slots, caches, the allocator.
                    for _ in 0..2000 {
                        one().await?;
                    }
                    let thread_cpu = || {
                        usage::thread_cpu().context("this system cannot tell a thread's CPU time")
                    };
                    let (cpu0, wall0) = (thread_cpu()?, Instant::now());
                    let mut n = 0u64;
                    while wall0.elapsed() < duration {
                        for _ in 0..100 {
                            one().await?;
                        }
                        n += 100;
                    }
                    Ok((thread_cpu()?.saturating_sub(cpu0)).as_secs_f64() * 1e6 / n as f64)
                })
            })?
            .join()
            .map_err(|_| anyhow::anyhow!("the measuring thread panicked"))?
    });
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Runs scenario `host`: returns (native, toaster) per connection count.
pub async fn host_scenario(workspace: &Path, duration: Duration) -> anyhow::Result<HostScenario> {
    let host = HelloHost::start(workspace, "host").await?;
    let native = ServerProcess::spawn(&ServeSpec::NativeHello).await?;
    let mut rows = Vec::new();
    for connections in [1usize, 16, 64] {
        let (n_at, t_at) = (native.endpoint(), host.server.endpoint());
        // Warm both (compiled code paged in, pools filled), then measure.
        load(n_at, "/", connections, Duration::from_millis(300)).await?;
        load(t_at, "/", connections, Duration::from_millis(300)).await?;
        let n = load(n_at, "/", connections, duration).await?;
        let t = load(t_at, "/", connections, duration).await?;
        rows.push((n, t));
    }
    let native_peak = native.stop().await?;
    let toaster_peak = host.stop().await?;
    // Measured after the servers stopped, with the machine otherwise idle.
    let workspace = workspace.to_path_buf();
    let host_work_us =
        tokio::task::spawn_blocking(move || host_work_per_request(&workspace, duration))
            .await
            .context("the host-work measurement")??;
    Ok(HostScenario {
        rows,
        native_peak,
        toaster_peak,
        host_work_us,
    })
}

pub fn host_table(s: &HostScenario) -> String {
    let mut out = String::from(
        "| connections | native req/s | toaster req/s | ratio | native p50 | toaster p50 | added p50 | native p99 | toaster p99 | native CPU % gen / server / other | toaster CPU % gen / server / other | server CPU per request native / toaster |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (n, t) in &s.rows {
        out.push_str(&format!(
            "| {} | {:.0} | {:.0} | {:.2} | {} µs | {} µs | {} µs | {} µs | {} µs | {} | {} | {:.1} / {:.1} µs |\n",
            n.connections,
            n.rps(),
            t.rps(),
            t.rps() / n.rps(),
            n.p50_us,
            t.p50_us,
            t.p50_us as i64 - n.p50_us as i64,
            n.p99_us,
            t.p99_us,
            n.cpu.cell(),
            t.cpu.cell(),
            server_us_per_request(n),
            server_us_per_request(t),
        ));
    }
    out.push_str(&format!(
        "\nThe host's own work per request without the network (`App::handle` for the same `GET /` on `hello`, in a loop on one thread of the bench process after both servers stopped: routing, the `spin-*` headers, a fresh Store and instance, the guest's call, the Store dropped): {:.1} µs CPU.\n",
        s.host_work_us
    ));
    out.push_str(&format!(
        "\nPeak memory (VmHWM) of the serving process: toaster host {}, native hyper {}.\n",
        peak(s.toaster_peak),
        peak(s.native_peak)
    ));
    out.push_str(&errors_note(
        &s.rows.iter().flat_map(|(n, t)| [n, t]).collect::<Vec<_>>(),
    ));
    out
}

/// CPU the server process spent per request answered, in µs.
fn server_us_per_request(m: &Measurement) -> f64 {
    if m.requests == 0 {
        return 0.0;
    }
    m.cpu.server * usage::cores() as f64 * m.seconds * 1e6 / m.requests as f64
}

fn peak(bytes: Option<u64>) -> String {
    bytes.map(usage::mib).unwrap_or_else(|| "unknown".into())
}

/// The machine, for the record next to the figures.
pub fn machine() -> String {
    let cores = usage::cores();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string())
        })
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| format!("{:.1} GiB", kb as f64 / 1024.0 / 1024.0))
        .unwrap_or_else(|| "?".into());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    // The first processor's fields: a model name such as "Intel(R) Xeon(R) Processor"
    // names a whole family of machines, so the family, model and clock go with it.
    let field = |name: &str| {
        cpuinfo
            .lines()
            .take_while(|l| !l.trim().is_empty())
            .find(|l| l.split(':').next().is_some_and(|k| k.trim() == name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let mut cpu = field("model name").unwrap_or_else(|| "?".into());
    if let (Some(family), Some(model)) = (field("cpu family"), field("model")) {
        cpu.push_str(&format!(", family {family} model {model}"));
    }
    if let Some(mhz) = field("cpu MHz").and_then(|m| m.parse::<f64>().ok()) {
        cpu.push_str(&format!(", {mhz:.0} MHz"));
    }
    format!("{cores} cores ({cpu}), {mem} memory")
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
    /// Scenarios to run: host, auth, ota, ingest, aggregate, soak (repeatable; default
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
    let pg_version = match database::connect(&admin_url).await {
        Ok(c) => c
            .query_one("SHOW server_version", &[])
            .await
            .map(|r| format!("PostgreSQL {}", r.get::<_, String>(0)))
            .unwrap_or_else(|_| "PostgreSQL (version unknown)".into()),
        Err(_) => "PostgreSQL (unreachable)".into(),
    };
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

/// The command that reproduces this run.
fn command_line(args: &BenchArgs, scenarios: &[String]) -> String {
    let mut command = format!(
        "cargo run --release -p toaster -- bench --duration {}s",
        args.duration.as_secs()
    );
    if !args.scenarios.is_empty() {
        for s in scenarios {
            command.push_str(&format!(" --scenario {s}"));
        }
    }
    if args.ingest_batches != [1, 10, 100, 1000] && scenarios.iter().any(|s| s == "ingest") {
        let b: Vec<String> = args.ingest_batches.iter().map(|b| b.to_string()).collect();
        command.push_str(&format!(" --ingest-batches {}", b.join(",")));
    }
    if args.ingest_connections != [16] && scenarios.iter().any(|s| s == "ingest") {
        let c: Vec<String> = args
            .ingest_connections
            .iter()
            .map(|c| c.to_string())
            .collect();
        command.push_str(&format!(" --ingest-connections {}", c.join(",")));
    }
    if let Some(spin) = &args.spin_bin
        && scenarios.iter().any(|s| s == "spin")
    {
        command.push_str(&format!(" --spin-bin {}", spin.display()));
        if let Some(redis) = &args.spin_redis {
            command.push_str(&format!(" --spin-redis {redis}"));
        }
    }
    if scenarios.iter().any(|s| s == "soak") {
        command.push_str(&format!(
            " --soak-rate {} --soak-duration {}s --soak-every {}s --soak-batch {}",
            args.soak_rate,
            args.soak_duration.as_secs(),
            args.soak_every.as_secs(),
            args.soak_batch
        ));
    }
    command
}

fn minutes(secs: f64) -> String {
    format!("{}m{:02}s", (secs / 60.0) as u64, (secs % 60.0) as u64)
}

fn run_summary(timings: &[(String, f64)], total: f64) -> String {
    let mut out = format!(
        "Whole run: **{}** ({total:.0} s) from start to the last figure, setup and data loading included; budget 15 minutes.\n\n| scenario | wall time |\n|---|---:|\n",
        minutes(total)
    );
    for (name, seconds) in timings {
        out.push_str(&format!("| {name} | {seconds:.0} s |\n"));
    }
    out
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

fn table_header() -> &'static str {
    "| | connections | native | toaster | ratio | native p50 | toaster p50 | native p99 | toaster p99 | native CPU % gen / server / other | toaster CPU % gen / server / other |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
}

fn row(label: &str, unit: f64, n: &Measurement, t: &Measurement) -> String {
    format!(
        "| {label} | {} | {:.0}/s | {:.0}/s | {:.2} | {} µs | {} µs | {} µs | {} µs | {} | {} |\n",
        n.connections,
        n.rps() * unit,
        t.rps() * unit,
        t.rps() / n.rps().max(f64::MIN_POSITIVE),
        n.p50_us,
        t.p50_us,
        n.p99_us,
        t.p99_us,
        n.cpu.cell(),
        t.cpu.cell(),
    )
}

fn errors_note(ms: &[&Measurement]) -> String {
    let errors: u64 = ms.iter().map(|m| m.errors).sum();
    if errors == 0 {
        String::new()
    } else {
        format!("\n{errors} request(s) failed during this scenario (see the log).\n")
    }
}

/// The line closing an app scenario: the host's peak memory during it.
fn host_peak_note(peak_bytes: Option<u64>) -> String {
    format!(
        "\nPeak memory (VmHWM) of the toaster host process during this scenario: {}.\n",
        peak(peak_bytes)
    )
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
    if ![
        "auth",
        "ingest",
        "ota",
        "aggregate",
        "soak",
        "spin",
        "hardening",
    ]
    .iter()
    .any(|s| wants(s))
    {
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

/// Replaces (or appends) the `<!-- bench:NAME -->` sections of a markdown file.
pub fn write_sections(
    path: &Path,
    preamble: &str,
    sections: &[(String, String)],
) -> anyhow::Result<()> {
    let mut text = std::fs::read_to_string(path).unwrap_or_default();
    for (name, body) in sections {
        let (open, close) = (
            format!("<!-- bench:{name} -->"),
            format!("<!-- /bench:{name} -->"),
        );
        let content = format!("{open}\n{preamble}\n\n{body}{close}");
        text = match (text.find(&open), text.find(&close)) {
            (Some(a), Some(b)) if a < b => {
                format!("{}{content}{}", &text[..a], &text[b + close.len()..])
            }
            _ => format!("{text}\n{content}\n"),
        };
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
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
