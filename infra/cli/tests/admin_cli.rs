//! The admin commands as a person or a script runs them: the real `toaster` binary
//! against a real `toaster up` (the workspace's spin.toml, a fresh PostgreSQL
//! database): `login` (the config file, mode 0600, never the token on screen),
//! create/list/get/delete round trips in table and JSON output, a refusal shown
//! readably with exit code 1, usage errors (2), an unreachable server (3), and a
//! revoked token.
//!
//! PostgreSQL: as in the end-to-end tests, `TOASTER_TEST_DATABASE_URL`, else
//! 127.0.0.1:5432, else a throwaway cluster under `target/toaster-test-pg` (stopped
//! by `scripts/test`).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use toaster_tests::{TestDb, target_dir, workspace_root as workspace};

use jwt_simple::prelude::Ed25519KeyPair;
use serde_json::Value;
use toaster_core::token::{AccessClaims, TokenSigner};
use toaster_setup::keys;

/// `toaster up` on a free port, stopped (SIGTERM) when dropped.
struct Server {
    child: Child,
    base: String,
    _state: tempfile::TempDir,
}

impl Server {
    fn start(db_url: &str, token_key: &str) -> Server {
        for c in ["auth", "ingest", "ota", "aggregate", "control"] {
            let wasm = target_dir().join(format!("wasm32-wasip2/release/{c}.wasm"));
            assert!(
                wasm.exists(),
                "build the components first (scripts/build-wasm): {}",
                wasm.display()
            );
        }
        let state = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_toaster"))
            .arg("up")
            .arg("-f")
            .arg(workspace().join("spin.toml"))
            .args(["--listen", "127.0.0.1:0", "--state-dir"])
            .arg(state.path())
            .args(["--database-url", db_url])
            .arg("--variable")
            .arg(format!("token_signing_key={token_key}"))
            .env_remove("SPIN_VARIABLE_DB_URL")
            .env_remove("SPIN_VARIABLE_TOKEN_SIGNING_KEY")
            .env_remove("TOASTER_DATABASE_URL")
            .env_remove("TOASTER_RUNTIME_CONFIG_FILE")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start toaster up");
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
                return Server {
                    child,
                    base: format!("http://{}", addr.trim()),
                    _state: state,
                };
            }
        }
    }
}

impl Drop for Server {
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

/// The CLI with a home of its own: no server, token or config from this machine.
struct Cli {
    home: tempfile::TempDir,
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

impl Cli {
    fn new() -> Cli {
        Cli {
            home: tempfile::tempdir().unwrap(),
        }
    }

    fn config_file(&self) -> PathBuf {
        self.home.path().join("xdg/toaster/config.toml")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_toaster"));
        command
            .args(args)
            .env("HOME", self.home.path())
            .env("XDG_CONFIG_HOME", self.home.path().join("xdg"))
            .env_remove("TOASTER_SERVER")
            .env_remove("TOASTER_TOKEN")
            .env_remove("TOASTER_CONFIG")
            .env("RUST_LOG", "warn");
        command
    }

    fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, &[], None)
    }

    fn run_with(&self, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Run {
        let mut command = self.command(args);
        for (name, value) in env {
            command.env(name, value);
        }
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("run toaster");
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
        drop(input);
        let Output {
            status,
            stdout,
            stderr,
        } = child.wait_with_output().unwrap();
        Run {
            code: status.code().expect("exited"),
            stdout: String::from_utf8(stdout).unwrap(),
            stderr: String::from_utf8(stderr).unwrap(),
        }
    }

    /// Runs and expects exit code 0.
    fn ok(&self, args: &[&str]) -> Run {
        let run = self.run(args);
        assert_eq!(
            run.code, 0,
            "toaster {args:?}\nstdout: {}\nstderr: {}",
            run.stdout, run.stderr
        );
        run
    }
}

fn public_key_file(dir: &Path) -> PathBuf {
    let path = dir.join("device.pub");
    std::fs::write(&path, Ed25519KeyPair::generate().public_key().to_pem()).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn an_admin_drives_toaster_from_the_command_line() {
    let db = TestDb::empty().await;
    let token_key = keys::new_token_secret();
    let server = Server::start(&db.url, &token_key);
    let signer = TokenSigner::from_secret(&token_key).unwrap();
    let operator = signer
        .mint(&AccessClaims::operator("ops"), Duration::from_secs(600))
        .unwrap();
    let cli = Cli::new();

    // --- Not logged in: a usage error naming what to do (exit 2).
    let run = cli.run(&["tenants", "list"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("toaster login"), "{}", run.stderr);

    // --- login: checked against the server, saved 0600, the token never shown.
    let run = cli.run(&["login", "--server", &server.base, "--token", "not-a-token"]);
    assert_eq!(run.code, 1, "a refused token is a 4xx: {}", run.stderr);
    assert!(run.stderr.contains("401"), "{}", run.stderr);
    assert!(
        !cli.config_file().exists(),
        "nothing saved for a refused token"
    );
    // The token from standard input, as a script would pass it.
    let run = cli.run_with(
        &["login", "--server", &server.base],
        &[],
        Some(&format!("{operator}\n")),
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("operator ops"), "{}", run.stdout);
    assert!(!run.stdout.contains(&operator) && !run.stderr.contains(&operator));
    let mode = std::fs::metadata(cli.config_file())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let saved = std::fs::read_to_string(cli.config_file()).unwrap();
    assert!(
        saved.contains(&server.base) && saved.contains(&operator),
        "{saved}"
    );
    let run = cli.ok(&["whoami", "-o", "json"]);
    assert_eq!(run.json()["role"], "operator");

    // --- Tenants: create, list (table and JSON), get.
    let run = cli.ok(&[
        "tenants",
        "create",
        "--id",
        "acme",
        "--name",
        "Acme Toasters",
    ]);
    assert!(run.stdout.contains("Acme Toasters"), "{}", run.stdout);
    cli.ok(&["tenants", "create", "--id", "globex", "--name", "Globex"]);
    let run = cli.ok(&["tenants", "list"]);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("NAME"),
        "{}",
        run.stdout
    );
    assert!(
        lines[1].starts_with("acme") && lines[2].starts_with("globex"),
        "{}",
        run.stdout
    );
    let run = cli.ok(&["tenants", "list", "--limit", "1", "--output", "json"]);
    let page = run.json();
    assert_eq!(page["items"][0]["id"], "acme");
    assert!(
        page["next_cursor"].is_string(),
        "the API's JSON as it came: {page}"
    );
    let run = cli.ok(&["tenants", "list", "--limit", "1", "--all", "-o", "json"]);
    assert_eq!(run.json()["items"].as_array().unwrap().len(), 2);
    let run = cli.ok(&["tenants", "get", "globex", "-o", "json"]);
    assert_eq!(run.json()["name"], "Globex");

    // --- An admin token minted through the API, used from the environment.
    let run = cli.ok(&[
        "tokens",
        "create",
        "--tenant",
        "acme",
        "--subject",
        "alice",
        "--ttl",
        "1h",
        "-o",
        "json",
    ]);
    let minted = run.json();
    let admin = minted["access_token"].as_str().unwrap().to_owned();
    let admin_id = minted["token_id"].as_str().unwrap().to_owned();
    let as_admin = |args: &[&str]| cli.run_with(args, &[("TOASTER_TOKEN", admin.as_str())], None);

    // --- Devices: create, list, get, delete.
    let key = public_key_file(cli.home.path());
    let key = key.to_str().unwrap();
    let run = as_admin(&[
        "devices",
        "create",
        "toaster-1",
        "--model",
        "t1000",
        "--tag",
        "site=berlin",
        "--public-key",
        key,
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let run = as_admin(&["devices", "list"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("toaster-1") && run.stdout.contains("site=berlin"),
        "{}",
        run.stdout
    );
    let run = as_admin(&["devices", "list", "--tag", "site=berlin", "-o", "json"]);
    assert_eq!(run.json()["items"][0]["id"], "toaster-1");
    let run = as_admin(&["devices", "get", "toaster-1", "-o", "json"]);
    assert_eq!(run.json()["status"], "active");
    let run = as_admin(&[
        "devices",
        "update",
        "toaster-1",
        "--status",
        "disabled",
        "-o",
        "json",
    ]);
    assert_eq!(run.json()["status"], "disabled", "{}", run.stderr);
    let run = as_admin(&["devices", "delete", "toaster-1"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("toaster-1"), "{}", run.stdout);
    let run = as_admin(&["devices", "get", "toaster-1", "-o", "json"]);
    assert_eq!(run.json()["status"], "decommissioned");

    // --- A refusal, readably (exit 1): title, detail, each field's pointer.
    let run = as_admin(&[
        "devices",
        "create",
        "bad id!",
        "--model",
        "t1000",
        "--public-key",
        key,
    ]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("422"), "{}", run.stderr);
    assert!(run.stderr.contains("  /id: "), "{}", run.stderr);
    assert!(!run.stderr.contains(&admin), "{}", run.stderr);
    let run = as_admin(&["devices", "get", "nope"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("404"), "{}", run.stderr);
    // An admin is not an operator: 403, still exit 1.
    let run = as_admin(&["tenants", "list"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("403"), "{}", run.stderr);

    // --- Claims: create (the token shown once), list without it, revoke.
    let run = as_admin(&[
        "claims",
        "create",
        "--model",
        "t1000",
        "--quota",
        "10",
        "--expires-in",
        "7d",
        "-o",
        "json",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let claim = run.json();
    let claim_id = claim["id"].as_str().unwrap().to_owned();
    assert!(
        claim["claim_token"]
            .as_str()
            .unwrap()
            .starts_with("tclaim_")
    );
    let run = as_admin(&["claims", "list"]);
    assert!(
        run.stdout.contains(&claim_id) && run.stdout.contains("active"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("tclaim_"));
    let run = as_admin(&["claims", "delete", &claim_id]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let run = as_admin(&["claims", "get", &claim_id, "-o", "json"]);
    assert_eq!(run.json()["status"], "revoked");

    // --- The audit log saw it all.
    let run = as_admin(&["audit", "list", "--all"]);
    for action in [
        "device.created",
        "device.decommissioned",
        "claim.revoked",
        "token.minted",
    ] {
        assert!(run.stdout.contains(action), "{action}: {}", run.stdout);
    }

    // --- Revoking the admin's token: its next command is refused (exit 1, 401).
    let run = cli.ok(&["tokens", "list", "--tenant", "acme"]);
    assert!(run.stdout.contains(&admin_id), "{}", run.stdout);
    cli.ok(&["tokens", "revoke", &admin_id]);
    let run = as_admin(&["devices", "list"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("401"), "{}", run.stderr);

    // --- Usage errors are 2, an unreachable server is 3.
    assert_eq!(cli.run(&["devices", "update", "toaster-1"]).code, 2);
    assert_eq!(cli.run(&["tenants", "list", "--server", "ftp://x"]).code, 2);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let run = cli.run(&[
        "tenants",
        "list",
        "--server",
        &format!("http://127.0.0.1:{port}"),
    ]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stderr.contains("127.0.0.1"), "{}", run.stderr);

    // --- logout forgets the file.
    let run = cli.ok(&["logout"]);
    assert!(run.stdout.contains("Logged out"), "{}", run.stdout);
    assert!(!cli.config_file().exists());
    drop(server);
}
