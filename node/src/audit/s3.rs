//! The [`AuditStore`] on a site's S3-compatible object store: several node processes of one
//! site share ONE log in one bucket, and a node restarted on a new machine continues it.
//!
//! Object layout below the site's prefix (bodies sealed by [`ObjectSite`], names in clear):
//!
//! ```text
//! audit/entries/<first seq, 20 digits>   one appended batch, write-once (If-None-Match: *)
//! audit/head                             hint: (start, end) of a recent batch, replaced
//! audit/checkpoints/<size, 20 digits>    a signed checkpoint note, replaced (cosignatures)
//! audit/witnessed/<hashed log name>      (log, newest cosigned checkpoint of it), replaced
//! ```
//!
//! **Why a batch can never land inside another one.** An append of entries `s..s+n` is one
//! object named `s`, created only if no object of that name exists; an existing name is
//! [`Error::AuditConflict`] and nothing is written. The batches thus tile the log: each starts
//! where the previous ended. A writer learns where the log ends only from batch boundaries (the
//! end of the last batch it listed or wrote), so every end it ever believes in is either the real
//! end or the start of a batch written since; appending there either extends the log or collides
//! with that batch's name. A stale writer always collides, never overwrites, and never starts a
//! batch in the middle of another. No lock, lease or clock is needed, only the conditional put
//! and name-ordered, read-after-write-consistent listings (AWS S3, Ceph RGW, MinIO, Garage).
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
//! Not done: compaction of many small batches (a quiet node writes one object per request, and a
//! full replay costs one GET per batch, eight at a time); cosignatures added by two processes
//! at once to one checkpoint can lose one (each process serialises only its own).

use std::sync::{Arc, Mutex, PoisonError};

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

/// Batches fetched at once while reading: enough to hide round trips, few enough not to be
/// throttled.
const GETS_IN_FLIGHT: usize = 8;

/// An [`AuditStore`] over an [`ObjectSite`]. Cheap to share; any number of instances, in any
/// number of processes, may serve one site's log at once.
pub struct S3AuditStore {
    site: ObjectSite,
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
            .field("known", &*self.lock())
            .finish()
    }
}

/// Opens the site's audit log (creating nothing): finds its end from the head hint and a
/// listing of what follows it.
pub async fn open(site: ObjectSite) -> Result<Arc<S3AuditStore>> {
    let hinted = match site.get(HEAD).await {
        Ok(Some(body)) => match decode_head(&body) {
            Some((start, end)) => match batch_count(&site, start).await {
                Ok(Some(count)) if start + count == end => end,
                _ => {
                    tracing::warn!(
                        start,
                        end,
                        "the audit head names no such batch: listing the whole log"
                    );
                    0
                }
            },
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
        loop {
            let after = end.checked_sub(1).map(entry_name);
            let page = self.site.list(ENTRIES, after.as_deref(), LIST_PAGE).await?;
            let full = page.len() == LIST_PAGE;
            for listed in page {
                let start = entry_seq(&listed.name)?;
                if start != end {
                    return Err(Error::AuditCorrupt {
                        seq: end,
                        reason: format!(
                            "the batch after entry {end} starts at {start}: batches are missing or overlap"
                        ),
                    });
                }
                end = start
                    + batch_count(&self.site, start)
                        .await?
                        .ok_or_else(|| vanished(start))?;
            }
            if !full {
                break;
            }
        }
        let mut known = self.lock();
        known.end = known.end.max(end);
        Ok(known.end)
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
        let name = entry_name(first_seq);
        match self.site.create(&name, &encode_batch(records)).await? {
            Created::New => {}
            Created::AlreadyExists => return Err(conflict(self.refresh_end().await?)),
        }
        let end = first_seq + records.len() as u64;
        {
            let mut known = self.lock();
            known.end = known.end.max(end);
        }
        if let Err(e) = self.site.replace(HEAD, &encode_head(first_seq, end)).await {
            tracing::warn!(error = %e, "could not update the audit head hint");
        }
        Ok(())
    }

    async fn read(&self, from: u64, limit: usize) -> Result<Vec<AuditRecord>> {
        let until = from.saturating_add(limit as u64);
        if limit == 0 {
            return Ok(Vec::new());
        }
        // The batch holding `from` starts after `from - BATCH_MAX`; every batch starting
        // before `until` is needed.
        let mut offset = from.checked_sub(BATCH_MAX as u64).map(entry_name);
        let mut starts = Vec::new();
        // The first batch after those read, which must start where they end.
        let mut next_start = None;
        'listing: loop {
            let page = self
                .site
                .list(ENTRIES, offset.as_deref(), LIST_PAGE)
                .await?;
            let full = page.len() == LIST_PAGE;
            for listed in &page {
                let start = entry_seq(&listed.name)?;
                if start >= until {
                    next_start = Some(start);
                    break 'listing;
                }
                if start > from && starts.is_empty() {
                    return Err(Error::AuditCorrupt {
                        seq: from,
                        reason: "no stored batch holds this entry, but later ones exist".to_owned(),
                    });
                }
                if start <= from {
                    starts.clear();
                }
                starts.push(start);
            }
            match page.last() {
                Some(last) if full => offset = Some(last.name.clone()),
                _ => break,
            }
        }
        let site = &self.site;
        let mut batches = futures_util::stream::iter(starts.into_iter().map(|start| async move {
            let body = site
                .get(&entry_name(start))
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

fn entry_name(seq: u64) -> String {
    format!("{ENTRIES}{seq:020}")
}

fn checkpoint_name(size: u64) -> String {
    format!("{CHECKPOINTS}{size:020}")
}

fn entry_seq(name: &str) -> Result<u64> {
    seq_in(name, ENTRIES)
}

/// The number in a listed `folder/<20 digits>` name; anything else in the folder is damage.
fn seq_in(name: &str, folder: &str) -> Result<u64> {
    name.strip_prefix(folder)
        .filter(|digits| digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|digits| digits.parse().ok())
        .ok_or_else(|| Error::AuditCorrupt {
            seq: u64::MAX,
            reason: format!("unexpected object {name} in the audit log"),
        })
}

/// The count of entries in the batch starting at `start`, or `None` if there is none.
async fn batch_count(site: &ObjectSite, start: u64) -> Result<Option<u64>> {
    let Some(body) = site
        .get(&entry_name(start))
        .await
        .map_err(|e| corrupt(start, e))?
    else {
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

fn encode_head(start: u64, end: u64) -> Vec<u8> {
    let mut body = vec![BODY_FORMAT];
    body.extend_from_slice(&start.to_be_bytes());
    body.extend_from_slice(&end.to_be_bytes());
    body
}

fn decode_head(body: &[u8]) -> Option<(u64, u64)> {
    let (&BODY_FORMAT, rest) = body.split_first()? else {
        return None;
    };
    let rest: &[u8; 16] = rest.try_into().ok()?;
    let (start, end) = rest.split_at(8);
    let start = u64::from_be_bytes(start.try_into().ok()?);
    let end = u64::from_be_bytes(end.try_into().ok()?);
    (start < end).then_some((start, end))
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
