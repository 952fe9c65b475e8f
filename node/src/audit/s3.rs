//! The [`AuditStore`] on a site's S3-compatible object store: several node processes of one
//! site share ONE log in one bucket, and a node restarted on a new machine continues it.
//!
//! Object layout below the site's prefix (bodies sealed by [`ObjectSite`], names in clear):
//!
//! ```text
//! audit/entries/<first seq, 20 digits>-<tag, 16 hex>   one appended batch, written once
//! audit/commits/<first seq, 20 digits>-<tag, 16 hex>   its commit marker (tiny), written once
//! audit/head                             hint: (start, end, tag) of a recent batch, replaced
//! audit/checkpoints/<size, 20 digits>    a signed checkpoint note, replaced (cosignatures)
//! audit/witnessed/<hashed log name>      (log, newest cosigned checkpoint of it), replaced
//! ```
//!
//! **Commit markers.** The tag is random per append attempt, so no name is ever written twice,
//! by anyone: nothing is overwritten even by a store that ignores conditional puts, and a name
//! seen twice is the same object. (Objects are still created with `If-None-Match: *`, harmless
//! where honoured (AWS S3, Ceph RGW, MinIO); Garage 2.5.0 ignores it and nothing relies on it.)
//! Readers trust only marked batches: entry position `s` is *committed* iff exactly one batch
//! starting at `s` has a marker and that batch exists. Unmarked batches (in flight, withdrawn
//! or abandoned) are ignored; the log's end is the first position without a committed batch.
//!
//! **An append** of entries `s..s+n`, `s` the cached end (a committed batch boundary, never
//! beyond the real end; any other `s` is checked against a fresh listing first):
//! 1. start a monotonic timer and create our batch `B = s-<tag>`;
//! 2. list the batches at `s`. Any rival (another tag) there, marked or not, and we withdraw:
//!    delete `B`, report [`Error::AuditConflict`] (the [`super::AuditLog`] catches up and
//!    retries); unless every unmarked rival is *abandoned* (below): those we delete, then list
//!    again;
//! 3. if [`MARK_DEADLINE`] has passed since step 1, withdraw: a writer that stalled must not
//!    commit, others may already have judged its batch abandoned;
//! 4. create our marker `M`, then GET `B`: if it is gone (deleted as abandoned while we
//!    stalled), delete `M` and withdraw. Only now has the append succeeded: the cached end
//!    and the head hint move, and the caller may answer its requests.
//!
//! Why nothing anyone read or acknowledged disappears (with listings that reflect every
//! completed create and delete, as AWS S3, Ceph RGW, MinIO and Garage give): of two writers at
//! one position, the one that lists later sees the other's batch (unless that one already
//! withdrew), so at most one passes step 2 and reaches step 4. A batch is read by others only
//! once marked (and only a batch that passed step 2, so it is the position's only one), and a
//! marked batch is never deleted by anyone: its own writer deletes `B` only before creating
//! `M`, and others delete only unmarked batches past the abandonment age, which a batch whose
//! writer met its deadline never reaches unmarked (next paragraph). The committed batches tile
//! the log: each starts where the previous one ends, because a writer learns where the log
//! ends only from committed batch boundaries. No lock or lease is needed, and clocks are only
//! ever compared with themselves (elapsed times), never across machines.
//!
//! **Abandoned batches.** A writer killed (or stalled) between steps 1 and 4 leaves an unmarked
//! batch that makes every later writer at `s` withdraw. Each store remembers, in memory, when
//! it first saw each unmarked rival name; one still there and still unmarked 2 ×
//! [`MARK_DEADLINE`] later (its own monotonic clock) is deleted: its writer started its timer
//! before that first sighting, so it is past its deadline and either never passes step 3 or
//! finds `B` gone in step 4. A writer dying between create and marker thus costs at most
//! 2 × [`MARK_DEADLINE`] (plus one append) of refused audit appends at that position, never a
//! stuck log. The [`super::AuditLog`]'s retries (at most 32 ms of jitter each) do not
//! bridge that: the requests of that window are refused with [`Error::AuditUnavailable`] (no
//! poisoning; the log stays open) and the first append after the window succeeds. Chosen over
//! waiting inside the store for the whole window so that no request waits long for the audit
//! log and the writer task is never blocked for 20 s. The store waits only briefly: a writer
//! that withdraws before an unmarked rival first seen less than `RIVAL_PATIENCE` (250 ms) ago
//! waits up to that long for it to be marked or withdrawn (normally milliseconds), so the
//! conflict reports the rival's entries and the retry does not just collide again; a rival seen
//! for longer (probably abandoned) gets a conflict at once.
//!
//! **Markers without a batch.** A withdrawing writer in step 4 deletes its marker right after
//! finding `B` gone, so readers wait such a marker out, listing again after 25 ms, 50 ms, ...
//! (about 2 s in all); one that outlasts that is reported as [`Error::AuditCorrupt`] ("committed
//! batch missing") at its position, as are two committed batches at one position (impossible
//! by the protocol: tampering or a broken store).
//!
//! **Costs.** An append is 2 creates (batch, marker) + 1 listing (2 when a rival is there) + 1
//! GET, plus the replace of the head hint (and a listing of the end when the cached end is
//! stale). Finding the end lists markers and batches after the cached end (two listings) plus
//! one GET per new batch (its count is inside the sealed body). At open the walk starts from
//! `audit/head`, written after each append: it may lag (writers race to replace it) but never
//! runs ahead of a committed batch, and it is checked against the batch it names (which must be
//! committed there, with that end); a missing, damaged or inconsistent hint falls back to
//! listing the whole log.
//!
//! **Reading.** A batch holds at most `log::BATCH_MAX` (512) entries, so the batch holding entry
//! `from` starts after `from − BATCH_MAX`: one listing of markers and one of batches from there
//! find it.
//!
//! What the bucket's operators see: sequence numbers, checkpoint sizes, batch sizes and timing.
//! Entry content, actors, record keys and witnessed logs' names are sealed or hashed. A body
//! copied under another name fails to open (the name is the AEAD associated data); damage is
//! reported as [`Error::AuditCorrupt`] with the sequence number, never panicked on. A marker's
//! body is sealed like every object's but never read: its presence is what counts (someone with
//! write access to the bucket can delete or add objects anyway; a chain or checkpoint that no
//! longer verifies is what reveals it).
//!
//! Remaining gaps: (a) the deadline argument assumes a marker's create lands within one
//! [`MARK_DEADLINE`] after its writer's step 3; `objstore` bounds every request, retries
//! included, at 4 s, below the deadline, so only a writer whose process stalls between step 3
//! and sending the create (a pause of seconds) can break it: the writer then finds `B` gone in
//! step 4 and withdraws (its requests are refused), but a reader that listed in that moment may
//! have read the batch; (b)
//! a writer killed in step 4 after finding `B` gone and before deleting `M` leaves a marker
//! without a batch ([`Error::AuditCorrupt`] until an operator deletes it); (c) two writers at
//! one position that see each other both withdraw, and a writer that lost catches up more
//! slowly than the winner starts its next batch, so heavy contention can use up the
//! [`super::AuditLog`]'s retries (64; requests refused, not the log poisoned).
//!
//! Not done: compaction of many small batches (a quiet node writes two objects per request,
//! and a full replay costs one GET per batch, eight at a time); cosignatures added by two
//! processes at once to one checkpoint can lose one (each process serialises only its own).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bunsan_protocol::audit::AuditRecord;
use futures_util::{StreamExt, TryStreamExt};

use super::log::BATCH_MAX;
use super::store::AuditStore;
use crate::error::{Error, Result};
use crate::objstore::{Created, ObjectSite};

const ENTRIES: &str = "audit/entries/";
const COMMITS: &str = "audit/commits/";
const CHECKPOINTS: &str = "audit/checkpoints/";
const WITNESSED: &str = "audit/witnessed/";
const HEAD: &str = "audit/head";

/// The format byte in front of every sealed body this module writes.
const BODY_FORMAT: u8 = 1;

/// Names asked for per listing request (S3 answers at most 1000 per page anyway).
const LIST_PAGE: usize = 1000;

/// Names asked for per listing of one position (there is rarely more than one).
const POSITION_PAGE: usize = 16;

/// How long a writer may take from creating its batch to creating its marker; one that took
/// longer withdraws. An unmarked batch seen for twice this long is abandoned (module doc).
///
/// 5 s: longer than any one S3 request may take (4 s with its retries, `objstore`), and short
/// because a process killed between batch and marker blocks the site's audit log, and so
/// every request of the site's other processes, for twice this long.
pub const MARK_DEADLINE: Duration = Duration::from_secs(5);

/// How long a withdrawing writer waits for an unmarked rival to be marked or withdrawn before
/// reporting its conflict (not at all for a rival first seen longer ago than this).
const RIVAL_PATIENCE: Duration = Duration::from_millis(250);

/// The first wait before listing a marker without a batch again (doubling after each listing).
const ORPHAN_FIRST_WAIT: Duration = Duration::from_millis(25);

/// How long in all a marker without a batch is waited for before it is reported as damage.
const ORPHAN_PATIENCE: Duration = Duration::from_secs(2);

/// How often a listing is repeated because a batch in it was deleted before it was read.
const VANISHED_RELISTS: u32 = 8;

/// Batches fetched at once while reading: enough to hide round trips, few enough not to be
/// throttled.
const GETS_IN_FLIGHT: usize = 8;

/// An [`AuditStore`] over an [`ObjectSite`]. Cheap to share; any number of instances, in any
/// number of processes, may serve one site's log at once.
pub struct S3AuditStore {
    site: ObjectSite,
    /// See [`MARK_DEADLINE`]; shorter in tests.
    mark_deadline: Duration,
    /// Held through an append (one append of this instance at a time), guarding when each
    /// unmarked rival batch name at the end of the log was first seen.
    appending: tokio::sync::Mutex<HashMap<String, Instant>>,
    known: Mutex<Known>,
}

/// What this process knows of the log; only ever moves forward.
#[derive(Debug, Default, Clone, Copy)]
struct Known {
    /// The end of the last committed batch seen (every batch before it is known to exist).
    end: u64,
    /// The largest checkpoint size seen.
    latest_checkpoint: Option<u64>,
}

impl std::fmt::Debug for S3AuditStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3AuditStore")
            .field("site", &self.site)
            .field("mark_deadline", &self.mark_deadline)
            .field("known", &*self.lock())
            .finish()
    }
}

/// Opens the site's audit log (creating nothing): finds its end from the head hint and a
/// listing of what follows it.
pub async fn open(site: ObjectSite) -> Result<Arc<S3AuditStore>> {
    open_with_deadline(site, MARK_DEADLINE).await
}

/// [`open`] with another [`MARK_DEADLINE`] (tests).
pub(crate) async fn open_with_deadline(
    site: ObjectSite,
    mark_deadline: Duration,
) -> Result<Arc<S3AuditStore>> {
    let store = S3AuditStore {
        site,
        mark_deadline,
        appending: tokio::sync::Mutex::new(HashMap::new()),
        known: Mutex::new(Known::default()),
    };
    let hinted = store.hinted_end().await;
    store.lock().end = hinted;
    store.refresh_end().await?;
    Ok(Arc::new(store))
}

impl S3AuditStore {
    /// The site this store writes to.
    pub fn site(&self) -> &ObjectSite {
        &self.site
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The end named by `audit/head` if the batch it names is committed with that end, else 0.
    async fn hinted_end(&self) -> u64 {
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
    async fn refresh_end(&self) -> Result<u64> {
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
    async fn committed(&self, from: u64, until: u64) -> Result<BatchPage> {
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
    async fn committed_page(&self, from: u64, until: u64) -> Result<(BatchPage, Option<u64>)> {
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
    async fn list_raw(&self, folder: &str, from: u64, limit: usize) -> Result<Vec<(u64, u64)>> {
        self.site
            .list(folder, position_offset(folder, from).as_deref(), limit)
            .await?
            .iter()
            .map(|listed| start_and_tag(&listed.name, folder))
            .collect()
    }

    /// The tags of every raw name in `folder` starting at exactly `start`.
    async fn tags_at(&self, folder: &str, start: u64) -> Result<Vec<u64>> {
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

    /// Steps 2 to 4 of an append (see the module doc): our batch `tag` of `count` entries at
    /// `first_seq` was created after `started`; it is committed, or deleted and the append is
    /// an [`Error::AuditConflict`]. `seen` holds when each unmarked rival was first seen.
    async fn commit_after_create(
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
    async fn await_rivals(&self, start: u64, rivals: &[u64]) -> Result<()> {
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
    async fn withdraw(&self, first_seq: u64, name: &str) -> Result<()> {
        self.site.delete(name).await?;
        Err(Error::AuditConflict {
            seq: first_seq,
            len: self.refresh_end().await?,
        })
    }

    async fn get_note(&self, name: &str, seq: u64) -> Result<Option<String>> {
        let Some(body) = self.site.get(name).await.map_err(|e| corrupt(seq, e))? else {
            return Ok(None);
        };
        match body.split_first() {
            Some((&BODY_FORMAT, note)) => {
                String::from_utf8(note.to_vec())
                    .map(Some)
                    .map_err(|_| Error::AuditCorrupt {
                        seq,
                        reason: format!("{name} is not UTF-8"),
                    })
            }
            _ => Err(Error::AuditCorrupt {
                seq,
                reason: format!("{name} has an unknown format"),
            }),
        }
    }

    async fn checkpoint_sizes(&self, after: Option<u64>, limit: usize) -> Result<Vec<u64>> {
        let offset = after.map(checkpoint_name);
        self.site
            .list(CHECKPOINTS, offset.as_deref(), limit)
            .await?
            .iter()
            .map(|listed| seq_in(&listed.name, CHECKPOINTS))
            .collect()
    }
}

#[async_trait]
impl AuditStore for S3AuditStore {
    async fn append(&self, first_seq: u64, records: &[AuditRecord]) -> Result<()> {
        if records.len() > BATCH_MAX {
            return Err(Error::AuditUnavailable {
                reason: format!(
                    "an append of {} entries exceeds the {BATCH_MAX} one stored batch holds",
                    records.len()
                ),
            });
        }
        let conflict = |len| Error::AuditConflict {
            seq: first_seq,
            len,
        };
        let mut seen = self.appending.lock().await;
        // The cached end is a committed batch boundary, never beyond the real end: appending
        // there either extends the log or collides (see the module doc). Any other start is
        // refused unless a fresh listing says it is the end (as is an empty append, which
        // writes no object and so can only be checked against a listing).
        if first_seq != self.lock().end || records.is_empty() {
            let end = self.refresh_end().await?;
            if first_seq != end {
                return Err(conflict(end));
            }
        }
        if records.is_empty() {
            return Ok(());
        }
        seen.retain(|rival, _| entry_seq(rival).is_ok_and(|at| at >= first_seq));
        // A fresh tag per attempt: no name is ever written twice.
        let tag: u64 = rand::random();
        let name = entry_name(first_seq, tag);
        let started = Instant::now();
        match self.site.create(&name, &encode_batch(records)).await? {
            Created::New => {}
            // 64 random bits met another attempt's: leave that batch alone.
            Created::AlreadyExists => return Err(conflict(self.refresh_end().await?)),
        }
        self.commit_after_create(first_seq, tag, records.len() as u64, started, &mut seen)
            .await
    }

    async fn read(&self, from: u64, limit: usize) -> Result<Vec<AuditRecord>> {
        let until = from.saturating_add(limit as u64);
        if limit == 0 {
            return Ok(Vec::new());
        }
        // The batch holding `from` starts after `from - BATCH_MAX`; every batch starting
        // before `until` is needed.
        let mut position = from.saturating_sub(BATCH_MAX as u64 - 1);
        let mut starts: Vec<(u64, String)> = Vec::new();
        // The first batch after those read, which must start where they end.
        let next_start = loop {
            let page = self.committed(position, until).await?;
            for (start, name) in page.batches {
                if start > from && starts.is_empty() {
                    return Err(Error::AuditCorrupt {
                        seq: from,
                        reason: "no stored batch holds this entry, but later ones exist".to_owned(),
                    });
                }
                if start <= from {
                    starts.clear();
                }
                starts.push((start, name));
            }
            if page.beyond.is_some() || !page.more {
                break page.beyond;
            }
            position = page.next;
        };
        let site = &self.site;
        let mut batches =
            futures_util::stream::iter(starts.into_iter().map(|(start, name)| async move {
                let body = site
                    .get(&name)
                    .await
                    .map_err(|e| corrupt(start, e))?
                    .ok_or_else(|| vanished(start))?;
                Ok::<_, Error>((start, decode_batch(start, &body)?))
            }))
            .buffered(GETS_IN_FLIGHT);
        let mut out = Vec::new();
        let mut expected = None;
        while let Some((start, batch)) = batches.try_next().await? {
            if expected.is_some_and(|end| end != start) {
                return Err(Error::AuditCorrupt {
                    seq: start,
                    reason: "this batch does not start where the previous one ends".to_owned(),
                });
            }
            expected = Some(start + batch.len() as u64);
            let skip = usize::try_from(from.saturating_sub(start)).unwrap_or(usize::MAX);
            out.extend(batch.into_iter().skip(skip).take(limit - out.len()));
        }
        if let (Some(end), Some(next)) = (expected, next_start) {
            if end != next {
                return Err(Error::AuditCorrupt {
                    seq: end,
                    reason: format!("no stored batch holds this entry, but one starts at {next}"),
                });
            }
        }
        Ok(out)
    }

    async fn size(&self) -> Result<u64> {
        self.refresh_end().await
    }

    async fn put_checkpoint(&self, size: u64, note: &str) -> Result<()> {
        let mut body = vec![BODY_FORMAT];
        body.extend_from_slice(note.as_bytes());
        self.site.replace(&checkpoint_name(size), &body).await?;
        let mut known = self.lock();
        known.latest_checkpoint = known.latest_checkpoint.max(Some(size));
        Ok(())
    }

    async fn checkpoint(&self, size: u64) -> Result<Option<String>> {
        self.get_note(&checkpoint_name(size), size).await
    }

    async fn checkpoints(&self, from_size: u64, limit: usize) -> Result<Vec<String>> {
        let mut notes = Vec::new();
        for size in self
            .checkpoint_sizes(from_size.checked_sub(1), limit)
            .await?
        {
            notes.push(
                self.get_note(&checkpoint_name(size), size)
                    .await?
                    .ok_or_else(|| vanished(size))?,
            );
        }
        Ok(notes)
    }

    async fn latest_checkpoint(&self) -> Result<Option<String>> {
        let cached = self.lock().latest_checkpoint;
        let mut latest = cached;
        loop {
            let page = self.checkpoint_sizes(latest, LIST_PAGE).await?;
            let full = page.len() == LIST_PAGE;
            latest = page.last().copied().or(latest);
            if !full {
                break;
            }
        }
        let Some(size) = latest else {
            return Ok(None);
        };
        {
            let mut known = self.lock();
            known.latest_checkpoint = known.latest_checkpoint.max(latest);
        }
        self.get_note(&checkpoint_name(size), size).await
    }

    async fn put_witnessed(&self, log: &str, note: &str) -> Result<()> {
        let length = u32::try_from(log.len()).map_err(|_| Error::AuditUnavailable {
            reason: "a witnessed log name longer than 4 GiB".to_owned(),
        })?;
        let mut body = vec![BODY_FORMAT];
        body.extend_from_slice(&length.to_be_bytes());
        body.extend_from_slice(log.as_bytes());
        body.extend_from_slice(note.as_bytes());
        let name = format!("{WITNESSED}{}", self.site.hashed("witness", log.as_bytes()));
        self.site.replace(&name, &body).await
    }

    async fn witnessed(&self) -> Result<Vec<(String, String)>> {
        let mut logs = Vec::new();
        let mut offset: Option<String> = None;
        loop {
            let page = self
                .site
                .list(WITNESSED, offset.as_deref(), LIST_PAGE)
                .await?;
            for listed in &page {
                let damaged = |reason: &str| Error::AuditCorrupt {
                    seq: u64::MAX,
                    reason: format!("{}: {reason}", listed.name),
                };
                let Some(body) = self
                    .site
                    .get(&listed.name)
                    .await
                    .map_err(|e| corrupt(u64::MAX, e))?
                else {
                    continue;
                };
                let Some((&BODY_FORMAT, rest)) = body.split_first() else {
                    return Err(damaged("unknown format"));
                };
                let Some((length, rest)) = rest.split_first_chunk::<4>() else {
                    return Err(damaged("truncated"));
                };
                let length = u32::from_be_bytes(*length) as usize;
                if rest.len() < length {
                    return Err(damaged("truncated"));
                }
                let (log, note) = rest.split_at(length);
                match (
                    String::from_utf8(log.to_vec()),
                    String::from_utf8(note.to_vec()),
                ) {
                    (Ok(log), Ok(note)) => logs.push((log, note)),
                    _ => return Err(damaged("not UTF-8")),
                }
            }
            match page.last() {
                Some(last) if page.len() == LIST_PAGE => offset = Some(last.name.clone()),
                _ => break,
            }
        }
        logs.sort();
        Ok(logs)
    }
}

/// One page of [`S3AuditStore::committed`].
#[derive(Debug, Default)]
struct BatchPage {
    /// (start, name) of the committed batches listed before `until`, in order.
    batches: Vec<(u64, String)>,
    /// The first committed start at or after `until`, if the listing reached one.
    beyond: Option<u64>,
    /// Whether committed batches before `until` may follow the last one returned ...
    more: bool,
    /// ... starting at this position or later (the next page's `from`).
    next: u64,
}

fn entry_name(seq: u64, tag: u64) -> String {
    format!("{ENTRIES}{seq:020}-{tag:016x}")
}

fn commit_name(seq: u64, tag: u64) -> String {
    format!("{COMMITS}{seq:020}-{tag:016x}")
}

fn checkpoint_name(size: u64) -> String {
    format!("{CHECKPOINTS}{size:020}")
}

/// The listing offset before every name in `folder` starting at `from`: every name of start
/// `from - 1` is `<digits>-<hex>`, and `g` sorts after any hex digit.
fn position_offset(folder: &str, from: u64) -> Option<String> {
    from.checked_sub(1)
        .map(|before| format!("{folder}{before:020}-g"))
}

/// The start and tag of a listed `<folder><20 digits>-<16 hex>` name; anything else is damage.
fn start_and_tag(name: &str, folder: &str) -> Result<(u64, u64)> {
    name.strip_prefix(folder)
        .and_then(|rest| rest.split_once('-'))
        .filter(|(_, tag)| {
            tag.len() == 16 && tag.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        })
        .and_then(|(digits, tag)| {
            Some((twenty_digits(digits)?, u64::from_str_radix(tag, 16).ok()?))
        })
        .ok_or_else(|| unexpected(name))
}

/// Every decoder of the S3 audit store on untrusted bytes: `name` parsed as a batch or commit
/// name, `body` as a batch starting there, as the head hint and as a checkpoint number. For the
/// fuzz targets and the never-panic tests; the result only says whether anything decoded.
pub(crate) fn check_object(name: &str, body: &[u8]) -> bool {
    let start = start_and_tag(name, ENTRIES)
        .or_else(|_| start_and_tag(name, COMMITS))
        .map(|(start, _)| start)
        .unwrap_or(0);
    let batch = decode_batch(start, body).is_ok();
    let head = decode_head(body).is_some();
    let checkpoint = seq_in(name, CHECKPOINTS).is_ok();
    batch || head || checkpoint
}

/// The start of a listed `audit/entries/<20 digits>-<16 hex>` name; anything else is damage.
fn entry_seq(name: &str) -> Result<u64> {
    start_and_tag(name, ENTRIES).map(|(start, _)| start)
}

/// The number in a listed `folder/<20 digits>` name; anything else in the folder is damage.
fn seq_in(name: &str, folder: &str) -> Result<u64> {
    name.strip_prefix(folder)
        .and_then(twenty_digits)
        .ok_or_else(|| unexpected(name))
}

fn twenty_digits(digits: &str) -> Option<u64> {
    if digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse().ok()
    } else {
        None
    }
}

fn unexpected(name: &str) -> Error {
    Error::AuditCorrupt {
        seq: u64::MAX,
        reason: format!("unexpected object {name} in the audit log"),
    }
}

/// The count of entries in the batch `name` starting at `start`, or `None` if there is none.
async fn batch_count(site: &ObjectSite, name: &str, start: u64) -> Result<Option<u64>> {
    let Some(body) = site.get(name).await.map_err(|e| corrupt(start, e))? else {
        return Ok(None);
    };
    Ok(Some(decode_batch(start, &body)?.len() as u64))
}

/// `format ‖ count u32 ‖ (chain 32 ‖ entry length u32 ‖ entry)*`.
fn encode_batch(records: &[AuditRecord]) -> Vec<u8> {
    let size = records.iter().map(|r| 36 + r.entry.len()).sum::<usize>();
    let mut body = Vec::with_capacity(5 + size);
    body.push(BODY_FORMAT);
    // At most BATCH_MAX records and each entry is bounded, so the casts cannot truncate.
    body.extend_from_slice(&(records.len() as u32).to_be_bytes());
    for record in records {
        body.extend_from_slice(&record.chain);
        body.extend_from_slice(&(record.entry.len() as u32).to_be_bytes());
        body.extend_from_slice(&record.entry);
    }
    body
}

fn decode_batch(start: u64, body: &[u8]) -> Result<Vec<AuditRecord>> {
    let damaged = |seq: u64, reason: &str| Error::AuditCorrupt {
        seq,
        reason: reason.to_owned(),
    };
    let Some((&BODY_FORMAT, rest)) = body.split_first() else {
        return Err(damaged(start, "unknown batch format"));
    };
    let Some((count, mut rest)) = rest.split_first_chunk::<4>() else {
        return Err(damaged(start, "batch shorter than its count"));
    };
    let count = u32::from_be_bytes(*count) as usize;
    if count == 0 || count > BATCH_MAX {
        return Err(damaged(start, "batch count out of range"));
    }
    let mut records = Vec::with_capacity(count);
    for seq in (start..).take(count) {
        let Some((chain, after)) = rest.split_first_chunk::<32>() else {
            return Err(damaged(seq, "batch truncated before a chain value"));
        };
        let Some((length, after)) = after.split_first_chunk::<4>() else {
            return Err(damaged(seq, "batch truncated before an entry length"));
        };
        let length = u32::from_be_bytes(*length) as usize;
        if after.len() < length {
            return Err(damaged(seq, "batch truncated inside an entry"));
        }
        let (entry, after) = after.split_at(length);
        records.push(AuditRecord {
            entry: entry.to_vec(),
            chain: *chain,
        });
        rest = after;
    }
    if !rest.is_empty() {
        return Err(damaged(start, "trailing bytes after the batch"));
    }
    Ok(records)
}

/// `format ‖ start u64 ‖ end u64 ‖ writer tag u64`: names the batch `start-tag`.
fn encode_head(start: u64, end: u64, tag: u64) -> Vec<u8> {
    let mut body = vec![BODY_FORMAT];
    body.extend_from_slice(&start.to_be_bytes());
    body.extend_from_slice(&end.to_be_bytes());
    body.extend_from_slice(&tag.to_be_bytes());
    body
}

fn decode_head(body: &[u8]) -> Option<(u64, u64, u64)> {
    let (&BODY_FORMAT, rest) = body.split_first()? else {
        return None;
    };
    let (start, rest) = rest.split_first_chunk::<8>()?;
    let (end, tag) = rest.split_first_chunk::<8>()?;
    let tag: &[u8; 8] = tag.try_into().ok()?;
    let (start, end, tag) = (
        u64::from_be_bytes(*start),
        u64::from_be_bytes(*end),
        u64::from_be_bytes(*tag),
    );
    (start < end).then_some((start, end, tag))
}

/// A body that does not open (or a failed GET) while reading entry `seq`, as the audit error.
fn corrupt(seq: u64, error: Error) -> Error {
    match error {
        Error::Corrupt { key, reason } => Error::AuditCorrupt {
            seq,
            reason: format!("{key}: {reason}"),
        },
        other => other,
    }
}

fn vanished(seq: u64) -> Error {
    Error::AuditCorrupt {
        seq,
        reason: "a listed audit object is gone: the log was truncated behind the node".to_owned(),
    }
}

#[cfg(test)]
#[path = "s3_tests.rs"]
mod tests;
