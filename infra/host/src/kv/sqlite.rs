//! The SQLite backend: every label of one file in one table, `(store, key) → value`.
//! What `toaster up` uses unless a runtime config says otherwise, as Spin does.

use std::path::Path;
use std::sync::Mutex;

use anyhow::Context;
use rusqlite::{OptionalExtension, params};

use crate::bindings::key_value::Error;

pub struct SqliteKv {
    conn: Mutex<rusqlite::Connection>,
}

impl SqliteKv {
    pub fn open(path: &Path) -> anyhow::Result<SqliteKv> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
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

    pub fn get(&self, store: &str, key: &str) -> Result<Option<Vec<u8>>, Error> {
        self.with(|c| {
            c.prepare_cached("SELECT value FROM kv WHERE store = ?1 AND key = ?2")?
                .query_row(params![store, key], |r| r.get(0))
                .optional()
        })
    }

    pub fn set(&self, store: &str, key: &str, value: &[u8]) -> Result<(), Error> {
        self.with(|c| {
            c.prepare_cached(
                "INSERT INTO kv (store, key, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT (store, key) DO UPDATE SET value = excluded.value",
            )?
            .execute(params![store, key, value])
            .map(|_| ())
        })
    }

    pub fn delete(&self, store: &str, key: &str) -> Result<(), Error> {
        self.with(|c| {
            c.prepare_cached("DELETE FROM kv WHERE store = ?1 AND key = ?2")?
                .execute(params![store, key])
                .map(|_| ())
        })
    }

    pub fn exists(&self, store: &str, key: &str) -> Result<bool, Error> {
        self.with(|c| {
            c.prepare_cached("SELECT 1 FROM kv WHERE store = ?1 AND key = ?2")?
                .exists(params![store, key])
        })
    }

    pub fn keys(&self, store: &str) -> Result<Vec<String>, Error> {
        self.with(|c| {
            c.prepare_cached("SELECT key FROM kv WHERE store = ?1 ORDER BY key")?
                .query_map(params![store], |r| r.get(0))?
                .collect()
        })
    }
}
