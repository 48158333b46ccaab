//! `toaster bench`: load generated on 127.0.0.1 against the host and, in the same
//! run, against a native baseline giving the same response, so every figure comes
//! with the ratio that makes it meaningful on whatever machine runs it.
//!
//! Scenario `host`: the trivial `hello` component served by the toaster host
//! against a native hyper server answering the same `hello\n`, at 1, 16 and 64
//! keep-alive connections: requests/s and p50/p99 latency.
//!
//! The load generator runs in this process on its own tokio runtime; servers run on
//! another. On a small machine the generator takes a real share of the CPU, which
//! is why the two servers are always compared under the same load generator.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use crate::{HostConfig, Limits, Runtime};

#[derive(Debug, Clone)]
pub struct Measurement {
    pub connections: usize,
    pub requests: u64,
    pub errors: u64,
    pub seconds: f64,
    pub p50_us: u64,
    pub p99_us: u64,
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
    addr: SocketAddr,
    path: &str,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<Measurement> {
    let path = path.to_string();
    load_with(
        addr,
        connections,
        duration,
        Arc::new(move |_, _| {
            http::Request::get(&path)
                .header(http::header::HOST, "127.0.0.1")
                .body(Full::new(Bytes::new()))
                .expect("request")
        }),
    )
    .await
}

/// Sends the requests `make` builds over `connections` keep-alive connections for
/// `duration`; only 2xx answers count as requests (and latencies), the rest as errors.
pub async fn load_with(
    addr: SocketAddr,
    connections: usize,
    duration: Duration,
    make: RequestFactory,
) -> anyhow::Result<Measurement> {
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
                        let ok = resp.status().is_success();
                        let status = resp.status();
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
    tokio::time::sleep(duration).await;
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
    ))
}

fn summarize(connections: usize, mut all: Vec<u64>, errors: u64, seconds: f64) -> Measurement {
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    Measurement {
        connections,
        requests: all.len() as u64,
        errors,
        seconds,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
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

pub struct HostScenario {
    pub rows: Vec<(Measurement, Measurement)>,
}

/// Serves the trivial `hello` component on its own host (port 0); returns the host
/// and its scratch directory, which the caller removes.
pub async fn start_hello_host(
    workspace: &std::path::Path,
    tag: &str,
) -> anyhow::Result<(crate::RunningHost, PathBuf)> {
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
    let limits = Limits::default();
    let runtime = Runtime::new(&limits, Some(dir.join("cache")))?;
    let host = crate::start(
        &runtime,
        HostConfig {
            manifest,
            listen: "127.0.0.1:0".parse()?,
            tls: None,
            variables: Default::default(),
            state_dir: dir.join("state"),
            limits,
        },
    )
    .await
    .context("starting the host for the trivial component")?;
    Ok((host, dir))
}

/// Runs scenario `host`: returns (native, toaster) per connection count.
pub async fn host_scenario(
    workspace: &std::path::Path,
    duration: Duration,
) -> anyhow::Result<HostScenario> {
    let (host, dir) = start_hello_host(workspace, "host").await?;
    let native = native_hello_server().await?;
    let mut rows = Vec::new();
    for connections in [1usize, 16, 64] {
        // Warm both (compiled code paged in, pools filled), then measure.
        load(native, "/", connections, Duration::from_millis(300)).await?;
        load(host.addr(), "/", connections, Duration::from_millis(300)).await?;
        let n = load(native, "/", connections, duration).await?;
        let t = load(host.addr(), "/", connections, duration).await?;
        rows.push((n, t));
    }
    host.shutdown().await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(HostScenario { rows })
}

pub fn host_table(s: &HostScenario) -> String {
    let mut out = String::from(
        "| connections | native req/s | toaster req/s | ratio | native p50 | toaster p50 | added p50 | native p99 | toaster p99 |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (n, t) in &s.rows {
        out.push_str(&format!(
            "| {} | {:.0} | {:.0} | {:.2} | {} µs | {} µs | {} µs | {} µs | {} µs |\n",
            n.connections,
            n.rps(),
            t.rps(),
            t.rps() / n.rps(),
            n.p50_us,
            t.p50_us,
            t.p50_us as i64 - n.p50_us as i64,
            n.p99_us,
            t.p99_us,
        ));
    }
    out
}

/// The machine, for the record next to the figures.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
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
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "?".into());
    format!("{cores} cores ({cpu}), {mem} memory")
}

pub fn workspace_from(manifest: &std::path::Path) -> PathBuf {
    manifest
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}
pub mod aggregate;
pub mod app;
pub mod ota;

/// What `toaster bench` runs.
pub struct BenchOptions {
    pub workspace: PathBuf,
    pub duration: Duration,
    pub scenarios: Vec<String>,
    /// An admin URL of a PostgreSQL server where a scratch database may be created.
    pub admin_url: String,
    /// Readings per batch for the ingest scenario.
    pub ingest_batches: Vec<usize>,
}

fn table_header() -> &'static str {
    "| | connections | native | toaster | ratio | native p50 | toaster p50 | native p99 | toaster p99 |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
}

fn row(label: &str, unit: f64, n: &Measurement, t: &Measurement) -> String {
    format!(
        "| {label} | {} | {:.0}/s | {:.0}/s | {:.2} | {} µs | {} µs | {} µs | {} µs |\n",
        n.connections,
        n.rps() * unit,
        t.rps() * unit,
        t.rps() / n.rps().max(f64::MIN_POSITIVE),
        n.p50_us,
        t.p50_us,
        n.p99_us,
        t.p99_us
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

/// Runs the chosen scenarios; returns `(marker, markdown)` per scenario.
pub async fn run(opts: &BenchOptions) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let d = opts.duration;
    if opts.scenarios.iter().any(|s| s == "host") {
        eprintln!("bench host: hello component vs native hyper");
        let s = host_scenario(&opts.workspace, d).await?;
        out.push(("host".to_string(), host_table(&s)));
    }
    let wants = |name: &str| opts.scenarios.iter().any(|s| s == name);
    if !(wants("auth") || wants("ingest") || wants("ota") || wants("aggregate")) {
        return Ok(out);
    }
    let dir = std::env::temp_dir().join(format!("toaster-bench-app-{}", std::process::id()));
    let runtime = Runtime::new(
        &Limits::default(),
        Some(opts.workspace.join("target/toaster-bench-cache")),
    )?;
    eprintln!("bench: starting the app against a scratch database");
    let app = app::AppUnderTest::start(&opts.workspace, &opts.admin_url, &runtime, &dir).await?;
    let result = app_scenarios(opts, &app).await;
    app.stop().await?;
    let _ = std::fs::remove_dir_all(&dir);
    out.extend(result?);
    Ok(out)
}

async fn app_scenarios(
    opts: &BenchOptions,
    app: &app::AppUnderTest,
) -> anyhow::Result<Vec<(String, String)>> {
    let d = opts.duration;
    let wants = |name: &str| opts.scenarios.iter().any(|s| s == name);
    let mut out = Vec::new();
    if wants("auth") {
        eprintln!("bench auth: token exchange, access-token verification");
        let exchange = app::token_exchange(app, 16, d).await?;
        let native = app::native_verifier(toaster_core::token::TokenSigner::from_secret(
            &app_signer_secret(app)?,
        )?)
        .await?;
        let admin = app.admin_token()?;
        let device = app.login(0).await?;
        let mut table = String::from(table_header());
        let mut all = vec![exchange.clone()];
        for c in [1usize, 16] {
            let n = load_with(native, c, d, bearer_get("/v1/auth/me", &admin)).await?;
            let t = app::verify_in_component(app, admin.clone(), c, d).await?;
            table.push_str(&row("admin token", 1.0, &n, &t));
            let td = app::verify_in_component(app, device.clone(), c, d).await?;
            table.push_str(&row(
                "device token (+ revocation, rate limit)",
                1.0,
                &n,
                &td,
            ));
            all.extend([n, t, td]);
        }
        let text = format!(
            "Token exchange (`POST /v1/auth/token`, ES256 assertions pre-signed, 16 connections): **{:.0} exchanges/s**, p50 {} µs, p99 {} µs.\n\nAccess-token verification: `GET /v1/auth/me` (the component verifies the HS256 token; for a device token also its key generation through the key-value store and its rate budget) against a native hyper server running the same `TokenSigner::verify` and answering the same JSON.\n\n{table}{}",
            exchange.rps(),
            exchange.p50_us,
            exchange.p99_us,
            errors_note(&all.iter().collect::<Vec<_>>()),
        );
        out.push(("auth".to_string(), text));
    }
    if wants("ota") {
        eprintln!("bench ota: update checks vs the trivial component");
        out.push((
            "ota".to_string(),
            ota::ota_check(app, &opts.workspace, d).await?,
        ));
    }
    if wants("aggregate") {
        eprintln!("bench aggregate: loading 10.8M readings, then 30-day 1h queries vs raw SQL");
        let s = aggregate::aggregate_scenario(app, d).await?;
        out.push(("aggregate".to_string(), aggregate::aggregate_table(&s)));
    }
    if wants("ingest") {
        eprintln!("bench ingest: batches of 1, 10, 100, 1000 vs tokio-postgres");
        let connections = 16;
        let mut tokens = Vec::new();
        for i in 1..=connections {
            tokens.push(app.login(i).await?);
        }
        let base_ms = (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis() as i64)
            - 20 * 3600 * 1000;
        let mut table = String::from(
            "| readings/batch | connections | native readings/s | toaster readings/s | ratio | toaster requests/s | native p50 | toaster p50 | native p99 | toaster p99 |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        let mut all = Vec::new();
        for (k, size) in opts.ingest_batches.iter().copied().enumerate() {
            // Each size writes its own time range, so nothing is a duplicate.
            let base = base_ms + (k as i64) * 4 * 3600 * 1000;
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
            let t = app::ingest_http(app, &tokens, size, connections, d, base).await?;
            table.push_str(&format!(
                "| {size} | {connections} | {:.0} | {:.0} | {:.2} | {:.0} | {} µs | {} µs | {} µs | {} µs |\n",
                n.rps() * size as f64,
                t.rps() * size as f64,
                t.rps() / n.rps().max(f64::MIN_POSITIVE),
                t.rps(),
                n.p50_us,
                t.p50_us,
                n.p99_us,
                t.p99_us
            ));
            all.extend([n, t]);
        }
        let text = format!(
            "`POST /v1/telemetry` from {connections} devices (one connection each), against the same statement (`functions/ingest/src/store_batch.sql`) with the same batches and concurrency sent by tokio-postgres over {connections} connections. Each point writes fresh readings (no duplicates).\n\n{table}{}",
            errors_note(&all.iter().collect::<Vec<_>>())
        );
        out.push(("ingest".to_string(), text));
    }
    Ok(out)
}

fn app_signer_secret(app: &app::AppUnderTest) -> anyhow::Result<String> {
    Ok(app.signer_secret.clone())
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
    path: &std::path::Path,
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
