//! The Toaster host: serves a Spin application (spin.toml + its components) on
//! wasmtime, implementing the interfaces Toaster's components import
//! (WASI 0.2, wasi:http, Spin key-value, variables and PostgreSQL v4).
//!
//! `toaster up` (see `main.rs`) and the end-to-end tests both start it through
//! [`start`].

pub mod backup;
pub mod bench;
pub mod bindings;
pub mod build;
pub mod database;
pub mod deadline;
pub mod duration;
pub mod guest_output;
pub mod http;
pub mod keys;
pub mod kv;
pub mod localpg;
pub mod manifest;
pub mod migrate;
pub mod outbound;
pub mod pg;
pub mod problem;
pub mod retention;
pub mod routes;
pub mod runtime;
pub mod runtime_config;
pub mod server;
pub mod simulate;
pub mod state;
pub mod variables;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::watch;

pub use runtime::{App, Limits, Runtime};

/// An error and its causes for a person: each cause once. anyhow's `{:#}` prints every
/// level of the chain, but many errors print their cause in their own message too
/// (tokio-postgres: `error connecting to server: <cause>`, then `<cause>` again as the
/// source), so the same text came out two or three times. A cause already said is
/// left out, and so is one that only wraps a cause already said (`db error: <the
/// server's message>` after the server's message).
pub fn error_message(error: &anyhow::Error) -> String {
    let messages: Vec<String> = error.chain().map(ToString::to_string).collect();
    let mut out = String::new();
    for (i, message) in messages.iter().enumerate() {
        let said = |text: &str| !text.is_empty() && out.contains(text);
        if said(message) {
            continue;
        }
        if let Some(next) = messages.get(i + 1)
            && message.ends_with(next.as_str())
            && said(next)
        {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(message);
    }
    out
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wraps(&'static str, Option<Box<Wraps>>);
    impl std::fmt::Display for Wraps {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)?;
            match &self.1 {
                // Like tokio-postgres: the cause in the message and as the source.
                Some(cause) if self.0.ends_with("server") || self.0 == "db error" => {
                    write!(f, ": {cause}")
                }
                _ => Ok(()),
            }
        }
    }
    impl std::error::Error for Wraps {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn each_cause_is_said_once() {
        let refused = Wraps(
            "error connecting to server",
            Some(Box::new(Wraps("Connection refused (os error 111)", None))),
        );
        let e = anyhow::Error::new(refused).context("connecting to PostgreSQL for migrations");
        assert_eq!(
            error_message(&e),
            "connecting to PostgreSQL for migrations: error connecting to server: Connection refused (os error 111)"
        );
        assert_eq!(
            format!("{e:#}").matches("Connection refused").count(),
            2,
            "what anyhow alone prints"
        );

        let db = Wraps(
            "db error",
            Some(Box::new(Wraps(
                "ERROR: relation \"x\" does not exist",
                None,
            ))),
        );
        let e = anyhow::Error::new(db)
            .context("could not migrate: ERROR: relation \"x\" does not exist")
            .context("applying 0002_telemetry.sql");
        assert_eq!(
            error_message(&e),
            "applying 0002_telemetry.sql: could not migrate: ERROR: relation \"x\" does not exist"
        );

        let plain = anyhow::anyhow!("cause").context("what failed");
        assert_eq!(error_message(&plain), "what failed: cause");
    }
}
