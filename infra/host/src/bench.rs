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
use http_body_util::{BodyExt, Empty, Full};
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

/// Sends GET `path` over `connections` keep-alive HTTP/1.1 connections for `duration`.
pub async fn load(
    addr: SocketAddr,
    path: &str,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<Measurement> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let stop = stop.clone();
        let path = path.to_string();
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            let mut latencies = Vec::with_capacity(100_000);
            let mut errors = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let req = http::Request::get(&path)
                    .header(http::header::HOST, "127.0.0.1")
                    .body(Empty::<Bytes>::new())?;
                let t = Instant::now();
                match sender.send_request(req).await {
                    Ok(resp) => {
                        let ok = resp.status().is_success();
                        let _ = resp.into_body().collect().await;
                        if ok {
                            latencies.push(t.elapsed().as_micros() as u64);
                        } else {
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
    let seconds = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    Ok(Measurement {
        connections,
        requests: all.len() as u64,
        errors,
        seconds,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
    })
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

/// Runs scenario `host`: returns (native, toaster) per connection count.
pub async fn host_scenario(
    workspace: &std::path::Path,
    duration: Duration,
) -> anyhow::Result<HostScenario> {
    let hello = workspace.join("target/wasm32-wasip2/release/hello.wasm");
    anyhow::ensure!(
        hello.exists(),
        "{} is missing: run scripts/build-wasm",
        hello.display()
    );
    let dir = std::env::temp_dir().join(format!("toaster-bench-{}", std::process::id()));
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
    .context("starting the host")?;
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
