//! Benchmarks of the application's hot paths, each against a native baseline in
//! the same run: device login and access-token verification (identity), and
//! telemetry ingest against the same INSERT sent straight to PostgreSQL.
//!
//! The app is the workspace's spin.toml served by the toaster host, in a child
//! process (`server`), against a fresh database (created on the given server and
//! dropped at the end), with signing keys generated for the run and a rate limit
//! high enough not to interfere.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use jwt_simple::prelude::{Claims, ECDSAP256KeyPairLike, ES256KeyPair};
use toaster_core::token::TokenSigner;

use super::server::{ServeSpec, ServerProcess};
use super::usage::CpuClock;
use super::{Endpoint, Measurement, load_with, summarize};
use toaster_setup::{database, keys, migrate};

/// Devices registered for the run; each login uses the next device, so no
/// device's rate budget shapes the figures.
pub const DEVICES: usize = 256;

pub struct AppUnderTest {
    server: ServerProcess,
    spec: ServeSpec,
    pub db_url: String,
    admin_url: String,
    db_name: String,
    pub signer: TokenSigner,
    pub signer_secret: String,
    pub tenant: String,
    pub devices: Vec<(String, ES256KeyPair)>,
    pub client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
}

impl AppUnderTest {
    /// Creates the database and starts the host on it in a child process; `state` is
    /// the host's state directory, `cache` where compiled components are kept.
    pub async fn start(
        workspace: &Path,
        admin_url: &str,
        state: &Path,
        cache: &Path,
    ) -> anyhow::Result<AppUnderTest> {
        let db_name = format!("toaster_bench_{:08x}", rand::random::<u32>());
        let db_url = database::create_database(admin_url, &db_name).await?;
        let mut client = database::connect(&db_url).await?;
        migrate::migrate(&mut client, &workspace.join("schemas/sql")).await?;
        // Partitions for the readings the ingest scenario sends (the last two days).
        client
            .execute(
                "SELECT toaster_ensure_telemetry_partitions(now() - interval '2 days', now())",
                &[],
            )
            .await?;
        let cfg: tokio_postgres::Config = db_url.parse()?;
        let db_host = match cfg.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => {
                format!("{h}:{}", cfg.get_ports().first().copied().unwrap_or(5432))
            }
            _ => bail!("the benchmark database must be reached over TCP"),
        };
        let token_key = keys::new_token_secret();
        let variables = BTreeMap::from([
            ("db_url".to_string(), db_url.clone()),
            ("db_host".to_string(), db_host),
            ("token_signing_key".to_string(), token_key.clone()),
            ("manifest_signing_key".to_string(), keys::new_ed25519_pem()),
            ("device_rate_limit".to_string(), "100000000/60s".to_string()),
        ]);
        let spec = ServeSpec::Host {
            manifest: workspace.join("spin.toml"),
            variables,
            state_dir: state.to_path_buf(),
            cache_dir: Some(PathBuf::from(cache)),
        };
        let server = ServerProcess::spawn(&spec)
            .await
            .context("starting the app")?;
        let signer = TokenSigner::from_secret(&token_key)?;
        let http =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Full<Bytes>>();
        let mut app = AppUnderTest {
            server,
            spec,
            db_url,
            admin_url: admin_url.to_string(),
            db_name,
            signer,
            signer_secret: token_key.clone(),
            tenant: "bench".to_string(),
            devices: Vec::new(),
            client: http,
        };
        let operator = app.signer.mint(
            &toaster_core::token::AccessClaims::operator("bench"),
            Duration::from_secs(3600),
        )?;
        app.call(
            "POST",
            "/v1/tenants",
            &operator,
            serde_json::json!({"id": "bench", "name": "Benchmark"}),
        )
        .await?;
        let admin = app.admin_token()?;
        for i in 0..DEVICES {
            let key = ES256KeyPair::generate();
            let id = format!("dev-{i:04}");
            let pem = key.public_key().to_pem()?;
            app.call(
                "POST",
                "/v1/devices",
                &admin,
                serde_json::json!({"id": id, "model": "bench-toaster", "public_key": pem}),
            )
            .await?;
            app.devices.push((id, key));
        }
        Ok(app)
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Where the load goes: the host process.
    pub fn endpoint(&self) -> Endpoint {
        self.server.endpoint()
    }

    /// The host process's peak memory so far (VmHWM), in bytes.
    pub fn peak_rss(&self) -> Option<u64> {
        self.server.peak_rss()
    }

    /// Replaces the host process with a fresh one serving the same database and
    /// state, so that the next scenario's peak memory is its own.
    pub async fn fresh_server(&mut self) -> anyhow::Result<()> {
        // The old process goes first: a host's key-value file is its own while it runs.
        self.server
            .restart(&self.spec)
            .await
            .context("restarting the app")
    }

    /// The application variables the app is served with (for another runtime serving
    /// the same app, database and keys).
    pub fn variables(&self) -> &BTreeMap<String, String> {
        match &self.spec {
            ServeSpec::Host { variables, .. } => variables,
            _ => unreachable!("the app is served by a host"),
        }
    }

    pub fn admin_token(&self) -> anyhow::Result<String> {
        let tenant =
            toaster_core::ids::TenantId::parse(&self.tenant).map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(self.signer.mint(
            &toaster_core::token::AccessClaims::admin(tenant, "bench"),
            Duration::from_secs(3600),
        )?)
    }

    /// Inserts `count` active devices of `model` (ids `{prefix}-00000`, …) into the
    /// app's tenant with SQL; a device token for each (`Bearer …`), and the database
    /// client.
    pub async fn device_fleet(
        &self,
        prefix: &str,
        model: &str,
        count: usize,
    ) -> anyhow::Result<(tokio_postgres::Client, Arc<Vec<String>>)> {
        let ids: Vec<String> = (0..count).map(|i| format!("{prefix}-{i:05}")).collect();
        let client = database::connect(&self.db_url).await?;
        client
            .execute(
                "INSERT INTO devices (tenant_id, device_id, model, channel) \
                 SELECT $1, id, $3, 'stable' FROM unnest($2::text[]) AS id",
                &[&self.tenant, &ids, &model],
            )
            .await
            .context("inserting the fleet")?;
        let tenant =
            toaster_core::ids::TenantId::parse(&self.tenant).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut tokens = Vec::with_capacity(count);
        for id in &ids {
            let device =
                toaster_core::ids::DeviceId::parse(id).map_err(|e| anyhow::anyhow!("{e}"))?;
            let token = self.signer.mint(
                &toaster_core::token::AccessClaims::device(tenant.clone(), &device, 1),
                Duration::from_secs(3600),
            )?;
            tokens.push(format!("Bearer {token}"));
        }
        Ok((client, Arc::new(tokens)))
    }

    /// An authenticated JSON call; an error unless the answer is 2xx.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        let req = http::Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr()))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))?;
        let resp = self.client.request(req).await?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            bail!(
                "{method} {path}: {status}: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        Ok(serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
    }

    /// A signed login assertion for device `i`, unique by its `jti`.
    pub fn assertion(&self, i: usize, jti: &str) -> anyhow::Result<String> {
        let (id, key) = &self.devices[i % self.devices.len()];
        let claims = Claims::create(jwt_simple::prelude::Duration::from_mins(10))
            .with_issuer(&self.tenant)
            .with_subject(id)
            .with_audience("toaster")
            .with_jwt_id(jti);
        key.sign(claims)
    }

    /// Logs device `i` in through the API; its access token.
    pub async fn login(&self, i: usize) -> anyhow::Result<String> {
        let assertion = self.assertion(i, &format!("setup-{i}"))?;
        let req = http::Request::post(format!("http://{}/v1/auth/token", self.addr()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(format!(
                "grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion={assertion}"
            ))))?;
        let resp = self.client.request(req).await?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            bail!("login: {status}: {}", String::from_utf8_lossy(&bytes));
        }
        let v: serde_json::Value = serde_json::from_slice(&bytes)?;
        v["access_token"]
            .as_str()
            .map(str::to_string)
            .context("no access_token")
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        self.server.stop().await?;
        database::drop_database(&self.admin_url, &self.db_name).await?;
        Ok(())
    }
}

/// Login throughput: each request a fresh assertion (pre-signed, so the load
/// generator's signing is not measured), rotating over the devices.
pub async fn token_exchange(
    app: &AppUnderTest,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<Measurement> {
    // Enough assertions for the run; signing happens before the clock starts.
    let per_run = 60_000usize;
    let mut bodies = Vec::with_capacity(per_run);
    for n in 0..per_run {
        let a = app.assertion(n, &format!("bench-{n}"))?;
        bodies.push(Bytes::from(format!(
            "grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion={a}"
        )));
    }
    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicU64::new(0));
    let exhausted = Arc::new(AtomicBool::new(false));
    let m = load_with(
        app.endpoint(),
        connections,
        duration,
        Arc::new(move |_, _| {
            let n = next.fetch_add(1, Ordering::Relaxed) as usize;
            if n >= bodies.len() {
                exhausted.store(true, Ordering::Relaxed);
            }
            http::Request::post("/v1/auth/token")
                .header(http::header::HOST, "127.0.0.1")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Full::new(bodies[n % bodies.len()].clone()))
                .expect("request")
        }),
    )
    .await?;
    Ok(m)
}

/// `GET /v1/auth/me` with `token` against `target`: verification inside the component.
pub async fn verify_in_component(
    target: Endpoint,
    token: String,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<Measurement> {
    let auth = format!("Bearer {token}");
    load_with(
        target,
        connections,
        duration,
        Arc::new(move |_, _| {
            http::Request::get("/v1/auth/me")
                .header(http::header::HOST, "127.0.0.1")
                .header("authorization", auth.as_str())
                .body(Full::new(Bytes::new()))
                .expect("request")
        }),
    )
    .await
}

/// The same check natively: a hyper server verifying the bearer token with the
/// same library and answering a JSON body of the same shape.
pub async fn native_verifier(signer: TokenSigner) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let signer = Arc::new(signer);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let signer = signer.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let signer = signer.clone();
                        async move {
                            let token = req
                                .headers()
                                .get("authorization")
                                .and_then(|v| v.to_str().ok())
                                .and_then(|v| v.strip_prefix("Bearer "))
                                .unwrap_or("");
                            let (status, body) = match signer.verify(token) {
                                Ok(v) => (
                                    200,
                                    serde_json::json!({
                                        "role": v.claims.role,
                                        "subject": v.claims.sub,
                                        "tenant_id": v.claims.tenant,
                                        "key_generation": v.claims.key_generation,
                                        "expires_at": v.expires_at,
                                    })
                                    .to_string(),
                                ),
                                Err(_) => (401, "{}".to_string()),
                            };
                            let mut r = http::Response::new(Full::new(Bytes::from(body)));
                            *r.status_mut() =
                                http::StatusCode::from_u16(status).unwrap_or_default();
                            r.headers_mut().insert(
                                http::header::CONTENT_TYPE,
                                http::HeaderValue::from_static("application/json"),
                            );
                            Ok::<_, std::convert::Infallible>(r)
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// Readings of batch `seq` of connection `conn`: distinct timestamps per device,
/// within the last day.
fn batch_readings(
    size: usize,
    conn: usize,
    seq: u64,
    base_ms: i64,
) -> impl Iterator<Item = (String, i64, f64)> {
    let start = base_ms + (seq as i64) * size as i64;
    (0..size).map(move |i| {
        (
            format!("m{}", i % 8),
            start + i as i64,
            (conn * 1000 + i) as f64 / 7.0,
        )
    })
}

/// Ingest through the app at `target`: one device per connection, batches of `size`.
pub async fn ingest_http(
    target: Endpoint,
    tokens: &[String],
    size: usize,
    connections: usize,
    duration: Duration,
    base_ms: i64,
) -> anyhow::Result<Measurement> {
    let tokens: Arc<Vec<String>> = Arc::new(tokens.iter().map(|t| format!("Bearer {t}")).collect());
    load_with(
        target,
        connections,
        duration,
        Arc::new(move |conn, seq| {
            let mut body = String::with_capacity(24 + size * 56);
            body.push_str("{\"readings\":[");
            for (k, (metric, ts, value)) in batch_readings(size, conn, seq, base_ms).enumerate() {
                if k > 0 {
                    body.push(',');
                }
                body.push_str(&format!(
                    "{{\"metric\":\"{metric}\",\"ts\":{ts},\"value\":{value}}}"
                ));
            }
            body.push_str("]}");
            http::Request::post("/v1/telemetry")
                .header(http::header::HOST, "127.0.0.1")
                .header("authorization", tokens[conn % tokens.len()].as_str())
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)))
                .expect("request")
        }),
    )
    .await
}

/// The same statement the ingest component runs (functions/ingest/src/store_batch.sql,
/// or store_one.sql for batches of one reading),
/// with the same batches and concurrency, sent straight to PostgreSQL by
/// tokio-postgres: the native baseline.
pub async fn ingest_native(
    workspace: &Path,
    db_url: &str,
    tenant: &str,
    size: usize,
    connections: usize,
    duration: Duration,
    base_ms: i64,
) -> anyhow::Result<Measurement> {
    // The statement the component sends for this batch size (functions/ingest/src/store.rs).
    let file = if size == 1 {
        "store_one.sql"
    } else {
        "store_batch.sql"
    };
    let sql = std::fs::read_to_string(workspace.join("functions/ingest/src/").join(file))?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for conn in 0..connections {
        let stop = stop.clone();
        let (sql, db_url, tenant) = (sql.clone(), db_url.to_string(), tenant.to_string());
        let device = format!("native-{size}-{conn}");
        tasks.push(tokio::spawn(async move {
            let client = database::connect(&db_url).await?;
            let stmt = client.prepare(&sql).await?;
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let (mut metrics, mut ts, mut values) = (
                    Vec::with_capacity(size),
                    Vec::with_capacity(size),
                    Vec::with_capacity(size),
                );
                for (m, t, v) in batch_readings(size, conn, seq, base_ms) {
                    metrics.push(m);
                    ts.push(t);
                    values.push(v.to_string());
                }
                seq += 1;
                let t = Instant::now();
                match client
                    .query_one(&stmt, &[&tenant, &device, &metrics, &ts, &values])
                    .await
                {
                    Ok(_) => latencies.push(t.elapsed().as_micros() as u64),
                    Err(e) => {
                        if errors == 0 {
                            tracing::warn!("bench native ingest: {e}");
                        }
                        errors += 1;
                    }
                }
            }
            anyhow::Ok((latencies, errors))
        }));
    }
    let started = Instant::now();
    // No server process of ours: PostgreSQL's share shows as the machine's other.
    let clock = CpuClock::start(None);
    tokio::time::sleep(duration).await;
    let cpu = clock.stop();
    stop.store(true, Ordering::Relaxed);
    let (mut all, mut errors) = (Vec::new(), 0);
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
