//! The SQLite backend: every label of one file in one table, `(store, key) → value`,
//! served from memory. What `toaster up` uses unless a runtime config says otherwise,
//! as Spin does.
//!
//! # Memory in front, SQLite behind
//!
//! Every device request reads two or three keys and writes one or two (revocation
//! state, rate window, last-known values), so the store sits on the hot path. Reads are
//! answered from an in-memory map of the entries seen so far (a miss reads SQLite once,
//! and an absent key is remembered as absent); writes change the map at once and are
//! written to SQLite by a background thread, batched in one transaction every
//! [`FLUSH_INTERVAL`]. A component reads its own writes and every other request's at
//! once, as before; what changes is only when a write reaches the disk:
//!
//! - a graceful stop (Ctrl-C, SIGTERM, [`SqliteKv::flush`], the last handle dropped)
//!   writes everything first;
//! - a crash or power loss loses at most the last [`FLUSH_INTERVAL`] of writes.
//!   Toaster's store holds only what can be rebuilt or may be lost (caches, rate
//!   windows, last-known values; see `functions/platform/src/kv.rs`), so that costs a
//!   cache miss, never a reading.
//!
//! The map is coherent because this process is the file's only user: opening a file
//! that another process has open is refused (an exclusive `flock`), and opening it
//! again in this process (the tests do, to look inside) returns the same store. Hosts
//! that must share a store use Redis (`docs/host.md`).
//!
//! The map is bounded ([`MAX_CACHED_BYTES`]): past it, entries already on disk are
//! dropped, and read again from SQLite when next asked for. Entries not yet on disk
//! are never dropped.

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use anyhow::Context;
use rusqlite::{OptionalExtension, params};

use crate::bindings::key_value::Error;

/// How long a write may wait in memory before it is written to SQLite.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(50);
/// Keys and values kept in memory, in bytes (about), before entries already on disk
/// are dropped.
pub const MAX_CACHED_BYTES: usize = 64 << 20;
/// What an entry costs besides its key and value (map slot, allocation headers).
const ENTRY_OVERHEAD: usize = 64;

/// A handle on one SQLite key-value file. Cheap to clone; every handle on the same
/// file in this process shares one map and one writer.
#[derive(Clone)]
pub struct SqliteKv {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    shared: Arc<Shared>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Held for the life of the store: the `flock` that keeps other processes out.
    _lock: std::fs::File,
}

/// What the request threads and the writer thread share.
struct Shared {
    state: Mutex<State>,
    /// Signalled when there is something to write, or when the writer must stop.
    wake: Condvar,
    /// Signalled by the writer after each batch it wrote.
    written: Condvar,
}

struct State {
    /// Reads of keys not in `entries`, and `get_keys`, go to this connection, under
    /// this lock: so no write can slip between a miss's read and its caching.
    conn: rusqlite::Connection,
    entries: HashMap<EntryId, Entry>,
    /// Entries changed and not yet written (their keys).
    dirty: Vec<EntryId>,
    /// The keys of the batch the writer is writing now.
    in_flight: Vec<EntryId>,
    /// Batches the writer has taken, and finished writing.
    batches_started: u64,
    batches_written: u64,
    bytes: usize,
    /// Bumped on every write; an entry is clean again only if the writer wrote its
    /// latest version.
    version: u64,
    stop: bool,
    /// The last write failure, reported once when it starts.
    failing: bool,
}

struct Entry {
    /// `None`: the key is absent (deleted, or known not to exist).
    value: Option<Vec<u8>>,
    /// `Some(version)` while the change has not reached SQLite.
    dirty: Option<u64>,
    /// Its key is in [`State::dirty`], waiting for the writer. A change made while
    /// the writer is writing the entry's previous version finds this false and
    /// queues the key again, so the newer version is written by the next batch.
    queued: bool,
}

impl Entry {
    fn cost(key: &EntryId, value: &Option<Vec<u8>>) -> usize {
        key.0.len() + key.1.len() + value.as_ref().map_or(0, Vec::len) + ENTRY_OVERHEAD
    }
}

/// `(store label, key)`: what an entry is found by.
type EntryId = (String, String);
/// A change on its way to SQLite: the entry, its value then (`None`: deleted), and
/// the version it had.
type Pending = (EntryId, Option<Vec<u8>>, u64);

/// The stores open in this process, by canonical path.
fn open_stores() -> &'static Mutex<HashMap<PathBuf, Weak<Inner>>> {
    static OPEN: OnceLock<Mutex<HashMap<PathBuf, Weak<Inner>>>> = OnceLock::new();
    OPEN.get_or_init(Default::default)
}

impl SqliteKv {
    /// Opens (creating if needed) the store at `path`, or returns the one this process
    /// already has open there. Fails if another process has it open.
    pub fn open(path: &Path) -> anyhow::Result<SqliteKv> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let lock = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .with_context(|| format!("cannot open the key-value store {}", path.display()))?;
        let canonical = path
            .canonicalize()
            .with_context(|| format!("cannot resolve {}", path.display()))?;
        let mut open = open_stores()
            .lock()
            .map_err(|_| anyhow::anyhow!("the key-value store registry is poisoned"))?;
        if let Some(inner) = open.get(&canonical).and_then(Weak::upgrade) {
            return Ok(SqliteKv { inner });
        }
        if !lock_exclusively(&lock) {
            anyhow::bail!(
                "the key-value store {} is in use by another process (another `toaster up` with the same --state-dir?). \
                 Stop it, give this one another --state-dir, or share a Redis store between them (--runtime-config-file)",
                path.display()
            );
        }
        let conn = connect(path)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS kv (
                 store TEXT NOT NULL,
                 key   TEXT NOT NULL,
                 value BLOB NOT NULL,
                 PRIMARY KEY (store, key)
             ) WITHOUT ROWID;",
        )
        .with_context(|| format!("cannot initialise the key-value store {}", path.display()))?;
        let writer_conn = connect(path)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                conn,
                entries: HashMap::new(),
                dirty: Vec::new(),
                in_flight: Vec::new(),
                batches_started: 0,
                batches_written: 0,
                bytes: 0,
                version: 0,
                stop: false,
                failing: false,
            }),
            wake: Condvar::new(),
            written: Condvar::new(),
        });
        let writer = {
            let shared = shared.clone();
            let path = path.to_path_buf();
            std::thread::Builder::new()
                .name("toaster-kv-writer".into())
                .spawn(move || write_behind(&shared, writer_conn, &path))
                .context("cannot start the key-value writer thread")?
        };
        let inner = Arc::new(Inner {
            path: path.to_path_buf(),
            shared,
            writer: Mutex::new(Some(writer)),
            _lock: lock,
        });
        open.insert(canonical, Arc::downgrade(&inner));
        Ok(SqliteKv { inner })
    }

    fn state(&self) -> Result<MutexGuard<'_, State>, Error> {
        self.inner
            .shared
            .state
            .lock()
            .map_err(|_| Error::Other("key-value store lock poisoned".into()))
    }

    pub fn get(&self, store: &str, key: &str) -> Result<Option<Vec<u8>>, Error> {
        let mut state = self.state()?;
        let id = (store.to_owned(), key.to_owned());
        if let Some(entry) = state.entries.get(&id) {
            return Ok(entry.value.clone());
        }
        let value = state
            .conn
            .prepare_cached("SELECT value FROM kv WHERE store = ?1 AND key = ?2")
            .and_then(|mut s| {
                s.query_row(params![store, key], |r| r.get::<_, Vec<u8>>(0))
                    .optional()
            })
            .map_err(|e| Error::Other(e.to_string()))?;
        state.insert(id, value.clone(), None);
        Ok(value)
    }

    pub fn set(&self, store: &str, key: &str, value: &[u8]) -> Result<(), Error> {
        self.change(store, key, Some(value.to_vec()))
    }

    pub fn delete(&self, store: &str, key: &str) -> Result<(), Error> {
        self.change(store, key, None)
    }

    pub fn exists(&self, store: &str, key: &str) -> Result<bool, Error> {
        Ok(self.get(store, key)?.is_some())
    }

    /// Every key of `store`: what SQLite holds, with the changes not yet written.
    pub fn keys(&self, store: &str) -> Result<Vec<String>, Error> {
        let state = self.state()?;
        let mut keys: std::collections::BTreeSet<String> = state
            .conn
            .prepare_cached("SELECT key FROM kv WHERE store = ?1")
            .and_then(|mut s| {
                s.query_map(params![store], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()
            })
            .map_err(|e| Error::Other(e.to_string()))?;
        for id in state.in_flight.iter().chain(&state.dirty) {
            if id.0 != store {
                continue;
            }
            match state.entries.get(id).map(|e| e.value.is_some()) {
                Some(true) => keys.insert(id.1.clone()),
                Some(false) => keys.remove(&id.1),
                None => false,
            };
        }
        Ok(keys.into_iter().collect())
    }

    /// Waits until every change made so far is in SQLite.
    pub fn flush(&self) -> Result<(), Error> {
        let mut state = self.state()?;
        // The batch now being written, and the next one if changes are waiting.
        let needed = state.batches_started + u64::from(!state.dirty.is_empty());
        while state.batches_written < needed {
            if state.failing || state.stop {
                return Err(Error::Other(format!(
                    "cannot write the key-value store {}",
                    self.inner.path.display()
                )));
            }
            self.inner.shared.wake.notify_one();
            state = self
                .inner
                .shared
                .written
                .wait_timeout(state, Duration::from_millis(100))
                .map_err(|_| Error::Other("key-value store lock poisoned".into()))?
                .0;
        }
        Ok(())
    }

    fn change(&self, store: &str, key: &str, value: Option<Vec<u8>>) -> Result<(), Error> {
        let mut state = self.state()?;
        state.version += 1;
        let version = state.version;
        let was_empty = state.dirty.is_empty();
        state.insert((store.to_owned(), key.to_owned()), value, Some(version));
        // Only the change that gives the writer something to do wakes it; the rest
        // wait for its batch (a wake-up per change was a futex call and a context
        // switch per request).
        let wake = was_empty && !state.dirty.is_empty();
        drop(state);
        if wake {
            self.inner.shared.wake.notify_one();
        }
        Ok(())
    }
}

impl State {
    /// Caches `value` under `id`; `dirty` marks a change the writer must write.
    fn insert(&mut self, id: EntryId, value: Option<Vec<u8>>, dirty: Option<u64>) {
        let cost = Entry::cost(&id, &value);
        match self.entries.get_mut(&id) {
            Some(entry) => {
                self.bytes -= Entry::cost(&id, &entry.value);
                if dirty.is_some() && !entry.queued {
                    entry.queued = true;
                    self.dirty.push(id);
                }
                entry.value = value;
                entry.dirty = dirty.or(entry.dirty);
            }
            None => {
                let queued = dirty.is_some();
                if queued {
                    self.dirty.push(id.clone());
                }
                self.entries.insert(
                    id,
                    Entry {
                        value,
                        dirty,
                        queued,
                    },
                );
            }
        }
        self.bytes += cost;
        if self.bytes > MAX_CACHED_BYTES {
            self.evict();
        }
    }

    /// Drops entries already on disk until the map is back under 3/4 of its bound.
    fn evict(&mut self) {
        let goal = MAX_CACHED_BYTES / 4 * 3;
        let mut freed = 0;
        let excess = self.bytes.saturating_sub(goal);
        self.entries.retain(|id, entry| {
            if freed >= excess || entry.dirty.is_some() {
                return true;
            }
            freed += Entry::cost(id, &entry.value);
            false
        });
        self.bytes -= freed;
    }
}

/// Takes the store's `flock`, waiting a little: a store of this process that is being
/// closed (its last handle dropped on another thread) releases it in a moment.
fn lock_exclusively(file: &std::fs::File) -> bool {
    for _ in 0..20 {
        // SAFETY: flock on a file descriptor the caller owns; no memory involved.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    false
}

fn connect(path: &Path) -> anyhow::Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open(path)
        .with_context(|| format!("cannot open the key-value store {}", path.display()))?;
    // WAL with synchronous=NORMAL: a commit costs no fsync; the store only holds state
    // that can be rebuilt.
    conn.execute_batch(
        "PRAGMA journal_mode=WAL;
         PRAGMA synchronous=NORMAL;
         PRAGMA busy_timeout=5000;",
    )
    .with_context(|| format!("cannot initialise the key-value store {}", path.display()))?;
    Ok(conn)
}

/// The writer thread: waits for changes, lets them gather for [`FLUSH_INTERVAL`], then
/// writes them in one transaction. Stops (after writing everything) when told to.
fn write_behind(shared: &Shared, mut conn: rusqlite::Connection, path: &Path) {
    let Ok(mut state) = shared.state.lock() else {
        return;
    };
    loop {
        while state.dirty.is_empty() && !state.stop {
            state = match shared.wake.wait(state) {
                Ok(s) => s,
                Err(_) => return,
            };
        }
        if state.dirty.is_empty() && state.stop {
            shared.written.notify_all();
            return;
        }
        if !state.stop {
            // Let a batch gather; a flush or stop request cuts the wait short.
            state = match shared.wake.wait_timeout(state, FLUSH_INTERVAL) {
                Ok((s, _)) => s,
                Err(_) => return,
            };
        }
        state.in_flight = std::mem::take(&mut state.dirty);
        state.batches_started += 1;
        let State {
            in_flight, entries, ..
        } = &mut *state;
        let batch: Vec<Pending> = in_flight
            .iter()
            .filter_map(|id| {
                let entry = entries.get_mut(id)?;
                entry.queued = false;
                let version = entry.dirty?;
                Some((id.clone(), entry.value.clone(), version))
            })
            .collect();
        drop(state);
        let result = write_batch(&mut conn, &batch);
        state = match shared.state.lock() {
            Ok(s) => s,
            Err(_) => return,
        };
        state.in_flight.clear();
        match result {
            Ok(()) => {
                if state.failing {
                    tracing::info!("key-value store {}: writing again", path.display());
                }
                state.failing = false;
                state.batches_written += 1;
                for (id, _, version) in batch {
                    if let Some(entry) = state.entries.get_mut(&id)
                        && entry.dirty == Some(version)
                    {
                        entry.dirty = None;
                    }
                }
            }
            Err(e) => {
                if !state.failing {
                    tracing::error!(
                        "key-value store {}: cannot write ({e}); changes stay in memory and are retried",
                        path.display()
                    );
                }
                state.failing = true;
                // Put the batch back (entries changed since the take are queued
                // already), and count it as started again when it is retried.
                state.batches_started -= 1;
                let State { entries, dirty, .. } = &mut *state;
                for (id, _, _) in batch {
                    if let Some(entry) = entries.get_mut(&id)
                        && entry.dirty.is_some()
                        && !entry.queued
                    {
                        entry.queued = true;
                        dirty.push(id);
                    }
                }
                shared.written.notify_all();
                if state.stop {
                    return;
                }
                state = match shared.wake.wait_timeout(state, Duration::from_secs(1)) {
                    Ok((s, _)) => s,
                    Err(_) => return,
                };
                continue;
            }
        }
        shared.written.notify_all();
    }
}

fn write_batch(conn: &mut rusqlite::Connection, batch: &[Pending]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut upsert = tx.prepare_cached(
            "INSERT INTO kv (store, key, value) VALUES (?1, ?2, ?3)
             ON CONFLICT (store, key) DO UPDATE SET value = excluded.value",
        )?;
        let mut delete = tx.prepare_cached("DELETE FROM kv WHERE store = ?1 AND key = ?2")?;
        for ((store, key), value, _) in batch {
            match value {
                Some(value) => upsert.execute(params![store, key, value])?,
                None => delete.execute(params![store, key])?,
            };
        }
    }
    tx.commit()
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(mut state) = self.shared.state.lock() {
            state.stop = true;
        }
        self.shared.wake.notify_all();
        if let Ok(mut writer) = self.writer.lock()
            && let Some(writer) = writer.take()
        {
            let _ = writer.join();
        }
        if let Ok(mut open) = open_stores().lock() {
            open.retain(|_, weak| weak.strong_count() > 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("toaster-sqlite-kv-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// What SQLite itself holds, read by a connection of its own.
    fn on_disk(path: &Path, store: &str, key: &str) -> Option<Vec<u8>> {
        let c = rusqlite::Connection::open(path).unwrap();
        c.query_row(
            "SELECT value FROM kv WHERE store = ?1 AND key = ?2",
            params![store, key],
            |r| r.get(0),
        )
        .optional()
        .unwrap()
    }

    #[test]
    fn writes_are_read_back_at_once_and_reach_the_disk_within_the_interval() {
        let d = dir();
        let path = d.join("kv.sqlite");
        let kv = SqliteKv::open(&path).unwrap();
        kv.set("default", "k", b"v1").unwrap();
        assert_eq!(kv.get("default", "k").unwrap().as_deref(), Some(&b"v1"[..]));
        std::thread::sleep(FLUSH_INTERVAL * 6);
        assert_eq!(on_disk(&path, "default", "k").as_deref(), Some(&b"v1"[..]));
        kv.delete("default", "k").unwrap();
        assert_eq!(kv.get("default", "k").unwrap(), None);
        kv.flush().unwrap();
        assert_eq!(on_disk(&path, "default", "k"), None);
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn the_last_handle_writes_everything_before_it_goes() {
        let d = dir();
        let path = d.join("kv.sqlite");
        {
            let kv = SqliteKv::open(&path).unwrap();
            for i in 0..1000 {
                kv.set("default", &format!("k{i}"), b"x").unwrap();
            }
            kv.delete("default", "k7").unwrap();
        }
        assert_eq!(
            on_disk(&path, "default", "k999").as_deref(),
            Some(&b"x"[..])
        );
        assert_eq!(on_disk(&path, "default", "k7"), None);
        let kv = SqliteKv::open(&path).unwrap();
        assert_eq!(kv.keys("default").unwrap().len(), 999);
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn one_store_per_file_in_a_process_and_none_beside_another_process() {
        let d = dir();
        let path = d.join("kv.sqlite");
        let a = SqliteKv::open(&path).unwrap();
        let b = SqliteKv::open(&d.join(".").join("kv.sqlite")).unwrap();
        a.set("default", "k", b"from a").unwrap();
        assert_eq!(
            b.get("default", "k").unwrap().as_deref(),
            Some(&b"from a"[..])
        );
        // Another process holding the lock: the same flock from a second open file
        // description is what `toaster up` in another process would meet.
        let other = std::fs::File::open(&path).unwrap();
        // SAFETY: flock on a descriptor this test owns.
        let taken = unsafe { libc::flock(other.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        assert_ne!(taken, 0, "the store's lock must be exclusive");
        drop((a, b));
        // Once closed, the file can be opened again.
        let again = SqliteKv::open(&path).unwrap();
        assert_eq!(
            again.get("default", "k").unwrap().as_deref(),
            Some(&b"from a"[..])
        );
        let _ = std::fs::remove_dir_all(d);
    }

    /// A key changed again while the writer is writing its previous value: the newer
    /// value must reach the disk too (within the interval, and on flush), however
    /// often that happens. Rate windows and last-known values are such keys.
    #[test]
    fn a_key_changed_while_its_batch_is_written_still_reaches_the_disk() {
        let d = dir();
        let path = d.join("kv.sqlite");
        let kv = SqliteKv::open(&path).unwrap();
        // Many flush intervals of back-to-back changes: most batches are written while
        // the key changes again.
        let until = std::time::Instant::now() + FLUSH_INTERVAL * 8;
        let mut last = 0u64;
        while std::time::Instant::now() < until {
            last += 1;
            kv.set("default", "hot", last.to_string().as_bytes())
                .unwrap();
            kv.set("default", &format!("cold{}", last % 64), b"x")
                .unwrap();
        }
        let expected = last.to_string().into_bytes();
        std::thread::sleep(FLUSH_INTERVAL * 6);
        assert_eq!(
            on_disk(&path, "default", "hot"),
            Some(expected.clone()),
            "the last value is not on disk {:?} after the interval",
            FLUSH_INTERVAL * 6
        );
        for round in 0..200u64 {
            kv.set("default", "hot", format!("again{round}").as_bytes())
                .unwrap();
        }
        kv.flush().unwrap();
        assert_eq!(
            on_disk(&path, "default", "hot").as_deref(),
            Some(&b"again199"[..])
        );
        drop(kv);
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn keys_include_changes_not_yet_written() {
        let d = dir();
        let path = d.join("kv.sqlite");
        let kv = SqliteKv::open(&path).unwrap();
        kv.set("default", "old", b"1").unwrap();
        kv.set("default", "gone", b"1").unwrap();
        kv.flush().unwrap();
        kv.set("default", "new", b"2").unwrap();
        kv.delete("default", "gone").unwrap();
        kv.set("other", "elsewhere", b"3").unwrap();
        assert_eq!(kv.keys("default").unwrap(), vec!["new", "old"]);
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn the_map_stays_bounded_and_dropped_entries_are_read_again() {
        let d = dir();
        let path = d.join("kv.sqlite");
        let kv = SqliteKv::open(&path).unwrap();
        let value = vec![7u8; 64 * 1024];
        let n = MAX_CACHED_BYTES / value.len() * 2;
        for i in 0..n {
            kv.set("default", &format!("k{i}"), &value).unwrap();
            if i % 256 == 0 {
                kv.flush().unwrap();
            }
        }
        kv.flush().unwrap();
        kv.set("default", "last", b"1").unwrap();
        let bytes = kv.state().unwrap().bytes;
        assert!(bytes <= MAX_CACHED_BYTES + value.len() * 2, "{bytes}");
        for i in [0, n / 2, n - 1] {
            assert_eq!(
                kv.get("default", &format!("k{i}")).unwrap(),
                Some(value.clone())
            );
        }
        let _ = std::fs::remove_dir_all(d);
    }
}
