//! Tombstone compaction: a tombstone beats late writes of older versions for as long as it is
//! kept, and is then removed so deleted records leave nothing behind, not even their key.
//!
//! **Why it is safe.** A tombstone is removed only once its version is older than the
//! retention (`[store] tombstone_retention_secs`), and while compaction is on the node refuses
//! puts and deletes whose version is older than that (see [`Compaction::admits`]): a write so
//! late would otherwise find no tombstone and bring the record back. Repair re-sends only
//! versions that other nodes still hold, so it brings back nothing a tombstone removed
//! everywhere.
//!
//! Every removal is audited (`compact-tombstone`) before it happens, so an auditor can tell a
//! compacted record from one that vanished.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bunsan_protocol::audit::Outcome;
use bunsan_protocol::{RecordKey, RequestId, Version};
use tokio::sync::watch;

use crate::audit::{AuditEvent, AuditLog};
use crate::error::Result;
use crate::store::ShareStore;

/// Keys read per listing page while looking for old tombstones.
const PAGE: usize = 1000;

/// The retention rule, shared by the compaction loop and the handler's admission check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compaction {
    /// How long a tombstone is kept.
    pub retention: Duration,
}

impl Compaction {
    /// The clock (µs since the epoch) below which versions are past retention, `now` being
    /// the current time.
    pub fn cutoff_micros(&self, now: SystemTime) -> u64 {
        let now = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        now.saturating_sub(self.retention.as_micros() as u64)
    }

    /// Whether a write of `version` may be stored now: refused when it is older than the
    /// retention, since its record's tombstone may already be compacted.
    pub fn admits(&self, version: Version, now: SystemTime) -> bool {
        version.clock_micros >= self.cutoff_micros(now)
    }
}

/// One pass: removes every tombstone older than the retention, each audited first. Returns
/// how many were removed.
pub async fn compact_once(
    store: &dyn ShareStore,
    audit: &AuditLog,
    rule: Compaction,
    now: SystemTime,
) -> Result<u64> {
    let cutoff = rule.cutoff_micros(now);
    let mut start_after: Option<RecordKey> = None;
    let mut removed = 0;
    loop {
        let page = store.list("", start_after.as_ref(), PAGE).await?;
        let Some(last) = page.last() else {
            return Ok(removed);
        };
        start_after = Some(last.key.clone());
        for entry in page.iter().filter(|e| e.tombstone) {
            if entry.version.clock_micros >= cutoff {
                continue;
            }
            let event = AuditEvent::maintenance(
                "compact-tombstone",
                &entry.key,
                entry.version,
                RequestId::random(&mut rand::rng()),
                Outcome::Allowed,
            );
            // Fail closed: a removal the log cannot record does not happen.
            audit.append(event).await?;
            if store.drop_tombstone(&entry.key, entry.version).await? {
                removed += 1;
            }
        }
        if page.len() < PAGE {
            return Ok(removed);
        }
    }
}

/// Runs [`compact_once`] every `interval` until `stopped` turns true; failures are logged
/// and retried at the next pass.
pub async fn compaction_loop(
    store: Arc<dyn ShareStore>,
    audit: Arc<AuditLog>,
    rule: Compaction,
    interval: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stopped.changed() => return,
        }
        if *stopped.borrow() {
            return;
        }
        match compact_once(&*store, &audit, rule, SystemTime::now()).await {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, "tombstones past their retention compacted"),
            Err(e) => tracing::warn!(error = %e, "tombstone compaction failed; retried next pass"),
        }
    }
}

#[cfg(test)]
mod tests {
    use bunsan_protocol::{ShareIndex, WriterId};

    use super::*;
    use crate::store::conformance::{sample_share, sample_tombstone};
    use crate::store::memory::MemoryStore;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn version(secs: u64) -> Version {
        Version {
            clock_micros: secs * 1_000_000,
            writer: WriterId(1),
        }
    }

    #[tokio::test]
    async fn removes_only_tombstones_past_retention_and_audits_each() {
        let store = MemoryStore::new();
        let audit = AuditLog::memory("node-1");
        let index = ShareIndex::new(1).expect("index");
        let key = |name: &str| RecordKey::new(name).expect("key");
        store
            .put(&sample_tombstone(key("old"), version(100), index))
            .await
            .expect("put");
        store
            .put(&sample_tombstone(key("young"), version(950), index))
            .await
            .expect("put");
        store
            .put(&sample_share(key("live"), version(50), index, b"x"))
            .await
            .expect("put");
        let rule = Compaction {
            retention: Duration::from_secs(100),
        };
        let before = audit.size();
        assert_eq!(
            compact_once(&store, &audit, rule, at(1000))
                .await
                .expect("compact"),
            1
        );
        assert_eq!(audit.size(), before + 1);
        assert_eq!(store.get(&key("old")).await.expect("get"), None);
        assert!(store.get(&key("young")).await.expect("get").is_some());
        assert!(store.get(&key("live")).await.expect("get").is_some());
        // Writes older than the retention are refused; newer ones pass.
        assert!(!rule.admits(version(899), at(1000)));
        assert!(rule.admits(version(900), at(1000)));
    }
}
