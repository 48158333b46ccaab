//! Beyond one machine: hosts that share a Redis key-value store (runtime config
//! `type = "redis"`) share the app's hot state.
//!
//! - the Redis backend itself, as two hosts see it (set in one, read in the other),
//!   its recovery when Redis restarts, and a Redis reached through a Unix socket;
//! - two real `toaster up` processes, on different ports, against the same PostgreSQL
//!   and the same Redis: a device disabled through one is refused by the other at
//!   once, a device's rate-limit budget is spent across both, and what ingest caches
//!   through one is what the other shows.
//!
//! Redis: 127.0.0.1:6379 when it answers (each test then takes a database of its own,
//! 1–15, reserved with a lock key in database 0 and flushed before and after), else a
//! throwaway `redis-server` started here (package `redis-server`). PostgreSQL: as in
//! the end-to-end tests, `TOASTER_TEST_DATABASE_URL`, else 127.0.0.1:5432, else a
//! throwaway cluster under `target/toaster-test-pg` (stopped by `scripts/test`).

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use toaster_tests::{TestDb, target_dir, workspace_root as workspace};

use jwt_simple::prelude::{Ed25519KeyPair, EdDSAKeyPairLike, JWTClaims};
use reqwest::StatusCode;
use serde_json::{Value, json};
use toaster_core::ids::TenantId;
use toaster_core::token::{AccessClaims, TokenSigner};
use toaster_host::bindings::key_value::Error as KvError;
use toaster_host::kv::KvStores;
use toaster_host::runtime_config::RuntimeConfig;
use toaster_setup::keys;

// ------------------------------------------------------------------ Redis

/// A Redis database for one test.
struct TestRedis {
    port: u16,
    db: u8,
    /// The `redis-server` we started, if 127.0.0.1:6379 did not answer.
    server: Option<Child>,
    /// The lock key in database 0 reserving `db` on a shared server, and its token.
    lock: Option<(String, String)>,
}

const SHARED_PORT: u16 = 6379;

impl TestRedis {
    /// A database of the server at 127.0.0.1:6379, or of a throwaway server.
    fn start() -> TestRedis {
        if answers(SHARED_PORT) {
            Self::reserve_shared()
        } else {
            Self::throwaway()
        }
    }

    /// Always a throwaway server: for tests that stop and restart it.
    fn throwaway() -> TestRedis {
        let port = free_port();
        TestRedis {
            port,
            db: 1,
            server: Some(spawn_redis_server(port)),
            lock: None,
        }
    }

    fn reserve_shared() -> TestRedis {
        let mut admin = connection(SHARED_PORT, 0);
        let token = format!("{:016x}", rand::random::<u64>());
        let deadline = Instant::now() + Duration::from_secs(120);
        let offset = rand::random::<u8>() % 15;
        loop {
            for i in 0..15u8 {
                let db = 1 + (offset + i) % 15;
                let key = format!("toaster-test-lock:{db}");
                // Expires by itself if this test process dies.
                let taken: Option<String> = redis::cmd("SET")
                    .arg(&key)
                    .arg(&token)
                    .arg("NX")
                    .arg("EX")
                    .arg(900)
                    .query(&mut admin)
                    .expect("SET NX on the Redis at 127.0.0.1:6379");
                if taken.is_some() {
                    let redis = TestRedis {
                        port: SHARED_PORT,
                        db,
                        server: None,
                        lock: Some((key, token)),
                    };
                    redis.flush();
                    return redis;
                }
            }
            assert!(
                Instant::now() < deadline,
                "every database 1-15 of the Redis at 127.0.0.1:6379 stayed reserved by other test runs (keys toaster-test-lock:*)"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The URL a host is configured with.
    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/{}", self.port, self.db)
    }

    /// A direct connection to the test's database, to look behind the hosts' backs.
    fn connection(&self) -> redis::Connection {
        connection(self.port, self.db)
    }

    fn flush(&self) {
        redis::cmd("FLUSHDB")
            .query::<()>(&mut self.connection())
            .expect("FLUSHDB");
    }

    /// A runtime config putting the `default` store in this database.
    fn runtime_config(&self) -> String {
        format!(
            "[key_value_store.default]\ntype = \"redis\"\nurl = \"{}\"\n",
            self.url()
        )
    }

    fn stop_server(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn restart_server(&mut self) {
        self.stop_server();
        self.server = Some(spawn_redis_server(self.port));
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        if self.server.is_some() {
            self.stop_server();
            return;
        }
        if let Ok(client) = redis::Client::open(self.url())
            && let Ok(mut conn) = client.get_connection()
        {
            let _ = redis::cmd("FLUSHDB").query::<()>(&mut conn);
        }
        if let Some((key, token)) = &self.lock
            && let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{SHARED_PORT}/0"))
            && let Ok(mut conn) = client.get_connection()
            && redis::cmd("GET")
                .arg(key)
                .query::<Option<String>>(&mut conn)
                .ok()
                == Some(Some(token.clone()))
        {
            let _ = redis::cmd("DEL").arg(key).query::<i64>(&mut conn);
        }
    }
}

fn connection(port: u16, db: u8) -> redis::Connection {
    redis::Client::open(format!("redis://127.0.0.1:{port}/{db}"))
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
        .unwrap_or_else(|e| panic!("cannot connect to Redis at 127.0.0.1:{port}: {e}"))
}

/// Whether a Redis answers PING at 127.0.0.1:`port`.
fn answers(port: u16) -> bool {
    let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}/0")) else {
        return false;
    };
    let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_millis(500)) else {
        return false;
    };
    redis::cmd("PING").query::<String>(&mut conn).is_ok()
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn redis_server_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|d| d.join("redis-server"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "no Redis answers at 127.0.0.1:6379 and no redis-server binary was found to start one: \
                 install it (Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis), \
                 or start a Redis on 127.0.0.1:6379"
            )
        })
}

/// A `redis-server` on `port` that keeps nothing on disk; waits until it answers.
fn spawn_redis_server(port: u16) -> Child {
    let mut child = Command::new(redis_server_binary())
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start redis-server");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !answers(port) {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("redis-server on port {port} exited at start: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "redis-server on port {port} did not answer within 10 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

// ------------------------------------------------- the Redis backend, two hosts

/// The `default` store as a host configured with `redis` sees it.
fn host_store(redis: &TestRedis) -> (KvStores, tempfile::TempDir) {
    let state = tempfile::tempdir().unwrap();
    let config = RuntimeConfig::parse(&redis.runtime_config(), state.path()).unwrap();
    let stores = KvStores::configure(["default"], state.path(), &config).unwrap();
    (stores, state)
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hosts_configured_with_one_redis_see_the_same_keys() {
    let redis = TestRedis::start();
    let (a, state_a) = host_store(&redis);
    let (b, _state_b) = host_store(&redis);
    let a = a.get("default").unwrap();
    let b = b.get("default").unwrap();

    let value = [0u8, 159, 146, 150, 255]; // not UTF-8: values are bytes
    a.set("default", "rate:acme:sn-1", &value).await.unwrap();
    a.set("default", "device:acme:sn-1", b"{}").await.unwrap();
    assert_eq!(
        b.get("default", "rate:acme:sn-1").await.unwrap().as_deref(),
        Some(&value[..])
    );
    assert!(b.exists("default", "device:acme:sn-1").await.unwrap());
    assert!(!b.exists("default", "ota:acme").await.unwrap());
    assert_eq!(b.get("default", "ota:acme").await.unwrap(), None);
    assert_eq!(
        b.keys("default").await.unwrap(),
        vec!["device:acme:sn-1".to_string(), "rate:acme:sn-1".to_string()]
    );
    // The SQLite file of the host is not where the data went.
    assert!(
        !state_a.path().join("kv.sqlite").exists(),
        "a Redis-configured `default` must not open the SQLite store"
    );

    // Keys as the component names them, in the configured database, as on Spin.
    let mut direct = redis.connection();
    let raw: Option<Vec<u8>> = redis::cmd("GET")
        .arg("rate:acme:sn-1")
        .query(&mut direct)
        .unwrap();
    assert_eq!(raw.as_deref(), Some(&value[..]));

    // Overwrite in one, delete in the other.
    b.set("default", "rate:acme:sn-1", b"2").await.unwrap();
    assert_eq!(
        a.get("default", "rate:acme:sn-1").await.unwrap().as_deref(),
        Some(&b"2"[..])
    );
    b.delete("default", "device:acme:sn-1").await.unwrap();
    b.delete("default", "never-there").await.unwrap();
    assert!(!a.exists("default", "device:acme:sn-1").await.unwrap());
    assert_eq!(a.get("default", "device:acme:sn-1").await.unwrap(), None);
    assert_eq!(
        a.keys("default").await.unwrap(),
        vec!["rate:acme:sn-1".to_string()]
    );

    // get-keys walks a database larger than one SCAN step, each key once.
    let many: Vec<String> = (0..2500).map(|i| format!("last:acme:d{i:05}")).collect();
    let mut pipe = redis::pipe();
    for k in &many {
        pipe.cmd("SET").arg(k).arg("{}").ignore();
    }
    pipe.query::<()>(&mut direct).unwrap();
    let keys = b.keys("default").await.unwrap();
    let mut expected = many.clone();
    expected.push("rate:acme:sn-1".to_string());
    assert_eq!(keys, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_redis_is_an_error_while_down_and_used_again_once_back() {
    let mut redis = TestRedis::throwaway();
    let (stores, _state) = host_store(&redis);
    let kv = stores.get("default").unwrap();
    kv.set("default", "k", b"v").await.unwrap();

    redis.stop_server();
    let started = Instant::now();
    match kv.get("default", "k").await {
        Err(KvError::Other(message)) => {
            assert!(message.contains("Redis"), "{message}");
        }
        other => panic!("expected the interface's `other` error, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a down Redis must not hold a call for {:?}",
        started.elapsed()
    );

    // Back (empty: it keeps nothing on disk): the same backend reconnects by itself.
    redis.restart_server();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match kv.set("default", "k", b"again").await {
            Ok(()) => break,
            Err(e) => assert!(
                Instant::now() < deadline,
                "the backend did not reconnect to the restarted Redis: {e:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        kv.get("default", "k").await.unwrap().as_deref(),
        Some(&b"again"[..])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redis_on_a_unix_socket_is_reached_by_its_url() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("redis.sock");
    let mut server = Command::new(redis_server_binary())
        .args(["--port", "0", "--unixsocket"])
        .arg(&socket)
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .stdout(Stdio::null())
        .spawn()
        .expect("start redis-server");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "redis-server made no socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = format!(
        "[key_value_store.default]\ntype = \"redis\"\nurl = \"redis+unix://{}\"\n",
        socket.display()
    );
    let config = RuntimeConfig::parse(&text, dir.path()).unwrap();
    let stores = KvStores::configure(["default"], dir.path(), &config).unwrap();
    let kv = stores.get("default").unwrap();
    let result = async {
        kv.set("default", "k", b"v").await?;
        kv.get("default", "k").await
    }
    .await;
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(result.unwrap().as_deref(), Some(&b"v"[..]));
}

// ------------------------------------------------ two `toaster up` processes

/// One `toaster up` process, stopped (SIGTERM) when dropped.
struct Toaster {
    child: Child,
    base: String,
    _state: tempfile::TempDir,
}

struct Shared<'a> {
    db_url: &'a str,
    runtime_config: &'a Path,
    token_key: &'a str,
    rate_limit: &'a str,
}

impl Toaster {
    /// Starts the real binary on a free port with its own state directory, so what
    /// the two processes share is exactly PostgreSQL and Redis. Compiled components
    /// are cached in one directory for both (it holds code, not state).
    fn spawn(shared: &Shared) -> (Child, tempfile::TempDir) {
        let state = tempfile::tempdir().unwrap();
        let cache = target_dir().join("toaster-scale-out-cache");
        std::fs::create_dir_all(&cache).unwrap();
        std::os::unix::fs::symlink(&cache, state.path().join("cache")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_toaster"))
            .arg("up")
            .arg("-f")
            .arg(workspace().join("spin.toml"))
            .args(["--listen", "127.0.0.1:0", "--state-dir"])
            .arg(state.path())
            .args(["--database-url", shared.db_url, "--runtime-config-file"])
            .arg(shared.runtime_config)
            .arg("--variable")
            .arg(format!("token_signing_key={}", shared.token_key))
            .arg("--variable")
            .arg(format!("device_rate_limit={}", shared.rate_limit))
            .env_remove("SPIN_VARIABLE_DB_URL")
            .env_remove("SPIN_VARIABLE_TOKEN_SIGNING_KEY")
            .env_remove("SPIN_VARIABLE_DEVICE_RATE_LIMIT")
            .env_remove("TOASTER_DATABASE_URL")
            .env_remove("TOASTER_RUNTIME_CONFIG_FILE")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start toaster up");
        (child, state)
    }

    /// Waits for the `serving … on http://ADDR` line.
    fn ready(mut child: Child, state: tempfile::TempDir) -> Toaster {
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            assert!(
                Instant::now() < deadline,
                "toaster up did not start serving"
            );
            let Ok(line) = rx.recv_timeout(Duration::from_secs(1)) else {
                if let Some(status) = child.try_wait().unwrap() {
                    panic!("toaster up exited early: {status}");
                }
                continue;
            };
            if let Some(addr) = line.split(" on http://").nth(1) {
                let addr = addr.trim().to_string();
                assert!(TcpStream::connect(&addr).is_ok(), "{addr} does not accept");
                return Toaster {
                    child,
                    base: format!("http://{addr}"),
                    _state: state,
                };
            }
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for Toaster {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A device: its Ed25519 key, registered by an admin, and assertions it signs.
struct Device {
    tenant: String,
    id: String,
    key: Ed25519KeyPair,
}

impl Device {
    fn new(tenant: &str, id: &str) -> Device {
        Device {
            tenant: tenant.into(),
            id: id.into(),
            key: Ed25519KeyPair::generate(),
        }
    }

    fn assertion(&self) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let custom = json!({
            "iss": self.tenant, "sub": self.id, "aud": "toaster",
            "iat": now, "exp": now + 300, "jti": format!("{:032x}", rand::random::<u128>()),
        });
        let claims = JWTClaims {
            issued_at: None,
            expires_at: None,
            invalid_before: None,
            issuer: None,
            subject: None,
            audiences: None,
            jwt_id: None,
            nonce: None,
            custom,
        };
        self.key.sign(claims).unwrap()
    }
}

struct Client {
    http: reqwest::Client,
    admin: String,
}

struct Answer {
    status: StatusCode,
    retry_after: Option<String>,
    body: Value,
}

impl Client {
    async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.expect("request");
        let status = response.status();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        let body = response.json().await.unwrap_or(Value::Null);
        Answer {
            status,
            retry_after,
            body,
        }
    }

    async fn register(&self, host: &Toaster, device: &Device) {
        let answer = self
            .send(
                self.http
                    .post(host.url("/v1/devices"))
                    .bearer_auth(&self.admin)
                    .json(&json!({
                        "id": device.id, "model": "t1000", "channel": "stable", "tags": [],
                        "public_key": device.key.public_key().to_pem(),
                    })),
            )
            .await;
        assert_eq!(answer.status, 201, "{}", answer.body);
    }

    async fn login(&self, host: &Toaster, device: &Device) -> String {
        let body = format!(
            "grant_type={}&assertion={}",
            "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer",
            device.assertion()
        );
        let answer = self
            .send(
                self.http
                    .post(host.url("/v1/auth/token"))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(body),
            )
            .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        answer.body["access_token"].as_str().unwrap().to_string()
    }

    async fn me(&self, host: &Toaster, token: &str) -> Answer {
        self.send(self.http.get(host.url("/v1/auth/me")).bearer_auth(token))
            .await
    }
}

/// Seconds until the current fixed window of `window_secs` ends.
fn window_left(window_secs: u64) -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    window_secs - now % window_secs
}

#[tokio::test(flavor = "multi_thread")]
async fn two_toaster_processes_on_one_redis_share_revocations_rate_limits_and_caches() {
    for c in ["auth", "ingest", "ota", "aggregate", "control"] {
        let wasm = target_dir().join(format!("wasm32-wasip2/release/{c}.wasm"));
        assert!(
            wasm.exists(),
            "build the components first (scripts/build-wasm): {}",
            wasm.display()
        );
    }
    let redis = TestRedis::start();
    let db = TestDb::empty().await;
    let config_dir = tempfile::tempdir().unwrap();
    let runtime_config = config_dir.path().join("runtime-config.toml");
    std::fs::write(&runtime_config, redis.runtime_config()).unwrap();
    let token_key = keys::new_token_secret();
    // A budget of 6 per device per day; a test starting in the window's last minute
    // waits for the next one, so the whole test counts in one window.
    const BUDGET: usize = 6;
    const WINDOW: u64 = 86_400;
    if window_left(WINDOW) < 60 {
        tokio::time::sleep(Duration::from_secs(window_left(WINDOW) + 1)).await;
    }
    let shared = Shared {
        db_url: &db.url,
        runtime_config: &runtime_config,
        token_key: &token_key,
        rate_limit: &format!("{BUDGET}/{WINDOW}s"),
    };
    // Both start (and migrate, advisory-locked) at once.
    let (child_a, state_a) = Toaster::spawn(&shared);
    let (child_b, state_b) = Toaster::spawn(&shared);
    let a = Toaster::ready(child_a, state_a);
    let b = Toaster::ready(child_b, state_b);
    assert_ne!(a.base, b.base);

    let signer = TokenSigner::from_secret(&token_key).unwrap();
    let operator = signer
        .mint(&AccessClaims::operator("test"), Duration::from_secs(600))
        .unwrap();
    let tenant = format!("t{:08x}", rand::random::<u32>());
    let client = Client {
        http: reqwest::Client::new(),
        admin: signer
            .mint(
                &AccessClaims::admin(TenantId::parse(&tenant).unwrap(), "test"),
                Duration::from_secs(600),
            )
            .unwrap(),
    };
    let created = client
        .send(
            client
                .http
                .post(a.url("/v1/tenants"))
                .bearer_auth(&operator)
                .json(&json!({"id": tenant, "name": "Scale-out test"})),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);

    // --- Revocation: B has the device's state cached as active; A disables it.
    let sensor = Device::new(&tenant, "sensor-1");
    client.register(&a, &sensor).await;
    let token = client.login(&b, &sensor).await; // request 1 of its budget
    let me = client.me(&b, &token).await; // 2: B caches `device:` (active)
    assert_eq!(me.status, 200, "{}", me.body);

    // --- Caches: what ingest records through A (`last:`) is what B shows.
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let ingested = client
        .send(
            client
                .http
                .post(a.url("/v1/telemetry"))
                .bearer_auth(&token)
                .json(&json!({"readings": [{"metric": "temp_c", "ts": ts, "value": 21.5}]})),
        )
        .await; // 3
    assert_eq!(ingested.status, 200, "{}", ingested.body);
    let shown = client
        .send(
            client
                .http
                .get(b.url("/v1/devices/sensor-1"))
                .bearer_auth(&client.admin),
        )
        .await;
    assert_eq!(shown.status, 200, "{}", shown.body);
    assert_eq!(
        shown.body["metrics"]["temp_c"]["value"],
        json!(21.5),
        "B shows the last value A's ingest cached: {}",
        shown.body
    );

    let disabled = client
        .send(
            client
                .http
                .patch(a.url("/v1/devices/sensor-1"))
                .bearer_auth(&client.admin)
                .json(&json!({"status": "disabled"})),
        )
        .await;
    assert_eq!(disabled.status, 200, "{}", disabled.body);
    // Refused by B at once: no waiting out B's 30 s cache.
    let refused = client.me(&b, &token).await; // 4 (refused before it counts)
    assert_eq!(
        refused.status, 401,
        "B must refuse a device disabled through A: {}",
        refused.body
    );
    assert_eq!(client.me(&a, &token).await.status, 401);

    // --- Rate limit: one budget across both processes.
    let meter = Device::new(&tenant, "meter-1");
    client.register(&b, &meter).await;
    let token = client.login(&a, &meter).await; // request 1 of BUDGET, on A
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for i in 0..BUDGET + 1 {
        let host = if i % 2 == 0 { &b } else { &a };
        let answer = client.me(host, &token).await;
        if answer.status == 429 {
            retry_after = retry_after.or(answer.retry_after);
        }
        statuses.push(answer.status.as_u16());
    }
    // Requests 2..=BUDGET pass, alternating B and A; the next, on either, is over.
    let mut expected = vec![200; BUDGET - 1];
    expected.extend([429, 429]);
    assert_eq!(
        statuses, expected,
        "the device's budget of {BUDGET} (login on A, then B, A, B, …) must be counted once across both processes"
    );
    let retry_after: u64 = retry_after
        .expect("429 carries Retry-After")
        .parse()
        .unwrap();
    assert!((1..=WINDOW).contains(&retry_after), "{retry_after}");

    // The state the processes shared is in the configured Redis database.
    let mut direct = redis.connection();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut direct).unwrap();
    for expected in [
        format!("device:{tenant}:sensor-1"),
        format!("last:{tenant}:sensor-1"),
        format!("rate:{tenant}:meter-1"),
    ] {
        assert!(keys.contains(&expected), "{expected} not in {keys:?}");
    }
    drop(a);
    drop(b);
}

#[test]
fn a_bad_runtime_config_stops_toaster_up_naming_the_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("runtime-config.toml");
    std::fs::write(
        &file,
        "[key_value_store.default]\ntype = \"redis\"\nurl = \"redis://:hunter2@cache:6379\"\ntimeout = 5\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_toaster"))
        .arg("up")
        .arg("-f")
        .arg(workspace().join("spin.toml"))
        .args(["--listen", "127.0.0.1:0", "--state-dir"])
        .arg(dir.path())
        .arg("--runtime-config-file")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&file.display().to_string()), "{err}");
    assert!(err.contains("key_value_store.default.timeout"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    // It stopped before starting anything: no PostgreSQL under the state directory.
    assert!(!dir.path().join("postgres").exists());
}
