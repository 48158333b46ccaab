//! `fermyon:spin/key-value@2.0.0`: hot state that can be rebuilt or lost.
//!
//! Stores are granted per component by label (`key_value_stores` in spin.toml);
//! opening any other label is `access-denied`, checked here in the host. Where a
//! label's data lives is the runtime config's choice ([`crate::runtime_config`]):
//! SQLite ([`sqlite`]; the `default` label without configuration is one file under
//! the state directory, so the store survives a restart, as Spin's default store
//! does) or Redis ([`redis`], shared by every host pointed at it). Backend failures
//! reach the component as the interface's `other` error, never as a trap.

pub mod redis;
pub mod sqlite;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use wasmtime::component::Resource;

use crate::bindings::key_value::{self, Error};
use crate::runtime_config::{KvStoreConfig, RuntimeConfig};
use crate::state::HostState;

pub use self::redis::RedisKv;
pub use self::sqlite::SqliteKv;

/// The label every Spin host provides without configuration.
pub const DEFAULT_LABEL: &str = "default";
/// The file, under the state directory, of the SQLite store.
pub const DEFAULT_SQLITE_FILE: &str = "kv.sqlite";

/// The resource a component holds after `store.open(label)`.
pub struct StoreHandle {
    label: String,
    backend: Arc<KvBackend>,
}

/// Where a label's data lives.
pub enum KvBackend {
    /// Keyed by `(label, key)`: labels sharing a file stay apart.
    Sqlite(SqliteKv),
    /// Keys as they are, as on Spin: labels sharing a database share its keys.
    Redis(RedisKv),
}

/// The stores configured for this host, by label.
#[derive(Clone, Default)]
pub struct KvStores {
    by_label: BTreeMap<String, Arc<KvBackend>>,
}

impl KvStores {
    /// The stores for the labels components `use`: each as `config` says, else —
    /// for `default` only, which is always provided — the SQLite file under
    /// `state_dir`. A used label that is neither is left out (the app refuses to
    /// load, naming it); a configured label nobody uses is not opened. Labels with
    /// the same SQLite path or Redis URL share one backend (one file handle, one
    /// connection). Must be called inside the Tokio runtime.
    pub fn configure<'a>(
        used: impl IntoIterator<Item = &'a str>,
        state_dir: &Path,
        config: &RuntimeConfig,
    ) -> anyhow::Result<KvStores> {
        let default_file = state_dir.join(DEFAULT_SQLITE_FILE);
        let mut files: BTreeMap<PathBuf, Arc<KvBackend>> = BTreeMap::new();
        let mut servers: BTreeMap<String, Arc<KvBackend>> = BTreeMap::new();
        let mut by_label = BTreeMap::new();
        let labels: BTreeSet<&str> = used
            .into_iter()
            .chain(std::iter::once(DEFAULT_LABEL))
            .collect();
        for label in labels {
            let store = match config.key_value_stores.get(label) {
                Some(store) => store.clone(),
                None if label == DEFAULT_LABEL => KvStoreConfig::Spin { path: None },
                None => continue,
            };
            let backend = match &store {
                KvStoreConfig::Spin { path } => {
                    let path = path.clone().unwrap_or_else(|| default_file.clone());
                    match files.get(&path) {
                        Some(b) => b.clone(),
                        None => {
                            let b = Arc::new(KvBackend::Sqlite(SqliteKv::open(&path)?));
                            files.insert(path, b.clone());
                            b
                        }
                    }
                }
                KvStoreConfig::Redis { url } => match servers.get(url.expose()) {
                    Some(b) => b.clone(),
                    None => {
                        let redis = RedisKv::new(url)?;
                        let b = Arc::new(KvBackend::Redis(redis));
                        servers.insert(url.expose().to_string(), b.clone());
                        b
                    }
                },
            };
            if config.key_value_stores.contains_key(label) {
                tracing::info!("key-value store {label:?}: {store}");
            }
            by_label.insert(label.to_string(), backend);
        }
        // Say at start, not at the first failing request, when Redis does not answer.
        for backend in servers.into_values() {
            tokio::spawn(async move {
                if let KvBackend::Redis(redis) = &*backend
                    && let Err(Error::Other(e)) = redis.ping().await
                {
                    tracing::warn!(
                        "{e}; key-value calls get the interface's `other` error until Redis answers"
                    );
                }
            });
        }
        Ok(KvStores { by_label })
    }

    pub fn contains(&self, label: &str) -> bool {
        self.by_label.contains_key(label)
    }

    /// The backend serving `label`.
    pub fn get(&self, label: &str) -> Option<&Arc<KvBackend>> {
        self.by_label.get(label)
    }

    /// Waits until every write so far has reached its backend's storage (SQLite
    /// stores write behind; Redis writes are already there). Called on shutdown.
    pub fn flush(&self) -> Result<(), Error> {
        for backend in self.by_label.values() {
            if let KvBackend::Sqlite(s) = &**backend {
                s.flush()?;
            }
        }
        Ok(())
    }
}

impl KvBackend {
    pub async fn get(&self, store: &str, key: &str) -> Result<Option<Vec<u8>>, Error> {
        match self {
            KvBackend::Sqlite(s) => s.get(store, key),
            KvBackend::Redis(r) => r.get(key).await,
        }
    }

    pub async fn set(&self, store: &str, key: &str, value: &[u8]) -> Result<(), Error> {
        match self {
            KvBackend::Sqlite(s) => s.set(store, key, value),
            KvBackend::Redis(r) => r.set(key, value).await,
        }
    }

    pub async fn delete(&self, store: &str, key: &str) -> Result<(), Error> {
        match self {
            KvBackend::Sqlite(s) => s.delete(store, key),
            KvBackend::Redis(r) => r.delete(key).await,
        }
    }

    pub async fn exists(&self, store: &str, key: &str) -> Result<bool, Error> {
        match self {
            KvBackend::Sqlite(s) => s.exists(store, key),
            KvBackend::Redis(r) => r.exists(key).await,
        }
    }

    pub async fn keys(&self, store: &str) -> Result<Vec<String>, Error> {
        match self {
            KvBackend::Sqlite(s) => s.keys(store),
            KvBackend::Redis(r) => r.keys().await,
        }
    }
}

impl HostState {
    fn kv_handle(
        &self,
        store: &Resource<StoreHandle>,
    ) -> wasmtime::Result<(String, Arc<KvBackend>)> {
        let h = self.table.get(store)?;
        Ok((h.label.clone(), h.backend.clone()))
    }
}

impl key_value::Host for HostState {}

impl key_value::HostStore for HostState {
    async fn open(
        &mut self,
        label: String,
    ) -> wasmtime::Result<Result<Resource<StoreHandle>, Error>> {
        if !self.component.kv_labels.contains(&label) {
            return Ok(Err(Error::AccessDenied));
        }
        let Some(backend) = self.services.kv.by_label.get(&label).cloned() else {
            return Ok(Err(Error::NoSuchStore));
        };
        Ok(Ok(self.table.push(StoreHandle { label, backend })?))
    }

    async fn get(
        &mut self,
        store: Resource<StoreHandle>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, Error>> {
        let (label, b) = self.kv_handle(&store)?;
        Ok(b.get(&label, &key).await)
    }

    async fn set(
        &mut self,
        store: Resource<StoreHandle>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let (label, b) = self.kv_handle(&store)?;
        Ok(b.set(&label, &key, &value).await)
    }

    async fn delete(
        &mut self,
        store: Resource<StoreHandle>,
        key: String,
    ) -> wasmtime::Result<Result<(), Error>> {
        let (label, b) = self.kv_handle(&store)?;
        Ok(b.delete(&label, &key).await)
    }

    async fn exists(
        &mut self,
        store: Resource<StoreHandle>,
        key: String,
    ) -> wasmtime::Result<Result<bool, Error>> {
        let (label, b) = self.kv_handle(&store)?;
        Ok(b.exists(&label, &key).await)
    }

    async fn get_keys(
        &mut self,
        store: Resource<StoreHandle>,
    ) -> wasmtime::Result<Result<Vec<String>, Error>> {
        let (label, b) = self.kv_handle(&store)?;
        Ok(b.keys(&label).await)
    }

    async fn drop(&mut self, store: Resource<StoreHandle>) -> wasmtime::Result<()> {
        self.table.delete(store)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str, base: &Path) -> RuntimeConfig {
        RuntimeConfig::parse(text, base).unwrap()
    }

    #[tokio::test]
    async fn labels_are_separate_and_data_survives_reopening() {
        let dir = tempfile_dir();
        let none = RuntimeConfig::default();
        {
            let s = KvStores::configure(["default", "other"], &dir, &none).unwrap();
            let d = &s.by_label["default"];
            d.set("default", "k", b"v1").await.unwrap();
            d.set("default", "k", b"v2").await.unwrap();
            d.set("other", "k", b"o").await.unwrap();
            assert_eq!(d.keys("default").await.unwrap(), vec!["k".to_string()]);
            assert!(d.exists("default", "k").await.unwrap());
        }
        assert!(dir.join(DEFAULT_SQLITE_FILE).exists());
        let s = KvStores::configure([], &dir, &none).unwrap();
        let d = &s.by_label["default"];
        assert_eq!(
            d.get("default", "k").await.unwrap().as_deref(),
            Some(&b"v2"[..])
        );
        assert_eq!(
            d.get("other", "k").await.unwrap().as_deref(),
            Some(&b"o"[..])
        );
        d.delete("default", "k").await.unwrap();
        assert!(!d.exists("default", "k").await.unwrap());
        assert_eq!(d.get("default", "k").await.unwrap(), None);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn labels_get_the_backend_their_config_names() {
        let dir = tempfile_dir();
        let rc = config(
            r#"
            [key_value_store.default]
            type = "spin"
            path = "custom/default.db"

            [key_value_store.archive]
            type = "spin"
            path = "custom/default.db"

            [key_value_store.unused]
            type = "spin"
            path = "unused.db"

            [key_value_store.cache]
            type = "redis"
            url = "redis://127.0.0.1:1/0"
            "#,
            &dir,
        );
        let s =
            KvStores::configure(["default", "archive", "cache", "elsewhere"], &dir, &rc).unwrap();
        // Configured paths, relative to the runtime config's directory; one file for
        // two labels, their keys still apart.
        assert!(dir.join("custom/default.db").exists());
        assert!(!dir.join(DEFAULT_SQLITE_FILE).exists());
        assert!(Arc::ptr_eq(&s.by_label["default"], &s.by_label["archive"]));
        s.by_label["default"]
            .set("default", "k", b"d")
            .await
            .unwrap();
        assert_eq!(
            s.by_label["archive"].get("archive", "k").await.unwrap(),
            None
        );
        // A configured label nobody uses is not opened; a used label without
        // configuration (other than `default`) is not provided.
        assert!(!dir.join("unused.db").exists());
        assert!(!s.contains("unused"));
        assert!(!s.contains("elsewhere"));
        assert!(matches!(*s.by_label["cache"], KvBackend::Redis(_)));
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("toaster-kv-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
