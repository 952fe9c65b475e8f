//! An in-memory [`ShareStore`] for tests and demos: nothing survives the process.
//!
//! It stores the same encoded values as the durable backends (see `codec`), so the conformance
//! suite exercises the shared format and its corruption checks here too.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use bunsan_protocol::envelope::ShareEnvelope;
use bunsan_protocol::message::{ListEntry, PutOutcome};
use bunsan_protocol::RecordKey;

use super::codec::{self, Decision, Head};
use super::{Counters, ShareStore, StoreStats};
use crate::error::Result;

type Map = BTreeMap<Vec<u8>, Arc<Vec<u8>>>;

/// A share store held in a `BTreeMap` behind a mutex. Cloning gives another handle to the same
/// map.
#[derive(Clone, Default)]
pub struct MemoryStore {
    // Values are behind `Arc` so a get copies a pointer, not a 64 MiB share, under the lock.
    map: Arc<Mutex<Map>>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for MemoryStore {
    // The map holds share bytes: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("stats", &self.counters.snapshot())
            .finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A new handle over the same map with counters recomputed from it, as if the process had
    /// restarted with the map on disk. The conformance suite uses it for its reopen test.
    pub fn reopen(&self) -> Self {
        let counters = Counters::default();
        for (key, value) in self.lock().iter() {
            if let Ok(head) = codec::head(key, value) {
                counters.replace(None, &head);
            }
        }
        Self {
            map: self.map.clone(),
            counters: Arc::new(counters),
        }
    }

    /// Overwrites the raw stored bytes of `key`, bypassing every check: for corruption tests.
    #[doc(hidden)]
    pub fn insert_raw(&self, key: &[u8], value: &[u8]) {
        self.lock().insert(key.to_vec(), Arc::new(value.to_vec()));
    }

    fn lock(&self) -> MutexGuard<'_, Map> {
        // A panic while holding the lock cannot leave the map half-updated (every mutation is
        // one insert), so a poisoned lock is still safe to use.
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl ShareStore for MemoryStore {
    async fn put(&self, envelope: &ShareEnvelope) -> Result<PutOutcome> {
        let value = codec::encode(envelope)?;
        let head = Head::of(envelope);
        let key = &envelope.header.key;
        let mut map = self.lock();
        let current = map.get(key.as_bytes()).map(|v| v.as_slice());
        match codec::decide(key, current, &head, &value)? {
            Decision::Keep(outcome) => Ok(outcome),
            Decision::Write { replaced } => {
                map.insert(key.as_bytes().to_vec(), Arc::new(value));
                self.counters.replace(replaced.as_ref(), &head);
                Ok(PutOutcome::Stored)
            }
        }
    }

    async fn get(&self, key: &RecordKey) -> Result<Option<ShareEnvelope>> {
        let value = self.lock().get(key.as_bytes()).cloned();
        value
            .map(|value| codec::decode(key.as_bytes(), &value))
            .transpose()
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&RecordKey>,
        limit: usize,
    ) -> Result<Vec<ListEntry>> {
        let map = self.lock();
        let lower = match start_after {
            Some(after) if after.as_bytes() >= prefix.as_bytes() => {
                Bound::Excluded(after.as_bytes().to_vec())
            }
            _ => Bound::Included(prefix.as_bytes().to_vec()),
        };
        map.range((lower, Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix.as_bytes()))
            .take(limit)
            .map(|(key, value)| codec::list_entry(key, value))
            .collect()
    }

    async fn stats(&self) -> Result<StoreStats> {
        Ok(self.counters.snapshot())
    }

    async fn flush(&self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::conformance::{self, Harness};
    use super::*;

    struct MemoryHarness(MemoryStore);

    #[async_trait]
    impl Harness for MemoryHarness {
        async fn open(&self) -> Arc<dyn ShareStore> {
            Arc::new(self.0.clone())
        }

        async fn reopen(&self, store: Arc<dyn ShareStore>) -> Arc<dyn ShareStore> {
            drop(store);
            Arc::new(self.0.reopen())
        }

        async fn corrupt(&self, key: &RecordKey, raw: &[u8]) {
            self.0.insert_raw(key.as_bytes(), raw);
        }
    }

    #[tokio::test]
    async fn memory_store_passes_the_conformance_suite() {
        conformance::run_all(|| MemoryHarness(MemoryStore::new())).await;
    }
}
