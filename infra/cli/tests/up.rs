//! `toaster up` as a newcomer runs it: the real binary, the workspace's spin.toml,
//! no database configured (so it starts its own PostgreSQL, as root if need be),
//! migrations, an operator token, `/healthz`, and a clean stop on SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn http_get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// A state directory PostgreSQL's unprivileged user can reach when we run as root.
fn state_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    tmp
}

#[test]
fn toaster_up_starts_postgres_migrates_serves_and_stops() {
    let manifest = workspace().join("spin.toml");
    for c in ["auth", "ingest", "ota", "aggregate", "control"] {
        let wasm = workspace().join(format!("target/wasm32-wasip2/release/{c}.wasm"));
        assert!(
            wasm.exists(),
            "build the components first (scripts/build-wasm): {}",
            wasm.display()
        );
    }
    let state = state_dir();
    let mut child = Command::new(env!("CARGO_BIN_EXE_toaster"))
        .arg("up")
        .arg("-f")
        .arg(&manifest)
        .args(["--listen", "127.0.0.1:0", "--state-dir"])
        .arg(state.path())
        .env_remove("SPIN_VARIABLE_DB_URL")
        .env_remove("TOASTER_DATABASE_URL")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(180);
    let (mut addr, mut token) = (None, None);
    while (addr.is_none() || token.is_none()) && Instant::now() < deadline {
        let Ok(line) = rx.recv_timeout(Duration::from_secs(1)) else {
            assert!(
                child.try_wait().unwrap().is_none(),
                "toaster up exited early"
            );
            continue;
        };
        if let Some(rest) = line.split(" on http://").nth(1) {
            addr = Some(rest.trim().to_string());
        }
        if let Some(rest) = line.split("operator token (12 h): ").nth(1) {
            token = Some(rest.trim().to_string());
        }
    }
    let addr = addr.expect("toaster up printed its URL");
    let token = token.expect("toaster up printed an operator token");

    let health = http_get(&addr, "/healthz");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let nothing = http_get(&addr, "/nope");
    assert!(nothing.starts_with("HTTP/1.1 404"), "{nothing}");

    // The printed token is signed with the key `toaster up` created, and
    // `toaster token` mints with the same key.
    let key = std::fs::read_to_string(state.path().join("token_signing_key")).unwrap();
    let signer = toaster_core::token::TokenSigner::from_secret(&key).unwrap();
    let verified = signer.verify(&token).expect("the printed token verifies");
    assert_eq!(verified.claims.role, toaster_core::token::Role::Operator);
    let out = Command::new(env!("CARGO_BIN_EXE_toaster"))
        .args(["token", "--role", "operator", "--ttl", "15m", "--key-file"])
        .arg(state.path().join("token_signing_key"))
        .env_remove("SPIN_VARIABLE_TOKEN_SIGNING_KEY")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    signer
        .verify(String::from_utf8(out.stdout).unwrap().trim())
        .expect("toaster token mints verifiable tokens");

    // The migrations were applied to the local database.
    let pg_dir = state.path().join("postgres/data");
    assert!(
        pg_dir.join("postmaster.pid").exists(),
        "the local PostgreSQL runs"
    );

    // SIGTERM: graceful stop, and the PostgreSQL it started is stopped too.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(
        !pg_dir.join("postmaster.pid").exists(),
        "the local PostgreSQL was stopped"
    );
}

#[test]
fn a_taken_port_is_reported_with_the_flag_to_use() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = Command::new(env!("CARGO_BIN_EXE_toaster"))
        .arg("up")
        .arg("-f")
        .arg(workspace().join("spin.toml"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("already in use") && err.contains("--listen"),
        "{err}"
    );
}
