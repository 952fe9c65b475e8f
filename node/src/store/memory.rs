//! An in-memory [`ShareStore`] for tests and demos: nothing survives the process.
//!
//! It stores the same encoded values as the durable backends (see `codec`), so the conformance
//! suite exercises the shared format and its corruption checks here too.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use bunsan_protocol::envelope::ShareEnvelope;
use bunsan_protocol::message::{ListEntry, PutOutcome, RetainedVersion};
use bunsan_protocol::repair::SessionId;
use bunsan_protocol::{RecordKey, Version};

use super::codec::{self, Decision, Head};
use super::{retained, Counters, InventoryPage, ShareStore, StoreStats};
use crate::error::Result;

type Map = BTreeMap<Vec<u8>, Arc<Vec<u8>>>;
/// Per key, the older versions kept under the head (module `retained`), oldest first.
type Older = BTreeMap<Vec<u8>, Vec<(Head, Arc<Vec<u8>>)>>;

/// A share store held in a `BTreeMap` behind a mutex. Cloning gives another handle to the same
/// map.
#[derive(Clone, Default)]
pub struct MemoryStore {
    // Values are behind `Arc` so a get copies a pointer, not a 64 MiB share, under the lock.
    map: Arc<Mutex<Map>>,
    /// Always locked after `map`, never alone while writing.
    older: Arc<Mutex<Older>>,
    /// Staged refresh envelopes, in the form of `codec::encode_staged`.
    staged: Arc<Mutex<Map>>,
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
            older: self.older.clone(),
            staged: self.staged.clone(),
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

    fn lock_older(&self) -> MutexGuard<'_, Older> {
        self.older.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The kept versions of `key` under the head `top`.
    fn kept(&self, key: &[u8], top: Option<&Head>) -> Vec<(Head, Arc<Vec<u8>>)> {
        let items = self.lock_older().get(key).cloned().unwrap_or_default();
        retained::normalize(items, top)
    }

    fn lock_staged(&self) -> MutexGuard<'_, Map> {
        self.staged.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn put_with(&self, envelope: &ShareEnvelope, decide: codec::DecideFn) -> Result<PutOutcome> {
        let value = codec::encode(envelope)?;
        let head = Head::of(envelope);
        let key = &envelope.header.key;
        let mut map = self.lock();
        let current = map.get(key.as_bytes()).cloned();
        match decide(
            key,
            current.as_deref().map(|v| v.as_slice()),
            &head,
            envelope.epoch(),
            &value,
        )? {
            Decision::Keep(outcome) => Ok(outcome),
            Decision::Write {
                replaced,
                keep_replaced,
            } => {
                let mut older = self.lock_older();
                let mut items = older.remove(key.as_bytes()).unwrap_or_default();
                if let (true, Some(old), Some(value)) = (keep_replaced, replaced, current) {
                    items.push((old, value));
                }
                let items = retained::normalize(items, Some(&head));
                let kept = items.len() as u32;
                if !items.is_empty() {
                    older.insert(key.as_bytes().to_vec(), items);
                }
                map.insert(key.as_bytes().to_vec(), Arc::new(value));
                self.counters.replace(replaced.as_ref(), &head);
                Ok(match kept {
                    0 => PutOutcome::Stored,
                    retained => PutOutcome::StoredKeepingOlder { retained },
                })
            }
        }
    }
}

#[async_trait]
impl ShareStore for MemoryStore {
    async fn put(&self, envelope: &ShareEnvelope) -> Result<PutOutcome> {
        self.put_with(envelope, codec::decide)
    }

    async fn put_over_damage(&self, envelope: &ShareEnvelope) -> Result<PutOutcome> {
        self.put_with(envelope, codec::decide_over_damage)
    }

    async fn get(&self, key: &RecordKey) -> Result<Option<ShareEnvelope>> {
        let value = self.lock().get(key.as_bytes()).cloned();
        value
            .map(|value| codec::decode(key.as_bytes(), &value))
            .transpose()
    }

    async fn get_held(
        &self,
        key: &RecordKey,
    ) -> Result<Option<(ShareEnvelope, Vec<RetainedVersion>)>> {
        let Some(envelope) = self.get(key).await? else {
            return Ok(None);
        };
        let kept = self.kept(key.as_bytes(), Some(&Head::of(&envelope)));
        Ok(Some((envelope, retained::listing(&kept))))
    }

    async fn get_version(
        &self,
        key: &RecordKey,
        version: Version,
    ) -> Result<Option<ShareEnvelope>> {
        let Some(envelope) = self.get(key).await? else {
            return Ok(None);
        };
        if envelope.header.version == version {
            return Ok(Some(envelope));
        }
        self.kept(key.as_bytes(), Some(&Head::of(&envelope)))
            .into_iter()
            .find(|(head, _)| head.version == version)
            .map(|(_, value)| codec::decode(key.as_bytes(), &value))
            .transpose()
    }

    async fn drop_tombstone(&self, key: &RecordKey, version: Version) -> Result<bool> {
        let mut map = self.lock();
        let head = map
            .get(key.as_bytes())
            .and_then(|value| codec::head(key.as_bytes(), value).ok());
        match head {
            Some(head) if head.tombstone && head.version == version => {
                map.remove(key.as_bytes());
                self.lock_older().remove(key.as_bytes());
                self.counters.forget(&head);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn commit(&self, key: &RecordKey, version: Version) -> Result<u32> {
        let map = self.lock();
        let top = map
            .get(key.as_bytes())
            .and_then(|value| codec::head(key.as_bytes(), value).ok());
        let mut older = self.lock_older();
        let mut items = retained::normalize(
            older.remove(key.as_bytes()).unwrap_or_default(),
            top.as_ref(),
        );
        let dropped = retained::commit(&mut items, top.as_ref(), version);
        if !items.is_empty() {
            older.insert(key.as_bytes().to_vec(), items);
        }
        Ok(dropped)
    }

    async fn head(&self, key: &RecordKey) -> Result<Option<ListEntry>> {
        let map = self.lock();
        map.get(key.as_bytes())
            .map(|value| codec::list_entry(key.as_bytes(), value))
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

    async fn inventory(
        &self,
        start_after: Option<&RecordKey>,
        limit: usize,
        bytes_max: u64,
    ) -> Result<InventoryPage> {
        let map = self.lock();
        let lower = match start_after {
            Some(after) => Bound::Excluded(after.as_bytes().to_vec()),
            None => Bound::Unbounded,
        };
        let mut page = InventoryPage::default();
        let mut bytes = 0u64;
        let mut rows = map.range((lower, Bound::Unbounded));
        loop {
            if page.entries.len() >= limit || bytes >= bytes_max {
                return Ok(page);
            }
            let Some((key, value)) = rows.next() else {
                page.exhausted = true;
                return Ok(page);
            };
            bytes += value.len() as u64;
            let Some(mut entry) = codec::inventory_entry(key, value) else {
                continue;
            };
            if let Ok(top) = codec::head(key, value) {
                entry.kept = retained::listing(&self.kept(key, Some(&top)));
            }
            page.entries.push(entry);
        }
    }

    async fn stage(&self, refresh_id: SessionId, envelope: &ShareEnvelope) -> Result<()> {
        let value = codec::encode_staged(refresh_id, envelope)?;
        self.lock_staged()
            .insert(envelope.header.key.as_bytes().to_vec(), Arc::new(value));
        Ok(())
    }

    async fn staged(&self, key: &RecordKey) -> Result<Option<(SessionId, ShareEnvelope)>> {
        let value = self.lock_staged().get(key.as_bytes()).cloned();
        value
            .map(|value| codec::decode_staged(key.as_bytes(), &value))
            .transpose()
    }

    async fn unstage(&self, key: &RecordKey, refresh_id: SessionId) -> Result<bool> {
        let mut staged = self.lock_staged();
        let ours = staged
            .get(key.as_bytes())
            .is_some_and(|value| value.get(..16) == Some(&refresh_id.0[..]));
        if ours {
            staged.remove(key.as_bytes());
        }
        Ok(ours)
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
