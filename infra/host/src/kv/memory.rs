//! A backend that keeps its keys in memory, apart per label: for tests of the
//! interface and of what builds on it, with nothing on disk or on the network.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use futures::future::{BoxFuture, FutureExt};

use super::KvBackend;
use crate::bindings::key_value::Error;

/// Keys by `(label, key)`, lost when it is dropped.
#[derive(Default)]
pub struct MemoryKv {
    labels: Mutex<HashMap<String, BTreeMap<String, Vec<u8>>>>,
}

impl MemoryKv {
    fn with<T>(
        &self,
        f: impl FnOnce(&mut HashMap<String, BTreeMap<String, Vec<u8>>>) -> T,
    ) -> Result<T, Error> {
        let mut labels = self
            .labels
            .lock()
            .map_err(|_| Error::Other("the in-memory store is poisoned".into()))?;
        Ok(f(&mut labels))
    }
}

impl KvBackend for MemoryKv {
    fn get<'a>(
        &'a self,
        label: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, Error>> {
        let value = self.with(|l| l.get(label).and_then(|keys| keys.get(key).cloned()));
        std::future::ready(value).boxed()
    }

    fn set<'a>(
        &'a self,
        label: &'a str,
        key: &'a str,
        value: &'a [u8],
    ) -> BoxFuture<'a, Result<(), Error>> {
        let done = self.with(|l| {
            l.entry(label.to_string())
                .or_default()
                .insert(key.to_string(), value.to_vec());
        });
        std::future::ready(done).boxed()
    }

    fn delete<'a>(&'a self, label: &'a str, key: &'a str) -> BoxFuture<'a, Result<(), Error>> {
        let done = self.with(|l| {
            if let Some(keys) = l.get_mut(label) {
                keys.remove(key);
            }
        });
        std::future::ready(done).boxed()
    }

    fn exists<'a>(&'a self, label: &'a str, key: &'a str) -> BoxFuture<'a, Result<bool, Error>> {
        let found = self.with(|l| l.get(label).is_some_and(|keys| keys.contains_key(key)));
        std::future::ready(found).boxed()
    }

    fn keys<'a>(&'a self, label: &'a str) -> BoxFuture<'a, Result<Vec<String>, Error>> {
        let keys = self.with(|l| {
            l.get(label)
                .map(|keys| keys.keys().cloned().collect())
                .unwrap_or_default()
        });
        std::future::ready(keys).boxed()
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}
