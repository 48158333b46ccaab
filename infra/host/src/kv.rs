//! `fermyon:spin/key-value@2.0.0`: hot state that can be rebuilt or lost.
//!
//! Stores are granted per component by label (`key_value_stores` in spin.toml);
//! opening any other label is `access-denied`, checked here in the host. By default
//! every label lives in one SQLite file under the state directory, so the store
//! survives a restart, as Spin's default store does.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use rusqlite::{OptionalExtension, params};
use wasmtime::component::Resource;

use crate::bindings::key_value::{self, Error};
use crate::state::HostState;

/// The resource a component holds after `store.open(label)`.
pub struct StoreHandle {
    label: String,
    backend: Arc<KvBackend>,
}

/// Where a label's data lives.
pub enum KvBackend {
    Sqlite(SqliteKv),
}

/// The stores configured for this host, by label.
#[derive(Clone, Default)]
pub struct KvStores {
    by_label: BTreeMap<String, Arc<KvBackend>>,
}

impl KvStores {
    /// All labels in one SQLite database at `path` (created when missing).
    pub fn sqlite(
        path: &Path,
        labels: impl IntoIterator<Item = String>,
    ) -> anyhow::Result<KvStores> {
        let backend = Arc::new(KvBackend::Sqlite(SqliteKv::open(path)?));
        Ok(KvStores {
            by_label: labels.into_iter().map(|l| (l, backend.clone())).collect(),
        })
    }

    pub fn contains(&self, label: &str) -> bool {
        self.by_label.contains_key(label)
    }
}

pub struct SqliteKv {
    conn: Mutex<rusqlite::Connection>,
}

impl SqliteKv {
    pub fn open(path: &Path) -> anyhow::Result<SqliteKv> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let conn = rusqlite::Connection::open(path)
            .with_context(|| format!("cannot open the key-value store {}", path.display()))?;
        // WAL with synchronous=NORMAL: a commit is durable against a process crash
        // and costs no fsync; the store only holds state that can be rebuilt.
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA synchronous=NORMAL;
             PRAGMA busy_timeout=5000;
             CREATE TABLE IF NOT EXISTS kv (
                 store TEXT NOT NULL,
                 key   TEXT NOT NULL,
                 value BLOB NOT NULL,
                 PRIMARY KEY (store, key)
             ) WITHOUT ROWID;",
        )
        .with_context(|| format!("cannot initialise the key-value store {}", path.display()))?;
        Ok(SqliteKv {
            conn: Mutex::new(conn),
        })
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T>,
    ) -> Result<T, Error> {
        let conn = self
            .conn
            .lock()
            .map_err(|_| Error::Other("key-value store lock poisoned".into()))?;
        f(&conn).map_err(|e| Error::Other(e.to_string()))
    }
}

impl KvBackend {
    pub async fn get(&self, store: &str, key: &str) -> Result<Option<Vec<u8>>, Error> {
        match self {
            KvBackend::Sqlite(s) => s.with(|c| {
                c.prepare_cached("SELECT value FROM kv WHERE store = ?1 AND key = ?2")?
                    .query_row(params![store, key], |r| r.get(0))
                    .optional()
            }),
        }
    }

    pub async fn set(&self, store: &str, key: &str, value: &[u8]) -> Result<(), Error> {
        match self {
            KvBackend::Sqlite(s) => s.with(|c| {
                c.prepare_cached(
                    "INSERT INTO kv (store, key, value) VALUES (?1, ?2, ?3)
                     ON CONFLICT (store, key) DO UPDATE SET value = excluded.value",
                )?
                .execute(params![store, key, value])
                .map(|_| ())
            }),
        }
    }

    pub async fn delete(&self, store: &str, key: &str) -> Result<(), Error> {
        match self {
            KvBackend::Sqlite(s) => s.with(|c| {
                c.prepare_cached("DELETE FROM kv WHERE store = ?1 AND key = ?2")?
                    .execute(params![store, key])
                    .map(|_| ())
            }),
        }
    }

    pub async fn exists(&self, store: &str, key: &str) -> Result<bool, Error> {
        Ok(self.get(store, key).await?.is_some())
    }

    pub async fn keys(&self, store: &str) -> Result<Vec<String>, Error> {
        match self {
            KvBackend::Sqlite(s) => s.with(|c| {
                c.prepare_cached("SELECT key FROM kv WHERE store = ?1 ORDER BY key")?
                    .query_map(params![store], |r| r.get(0))?
                    .collect()
            }),
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

    #[tokio::test]
    async fn labels_are_separate_and_data_survives_reopening() {
        let dir = tempfile_dir();
        let path = dir.join("kv.sqlite");
        {
            let s = KvStores::sqlite(&path, ["default".to_string(), "other".to_string()]).unwrap();
            let d = &s.by_label["default"];
            d.set("default", "k", b"v1").await.unwrap();
            d.set("default", "k", b"v2").await.unwrap();
            d.set("other", "k", b"o").await.unwrap();
            assert_eq!(d.keys("default").await.unwrap(), vec!["k".to_string()]);
        }
        let s = KvStores::sqlite(&path, ["default".to_string()]).unwrap();
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
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("toaster-kv-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
