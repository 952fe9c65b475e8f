//! Where a node's audit log lives: the [`AuditStore`] trait and the in-memory backend.
//!
//! The trait is deliberately the shape of an object store with conditional writes (numbered
//! objects, "create only if absent"), so that an S3-compatible backend with `If-None-Match`
//! can implement it: entries are append-only and numbered, an append names where it starts and
//! fails if the store does not end there, and every write is durable before it returns.
//! Checkpoints and witness state are small named values that may be replaced (cosignatures are
//! added to a checkpoint after it was signed).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use bunsan_protocol::audit::AuditRecord;

use crate::error::{Error, Result};

/// A node's audit storage. Implementations are shared between tasks (`Arc<dyn AuditStore>`).
///
/// Invariants every backend keeps: entries are numbered 0, 1, 2… without gaps; an entry once
/// appended is never changed or removed through this trait; every method that writes returns
/// only once the write is durable (for the memory backend: visible).
#[async_trait]
pub trait AuditStore: Send + Sync + 'static {
    /// Appends `records` as entries `first_seq..`, all or nothing, durably. Fails with
    /// [`Error::AuditConflict`] unless the store holds exactly `first_seq` entries.
    async fn append(&self, first_seq: u64, records: &[AuditRecord]) -> Result<()>;

    /// Up to `limit` consecutive entries from `from` (fewer at the end of the log).
    async fn read(&self, from: u64, limit: usize) -> Result<Vec<AuditRecord>>;

    /// How many entries the store holds.
    async fn size(&self) -> Result<u64>;

    /// Stores (or replaces) the signed checkpoint note of tree size `size`, durably.
    async fn put_checkpoint(&self, size: u64, note: &str) -> Result<()>;

    /// The checkpoint note of tree size `size`, if one was stored.
    async fn checkpoint(&self, size: u64) -> Result<Option<String>>;

    /// Up to `limit` checkpoint notes of size ≥ `from_size`, smallest size first.
    async fn checkpoints(&self, from_size: u64, limit: usize) -> Result<Vec<String>>;

    /// The checkpoint note with the largest size, if any.
    async fn latest_checkpoint(&self) -> Result<Option<String>>;

    /// Stores (or replaces) the newest checkpoint of `log` this node cosigned, durably.
    async fn put_witnessed(&self, log: &str, note: &str) -> Result<()>;

    /// Every log this node witnesses, with the newest checkpoint it cosigned, by log name.
    async fn witnessed(&self) -> Result<Vec<(String, String)>>;
}

#[derive(Default)]
struct Memory {
    entries: Vec<AuditRecord>,
    checkpoints: BTreeMap<u64, String>,
    witnessed: BTreeMap<String, String>,
}

/// An [`AuditStore`] in memory, for tests and the memory node backend. Cloning gives another
/// handle to the same log; [`MemoryAuditStore::set_failing`] makes every write fail, to test
/// that a node refuses to release shares it cannot audit.
#[derive(Clone, Default)]
pub struct MemoryAuditStore {
    inner: Arc<Mutex<Memory>>,
    failing: Arc<AtomicBool>,
}

impl std::fmt::Debug for MemoryAuditStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryAuditStore")
            .field("entries", &self.lock().entries.len())
            .finish_non_exhaustive()
    }
}

impl MemoryAuditStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// From now on every write fails (`true`) or works again (`false`).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Removes every stored checkpoint, bypassing the trait: for tests of a node that rewrites
    /// its own log.
    #[doc(hidden)]
    pub fn remove_checkpoints(&self) {
        self.lock().checkpoints.clear();
    }

    fn lock(&self) -> MutexGuard<'_, Memory> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn check_writable(&self) -> Result<()> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(Error::AuditUnavailable {
                reason: "the audit store refuses writes (injected failure)".to_owned(),
            });
        }
        Ok(())
    }
}

#[async_trait]
impl AuditStore for MemoryAuditStore {
    async fn append(&self, first_seq: u64, records: &[AuditRecord]) -> Result<()> {
        self.check_writable()?;
        let mut memory = self.lock();
        let len = memory.entries.len() as u64;
        if first_seq != len {
            return Err(Error::AuditConflict {
                seq: first_seq,
                len,
            });
        }
        memory.entries.extend_from_slice(records);
        Ok(())
    }

    async fn read(&self, from: u64, limit: usize) -> Result<Vec<AuditRecord>> {
        let memory = self.lock();
        let from = usize::try_from(from).unwrap_or(usize::MAX);
        Ok(memory
            .entries
            .iter()
            .skip(from)
            .take(limit)
            .cloned()
            .collect())
    }

    async fn size(&self) -> Result<u64> {
        Ok(self.lock().entries.len() as u64)
    }

    async fn put_checkpoint(&self, size: u64, note: &str) -> Result<()> {
        self.check_writable()?;
        self.lock().checkpoints.insert(size, note.to_owned());
        Ok(())
    }

    async fn checkpoint(&self, size: u64) -> Result<Option<String>> {
        Ok(self.lock().checkpoints.get(&size).cloned())
    }

    async fn checkpoints(&self, from_size: u64, limit: usize) -> Result<Vec<String>> {
        Ok(self
            .lock()
            .checkpoints
            .range(from_size..)
            .take(limit)
            .map(|(_, note)| note.clone())
            .collect())
    }

    async fn latest_checkpoint(&self) -> Result<Option<String>> {
        Ok(self
            .lock()
            .checkpoints
            .last_key_value()
            .map(|(_, note)| note.clone()))
    }

    async fn put_witnessed(&self, log: &str, note: &str) -> Result<()> {
        self.check_writable()?;
        self.lock()
            .witnessed
            .insert(log.to_owned(), note.to_owned());
        Ok(())
    }

    async fn witnessed(&self) -> Result<Vec<(String, String)>> {
        Ok(self
            .lock()
            .witnessed
            .iter()
            .map(|(log, note)| (log.clone(), note.clone()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct MemoryHarness(MemoryAuditStore);

    #[async_trait]
    impl super::super::conformance::Harness for MemoryHarness {
        async fn open(&self) -> Arc<dyn AuditStore> {
            Arc::new(self.0.clone())
        }

        async fn reopen(&self, store: Arc<dyn AuditStore>) -> Arc<dyn AuditStore> {
            drop(store);
            Arc::new(self.0.clone())
        }
    }

    #[tokio::test]
    async fn the_memory_store_passes_the_conformance_suite() {
        super::super::conformance::run_all(&MemoryHarness(MemoryAuditStore::new())).await;
    }

    #[tokio::test]
    async fn an_injected_failure_refuses_writes_but_not_reads() {
        let store = MemoryAuditStore::new();
        let record = AuditRecord {
            entry: vec![1],
            chain: [0; 32],
        };
        store
            .append(0, std::slice::from_ref(&record))
            .await
            .expect("append");
        store.set_failing(true);
        assert!(matches!(
            store.append(1, std::slice::from_ref(&record)).await,
            Err(Error::AuditUnavailable { .. })
        ));
        assert!(store.put_checkpoint(1, "x").await.is_err());
        assert_eq!(store.read(0, 10).await.expect("read"), vec![record]);
    }
}
