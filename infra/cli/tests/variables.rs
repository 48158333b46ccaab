//! `toaster up` checks every variable before it builds or starts anything: the real
//! binary, the workspace's spin.toml, no database configured (so it would start its own
//! PostgreSQL), and a bad or unknown variable. It must exit non-zero at once with one
//! message naming the variable, without starting PostgreSQL or saying it serves.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// `toaster up` on the workspace's spin.toml with `args`, in `dir`, with a fresh state
/// directory; returns its output and the state directory.
fn up(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (Output, tempfile::TempDir) {
    let state = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_toaster"));
    command
        .current_dir(dir)
        .arg("up")
        .args(["--listen", "127.0.0.1:0", "--state-dir"])
        .arg(state.path())
        .args(args)
        .env_remove("TOASTER_DATABASE_URL")
        .env("RUST_LOG", "info");
    for (name, _) in std::env::vars() {
        if name.starts_with("SPIN_VARIABLE_") {
            command.env_remove(name);
        }
    }
    for (name, value) in env {
        command.env(name, value);
    }
    (command.output().unwrap(), state)
}

/// Exited non-zero with exactly `expected` (one line) on stderr, nothing on stdout,
/// and no PostgreSQL started.
fn refused(output: &Output, state: &Path) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "", "{stderr}");
    assert!(
        !state.join("postgres").exists(),
        "PostgreSQL was started: {stderr}"
    );
    stderr
}

#[test]
fn a_bad_value_stops_toaster_up_before_postgres_with_one_message() {
    let (output, state) = up(&workspace(), &["--variable", "device_rate_limit=lots"], &[]);
    let stderr = refused(&output, state.path());
    assert_eq!(
        stderr,
        "error: variable device_rate_limit = \"lots\" is invalid: it takes \
         <requests>/<seconds>s, such as 600/60s (from --variable)\n"
    );

    let (output, state) = up(
        &workspace(),
        &[],
        &[("SPIN_VARIABLE_MAX_QUERY_BUCKETS", "-5")],
    );
    let stderr = refused(&output, state.path());
    assert_eq!(
        stderr,
        "error: variable max_query_buckets = \"-5\" is invalid: it takes a whole number from \
         1 to 1000000 (from SPIN_VARIABLE_MAX_QUERY_BUCKETS)\n"
    );

    // A secret is named, never shown; every bad value is listed at once.
    let (output, state) = up(
        &workspace(),
        &[
            "--variable",
            "token_signing_key=short-secret",
            "--variable",
            "firmware_allowed_private=10.0.0.0/8, 192.168.0.0/33",
        ],
        &[],
    );
    let stderr = refused(&output, state.path());
    assert!(
        stderr.starts_with("error: 2 variables are invalid:\n"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "variable token_signing_key (secret, not shown) is invalid: it must be at least \
             32 bytes long, and it is 12"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("entry 2"), "{stderr}");
    assert!(!stderr.contains("short-secret"), "{stderr}");
    assert!(!stderr.contains("serving"), "{stderr}");
}

#[test]
fn an_unknown_variable_is_refused_before_postgres() {
    let (output, state) = up(&workspace(), &["--variable", "nope=1"], &[]);
    let stderr = refused(&output, state.path());
    assert!(
        stderr.starts_with(
            "error: --variable nope: the manifest declares no variable \"nope\" (it declares "
        ),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    let (output, state) = up(&workspace(), &["--variable", "DEVICE_RATE_LIMIT=1/1s"], &[]);
    let stderr = refused(&output, state.path());
    assert!(
        stderr.contains("did you mean device_rate_limit?"),
        "{stderr}"
    );
}

#[test]
fn db_host_must_name_db_urls_server() {
    let (output, state) = up(
        &workspace(),
        &[
            "--database-url",
            "postgres://toaster@db.example:5432/toaster",
            "--variable",
            "db_host=127.0.0.1:5432",
        ],
        &[],
    );
    let stderr = refused(&output, state.path());
    assert!(
        stderr.contains("does not name db_url's host and port, db.example:5432"),
        "{stderr}"
    );
}

#[test]
fn from_a_subdirectory_it_says_where_it_looked_and_what_to_pass() {
    let sub = workspace().join("functions");
    let (output, state) = up(&sub, &[], &[]);
    let stderr = refused(&output, state.path());
    assert_eq!(
        stderr,
        format!(
            "error: no manifest at {}: run toaster up in {}, or pass --from {}\n",
            sub.join("spin.toml").display(),
            workspace().display(),
            workspace().join("spin.toml").display()
        )
    );
}

#[test]
fn spin_toml_and_toaster_core_agree_on_every_variable() {
    let manifest = toaster_host::manifest::Manifest::load(&workspace().join("spin.toml")).unwrap();
    let core: std::collections::BTreeMap<&str, _> = toaster_core::config::VARIABLES
        .iter()
        .map(|v| (v.name, v))
        .collect();
    assert_eq!(
        manifest
            .variables
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        core.keys().copied().collect::<Vec<_>>(),
        "every variable in spin.toml has a parser in toaster_core::config, and no other"
    );
    for (name, decl) in &manifest.variables {
        let v = core[name.as_str()];
        assert_eq!(decl.default.as_deref(), v.default, "{name}'s default");
        assert_eq!(decl.secret, v.secret, "{name} secret");
        assert_eq!(decl.required, v.default.is_none(), "{name} required");
    }
}

#[test]
fn check_only_checks() {
    let (output, state) = up(
        &workspace(),
        &["--check"],
        &[("SPIN_VARIABLE_DEVICE_RATE_LIMIT", "100/1s")],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(
        stdout.ends_with("the manifest and its variables are fine\n"),
        "{stdout}"
    );
    assert_eq!(
        std::fs::read_dir(state.path()).unwrap().count(),
        0,
        "nothing is created"
    );
    let (output, state) = up(
        &workspace(),
        &["--check", "--variable", "max_body_bytes=0"],
        &[],
    );
    let stderr = refused(&output, state.path());
    assert!(
        stderr.contains("variable max_body_bytes = \"0\""),
        "{stderr}"
    );
}
