//! Committing an appended batch (steps 2 to 4 of the parent module's protocol): check for
//! rivals, withdraw or mark, and clear batches abandoned by a killed writer.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::layout::*;
use super::{S3AuditStore, RIVAL_PATIENCE};
use crate::error::{Error, Result};
use crate::objstore::Created;

impl S3AuditStore {
    /// Steps 2 to 4 of an append (see the module doc): our batch `tag` of `count` entries at
    /// `first_seq` was created after `started`; it is committed, or deleted and the append is
    /// an [`Error::AuditConflict`]. `seen` holds when each unmarked rival was first seen.
    pub(super) async fn commit_after_create(
        &self,
        first_seq: u64,
        tag: u64,
        count: u64,
        started: Instant,
        seen: &mut HashMap<String, Instant>,
    ) -> Result<()> {
        let name = entry_name(first_seq, tag);
        // Step 2: any rival at our position makes us withdraw, unless all are abandoned.
        loop {
            let listed = self.tags_at(ENTRIES, first_seq).await?;
            let rivals: Vec<u64> = listed.iter().copied().filter(|&t| t != tag).collect();
            if !listed.contains(&tag) {
                // Deleted as abandoned while we stalled (or a listing that lags our create):
                // nothing of ours is committed.
                tracing::warn!(batch = %name, "our audit batch is not listed after its create");
                return self.withdraw(first_seq, &name).await;
            }
            if rivals.is_empty() {
                break;
            }
            let marked = self.tags_at(COMMITS, first_seq).await?;
            let now = Instant::now();
            let mut lost = false;
            let mut in_flight = Vec::new();
            let mut abandoned = Vec::new();
            for rival in rivals {
                let rival_name = entry_name(first_seq, rival);
                if marked.contains(&rival) {
                    lost = true;
                    continue;
                }
                let first = *seen.entry(rival_name.clone()).or_insert(now);
                let age = now.duration_since(first);
                if age >= 2 * self.mark_deadline {
                    abandoned.push(rival_name);
                } else {
                    in_flight.push((rival, age));
                }
            }
            for rival_name in abandoned {
                // Unmarked for 2 × the deadline: its writer can never mark it.
                tracing::warn!(batch = %rival_name, "deleting an abandoned audit batch");
                self.site.delete(&rival_name).await?;
                seen.remove(&rival_name);
            }
            if lost || !in_flight.is_empty() {
                self.site.delete(&name).await?;
                // A rival in flight is usually marked (or withdrawn) within milliseconds: wait
                // for that, so the conflict reports its entries and the retry has a chance.
                // Not for one seen long ago (probably abandoned): refuse fast then.
                if !lost && in_flight.iter().all(|&(_, age)| age < RIVAL_PATIENCE) {
                    let rivals: Vec<u64> = in_flight.iter().map(|&(tag, _)| tag).collect();
                    self.await_rivals(first_seq, &rivals).await?;
                }
                return Err(Error::AuditConflict {
                    seq: first_seq,
                    len: self.refresh_end().await?,
                });
            }
        }
        // Step 3: a writer that stalled past its deadline must not commit.
        if started.elapsed() >= self.mark_deadline {
            tracing::warn!(batch = %name, "the audit append missed its marking deadline");
            return self.withdraw(first_seq, &name).await;
        }
        // Step 4: mark, then make sure nobody judged our batch abandoned meanwhile.
        let marker = commit_name(first_seq, tag);
        match self.site.create(&marker, &[BODY_FORMAT]).await? {
            Created::New | Created::AlreadyExists => {}
        }
        if self.site.get_raw(&name).await?.is_none() {
            tracing::warn!(batch = %name, "our audit batch was deleted before its marker");
            self.site.delete(&marker).await?;
            return self.withdraw(first_seq, &name).await;
        }
        let end = first_seq + count;
        {
            let mut known = self.lock();
            known.end = known.end.max(end);
        }
        seen.retain(|rival, _| entry_seq(rival).is_ok_and(|at| at >= end));
        if let Err(e) = self
            .site
            .replace(HEAD, &encode_head(first_seq, end, tag))
            .await
        {
            tracing::warn!(error = %e, "could not update the audit head hint");
        }
        Ok(())
    }

    /// Waits, at most [`RIVAL_PATIENCE`], until none of the batches `rivals` at `start` is
    /// there unmarked any more.
    pub(super) async fn await_rivals(&self, start: u64, rivals: &[u64]) -> Result<()> {
        let begun = Instant::now();
        let mut nap = Duration::from_millis(1);
        while begun.elapsed() < RIVAL_PATIENCE {
            tokio::time::sleep(nap).await;
            nap = (nap * 2).min(Duration::from_millis(20));
            let listed = self.tags_at(ENTRIES, start).await?;
            let pending: Vec<u64> = rivals
                .iter()
                .copied()
                .filter(|tag| listed.contains(tag))
                .collect();
            if pending.is_empty() {
                return Ok(());
            }
            let marked = self.tags_at(COMMITS, start).await?;
            if pending.iter().any(|tag| marked.contains(tag)) {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Deletes our unmarked batch `name` at `first_seq` and reports the conflict.
    pub(super) async fn withdraw(&self, first_seq: u64, name: &str) -> Result<()> {
        self.site.delete(name).await?;
        Err(Error::AuditConflict {
            seq: first_seq,
            len: self.refresh_end().await?,
        })
    }
}
