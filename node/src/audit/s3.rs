//! The [`AuditStore`] on a site's S3-compatible object store: several node processes of one
//! site share ONE log in one bucket, and a node restarted on a new machine continues it.
//!
//! Object layout below the site's prefix (bodies sealed by [`ObjectSite`], names in clear):
//!
//! ```text
//! audit/entries/<first seq, 20 digits>-<writer tag, 16 hex>   one appended batch, never replaced
//! audit/head                             hint: (start, end, writer tag) of a recent batch, replaced
//! audit/checkpoints/<size, 20 digits>    a signed checkpoint note, replaced (cosignatures)
//! audit/witnessed/<hashed log name>      (log, newest cosigned checkpoint of it), replaced
//! ```
//!
//! **Why one batch, and only one, survives at each position.** The writer tag is random per
//! opened [`S3AuditStore`], so no process ever writes under a name another one writes: nothing
//! is overwritten even by a store that ignores conditional puts. (Batches are still created with
//! `If-None-Match: *`, harmless where honoured; Garage 2.5.0 ignores it and replaces the object.)
//! An append of entries `s..s+n` first checks `s` against the cached end (a batch boundary never
//! beyond the real end), then writes, then checks: (1) it creates its batch `s-<tag>`; (2) it
//! lists the names starting at `s`; (3) if its batch is the only one there, the append succeeded;
//! if another writer's batch also starts at `s`, it deletes its own (nothing was acknowledged)
//! and reports [`Error::AuditConflict`], so the [`super::AuditLog`] catches up and retries.
//! Batches starting after `s` do not matter (someone saw this one alone and extended it). With
//! listings that reflect every completed create and delete (AWS S3, Ceph RGW, MinIO, Garage), of
//! two writers at one position the one that lists later sees the other's batch, so at most one
//! writer ever sees only its own; a writer that sees a rival deletes its own before answering
//! anyone. A writer killed between its create and its check leaves a batch that is either alone
//! (it becomes part of the log: its requests were never answered, so the log only over-reports)
//! or next to a rival's (the rival deletes its own). So at most one batch per position is ever
//! acknowledged, an acknowledged batch is never deleted, and the batches tile the log: each
//! starts where the previous one ended, because a writer learns where the log ends only from
//! batch boundaries. No lock, lease or clock is needed.
//!
//! **Contested positions.** While a losing writer has not yet deleted its batch, two names share
//! a start. Every reader of the listing (finding the end, reading, opening) waits such a contest
//! out, listing again after 25 ms, 50 ms, ... (about 2 s in all); a contest that outlasts that is
//! reported as [`Error::AuditCorrupt`] at its start.
//!
//! **Finding the end.** The end is cached in memory; [`AuditStore::size`] lists only the names
//! after it, so another process's batches are found at the cost of one listing plus one GET per
//! new batch (its count is inside the sealed body). At open the walk starts from `audit/head`,
//! written after each append: it may lag (writers race to replace it) but never runs ahead of a
//! real batch, and it is checked against the batch it names; a missing, damaged or
//! inconsistent hint falls back to listing the whole log.
//!
//! **Reading.** A batch holds at most `log::BATCH_MAX` (512) entries, so the batch holding entry `from`
//! starts after `from − BATCH_MAX`: one listing from there finds it.
//!
//! What the bucket's operators see: sequence numbers, checkpoint sizes, batch sizes and timing.
//! Entry content, actors, record keys and witnessed logs' names are sealed or hashed. A body
//! copied under another name fails to open (the name is the AEAD associated data); damage is
//! reported as [`Error::AuditCorrupt`] with the sequence number, never panicked on.
//!
//! Known gaps of write-then-check: (a) a reader that lists a batch in the moment between its
//! create and its writer's check, while a stale writer creates a rival at the same start, adopts
//! a batch whose writer then sees that rival and deletes it (unacknowledged, but the reader may
//! already have built on it); (b) a stale writer killed between its create and its check, next
//! to a batch that already won, leaves a contest nobody resolves ([`Error::AuditCorrupt`] until
//! an operator deletes the loser, the name not in the head hint); (c) two writers at one
//! position that see each other both withdraw, so heavy contention can use up the
//! [`super::AuditLog`]'s retries. All need a rival created inside one writer's create-to-list
//! window; (a) is hit in tests (a reader finds a listed batch gone and lists again, but one it
//! read before the deletion stays adopted).
//!
//! Not done: compaction of many small batches (a quiet node writes one object per request, and a
//! full replay costs one GET per batch, eight at a time); cosignatures added by two processes
//! at once to one checkpoint can lose one (each process serialises only its own).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bunsan_protocol::audit::AuditRecord;
use futures_util::{StreamExt, TryStreamExt};

use super::log::BATCH_MAX;
use super::store::AuditStore;
use crate::error::{Error, Result};
use crate::objstore::{Created, ObjectSite};

const ENTRIES: &str = "audit/entries/";
const CHECKPOINTS: &str = "audit/checkpoints/";
const WITNESSED: &str = "audit/witnessed/";
const HEAD: &str = "audit/head";

/// The format byte in front of every sealed body this module writes.
const BODY_FORMAT: u8 = 1;

/// Names asked for per listing request (S3 answers at most 1000 per page anyway).
const LIST_PAGE: usize = 1000;

/// The first wait before listing a contested start again (doubling after each listing).
const CONTEST_FIRST_WAIT: Duration = Duration::from_millis(25);

/// How long in all a contested start is waited for before it is reported as damage.
const CONTEST_PATIENCE: Duration = Duration::from_secs(2);

/// How often a listing is repeated because a batch in it was deleted before it was read.
const VANISHED_RELISTS: u32 = 8;

/// Batches fetched at once while reading: enough to hide round trips, few enough not to be
/// throttled.
const GETS_IN_FLIGHT: usize = 8;

/// An [`AuditStore`] over an [`ObjectSite`]. Cheap to share; any number of instances, in any
/// number of processes, may serve one site's log at once.
pub struct S3AuditStore {
    site: ObjectSite,
    /// This instance's writer tag: part of every batch name it writes, and of no other.
    tag: u64,
    /// Held through an append, so two appends of this instance never share a batch name.
    appending: tokio::sync::Mutex<()>,
    known: Mutex<Known>,
}

/// What this process knows of the log; only ever moves forward.
#[derive(Debug, Default, Clone, Copy)]
struct Known {
    /// The end of the last batch seen (every batch before it is known to exist).
    end: u64,
    /// The largest checkpoint size seen.
    latest_checkpoint: Option<u64>,
}

impl std::fmt::Debug for S3AuditStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3AuditStore")
            .field("site", &self.site)
            .field("tag", &format_args!("{:016x}", self.tag))
            .field("known", &*self.lock())
            .finish()
    }
}

/// Opens the site's audit log (creating nothing): finds its end from the head hint and a
/// listing of what follows it.
pub async fn open(site: ObjectSite) -> Result<Arc<S3AuditStore>> {
    let hinted = match site.get(HEAD).await {
        Ok(Some(body)) => match decode_head(&body) {
            Some((start, end, tag)) => {
                match batch_count(&site, &entry_name(start, tag), start).await {
                    Ok(Some(count)) if start + count == end => end,
                    _ => {
                        tracing::warn!(
                            start,
                            end,
                            "the audit head names no such batch: listing the whole log"
                        );
                        0
                    }
                }
            }
            None => {
                tracing::warn!("the audit head is malformed: listing the whole log");
                0
            }
        },
        Ok(None) => 0,
        Err(e) => {
            tracing::warn!(error = %e, "the audit head does not open: listing the whole log");
            0
        }
    };
    let store = S3AuditStore {
        site,
        tag: rand::random(),
        appending: tokio::sync::Mutex::new(()),
        known: Mutex::new(Known {
            end: hinted,
            latest_checkpoint: None,
        }),
    };
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

    /// Lists the batches after the known end, checks that they tile, and moves the end.
    async fn refresh_end(&self) -> Result<u64> {
        let mut end = self.lock().end;
        // A batch listed alone may be a loser's that is deleted before it is read: list again.
        let mut vanishings = 0;
        loop {
            let page = self.batches(end, u64::MAX).await?;
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
            if !relist && !page.more {
                break;
            }
        }
        let mut known = self.lock();
        known.end = known.end.max(end);
        Ok(known.end)
    }

    /// One page of the batches starting at `from` or later, in order, as (start, name), every
    /// contested start among those before `until` waited out (see the module doc).
    async fn batches(&self, from: u64, until: u64) -> Result<BatchPage> {
        let mut wait = CONTEST_FIRST_WAIT;
        let mut waited = Duration::ZERO;
        loop {
            let (page, contested) = self.batch_page(from, until).await?;
            let Some(start) = contested else {
                return Ok(page);
            };
            if waited >= CONTEST_PATIENCE {
                return Err(Error::AuditCorrupt {
                    seq: start,
                    reason: format!(
                        "two batches claim entry {start} and no writer withdrew its own within {CONTEST_PATIENCE:?}"
                    ),
                });
            }
            let nap = wait.min(CONTEST_PATIENCE - waited);
            tokio::time::sleep(nap).await;
            waited += nap;
            wait *= 2;
        }
    }

    /// One listing for [`Self::batches`], and the first contested start before `until` in it.
    async fn batch_page(&self, from: u64, until: u64) -> Result<(BatchPage, Option<u64>)> {
        let mut listed = self.list_batches(from, LIST_PAGE).await?;
        let full = listed.len() == LIST_PAGE;
        let mut page = BatchPage::default();
        if let Some(at) = listed.iter().position(|(start, _)| *start >= until) {
            page.beyond = Some(listed[at].0);
            listed.truncate(at);
        } else if full {
            // The last start listed may have more names on the next page: list it again then.
            let last = listed[LIST_PAGE - 1].0;
            let at = listed.iter().position(|(start, _)| *start == last);
            if at == Some(0) {
                // A whole page of names with one start.
                return Ok((page, Some(last)));
            }
            listed.truncate(at.unwrap_or(LIST_PAGE));
            page.more = true;
        }
        let contested = listed
            .windows(2)
            .find(|pair| pair[0].0 == pair[1].0)
            .map(|pair| pair[0].0);
        page.batches = listed;
        Ok((page, contested))
    }

    /// Up to `limit` raw batch names starting at `from` or later, as (start, name), contests
    /// and all.
    async fn list_batches(&self, from: u64, limit: usize) -> Result<Vec<(u64, String)>> {
        // Every name of start `from - 1` is `<digits>-<hex>`, and `g` sorts after any hex digit.
        let offset = from
            .checked_sub(1)
            .map(|before| format!("{ENTRIES}{before:020}-g"));
        self.site
            .list(ENTRIES, offset.as_deref(), limit)
            .await?
            .into_iter()
            .map(|listed| Ok((entry_seq(&listed.name)?, listed.name)))
            .collect()
    }

    /// This store's name for a batch starting at `start`.
    fn own_entry_name(&self, start: u64) -> String {
        entry_name(start, self.tag)
    }

    /// Step (3) of an append (see the module doc): our batch `name` of `count` entries at
    /// `first_seq` exists; it stays if it is alone there, else it is deleted and the append
    /// is an [`Error::AuditConflict`].
    async fn settle_after_create(&self, first_seq: u64, name: &str, count: u64) -> Result<()> {
        // The names at `first_seq` come first: of two, one is ours or both are rivals.
        let listed = self.list_batches(first_seq, 2).await?;
        let at_start = || listed.iter().filter(|(start, _)| *start == first_seq);
        if at_start().any(|(_, listed)| listed != name) {
            self.site.delete(name).await?;
            return Err(Error::AuditConflict {
                seq: first_seq,
                len: self.refresh_end().await?,
            });
        }
        if at_start().next().is_none() {
            return Err(Error::AuditUnavailable {
                reason: format!(
                    "the audit batch {name} is not listed right after its create: the object store's listings are not read-after-write consistent"
                ),
            });
        }
        let end = first_seq + count;
        {
            let mut known = self.lock();
            known.end = known.end.max(end);
        }
        if let Err(e) = self
            .site
            .replace(HEAD, &encode_head(first_seq, end, self.tag))
            .await
        {
            tracing::warn!(error = %e, "could not update the audit head hint");
        }
        Ok(())
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
        let _appending = self.appending.lock().await;
        // The cached end is a batch boundary, never beyond the real end: appending there
        // either extends the log or collides (see the module doc). Any other start is refused
        // unless a fresh listing says it is the end (as is an empty append, which writes no
        // object and so can only be checked against a listing).
        if first_seq != self.lock().end || records.is_empty() {
            let end = self.refresh_end().await?;
            if first_seq != end {
                return Err(conflict(end));
            }
        }
        if records.is_empty() {
            return Ok(());
        }
        let name = self.own_entry_name(first_seq);
        match self.site.create(&name, &encode_batch(records)).await? {
            Created::New => {}
            // Only a batch of ours from an append that failed after its create: it may be part
            // of the log now.
            Created::AlreadyExists => return Err(conflict(self.refresh_end().await?)),
        }
        self.settle_after_create(first_seq, &name, records.len() as u64)
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
            let page = self.batches(position, until).await?;
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
                position = start + 1;
                starts.push((start, name));
            }
            if page.beyond.is_some() || !page.more {
                break page.beyond;
            }
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

/// One page of [`S3AuditStore::batches`].
#[derive(Debug, Default)]
struct BatchPage {
    /// (start, name) of the batches listed before `until`, in order, no start twice.
    batches: Vec<(u64, String)>,
    /// The first start at or after `until`, if the listing reached one.
    beyond: Option<u64>,
    /// Whether batches before `until` may follow the last one returned.
    more: bool,
}

fn entry_name(seq: u64, tag: u64) -> String {
    format!("{ENTRIES}{seq:020}-{tag:016x}")
}

fn checkpoint_name(size: u64) -> String {
    format!("{CHECKPOINTS}{size:020}")
}

/// The start of a listed `audit/entries/<20 digits>-<16 hex>` name; anything else is damage.
fn entry_seq(name: &str) -> Result<u64> {
    name.strip_prefix(ENTRIES)
        .and_then(|rest| rest.split_once('-'))
        .filter(|(_, tag)| {
            tag.len() == 16 && tag.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        })
        .and_then(|(digits, _)| twenty_digits(digits))
        .ok_or_else(|| unexpected(name))
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
