//! A connection flood against a `toaster up` whose open-file limit is low: the
//! connections over the cap are refused with a clear 503 instead of exhausting the
//! process's file descriptors, failing accepts are logged a few times (not once per
//! attempt), and `/healthz` answers again as soon as the flood ends.
//!
//! The real binary in a process of its own, since the limit is per process; the app is
//! the trivial `hello` component (no database needed).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The open-file limit the server runs under (soft and hard, so it cannot raise it).
const FILE_LIMIT: u64 = 256;
/// Connections the flood opens: well over the limit.
const FLOOD: usize = 1100;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn http_get(addr: &str, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// Lets this process open the flood's sockets.
fn raise_own_file_limit() {
    // SAFETY: plain getrlimit/setrlimit on a struct we own.
    unsafe {
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
        l.rlim_cur = l.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &l);
    }
}

#[test]
fn a_flood_over_the_file_limit_is_refused_and_health_answers_after_it() {
    let hello = workspace().join("target/wasm32-wasip2/release/hello.wasm");
    assert!(
        hello.exists(),
        "build the components first (scripts/build-wasm)"
    );
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("spin.toml");
    std::fs::write(
        &manifest,
        format!(
            "spin_manifest_version = 2\n[application]\nname = \"flood\"\n[[trigger.http]]\nroute = \"/...\"\ncomponent = \"hello\"\n[component.hello]\nsource = \"{}\"\n",
            hello.display()
        ),
    )
    .unwrap();
    let log_path = dir.path().join("stderr.log");
    let mut command = Command::new(env!("CARGO_BIN_EXE_toaster"));
    command
        .arg("up")
        .arg("-f")
        .arg(&manifest)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--header-timeout",
            "3s",
            "--state-dir",
        ])
        .arg(dir.path().join("state"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log_path).unwrap());
    // SAFETY: setrlimit is async-signal-safe; the closure touches nothing else.
    unsafe {
        command.pre_exec(|| {
            let l = libc::rlimit {
                rlim_cur: FILE_LIMIT,
                rlim_max: FILE_LIMIT,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &l) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(300);
    let addr = loop {
        assert!(Instant::now() < deadline, "toaster up did not start");
        if let Ok(line) = rx.recv_timeout(Duration::from_secs(1))
            && let Some(addr) = line.split(" on http://").nth(1)
        {
            break addr.trim().to_string();
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "toaster up exited early"
        );
    };
    assert!(
        http_get(&addr, "/healthz")
            .unwrap()
            .starts_with("HTTP/1.1 200")
    );

    // The flood: connections that send nothing.
    raise_own_file_limit();
    let mut flood = Vec::with_capacity(FLOOD);
    let started = Instant::now();
    for _ in 0..FLOOD {
        match TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_millis(500)) {
            Ok(s) => flood.push(s),
            Err(_) => continue,
        }
    }
    assert!(
        flood.len() > FILE_LIMIT as usize,
        "the flood got {} connections",
        flood.len()
    );
    // Connections over the cap were answered 503 and closed, not left hanging.
    std::thread::sleep(Duration::from_millis(1500));
    let mut refused = 0;
    for s in &mut flood {
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let mut buf = [0u8; 512];
        if let Ok(n) = s.read(&mut buf)
            && String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 503")
        {
            refused += 1;
        }
    }
    assert!(refused > 0, "some connections were refused with a 503");
    // The flood ends; the server answers again.
    drop(flood);
    let healthy_by = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(answer) = http_get(&addr, "/healthz")
            && answer.starts_with("HTTP/1.1 200")
        {
            break;
        }
        assert!(
            Instant::now() < healthy_by,
            "/healthz does not answer after the flood"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let flood_secs = started.elapsed().as_secs_f64();

    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    // A few lines about it, not one per failed accept or refusal.
    let log = std::fs::read_to_string(&log_path).unwrap();
    let lines = log
        .lines()
        .filter(|l| l.contains("accept failed") || l.contains("connection refused"))
        .count();
    let allowed = 2 * (2 + (flood_secs / 10.0).ceil() as usize);
    assert!(
        lines <= allowed,
        "{lines} log lines in {flood_secs:.1} s:\n{log}"
    );
}
