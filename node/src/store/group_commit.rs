//! Group commit for stores whose durability point is a whole-database flush (sled).

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

use crate::error::Result;

/// Group commit: makes writes durable with as few flushes as possible.
///
/// Each caller takes a ticket after its write is in sled's memory. One caller at a time (the
/// leader, holding `leader`) reads the highest ticket handed out, flushes, records that ticket
/// as durable, and wakes every waiter at once; waiters whose ticket is covered return, and one
/// of the others leads the next flush. A burst of N concurrent puts thus costs about two
/// flushes, not N.
///
/// The wake-up is a broadcast ([`Notify::notify_waiters`]) rather than a queue on the leader
/// lock: with a queue, the 64 puts of a burst were released one after another, each waiting
/// for the previous one to be scheduled, which on a busy machine added milliseconds to every
/// put of the burst.
pub(crate) struct GroupCommit {
    db: sled::Db,
    requested: AtomicU64,
    durable: AtomicU64,
    leader: tokio::sync::Mutex<()>,
    flushed: Notify,
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
            flushed: Notify::new(),
            flushes: AtomicU64::new(0),
        }
    }

    /// Returns once everything this caller wrote (or observed) before calling is on disk.
    pub(crate) async fn durable(&self) -> Result<()> {
        // SeqCst throughout: the ticket order must match the order writes reached sled.
        let ticket = self.requested.fetch_add(1, Ordering::SeqCst) + 1;
        loop {
            // Registered before the checks below, so a flush that ends in between still wakes
            // this caller.
            let flushed = self.flushed.notified();
            tokio::pin!(flushed);
            flushed.as_mut().enable();
            if self.durable.load(Ordering::SeqCst) >= ticket {
                return Ok(());
            }
            let Ok(_leader) = self.leader.try_lock() else {
                // Another caller is flushing; its flush may or may not cover this ticket.
                flushed.await;
                continue;
            };
            if self.durable.load(Ordering::SeqCst) >= ticket {
                return Ok(());
            }
            // Every ticket up to `covered` belongs to a write already in sled's memory, so this
            // one flush makes all of them durable.
            let covered = self.requested.load(Ordering::SeqCst);
            // `flush` on tokio's blocking pool rather than sled's `flush_async`: sled runs that
            // on its own pool, whose threads end after a few tasks, so a node under load started
            // a new OS thread every few flushes.
            let db = self.db.clone();
            let flush = match tokio::task::spawn_blocking(move || db.flush()).await {
                Ok(flushed) => flushed.map_err(crate::Error::from),
                Err(e) => Err(crate::Error::StorageTask {
                    reason: e.to_string(),
                }),
            };
            if flush.is_ok() {
                self.flushes.fetch_add(1, Ordering::Relaxed);
                self.durable.fetch_max(covered, Ordering::SeqCst);
            }
            drop(_leader);
            // Woken on failure too: each waiter then tries a flush of its own.
            self.flushed.notify_waiters();
            flush?;
            return Ok(());
        }
    }
}
