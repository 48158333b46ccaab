//! `toaster bench --scenario spin --spin-bin PATH`: the peer comparison. The same
//! component binaries, the same PostgreSQL database, the same keys and variables,
//! served by our host (`toaster up`'s runtime, in a `bench-serve` child) and by the
//! given Spin binary (`spin up`, a child too), measured in alternating runs at 16
//! keep-alive connections: the trivial `hello` component, `GET /v1/auth/me` with device
//! tokens (HS256, the revocation entry and the rate window in the key-value store), and
//! single-reading ingest (one INSERT … RETURNING with its rollups per request).
//!
//! Each server's own CPU per request comes from the kernel's accounting of its process,
//! so the figures say where the difference is: in the server, not in the generator.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::app::{self, AppUnderTest};
use super::usage::cores;
use super::{Endpoint, HelloHost, Measurement, get, hello_app, load_with};

/// Connections of every point, as the first outside measurement used.
const CONNECTIONS: usize = 16;
/// Runs of each runtime per point, alternating.
const ROUNDS: usize = 2;

/// A `spin up` child serving a manifest on 127.0.0.1.
pub struct SpinProcess {
    child: tokio::process::Child,
    endpoint: Endpoint,
}

impl SpinProcess {
    /// Starts `spin up` on `manifest` with `variables` in Spin's `SPIN_VARIABLE_*`
    /// environment and its state (key-value store, logs) under `state_dir`; returns
    /// once it answers HTTP.
    pub async fn start(
        spin: &Path,
        manifest: &Path,
        variables: &BTreeMap<String, String>,
        state_dir: &Path,
        runtime_config: Option<&Path>,
    ) -> anyhow::Result<SpinProcess> {
        std::fs::create_dir_all(state_dir)?;
        let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let mut command = tokio::process::Command::new(spin);
        command
            .arg("up")
            .arg("--from")
            .arg(manifest)
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--state-dir")
            .arg(state_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        if let Some(file) = runtime_config {
            command.arg("--runtime-config-file").arg(file);
        }
        for (name, value) in variables {
            command.env(format!("SPIN_VARIABLE_{}", name.to_uppercase()), value);
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", spin.display()))?;
        let pid = child.id().context("spin exited at once")?;
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            if let Some(status) = child.try_wait()? {
                bail!("spin up exited before serving ({status}); see the messages above");
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                break;
            }
            if Instant::now() > deadline {
                bail!("spin up did not listen on {addr} within 10 minutes");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // `spin up` runs the app in a child process (`spin trigger http`): its CPU is
        // the server's.
        let server = deepest_descendant(pid);
        Ok(SpinProcess {
            child,
            endpoint: Endpoint {
                addr,
                pid: Some(server),
            },
        })
    }

    pub fn endpoint(&self) -> Endpoint {
        self.endpoint
    }

    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }
}

/// The last process of the chain of first children below `pid` (`pid` itself if it
/// has none).
fn deepest_descendant(pid: u32) -> u32 {
    let mut current = pid;
    loop {
        let children = std::fs::read_to_string(format!("/proc/{current}/task/{current}/children"))
            .unwrap_or_default();
        match children
            .split_whitespace()
            .next()
            .and_then(|c| c.parse().ok())
        {
            Some(child) => current = child,
            None => return current,
        }
    }
}

/// The server's CPU per answered request, in µs.
fn server_us_per_request(m: &Measurement) -> f64 {
    m.cpu.server * m.seconds * cores() as f64 * 1e6 / (m.requests.max(1) as f64)
}

/// One point: its runs for each runtime, alternating (toaster first).
struct Point {
    label: String,
    toaster: Vec<Measurement>,
    spin: Vec<Measurement>,
}

impl Point {
    fn row(&self) -> String {
        let rates = |ms: &[Measurement]| {
            ms.iter()
                .map(|m| format!("{:.0}", m.rps()))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        let mean = |ms: &[Measurement], f: &dyn Fn(&Measurement) -> f64| {
            ms.iter().map(f).sum::<f64>() / ms.len().max(1) as f64
        };
        let t = mean(&self.toaster, &|m| m.rps());
        let s = mean(&self.spin, &|m| m.rps());
        let p = |ms: &[Measurement], f: &dyn Fn(&Measurement) -> u64| {
            ms.iter().map(f).max().unwrap_or(0)
        };
        format!(
            "| {} | {} | {} | {:.1} | {} / {} µs | {} / {} µs | {:.0} / {:.0} µs |\n",
            self.label,
            rates(&self.toaster),
            rates(&self.spin),
            t / s.max(f64::MIN_POSITIVE),
            p(&self.toaster, &|m| m.p50_us),
            p(&self.spin, &|m| m.p50_us),
            p(&self.toaster, &|m| m.p99_us),
            p(&self.spin, &|m| m.p99_us),
            mean(&self.toaster, &server_us_per_request),
            mean(&self.spin, &server_us_per_request),
        )
    }

    fn errors(&self) -> u64 {
        self.toaster
            .iter()
            .chain(&self.spin)
            .map(|m| m.errors)
            .sum()
    }
}

/// Runs the comparison; the markdown section.
pub async fn spin_comparison(
    workspace: &Path,
    app: &AppUnderTest,
    spin: &Path,
    redis: Option<&str>,
    duration: Duration,
) -> anyhow::Result<String> {
    let version = tokio::process::Command::new(spin)
        .arg("--version")
        .output()
        .await
        .with_context(|| format!("running {} --version", spin.display()))?;
    let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
    let scratch = std::env::temp_dir().join(format!("toaster-bench-spin-{}", std::process::id()));
    let result = compare(workspace, app, spin, redis, duration, &scratch).await;
    let _ = std::fs::remove_dir_all(&scratch);
    let points = result?;
    let mut table = String::from(
        "| request (16 connections) | toaster req/s (runs) | Spin req/s (runs) | toaster / Spin | p50 toaster / Spin | p99 toaster / Spin | server CPU per request toaster / Spin |\n|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for p in &points {
        table.push_str(&p.row());
    }
    let errors: u64 = points.iter().map(Point::errors).sum();
    let errors = if errors == 0 {
        String::new()
    } else {
        format!("\n{errors} request(s) failed during this scenario.\n")
    };
    Ok(format!(
        "The same `.wasm` files, database, keys and variables served by our host and by `{version}` (`--spin-bin`), {ROUNDS} alternating runs each. `hello` is the trivial component; `auth/me` a device token's `GET /v1/auth/me`; ingest one reading per `POST /v1/telemetry`, one device per connection. Server CPU per request is the server process's CPU time over the requests it answered.\n\n{table}{errors}"
    ))
}

/// The trivial component, served by each runtime from the same manifest.
async fn compare_hello(
    workspace: &Path,
    spin: &Path,
    d: Duration,
    scratch: &Path,
) -> anyhow::Result<Point> {
    let hello_toaster = HelloHost::start(workspace, "spin-hello").await?;
    let (hello_dir, hello_manifest): (PathBuf, PathBuf) = hello_app(workspace, "spin-hello-spin")?;
    let hello_spin = SpinProcess::start(
        spin,
        &hello_manifest,
        &BTreeMap::new(),
        &scratch.join("hello"),
        None,
    )
    .await;
    let _ = std::fs::remove_dir_all(&hello_dir);
    let hello_spin = hello_spin?;
    let mut hello = Point {
        label: "hello".into(),
        toaster: Vec::new(),
        spin: Vec::new(),
    };
    for _ in 0..ROUNDS {
        hello
            .toaster
            .push(load_with(hello_toaster.server.endpoint(), CONNECTIONS, d, get("/")).await?);
        hello
            .spin
            .push(load_with(hello_spin.endpoint(), CONNECTIONS, d, get("/")).await?);
    }
    hello_spin.stop().await?;
    hello_toaster.stop().await?;
    Ok(hello)
}

async fn compare(
    workspace: &Path,
    app: &AppUnderTest,
    spin: &Path,
    redis: Option<&str>,
    d: Duration,
    scratch: &Path,
) -> anyhow::Result<Vec<Point>> {
    let hello = compare_hello(workspace, spin, d, scratch).await?;

    // The app: the same database and variables as the toaster host serving it.
    let app_spin = SpinProcess::start(
        spin,
        &workspace.join("spin.toml"),
        app.variables(),
        &scratch.join("app"),
        None,
    )
    .await?;
    let mut tokens = Vec::with_capacity(CONNECTIONS);
    for i in 1..=CONNECTIONS {
        tokens.push(app.login(i).await?);
    }
    let mut me = Point {
        label: "auth/me (device token)".into(),
        toaster: Vec::new(),
        spin: Vec::new(),
    };
    let mut ingest = Point {
        label: "ingest, one reading".into(),
        toaster: Vec::new(),
        spin: Vec::new(),
    };
    // Each ingest run writes its own hour within the last day: nothing is a duplicate.
    let base_ms = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64)
        - 20 * 3600 * 1000;
    let mut hour = 0i64;
    for _ in 0..ROUNDS {
        for (target, me_runs, ingest_runs) in [
            (app.endpoint(), &mut me.toaster, &mut ingest.toaster),
            (app_spin.endpoint(), &mut me.spin, &mut ingest.spin),
        ] {
            me_runs
                .push(app::verify_in_component(target, tokens[0].clone(), CONNECTIONS, d).await?);
            let base = base_ms + hour * 3600 * 1000;
            hour += 1;
            ingest_runs.push(app::ingest_http(target, &tokens, 1, CONNECTIONS, d, base).await?);
        }
    }
    app_spin.stop().await?;
    // Spin again with its key-value store in Redis instead of its default SQLite file:
    // the same comparison without Spin's per-write fsync.
    if let Some(url) = redis {
        let config = scratch.join("redis.toml");
        std::fs::write(
            &config,
            format!("[key_value_store.default]\ntype = \"redis\"\nurl = {url:?}\n"),
        )?;
        let app_spin_redis = SpinProcess::start(
            spin,
            &workspace.join("spin.toml"),
            app.variables(),
            &scratch.join("app-redis"),
            Some(&config),
        )
        .await?;
        let mut me_redis = Point {
            label: "auth/me, Spin's store in Redis".into(),
            toaster: me.toaster.clone(),
            spin: Vec::new(),
        };
        let mut ingest_redis = Point {
            label: "ingest, Spin's store in Redis".into(),
            toaster: ingest.toaster.clone(),
            spin: Vec::new(),
        };
        for _ in 0..ROUNDS {
            let target = app_spin_redis.endpoint();
            me_redis
                .spin
                .push(app::verify_in_component(target, tokens[0].clone(), CONNECTIONS, d).await?);
            let base = base_ms + hour * 3600 * 1000;
            hour += 1;
            ingest_redis
                .spin
                .push(app::ingest_http(target, &tokens, 1, CONNECTIONS, d, base).await?);
        }
        app_spin_redis.stop().await?;
        return Ok(vec![hello, me, ingest, me_redis, ingest_redis]);
    }
    Ok(vec![hello, me, ingest])
}
