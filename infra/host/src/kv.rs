//! `fermyon:spin/key-value@2.0.0`: hot state that can be rebuilt or lost.
//!
//! Stores are granted per component by label (`key_value_stores` in spin.toml);
//! opening any other label is `access-denied`, checked here in the host. Where a
//! label's data lives is the runtime config's choice ([`crate::runtime_config`]):
//! SQLite ([`sqlite`]; the `default` label without configuration is one file under
//! the state directory, so the store survives a restart, as Spin's default store
//! does) or Redis ([`redis`], shared by every host pointed at it). Backend failures
//! reach the component as the interface's `other` error, never as a trap.
//!
//! As in Spin's key-value factor: a backend is anything implementing [`KvBackend`]
//! ([`memory`] keeps its keys in memory, for tests); [`KvStores`] holds the app's
//! backends by label; [`KeyValue`] is the interface's state in one instance (the
//! labels its component was granted and the stores it opened) and implements the
//! interface.

pub mod memory;
pub mod redis;
pub mod sqlite;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::future::{BoxFuture, FutureExt};
use wasmtime::component::{Resource, ResourceTable};

use crate::bindings::key_value::{self, Error, Store};
use crate::runtime_config::{KvStoreConfig, RuntimeConfig};

pub use self::memory::MemoryKv;
pub use self::redis::RedisKv;
pub use self::sqlite::SqliteKv;

/// The label every Spin host provides without configuration.
pub const DEFAULT_LABEL: &str = "default";
/// The file, under the state directory, of the SQLite store.
pub const DEFAULT_SQLITE_FILE: &str = "kv.sqlite";

/// Where labels' data lives: the operations of the interface's `store`, for the
/// store `label` (a backend serving several labels keeps them apart, or not, as its
/// own rules say). Errors are the interface's, returned to the component as they are.
pub trait KvBackend: Send + Sync {
    fn get<'a>(
        &'a self,
        label: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, Error>>;
    fn set<'a>(
        &'a self,
        label: &'a str,
        key: &'a str,
        value: &'a [u8],
    ) -> BoxFuture<'a, Result<(), Error>>;
    fn delete<'a>(&'a self, label: &'a str, key: &'a str) -> BoxFuture<'a, Result<(), Error>>;
    fn exists<'a>(&'a self, label: &'a str, key: &'a str) -> BoxFuture<'a, Result<bool, Error>>;
    fn keys<'a>(&'a self, label: &'a str) -> BoxFuture<'a, Result<Vec<String>, Error>>;
    /// Waits until every write so far has reached storage (a no-op where writes are
    /// not deferred). Called on shutdown.
    fn flush(&self) -> Result<(), Error> {
        Ok(())
    }
    /// What kind of backend this is (`sqlite`, `redis`, `memory`), for messages.
    fn kind(&self) -> &'static str;
}

/// SQLite: keyed by `(label, key)`, so labels sharing a file stay apart.
impl KvBackend for SqliteKv {
    fn get<'a>(
        &'a self,
        label: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, Error>> {
        std::future::ready(SqliteKv::get(self, label, key)).boxed()
    }
    fn set<'a>(
        &'a self,
        label: &'a str,
        key: &'a str,
        value: &'a [u8],
    ) -> BoxFuture<'a, Result<(), Error>> {
        std::future::ready(SqliteKv::set(self, label, key, value)).boxed()
    }
    fn delete<'a>(&'a self, label: &'a str, key: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        std::future::ready(SqliteKv::delete(self, label, key)).boxed()
    }
    fn exists<'a>(&'a self, label: &'a str, key: &'a str) -> BoxFuture<'a, Result<bool, Error>> {
        std::future::ready(SqliteKv::exists(self, label, key)).boxed()
    }
    fn keys<'a>(&'a self, label: &'a str) -> BoxFuture<'a, Result<Vec<String>, Error>> {
        std::future::ready(SqliteKv::keys(self, label)).boxed()
    }
    fn flush(&self) -> Result<(), Error> {
        SqliteKv::flush(self)
    }
    fn kind(&self) -> &'static str {
        "sqlite"
    }
}

/// Redis: keys as they are, as on Spin, so labels sharing a database share its keys.
impl KvBackend for RedisKv {
    fn get<'a>(
        &'a self,
        _label: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, Error>> {
        RedisKv::get(self, key).boxed()
    }
    fn set<'a>(
        &'a self,
        _label: &'a str,
        key: &'a str,
        value: &'a [u8],
    ) -> BoxFuture<'a, Result<(), Error>> {
        RedisKv::set(self, key, value).boxed()
    }
    fn delete<'a>(&'a self, _label: &'a str, key: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        RedisKv::delete(self, key).boxed()
    }
    fn exists<'a>(&'a self, _label: &'a str, key: &'a str) -> BoxFuture<'a, Result<bool, Error>> {
        RedisKv::exists(self, key).boxed()
    }
    fn keys<'a>(&'a self, _label: &'a str) -> BoxFuture<'a, Result<Vec<String>, Error>> {
        RedisKv::keys(self).boxed()
    }
    fn kind(&self) -> &'static str {
        "redis"
    }
}

/// The stores configured for this host, by label. Cloning shares them.
#[derive(Clone, Default)]
pub struct KvStores {
    by_label: Arc<BTreeMap<String, Arc<dyn KvBackend>>>,
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
        let mut files: BTreeMap<PathBuf, Arc<SqliteKv>> = BTreeMap::new();
        let mut servers: BTreeMap<String, Arc<RedisKv>> = BTreeMap::new();
        let mut by_label: BTreeMap<String, Arc<dyn KvBackend>> = BTreeMap::new();
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
            let backend: Arc<dyn KvBackend> = match &store {
                KvStoreConfig::Spin { path } => {
                    let path = path.clone().unwrap_or_else(|| default_file.clone());
                    match files.get(&path) {
                        Some(b) => b.clone(),
                        None => {
                            let b = Arc::new(SqliteKv::open(&path)?);
                            files.insert(path, b.clone());
                            b
                        }
                    }
                }
                KvStoreConfig::Redis { url } => match servers.get(url.expose()) {
                    Some(b) => b.clone(),
                    None => {
                        let b = Arc::new(RedisKv::new(url)?);
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
        for redis in servers.into_values() {
            tokio::spawn(async move {
                if let Err(Error::Other(e)) = redis.ping().await {
                    tracing::warn!(
                        "{e}; key-value calls get the interface's `other` error until Redis answers"
                    );
                }
            });
        }
        Ok(KvStores::new(by_label))
    }

    /// Stores made elsewhere (an in-memory one in a test, say), by label.
    pub fn new(by_label: BTreeMap<String, Arc<dyn KvBackend>>) -> KvStores {
        KvStores {
            by_label: Arc::new(by_label),
        }
    }

    pub fn contains(&self, label: &str) -> bool {
        self.by_label.contains_key(label)
    }

    /// The backend serving `label`.
    pub fn get(&self, label: &str) -> Option<&Arc<dyn KvBackend>> {
        self.by_label.get(label)
    }

    /// Waits until every write so far has reached its backend's storage (SQLite
    /// stores write behind; Redis writes are already there). Called on shutdown.
    pub fn flush(&self) -> Result<(), Error> {
        for backend in self.by_label.values() {
            backend.flush()?;
        }
        Ok(())
    }
}

/// What a component's `store` handle stands for, after `store.open(label)`.
struct StoreHandle {
    label: String,
    backend: Arc<dyn KvBackend>,
}

/// The interface in one instance: the stores of the app, the labels its component
/// was granted, and the stores it has open (by the number of their handle).
pub struct KeyValue {
    stores: KvStores,
    granted: Arc<BTreeSet<String>>,
    open: ResourceTable,
}

impl KeyValue {
    pub fn new(stores: KvStores, granted: Arc<BTreeSet<String>>) -> KeyValue {
        KeyValue {
            stores,
            granted,
            open: ResourceTable::new(),
        }
    }

    fn handle(&self, store: &Resource<Store>) -> wasmtime::Result<(String, Arc<dyn KvBackend>)> {
        let h = self
            .open
            .get(&Resource::<StoreHandle>::new_borrow(store.rep()))?;
        Ok((h.label.clone(), h.backend.clone()))
    }
}

impl key_value::Host for KeyValue {}

impl key_value::HostStore for KeyValue {
    async fn open(&mut self, label: String) -> wasmtime::Result<Result<Resource<Store>, Error>> {
        if !self.granted.contains(&label) {
            return Ok(Err(Error::AccessDenied));
        }
        let Some(backend) = self.stores.get(&label).cloned() else {
            return Ok(Err(Error::NoSuchStore));
        };
        let handle = self.open.push(StoreHandle { label, backend })?;
        Ok(Ok(Resource::new_own(handle.rep())))
    }

    async fn get(
        &mut self,
        store: Resource<Store>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, Error>> {
        let (label, b) = self.handle(&store)?;
        Ok(b.get(&label, &key).await)
    }

    async fn set(
        &mut self,
        store: Resource<Store>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let (label, b) = self.handle(&store)?;
        Ok(b.set(&label, &key, &value).await)
    }

    async fn delete(
        &mut self,
        store: Resource<Store>,
        key: String,
    ) -> wasmtime::Result<Result<(), Error>> {
        let (label, b) = self.handle(&store)?;
        Ok(b.delete(&label, &key).await)
    }

    async fn exists(
        &mut self,
        store: Resource<Store>,
        key: String,
    ) -> wasmtime::Result<Result<bool, Error>> {
        let (label, b) = self.handle(&store)?;
        Ok(b.exists(&label, &key).await)
    }

    async fn get_keys(
        &mut self,
        store: Resource<Store>,
    ) -> wasmtime::Result<Result<Vec<String>, Error>> {
        let (label, b) = self.handle(&store)?;
        Ok(b.keys(&label).await)
    }

    async fn drop(&mut self, store: Resource<Store>) -> wasmtime::Result<()> {
        self.open
            .delete(Resource::<StoreHandle>::new_own(store.rep()))?;
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
        assert_eq!(s.by_label["cache"].kind(), "redis");
        let _ = std::fs::remove_dir_all(dir);
    }

    /// The interface itself over an in-memory backend: grants, missing stores, and
    /// each call of a `store`, as a component makes them.
    #[tokio::test]
    async fn the_interface_checks_grants_and_serves_an_open_store() {
        use key_value::HostStore;

        let memory: Arc<dyn KvBackend> = Arc::new(MemoryKv::default());
        let stores = KvStores::new(BTreeMap::from([
            ("default".to_string(), memory.clone()),
            ("other".to_string(), memory),
        ]));
        let granted = Arc::new(BTreeSet::from(["default".to_string(), "cache".to_string()]));
        let mut kv = KeyValue::new(stores, granted);

        assert!(matches!(
            kv.open("other".into()).await.unwrap(),
            Err(Error::AccessDenied)
        ));
        assert!(matches!(
            kv.open("cache".into()).await.unwrap(),
            Err(Error::NoSuchStore)
        ));
        let store = kv.open("default".into()).await.unwrap().unwrap();
        let rep = store.rep();
        let again = || Resource::<Store>::new_borrow(rep);
        assert_eq!(kv.get(again(), "k".into()).await.unwrap().unwrap(), None);
        kv.set(again(), "k".into(), b"v".to_vec())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            kv.get(again(), "k".into())
                .await
                .unwrap()
                .unwrap()
                .as_deref(),
            Some(&b"v"[..])
        );
        assert!(kv.exists(again(), "k".into()).await.unwrap().unwrap());
        assert_eq!(
            kv.get_keys(again()).await.unwrap().unwrap(),
            vec!["k".to_string()]
        );
        kv.delete(again(), "k".into()).await.unwrap().unwrap();
        assert!(!kv.exists(again(), "k".into()).await.unwrap().unwrap());
        HostStore::drop(&mut kv, store).await.unwrap();
        // A handle dropped is gone: using it again traps, as a stale handle does.
        assert!(kv.get_keys(again()).await.is_err());
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("toaster-kv-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
