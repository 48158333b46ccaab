//! The server under test, in a child process of its own: the toaster host or a
//! native baseline, started as `toaster bench-serve` (a hidden subcommand of this
//! same binary). Load stays in the parent, so the kernel accounts the load
//! generator's CPU and the server's CPU and memory separately (see `usage`), and a
//! server's peak memory is its own.
//!
//! The parent writes one JSON line, a [`ServeSpec`], to the child's stdin; the child
//! binds 127.0.0.1 on a free port, prints the address on stdout, and serves until
//! its stdin closes: when the parent stops it, or when the parent dies.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::Endpoint;
use toaster_host::{HostConfig, Limits, Runtime};

/// What a `toaster bench-serve` child serves.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ServeSpec {
    /// The toaster host serving an application manifest.
    Host {
        manifest: PathBuf,
        variables: BTreeMap<String, String>,
        state_dir: PathBuf,
        /// Compiled components are kept here between runs.
        cache_dir: Option<PathBuf>,
    },
    /// Native hyper answering every request with `hello\n`.
    NativeHello,
    /// Native hyper verifying the bearer token with the app's token key.
    NativeVerifier { token_secret: String },
}

/// A running `toaster bench-serve` child.
pub struct ServerProcess {
    child: tokio::process::Child,
    stdin: Option<tokio::process::ChildStdin>,
    endpoint: Endpoint,
}

impl ServerProcess {
    /// Starts a child serving `spec`; returns once it accepts connections.
    pub async fn spawn(spec: &ServeSpec) -> anyhow::Result<ServerProcess> {
        let exe = std::env::current_exe().context("locating the toaster binary")?;
        let mut child = tokio::process::Command::new(&exe)
            .arg("bench-serve")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} bench-serve", exe.display()))?;
        let pid = child.id().context("the server exited at once")?;
        let mut stdin = child.stdin.take().context("no stdin")?;
        let mut line = serde_json::to_string(spec)?;
        line.push('\n');
        stdin.write_all(line.as_bytes()).await?;
        stdin.flush().await?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        // The first start compiles the app's components (minutes on a small machine,
        // once: they are cached).
        let first = tokio::time::timeout(Duration::from_secs(900), lines.next_line())
            .await
            .context("the server did not start within 15 minutes")??;
        let Some(first) = first else {
            let status = child.wait().await?;
            bail!("the server exited before serving ({status}); see the messages above");
        };
        let addr: SocketAddr = first
            .trim()
            .parse()
            .with_context(|| format!("the server printed {first:?}, not its address"))?;
        anyhow::ensure!(
            addr.ip().is_loopback(),
            "the server listens on {addr}, not 127.0.0.1"
        );
        Ok(ServerProcess {
            child,
            stdin: Some(stdin),
            endpoint: Endpoint {
                addr,
                pid: Some(pid),
            },
        })
    }

    pub fn endpoint(&self) -> Endpoint {
        self.endpoint
    }

    pub fn addr(&self) -> SocketAddr {
        self.endpoint.addr
    }

    /// The most resident memory the server has had so far (VmHWM), in bytes.
    pub fn peak_rss(&self) -> Option<u64> {
        self.endpoint.pid.and_then(super::usage::peak_rss)
    }

    /// Stops the server (gracefully: in-flight requests finish); its peak memory.
    pub async fn stop(mut self) -> anyhow::Result<Option<u64>> {
        self.stop_child().await
    }

    /// Stops this server, then starts `spec` in its place (never both at once: a
    /// host's state directory is its own while it runs).
    pub async fn restart(&mut self, spec: &ServeSpec) -> anyhow::Result<()> {
        self.stop_child().await?;
        *self = ServerProcess::spawn(spec).await?;
        Ok(())
    }

    async fn stop_child(&mut self) -> anyhow::Result<Option<u64>> {
        let peak = self.peak_rss();
        drop(self.stdin.take());
        match tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await {
            Ok(status) => {
                let status = status?;
                anyhow::ensure!(status.success(), "the server under test failed: {status}");
            }
            Err(_) => {
                self.child.kill().await?;
                bail!("the server under test did not stop within 30 s; killed");
            }
        }
        Ok(peak)
    }
}

/// The child's side (`toaster bench-serve`): reads a [`ServeSpec`] line from stdin,
/// serves it on 127.0.0.1, prints the address, and stops when stdin closes.
pub async fn serve() -> anyhow::Result<()> {
    let mut stdin = BufReader::new(tokio::io::stdin());
    let mut line = String::new();
    stdin.read_line(&mut line).await?;
    let spec: ServeSpec = serde_json::from_str(&line)
        .context("bench-serve is started by `toaster bench`, which writes its spec on stdin")?;
    let (addr, host) = match spec {
        ServeSpec::Host {
            manifest,
            variables,
            state_dir,
            cache_dir,
        } => {
            let limits = Limits::default();
            let runtime = Runtime::new(&limits, cache_dir)?;
            let host = toaster_host::start(
                &runtime,
                HostConfig {
                    manifest,
                    listen: "127.0.0.1:0".parse()?,
                    tls: None,
                    variables,
                    state_dir,
                    limits,
                },
            )
            .await
            .context("starting the host")?;
            (host.addr(), Some(host))
        }
        ServeSpec::NativeHello => (super::native_hello_server().await?, None),
        ServeSpec::NativeVerifier { token_secret } => (
            super::app::native_verifier(toaster_core::token::TokenSigner::from_secret(
                &token_secret,
            )?)
            .await?,
            None,
        ),
    };
    println!("{addr}");
    // Serve until the parent closes stdin (it stopped us, or it is gone).
    let mut rest = Vec::new();
    let _ = stdin.read_to_end(&mut rest).await;
    if let Some(host) = host {
        host.shutdown().await?;
    }
    Ok(())
}
