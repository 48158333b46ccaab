//! Scenario `host`: the trivial `hello` component served by the toaster host against
//! a native hyper server answering the same `hello\n`, and the host's own work per
//! request without the network ([`host_work_per_request`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use super::server::{ServeSpec, ServerProcess};
use super::{Measurement, errors_note, load, usage};

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
pub fn hello_app(workspace: &Path, tag: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
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
pub(crate) fn server_us_per_request(m: &Measurement) -> f64 {
    if m.requests == 0 {
        return 0.0;
    }
    m.cpu.server * usage::cores() as f64 * m.seconds * 1e6 / m.requests as f64
}

pub(crate) fn peak(bytes: Option<u64>) -> String {
    bytes.map(usage::mib).unwrap_or_else(|| "unknown".into())
}
