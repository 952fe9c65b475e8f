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

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bunsan_protocol::audit::AuditRecord;
use futures_util::{StreamExt, TryStreamExt};

use super::log::BATCH_MAX;
use super::store::AuditStore;
use crate::error::{Error, Result};
use crate::objstore::{Created, ObjectSite};

mod commit;
mod layout;
mod listing;

pub(crate) use layout::check_object;
use layout::*;

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
        // One object per witnessed log (a handful); `list` follows the server's pages itself.
        let mut logs = Vec::new();
        for listed in self.site.list(WITNESSED, None, usize::MAX).await? {
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
        logs.sort();
        Ok(logs)
    }
}

#[cfg(test)]
mod tests;
