//! The load generator: keep-alive HTTP/1.1 connections to a server on 127.0.0.1,
//! each sending the requests a [`RequestFactory`] builds, and what one run measured.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use super::usage::{CpuClock, CpuShare};

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

pub(crate) fn summarize(
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
