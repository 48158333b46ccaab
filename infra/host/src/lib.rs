//! The Toaster host: serves a Spin application (spin.toml + its components) on
//! wasmtime, implementing the interfaces Toaster's components import
//! (WASI 0.2, wasi:http, Spin key-value, variables and PostgreSQL v4).
//!
//! `toaster up` (the `toaster` package, infra/cli), `toaster bench` (infra/bench) and the
//! end-to-end tests all start it through [`start`].

// Functions stay under 100 lines (clippy.toml); tests may run longer.
#![cfg_attr(not(test), warn(clippy::too_many_lines))]

pub mod bindings;
pub mod deadline;
pub mod guest_output;
pub mod http;
pub mod kv;
pub mod manifest;
pub mod outbound;
pub mod pg;
pub mod problem;
pub mod routes;
pub mod runtime;
pub mod runtime_config;
pub mod server;
pub mod state;
pub mod template;
pub mod variables;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::watch;

pub use runtime::{App, Limits, Runtime};

/// Everything needed to serve one application.
#[derive(Debug, Clone)]
pub struct HostConfig {
    pub manifest: PathBuf,
    pub listen: SocketAddr,
    pub tls: Option<(PathBuf, PathBuf)>,
    /// `--variable NAME=VALUE` overrides; the environment is consulted after these.
    pub variables: BTreeMap<String, String>,
    /// Where the key-value store lives (`kv.sqlite`).
    pub state_dir: PathBuf,
    pub limits: Limits,
}

/// A host serving in the background.
pub struct RunningHost {
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    kv: kv::KvStores,
}

impl RunningHost {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets in-flight requests finish (bounded), and returns.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        let served = self.task.await.context("the server task panicked")?;
        // The SQLite store writes behind: what the last requests wrote goes to disk
        // before we return.
        let kv = self.kv;
        tokio::task::spawn_blocking(move || kv.flush())
            .await
            .context("the key-value flush panicked")?
            .map_err(|e| anyhow::anyhow!("cannot write the key-value store: {e:?}"))?;
        served
    }
}

/// Loads the application, binds the listener and serves in a background task.
pub async fn start(runtime: &Runtime, config: HostConfig) -> anyhow::Result<RunningHost> {
    start_with_runtime_config(runtime, config, &runtime_config::RuntimeConfig::default()).await
}

/// [`start`], with the key-value stores a runtime-config file defines
/// (`toaster up --runtime-config-file`).
pub async fn start_with_runtime_config(
    runtime: &Runtime,
    config: HostConfig,
    runtime_config: &runtime_config::RuntimeConfig,
) -> anyhow::Result<RunningHost> {
    let manifest = manifest::Manifest::load(&config.manifest)?;
    let vars = variables::Variables::resolve(&manifest.variables, &config.variables, |k| {
        std::env::var(k).ok()
    })?;
    let used = manifest
        .components
        .values()
        .flat_map(|c| c.key_value_stores.iter().map(String::as_str));
    let kv = kv::KvStores::configure(used, &config.state_dir, runtime_config)?;
    let app = Arc::new(App::load(
        runtime,
        &manifest,
        &vars,
        kv.clone(),
        config.limits.clone(),
    )?);
    let tls = match &config.tls {
        Some((cert, key)) => Some(server::tls_acceptor(&server::TlsFiles { cert, key })?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AddrInUse => anyhow::anyhow!(
                "{} is already in use: stop the other server or pass --listen 127.0.0.1:<another port>",
                config.listen
            ),
            _ => anyhow::Error::new(e).context(format!("cannot listen on {}", config.listen)),
        })?;
    let addr = listener.local_addr()?;
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(server::serve(app, listener, tls, rx));
    Ok(RunningHost {
        addr,
        shutdown: tx,
        task,
        kv,
    })
}
