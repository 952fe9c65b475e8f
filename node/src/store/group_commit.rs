//! Group commit for stores whose durability point is a whole-database flush (sled).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::Result;

/// Group commit: makes writes durable with as few fsyncs as possible.
///
/// Each caller takes a ticket after its write is in sled's memory. One caller at a time (the
/// leader, holding `leader`) reads the highest ticket handed out, flushes, and records that
/// ticket as durable; callers that queued behind it find their ticket covered and return
/// without flushing. A burst of N concurrent puts thus costs about two flushes, not N.
pub(crate) struct GroupCommit {
    db: sled::Db,
    requested: AtomicU64,
    durable: AtomicU64,
    leader: tokio::sync::Mutex<()>,
    /// Flushes performed, for metrics and the batching test.
    pub(crate) flushes: AtomicU64,
}

impl GroupCommit {
    pub(crate) fn new(db: sled::Db) -> Self {
        Self {
            db,
            requested: AtomicU64::new(0),
            durable: AtomicU64::new(0),
            leader: tokio::sync::Mutex::new(()),
            flushes: AtomicU64::new(0),
        }
    }

    /// Returns once everything this caller wrote (or observed) before calling is on disk.
    pub(crate) async fn durable(&self) -> Result<()> {
        // SeqCst throughout: the ticket order must match the order writes reached sled.
        let ticket = self.requested.fetch_add(1, Ordering::SeqCst) + 1;
        let _leader = self.leader.lock().await;
        if self.durable.load(Ordering::SeqCst) >= ticket {
            return Ok(());
        }
        // Every ticket up to `covered` belongs to a write already in sled's memory, so this
        // one flush makes all of them durable.
        let covered = self.requested.load(Ordering::SeqCst);
        self.db.flush_async().await?;
        self.flushes.fetch_add(1, Ordering::Relaxed);
        self.durable.fetch_max(covered, Ordering::SeqCst);
        Ok(())
    }
}
