//! Reading the committed log: where it ends (from the head hint and listings), and which
//! batch is committed at each position (module doc of the parent: only a batch with its commit
//! marker counts; contested and orphaned positions are waited out, then reported).

use std::collections::HashSet;
use std::time::Duration;

use super::layout::*;
use super::{
    S3AuditStore, LIST_PAGE, ORPHAN_FIRST_WAIT, ORPHAN_PATIENCE, POSITION_PAGE, VANISHED_RELISTS,
};
use crate::error::{Error, Result};
use crate::objstore::ObjectSite;

impl S3AuditStore {
    /// The end named by `audit/head` if the batch it names is committed with that end, else 0.
    pub(super) async fn hinted_end(&self) -> u64 {
        let (start, end, tag) = match self.site.get(HEAD).await {
            Ok(Some(body)) => match decode_head(&body) {
                Some(hint) => hint,
                None => {
                    tracing::warn!("the audit head is malformed: listing the whole log");
                    return 0;
                }
            },
            Ok(None) => return 0,
            Err(e) => {
                tracing::warn!(error = %e, "the audit head does not open: listing the whole log");
                return 0;
            }
        };
        let name = entry_name(start, tag);
        let committed = match self.committed(start, start.saturating_add(1)).await {
            Ok(page) => page.batches.first() == Some(&(start, name.clone())),
            Err(_) => false,
        };
        if committed {
            if let Ok(Some(count)) = batch_count(&self.site, &name, start).await {
                if start + count == end {
                    return end;
                }
            }
        }
        tracing::warn!(
            start,
            end,
            "the audit head names no such committed batch: listing the whole log"
        );
        0
    }

    /// Lists the committed batches after the known end, checks that they tile, and moves the
    /// end.
    pub(super) async fn refresh_end(&self) -> Result<u64> {
        let mut end = self.lock().end;
        let mut from = end;
        // A committed batch is never deleted; if one is gone when read, list again (a marker
        // without its batch is then waited out or reported).
        let mut vanishings = 0;
        loop {
            let page = self.committed(from, u64::MAX).await?;
            let mut relist = false;
            for (start, name) in page.batches {
                if start != end {
                    return Err(Error::AuditCorrupt {
                        seq: end,
                        reason: format!(
                            "the batch after entry {end} starts at {start}: batches are missing or overlap"
                        ),
                    });
                }
                match batch_count(&self.site, &name, start).await? {
                    Some(count) => end = start + count,
                    None if vanishings < VANISHED_RELISTS => {
                        vanishings += 1;
                        relist = true;
                        break;
                    }
                    None => return Err(vanished(start)),
                }
            }
            if relist {
                from = end;
            } else if page.more {
                from = page.next;
            } else {
                break;
            }
        }
        let mut known = self.lock();
        known.end = known.end.max(end);
        Ok(known.end)
    }

    /// One page of the committed batches starting at `from` or later, in order, as (start,
    /// name): the readers' one view of the log. A marker without its batch before `until` is
    /// waited out (see the module doc).
    pub(super) async fn committed(&self, from: u64, until: u64) -> Result<BatchPage> {
        let mut wait = ORPHAN_FIRST_WAIT;
        let mut waited = Duration::ZERO;
        loop {
            let (page, orphan) = self.committed_page(from, until).await?;
            let Some(seq) = orphan else {
                return Ok(page);
            };
            if waited >= ORPHAN_PATIENCE {
                return Err(Error::AuditCorrupt {
                    seq,
                    reason: format!(
                        "committed batch missing: the commit marker at entry {seq} names a batch that has been gone for {ORPHAN_PATIENCE:?}"
                    ),
                });
            }
            let nap = wait.min(ORPHAN_PATIENCE - waited);
            tokio::time::sleep(nap).await;
            waited += nap;
            wait *= 2;
        }
    }

    /// One listing of markers and one of batches for [`Self::committed`], and the first
    /// position before `until` holding a marker without its batch.
    pub(super) async fn committed_page(
        &self,
        from: u64,
        until: u64,
    ) -> Result<(BatchPage, Option<u64>)> {
        // Markers first: a marker is created after its batch, so every batch whose marker is
        // listed here existed before the listing of batches began.
        let marks = self.list_raw(COMMITS, from, LIST_PAGE).await?;
        let batches = self.list_raw(ENTRIES, from, LIST_PAGE).await?;
        // A full page may end inside a position: only positions before its last are complete.
        let last_if_full =
            |listed: &[(u64, u64)]| (listed.len() == LIST_PAGE).then(|| listed[LIST_PAGE - 1].0);
        let complete_before = last_if_full(&marks)
            .into_iter()
            .chain(last_if_full(&batches))
            .min();
        if complete_before == Some(from) {
            return Err(Error::AuditCorrupt {
                seq: from,
                reason: format!("more than {LIST_PAGE} audit objects claim entry {from}"),
            });
        }
        let existing: HashSet<(u64, u64)> = batches.into_iter().collect();
        let mut page = BatchPage {
            more: complete_before.is_some(),
            next: complete_before.unwrap_or(u64::MAX),
            ..BatchPage::default()
        };
        for group in marks.chunk_by(|a, b| a.0 == b.0) {
            let start = group[0].0;
            if complete_before.is_some_and(|limit| start >= limit) {
                break;
            }
            let present: Vec<u64> = group
                .iter()
                .filter(|mark| existing.contains(mark))
                .map(|&(_, tag)| tag)
                .collect();
            if start >= until {
                if present.is_empty() {
                    continue;
                }
                page.beyond = Some(start);
                page.more = false;
                break;
            }
            if present.len() > 1 {
                return Err(Error::AuditCorrupt {
                    seq: start,
                    reason: format!(
                        "two committed batches claim entry {start}: the bucket was tampered with or the object store is broken"
                    ),
                });
            }
            if present.len() < group.len() {
                return Ok((page, Some(start)));
            }
            page.batches.push((start, entry_name(start, present[0])));
        }
        Ok((page, None))
    }

    /// Up to `limit` raw names in `folder` ([`ENTRIES`] or [`COMMITS`]) starting at `from` or
    /// later, as (start, tag), marked or not.
    pub(super) async fn list_raw(
        &self,
        folder: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, u64)>> {
        self.site
            .list(folder, position_offset(folder, from).as_deref(), limit)
            .await?
            .iter()
            .map(|listed| start_and_tag(&listed.name, folder))
            .collect()
    }

    /// The tags of every raw name in `folder` starting at exactly `start`.
    pub(super) async fn tags_at(&self, folder: &str, start: u64) -> Result<Vec<u64>> {
        let mut tags = Vec::new();
        let mut offset = position_offset(folder, start);
        loop {
            let listed = self
                .site
                .list(folder, offset.as_deref(), POSITION_PAGE)
                .await?;
            for object in &listed {
                let (at, tag) = start_and_tag(&object.name, folder)?;
                if at != start {
                    return Ok(tags);
                }
                tags.push(tag);
            }
            match listed.last() {
                Some(last) if listed.len() == POSITION_PAGE => offset = Some(last.name.clone()),
                _ => return Ok(tags),
            }
        }
    }
}

/// One page of [`S3AuditStore::committed`].
#[derive(Debug, Default)]
pub(super) struct BatchPage {
    /// (start, name) of the committed batches listed before `until`, in order.
    pub(super) batches: Vec<(u64, String)>,
    /// The first committed start at or after `until`, if the listing reached one.
    pub(super) beyond: Option<u64>,
    /// Whether committed batches before `until` may follow the last one returned ...
    pub(super) more: bool,
    /// ... starting at this position or later (the next page's `from`).
    pub(super) next: u64,
}

/// The count of entries in the batch `name` starting at `start`, or `None` if there is none.
pub(super) async fn batch_count(site: &ObjectSite, name: &str, start: u64) -> Result<Option<u64>> {
    let Some(body) = site.get(name).await.map_err(|e| corrupt(start, e))? else {
        return Ok(None);
    };
    Ok(Some(decode_batch(start, &body)?.len() as u64))
}
