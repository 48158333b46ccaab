//! `toaster bench --scenario hardening`: the host under abuse, in figures.
//!
//! - An authenticated `GET /v1/auth/me` (one connection) measured alone, then while an
//!   attacker on another loopback address keeps 300 connections stalled in their
//!   request bodies (`Content-Length: 1000`, one byte sent, then nothing; a connection
//!   the host closes is opened again at once).
//! - How many connections one client address may hold before it is refused.
//! - The host's resident memory before a burst of 600 concurrent fleet queries, right
//!   after it, and after a minute idle.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::Endpoint;
use super::app::{self, AppUnderTest};
use super::usage::{mib, rss, rss_anon};

/// Stalled connections the attacker keeps open.
const STALLED: usize = 300;
/// The attacker's address: not the generator's, so per-address limits fall on it.
const ATTACKER: &str = "127.0.0.2";
/// Fleet queries sent at once for the memory figure.
const BURST: usize = 600;
/// How long the host idles after the burst before its memory is read again.
const IDLE: Duration = Duration::from_secs(60);

/// Opens a connection from the attacker's address and stalls a body on it.
async fn stall(target: Endpoint, path: &str) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(format!("{ATTACKER}:0").parse().expect("address"))?;
    let mut stream = socket.connect(target.addr).await?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{"
    );
    stream.write_all(head.as_bytes()).await?;
    Ok(stream)
}

/// Keeps one stalled connection open until `stop`: reopened whenever the host closes
/// it. Counts the host's answers by status class (503 refusals, 408 timeouts).
async fn attacker(target: Endpoint, i: usize, stop: Arc<AtomicBool>, refused: Arc<AtomicU64>) {
    let path = ["/v1/provision", "/v1/telemetry", "/v1/auth/token"][i % 3];
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut stream) = stall(target, path).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let mut buf = [0u8; 512];
        let answer = tokio::select! {
            n = stream.read(&mut buf) => n.unwrap_or(0),
            _ = async { while !stop.load(Ordering::Relaxed) { tokio::time::sleep(Duration::from_millis(50)).await } } => 0,
        };
        if buf[..answer].starts_with(b"HTTP/1.1 503") {
            refused.fetch_add(1, Ordering::Relaxed);
            // Refused: wait before trying again, as the host asked.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// Sends `BURST` fleet queries at once (one connection each); how many got 200.
async fn burst(app: &AppUnderTest, token: &str) -> anyhow::Result<(usize, usize)> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let path = format!(
        "/v1/metrics/fleet/m0?from={}&to={now}&bucket=1h&agg=avg,min,max,count",
        now - 24 * 3_600_000
    );
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..BURST {
        let uri = format!("http://{}{path}", app.addr());
        let auth = format!("Bearer {token}");
        tasks.spawn(async move {
            let client =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http::<Full<Bytes>>();
            let req = http::Request::get(uri)
                .header("authorization", auth)
                .body(Full::new(Bytes::new()))
                .expect("request");
            match client.request(req).await {
                Ok(resp) => {
                    let ok = resp.status().is_success();
                    let _ = resp.into_body().collect().await;
                    ok
                }
                Err(_) => false,
            }
        });
    }
    let mut ok = 0;
    while let Some(r) = tasks.join_next().await {
        ok += usize::from(r.unwrap_or(false));
    }
    Ok((ok, BURST))
}

/// Runs the scenario; the markdown section.
pub async fn hardening(app: &AppUnderTest, duration: Duration) -> anyhow::Result<String> {
    let target = app.endpoint();
    let admin = app.admin_token()?;
    app::verify_in_component(target, admin.clone(), 1, Duration::from_millis(500)).await?;
    let alone = app::verify_in_component(target, admin.clone(), 1, duration).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(AtomicU64::new(0));
    let mut attackers = tokio::task::JoinSet::new();
    for i in 0..STALLED {
        attackers.spawn(attacker(target, i, stop.clone(), refused.clone()));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let attacked = app::verify_in_component(target, admin.clone(), 1, duration).await?;
    stop.store(true, Ordering::Relaxed);
    while attackers.join_next().await.is_some() {}
    let refusals = refused.load(Ordering::Relaxed);

    let pid = target
        .pid
        .ok_or_else(|| anyhow::anyhow!("the host runs in this process"))?;
    // Settle first: the attack's connections are gone.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let memory = || (rss(pid).unwrap_or(0), rss_anon(pid).unwrap_or(0));
    let before = memory();
    let started = Instant::now();
    let (ok, sent) = burst(app, &admin).await?;
    let burst_secs = started.elapsed().as_secs_f64();
    let after = memory();
    tokio::time::sleep(IDLE).await;
    let idle = memory();
    let change = |now: u64, then: u64| {
        if then > 0 {
            format!("{:+.0}%", (now as f64 / then as f64 - 1.0) * 100.0)
        } else {
            "?".into()
        }
    };
    Ok(format!(
        "`GET /v1/auth/me` with an admin token over one connection, alone and while {STALLED} connections from another address ({ATTACKER}) stall their request bodies (`Content-Length: 1000`, one byte, then nothing; reopened as soon as the host closes one):\n\n| | requests/s | p50 | p99 | errors |\n|---|---:|---:|---:|---:|\n| alone | {:.0} | {} µs | {} µs | {} |\n| under the stalled-body attack | {:.0} | {} µs | {} µs | {} |\n\nThe attacker's address was refused {refusals} time(s) (503, over the 256 connections one address may hold by default); its other connections were closed with 408 after the 5 s body grace.\n\nMemory of the host around a burst of {sent} concurrent fleet queries ({ok} answered 200 in {burst_secs:.1} s; the rest shed with 503 past the 1 s slot wait), RSS, of which anonymous (heap, stacks, wasm memories; the rest is the binary's and compiled components' file-backed pages, which code paths run for the first time fault in):\n\n| | before | right after | after {} s idle | idle vs before |\n|---|---:|---:|---:|---:|\n| RSS | {} | {} | {} | {} |\n| anonymous | {} | {} | {} | {} |\n\nTarget: RSS back within 20% of before.\n",
        alone.rps(),
        alone.p50_us,
        alone.p99_us,
        alone.errors,
        attacked.rps(),
        attacked.p50_us,
        attacked.p99_us,
        attacked.errors,
        IDLE.as_secs(),
        mib(before.0),
        mib(after.0),
        mib(idle.0),
        change(idle.0, before.0),
        mib(before.1),
        mib(after.1),
        mib(idle.1),
        change(idle.1, before.1),
    ))
}
