//! The end-to-end harness: the real host (`toaster_host::start`) serving real
//! components, each test against its own freshly created PostgreSQL database.
//!
//! PostgreSQL comes from `TOASTER_TEST_DATABASE_URL` (an admin URL), else the
//! server at 127.0.0.1:5432; when neither answers, a throwaway cluster is started
//! from the installed PostgreSQL binaries under `target/toaster-test-pg` (reused by
//! later test binaries, stopped by `scripts/test`). Quiet unless `TEST_LOG` is set.
//!
//! With `TOASTER_E2E_SPIN=/path/to/spin` in the environment, [`TestApp`] serves the app
//! with that real Spin binary instead (`spin up` on the same spin.toml and `.wasm`
//! files, one process per test, its own database as always): `scripts/spin-e2e` runs
//! the app's end-to-end tests that way. Tests that need the host's internals are
//! skipped there by name, each with its reason, in that script.

pub mod api;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use toaster_host::{HostConfig, Limits, RunningHost, Runtime};
use toaster_setup::{database, localpg, migrate};
use tokio::sync::OnceCell;

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("workspace root")
}

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| {
            if p.is_absolute() {
                p
            } else {
                workspace_root().join(p)
            }
        })
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// A component built by `scripts/build-wasm` (release, wasm32-wasip2).
pub fn wasm(name: &str) -> PathBuf {
    let p = target_dir()
        .join("wasm32-wasip2/release")
        .join(format!("{name}.wasm"));
    assert!(
        p.exists(),
        "{} is missing: build the components first with `scripts/build-wasm` (the README's test command does)",
        p.display()
    );
    p
}

/// The host logs through `tracing`; tests print it only when `TEST_LOG` is set
/// (its value is the filter, e.g. `TEST_LOG=debug`).
pub fn init_logging() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        if let Ok(filter) = std::env::var("TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
    });
}

/// One engine for the whole test binary: each component is compiled once.
pub fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        Runtime::new(
            &Limits::default(),
            Some(target_dir().join("toaster-test-cache")),
        )
        .expect("runtime")
    })
}

static ADMIN_URL: OnceCell<String> = OnceCell::const_new();

/// An admin URL of a PostgreSQL server that answers.
pub async fn admin_url() -> String {
    ADMIN_URL
        .get_or_init(|| async {
            if let Ok(url) = std::env::var("TOASTER_TEST_DATABASE_URL") {
                return url;
            }
            // Spin connects with TLS unless told not to, and refuses this machine's
            // self-signed certificate (docs/host.md, "Spin compatibility").
            let default = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable".to_string();
            if database::ping(&default).await.is_ok() {
                return default;
            }
            let dir = target_dir().join("toaster-test-pg");
            let pg = localpg::LocalPostgres::builder(&dir)
                .ephemeral(true)
                .start()
                .await
                .expect("no PostgreSQL answers at 127.0.0.1:5432 and a throwaway one could not be started");
            let url = pg.url("postgres");
            // Keep it running for the other tests of this binary and the next binaries;
            // scripts/test stops it.
            std::mem::forget(pg);
            url
        })
        .await
        .clone()
}

/// A fresh database with every migration applied, dropped when the value drops.
pub struct TestDb {
    pub name: String,
    pub url: String,
    admin: String,
}

impl TestDb {
    /// A database with every migration in schemas/sql applied.
    pub async fn new() -> TestDb {
        let db = Self::empty().await;
        let mut client = database::connect(&db.url)
            .await
            .expect("connect to the test database");
        migrate::migrate(&mut client, &workspace_root().join("schemas/sql"))
            .await
            .expect("apply migrations");
        db
    }

    /// A database with nothing in it.
    pub async fn empty() -> TestDb {
        let admin = admin_url().await;
        let name = format!("toaster_test_{:016x}", rand::random::<u64>());
        let url = database::create_database(&admin, &name)
            .await
            .expect("create the test database");
        TestDb { name, url, admin }
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        database::connect(&self.url).await.expect("connect")
    }

    /// `host:port` of the server, for `allowed_outbound_hosts`.
    pub fn host_port(&self) -> String {
        let cfg: tokio_postgres::Config = self.url.parse().expect("url");
        let host = match &cfg.get_hosts()[0] {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            _ => panic!("unix socket"),
        };
        format!(
            "{host}:{}",
            cfg.get_ports().first().copied().unwrap_or(5432)
        )
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Drop may run inside the test's runtime, which cannot block on itself.
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                let _ = rt.block_on(database::drop_database(&admin, &name));
            }
        })
        .join();
    }
}

/// The `spin` binary the app's end-to-end tests run on instead of our host, if any
/// (`TOASTER_E2E_SPIN`).
pub fn spin_binary() -> Option<PathBuf> {
    std::env::var_os("TOASTER_E2E_SPIN")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// A host serving a manifest written for the test.
/// Kills the process group `spin up` leads (itself and its `spin trigger http`).
fn kill_group(spin: &tokio::process::Child) {
    if let Some(pid) = spin.id().and_then(|p| i32::try_from(p).ok()) {
        // SAFETY: kill(2) with a negative pid signals that process group; no memory
        // is touched.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
}

impl Drop for TestHost {
    /// A test that panics never calls [`TestHost::stop`]: its Spin processes go too.
    fn drop(&mut self) {
        if let Some(spin) = &self.spin {
            kill_group(spin);
        }
    }
}

pub struct TestHost {
    pub host: Option<RunningHost>,
    /// The `spin up` process serving it instead, on Spin ([`spin_binary`]).
    pub spin: Option<tokio::process::Child>,
    pub base: String,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
}

pub struct HostOptions {
    pub variables: BTreeMap<String, String>,
    pub limits: Limits,
    /// Reuse this state directory (key-value persistence across restarts).
    pub state_dir: Option<PathBuf>,
    pub listen: SocketAddr,
    pub tls: Option<(PathBuf, PathBuf)>,
}

impl Default for HostOptions {
    fn default() -> Self {
        HostOptions {
            variables: BTreeMap::new(),
            limits: Limits::default(),
            state_dir: None,
            listen: "127.0.0.1:0".parse().expect("addr"),
            tls: None,
        }
    }
}

impl TestHost {
    /// Writes `manifest` (with `{wasm:NAME}` replaced by the built component's path)
    /// into a temp dir and serves it.
    pub async fn start(manifest: &str, opts: HostOptions) -> anyhow::Result<TestHost> {
        init_logging();
        let dir = tempfile::tempdir()?;
        let mut text = manifest.to_string();
        while let Some(start) = text.find("{wasm:") {
            let end = start + text[start..].find('}').expect("closing brace");
            let name = &text[start + 6..end];
            let path = wasm(name);
            text.replace_range(start..=end, &path.display().to_string());
        }
        let path = dir.path().join("spin.toml");
        std::fs::write(&path, text)?;
        let state_dir = opts
            .state_dir
            .clone()
            .unwrap_or_else(|| dir.path().join(".toaster"));
        let host = toaster_host::start(
            runtime(),
            HostConfig {
                manifest: path,
                listen: opts.listen,
                tls: opts.tls,
                variables: opts.variables,
                state_dir,
                limits: opts.limits,
            },
        )
        .await?;
        let addr = host.addr();
        Ok(TestHost {
            host: Some(host),
            spin: None,
            base: format!("http://{addr}"),
            addr,
            dir,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()?,
        })
    }

    /// Serves `manifest` (as [`TestHost::start`] takes it) with `spin up` from `spin`,
    /// the variables given in Spin's `SPIN_VARIABLE_*` environment (never on its command
    /// line). Returns once it answers HTTP; its output goes to `spin.log` in the
    /// manifest's directory and is printed if it does not come up.
    pub async fn start_spin(
        spin: &Path,
        manifest: &str,
        variables: &BTreeMap<String, String>,
    ) -> anyhow::Result<TestHost> {
        init_logging();
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("spin.toml");
        std::fs::write(&path, manifest)?;
        let addr = {
            // A free port: Spin has no way to report the one it picks.
            let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
            probe.local_addr()?
        };
        let log = std::fs::File::create(dir.path().join("spin.log"))?;
        let mut command = tokio::process::Command::new(spin);
        command
            .arg("up")
            .arg("--from")
            .arg(&path)
            .arg("--listen")
            .arg(addr.to_string())
            .current_dir(dir.path())
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group: `spin up` runs the app in a child process
            // (`spin trigger http`), which killing `spin up` alone would leave behind.
            .process_group(0)
            .kill_on_drop(true);
        for (name, value) in variables {
            command.env(format!("SPIN_VARIABLE_{}", name.to_uppercase()), value);
        }
        let mut child = command.spawn()?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?;
        let base = format!("http://{addr}");
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = child.try_wait()? {
                let log = std::fs::read_to_string(dir.path().join("spin.log"))?;
                anyhow::bail!("spin up exited ({status}) before serving:\n{log}");
            }
            if http.get(format!("{base}/")).send().await.is_ok() {
                break;
            }
            if std::time::Instant::now() > deadline {
                let log = std::fs::read_to_string(dir.path().join("spin.log"))?;
                anyhow::bail!("spin up did not serve {base} within 120 s:\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(TestHost {
            host: None,
            spin: Some(child),
            base,
            addr,
            dir,
            http,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn stop(mut self) {
        if let Some(h) = self.host.take() {
            h.shutdown().await.expect("clean shutdown");
        }
        if let Some(mut spin) = self.spin.take() {
            kill_group(&spin);
            let _ = spin.kill().await;
        }
    }

    /// The app's key-value store as the server keeps it on disk: our host's
    /// `.toaster/kv.sqlite`, or Spin's default store, `.spin/sqlite_key_value.db`.
    pub fn kv(&self) -> TestKv {
        if self.spin.is_some() {
            TestKv::Spin(self.dir.path().join(".spin/sqlite_key_value.db"))
        } else {
            let path = self.dir.path().join(".toaster/kv.sqlite");
            TestKv::Host(toaster_host::kv::SqliteKv::open(&path).expect("open the key-value store"))
        }
    }
}

/// The server's key-value store, read and changed beside it (see [`TestHost::kv`]).
pub enum TestKv {
    /// Our host's store, shared with the host in this process.
    Host(toaster_host::kv::SqliteKv),
    /// Spin's default store: a SQLite file Spin reads and writes on every call.
    Spin(PathBuf),
}

impl TestKv {
    pub fn get(&self, store: &str, key: &str) -> Option<Vec<u8>> {
        match self {
            TestKv::Host(kv) => kv.get(store, key).expect("key-value get"),
            TestKv::Spin(path) => {
                let conn = rusqlite::Connection::open(path).expect("open Spin's store");
                conn.busy_timeout(Duration::from_secs(5))
                    .expect("busy timeout");
                let mut statement = conn
                    .prepare("SELECT value FROM spin_key_value WHERE store = ?1 AND key = ?2")
                    .expect("Spin's key-value table");
                let mut rows = statement.query([store, key]).expect("query");
                rows.next()
                    .expect("row")
                    .map(|row| row.get::<_, Vec<u8>>(0).expect("value"))
            }
        }
    }

    /// The value at `key`, parsed as JSON.
    pub fn get_json(&self, store: &str, key: &str) -> Option<serde_json::Value> {
        self.get(store, key)
            .map(|bytes| serde_json::from_slice(&bytes).expect("a JSON value"))
    }

    pub fn delete(&self, store: &str, key: &str) {
        match self {
            TestKv::Host(kv) => kv.delete(store, key).expect("key-value delete"),
            TestKv::Spin(path) => {
                let conn = rusqlite::Connection::open(path).expect("open Spin's store");
                conn.busy_timeout(Duration::from_secs(5))
                    .expect("busy timeout");
                conn.execute(
                    "DELETE FROM spin_key_value WHERE store = ?1 AND key = ?2",
                    [store, key],
                )
                .expect("delete");
            }
        }
    }
}

/// The app's own manifest (spin.toml at the workspace root) with its sources made absolute.
pub fn app_manifest() -> String {
    let text = std::fs::read_to_string(workspace_root().join("spin.toml")).expect("spin.toml");
    let target = target_dir();
    text.replace(
        "source = \"target/",
        &format!("source = \"{}/", target.display()),
    )
}

/// Serves the app's own manifest with `variables` on the runtime the tests target: our
/// host, or Spin when [`spin_binary`] names one (where host `limits` cannot be set).
pub async fn serve_app(
    variables: BTreeMap<String, String>,
    limits: Limits,
) -> anyhow::Result<TestHost> {
    match spin_binary() {
        Some(spin) => {
            anyhow::ensure!(
                limits == Limits::default(),
                "host limits cannot be set on Spin: skip this test in scripts/spin-e2e"
            );
            TestHost::start_spin(&spin, &app_manifest(), &variables).await
        }
        None => {
            TestHost::start(
                &app_manifest(),
                HostOptions {
                    variables,
                    limits,
                    ..Default::default()
                },
            )
            .await
        }
    }
}

/// The real application (the workspace's spin.toml and its components) served
/// against a fresh database, with signing keys generated for the test.
pub struct TestApp {
    pub host: TestHost,
    pub db: TestDb,
    pub token_signing_key: String,
    pub manifest_signing_key: String,
    pub signer: toaster_core::token::TokenSigner,
}

impl TestApp {
    pub async fn start() -> TestApp {
        Self::start_with(Limits::default(), BTreeMap::new()).await
    }

    /// `extra` adds or overrides application variables.
    pub async fn start_with(limits: Limits, extra: BTreeMap<String, String>) -> TestApp {
        let db = TestDb::new().await;
        let token_signing_key = toaster_setup::keys::new_token_secret();
        let manifest_signing_key = toaster_setup::keys::new_ed25519_pem();
        let mut variables = BTreeMap::from([
            ("db_url".to_string(), db.url.clone()),
            ("db_host".to_string(), db.host_port()),
            ("token_signing_key".to_string(), token_signing_key.clone()),
            (
                "manifest_signing_key".to_string(),
                manifest_signing_key.clone(),
            ),
        ]);
        variables.extend(extra);
        let host = serve_app(variables, limits).await.expect("the app starts");
        let signer =
            toaster_core::token::TokenSigner::from_secret(&token_signing_key).expect("signer");
        TestApp {
            host,
            db,
            token_signing_key,
            manifest_signing_key,
            signer,
        }
    }

    pub fn url(&self, path: &str) -> String {
        self.host.url(path)
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.host.http
    }

    /// An operator token, as `toaster token --role operator` mints it.
    pub fn operator_token(&self) -> String {
        self.signer
            .mint(
                &toaster_core::token::AccessClaims::operator("test"),
                Duration::from_secs(600),
            )
            .expect("mint")
    }

    /// An admin token for `tenant`, minted directly with the signing key.
    pub fn admin_token(&self, tenant: &str) -> String {
        let tenant = toaster_core::ids::TenantId::parse(tenant).expect("tenant id");
        self.signer
            .mint(
                &toaster_core::token::AccessClaims::admin(tenant, "test"),
                Duration::from_secs(600),
            )
            .expect("mint")
    }

    pub async fn stop(self) {
        self.host.stop().await;
    }
}
