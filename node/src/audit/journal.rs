//! The audit entries' own file: an append-only journal of framed records, made durable with
//! one positioned write and one `fdatasync` per batch.
//!
//! Why a file of its own rather than a sled tree: every share release waits for its audit
//! entry to be durable (invariant 2), so that wait is on the path of every get. On the 2-core
//! bench machine a sled flush took 0.3–0.4 ms and a write plus `fdatasync` into a file that
//! already has room about 0.1 ms (docs/BENCHMARKS.md). The file grows in [`GROW_BYTES`] steps,
//! so most appends change no file metadata.
//!
//! Frame: `len: u32 LE ‖ rest: u32 LE ‖ payload ‖ check`, where `payload` is `len` bytes (one
//! stored record), `rest` counts the frames that follow in the same batch (0 on its last) and
//! `check` is the first 8 bytes of BLAKE3 over `len ‖ rest ‖ payload`. The data ends at the
//! first zero `len`: the room the file grew by reads as zeros.
//!
//! Opening scans every frame. Appends are serialised and each returns only after its sync, so
//! at a crash at most one batch was in flight, and it lies right after the last complete one.
//! Bytes after the last complete batch that fit in one batch ([`TORN_WINDOW`]) are that torn
//! write, never acknowledged: they are zeroed and the store opens. Anything beyond that window
//! is damage to acknowledged entries, and the store refuses to open ([`Error::AuditCorrupt`]).
//! A damaged frame within the last window cannot be told from a torn write by this file alone;
//! the checkpoints the other nodes cosigned still reveal such a rollback (docs/AUDIT.md).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use bunsan_protocol::audit::AUDIT_ENTRY_MAX_BYTES;

use crate::audit::log::BATCH_MAX;
use crate::error::{Error, Result};

/// Bytes of a frame around its payload: `len`, `rest` and `check`.
const FRAME_OVERHEAD: usize = 4 + 4 + 8;

/// The largest payload: a stored record (format byte, chain value, entry).
pub(crate) const PAYLOAD_MAX: usize = 1 + 32 + AUDIT_ENTRY_MAX_BYTES;

/// The most bytes one batch can take, and so the most a torn write can leave behind.
pub(crate) const TORN_WINDOW: u64 = (BATCH_MAX * (PAYLOAD_MAX + FRAME_OVERHEAD)) as u64;

/// How much room the file is grown by when an append needs more.
pub(crate) const GROW_BYTES: u64 = 4 << 20;

/// An entry offset is remembered for every this many entries; a read scans at most this many
/// frames before its first one. 1 billion entries cost 16 MiB of offsets.
const INDEX_EVERY: u64 = 64;

/// The journal file and what its scan learned.
pub(crate) struct Journal {
    path: PathBuf,
    state: Mutex<State>,
}

struct State {
    file: File,
    /// Bytes of complete batches: where the next append writes.
    end: u64,
    /// The file's length, room included.
    room: u64,
    /// Entries held.
    count: u64,
    /// `index[i]` is the offset of entry `i * INDEX_EVERY`.
    index: Vec<u64>,
    /// Set when a write or sync failed: what the file holds is then unknown until a restart
    /// scans it again, so no later append may be acknowledged.
    failed: Option<String>,
}

/// One frame read from the file.
struct Frame {
    payload: Vec<u8>,
    rest: u32,
}

impl Journal {
    /// Opens (or creates) the journal at `path`, cutting off a torn last batch. Blocking.
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let created = !path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|source| io("open", path, source))?;
        if created {
            // The new name must outlive a crash as surely as the entries written under it.
            let dir = match path.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir,
                _ => Path::new("."),
            };
            File::open(dir)
                .and_then(|dir| dir.sync_all())
                .map_err(|source| io("sync directory", dir, source))?;
        }
        let room = file
            .metadata()
            .map_err(|source| io("stat", path, source))?
            .len();
        let mut state = State {
            file,
            end: 0,
            room,
            count: 0,
            index: Vec::new(),
            failed: None,
        };
        let mut pending_index = Vec::new();
        let mut count = 0u64;
        let mut frames = Frames::new(&state.file, path, 0, room);
        loop {
            let offset = frames.offset;
            let Some(frame) = frames.next_frame()? else {
                break;
            };
            if count.is_multiple_of(INDEX_EVERY) {
                pending_index.push(offset);
            }
            count += 1;
            if frame.rest == 0 {
                state.end = frames.offset;
                state.count = count;
                state.index.append(&mut pending_index);
            }
        }
        let journal = Self {
            path: path.to_owned(),
            state: Mutex::new(state),
        };
        journal.cut_torn_tail()?;
        Ok(journal)
    }

    /// How many entries the journal holds.
    pub(crate) fn count(&self) -> u64 {
        self.lock().count
    }

    /// Appends `payloads` as entries `first_seq..`, all or nothing, and syncs. Blocking.
    pub(crate) fn append(&self, first_seq: u64, payloads: &[Vec<u8>]) -> Result<()> {
        let mut state = self.lock();
        if let Some(reason) = &state.failed {
            return Err(Error::AuditUnavailable {
                reason: format!("the audit journal failed earlier ({reason}); restart the node"),
            });
        }
        if first_seq != state.count {
            return Err(Error::AuditConflict {
                seq: first_seq,
                len: state.count,
            });
        }
        if payloads.len() > BATCH_MAX {
            return Err(Error::AuditUnavailable {
                reason: format!(
                    "a batch of {} audit entries is more than the journal's {BATCH_MAX}",
                    payloads.len()
                ),
            });
        }
        let mut buffer = Vec::new();
        for (i, payload) in payloads.iter().enumerate() {
            if payload.is_empty() || payload.len() > PAYLOAD_MAX {
                return Err(Error::AuditCorrupt {
                    seq: first_seq + i as u64,
                    reason: format!(
                        "a stored record of {} bytes (1 to {PAYLOAD_MAX} fit a frame)",
                        payload.len()
                    ),
                });
            }
            let rest = (payloads.len() - 1 - i) as u32;
            frame_into(&mut buffer, payload, rest);
        }
        let start = state.end;
        let written = Self::write_synced(&mut state, &self.path, start, &buffer);
        if let Err(e) = written {
            state.failed = Some(e.to_string());
            // Best effort: the bytes may have landed; a restart's scan decides what holds.
            let _ = state.file.write_all_at(&vec![0; buffer.len()], start);
            return Err(e);
        }
        let mut offset = start;
        for (seq, payload) in (first_seq..).zip(payloads) {
            if seq.is_multiple_of(INDEX_EVERY) {
                state.index.push(offset);
            }
            offset += (payload.len() + FRAME_OVERHEAD) as u64;
        }
        state.end = offset;
        state.count = first_seq + payloads.len() as u64;
        Ok(())
    }

    /// Writes `bytes` at `start`, growing the file first if it lacks room, then syncs.
    fn write_synced(state: &mut State, path: &Path, start: u64, bytes: &[u8]) -> Result<()> {
        let needed = start + bytes.len() as u64;
        if needed > state.room {
            let room = needed.div_ceil(GROW_BYTES) * GROW_BYTES;
            state
                .file
                .set_len(room)
                .map_err(|source| io("grow", path, source))?;
            // The new length is metadata: a full sync, once per growth.
            state
                .file
                .sync_all()
                .map_err(|source| io("sync", path, source))?;
            state.room = room;
        }
        state
            .file
            .write_all_at(bytes, start)
            .map_err(|source| io("write", path, source))?;
        state
            .file
            .sync_data()
            .map_err(|source| io("sync", path, source))
    }

    /// Up to `limit` payloads from entry `from`. Blocking.
    pub(crate) fn read(&self, from: u64, limit: usize) -> Result<Vec<Vec<u8>>> {
        let (file, offset, mut seq, count, end) = {
            let state = self.lock();
            if from >= state.count || limit == 0 {
                return Ok(Vec::new());
            }
            let slot = (from / INDEX_EVERY) as usize;
            let file = state
                .file
                .try_clone()
                .map_err(|source| io("open", &self.path, source))?;
            (
                file,
                state.index[slot],
                slot as u64 * INDEX_EVERY,
                state.count,
                state.end,
            )
        };
        let mut payloads = Vec::with_capacity(limit.min((count - from) as usize));
        let mut frames = Frames::new(&file, &self.path, offset, end);
        while seq < count && payloads.len() < limit {
            let Some(frame) = frames.next_frame()? else {
                return Err(Error::AuditCorrupt {
                    seq,
                    reason: "the journal ends before this entry".to_owned(),
                });
            };
            if seq >= from {
                payloads.push(frame.payload);
            }
            seq += 1;
        }
        Ok(payloads)
    }

    /// Replaces the whole journal with `payloads`, synced: for a one-time migration and for
    /// tests that rewrite history offline. Blocking.
    pub(crate) fn replace_all(&self, payloads: &[Vec<u8>]) -> Result<()> {
        let mut state = self.lock();
        state
            .file
            .set_len(0)
            .map_err(|source| io("truncate", &self.path, source))?;
        state.room = 0;
        (state.end, state.count) = (0, 0);
        state.index.clear();
        drop(state);
        for (i, batch) in payloads.chunks(BATCH_MAX).enumerate() {
            self.append((i * BATCH_MAX) as u64, batch)?;
        }
        Ok(())
    }

    /// Zeroes what lies after the last complete batch, if it is a torn write; refuses to open
    /// over damage beyond one batch.
    fn cut_torn_tail(&self) -> Result<()> {
        let state = self.lock();
        let window_end = state.room.min(state.end + TORN_WINDOW);
        let mut tail = vec![0u8; (window_end - state.end) as usize];
        state
            .file
            .read_exact_at(&mut tail, state.end)
            .map_err(|source| io("read", &self.path, source))?;
        if state.room > window_end && !zeros_after(&state.file, &self.path, window_end, state.room)?
        {
            return Err(Error::AuditCorrupt {
                seq: state.count,
                reason: format!(
                    "the journal {} does not read as frames from byte {} on, and holds data \
                     more than one batch past that point: acknowledged entries are damaged",
                    self.path.display(),
                    state.end
                ),
            });
        }
        if let Some(last) = tail.iter().rposition(|&b| b != 0) {
            tracing::warn!(path = %self.path.display(), from = state.end, bytes = last + 1,
                "the audit journal ends in a write torn by a crash (never acknowledged): zeroing it");
            state
                .file
                .write_all_at(&vec![0; last + 1], state.end)
                .map_err(|source| io("write", &self.path, source))?;
            state
                .file
                .sync_data()
                .map_err(|source| io("sync", &self.path, source))?;
        }
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Appends the frame of `payload` to `buffer`.
pub(crate) fn frame_into(buffer: &mut Vec<u8>, payload: &[u8], rest: u32) {
    let start = buffer.len();
    buffer.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buffer.extend_from_slice(&rest.to_le_bytes());
    buffer.extend_from_slice(payload);
    let check = blake3::hash(&buffer[start..]);
    buffer.extend_from_slice(&check.as_bytes()[..8]);
}

/// Frames in file order from one offset, read through one buffer of positioned reads: a few
/// large reads instead of two small ones per frame, and no shared file cursor, so readers of
/// one file (cloned handles included) never disturb each other.
struct Frames<'a> {
    file: &'a File,
    path: &'a Path,
    /// Where the data to read ends.
    limit: u64,
    /// Where the next frame starts.
    offset: u64,
    buffer: Vec<u8>,
    /// The file offset of `buffer[0]`.
    buffered_at: u64,
}

impl<'a> Frames<'a> {
    /// How much one read asks for, at least.
    const READ_BYTES: usize = 256 << 10;

    fn new(file: &'a File, path: &'a Path, offset: u64, limit: u64) -> Self {
        Self {
            file,
            path,
            limit,
            offset,
            buffer: Vec::new(),
            buffered_at: offset,
        }
    }

    /// The `n` bytes at `at`, which the caller checked end by `limit`.
    fn bytes(&mut self, at: u64, n: usize) -> Result<&[u8]> {
        let buffered_end = self.buffered_at + self.buffer.len() as u64;
        if at < self.buffered_at || at + n as u64 > buffered_end {
            let want = (n.max(Self::READ_BYTES) as u64).min(self.limit - at) as usize;
            self.buffer.resize(want, 0);
            self.file
                .read_exact_at(&mut self.buffer, at)
                .map_err(|source| io("read", self.path, source))?;
            self.buffered_at = at;
        }
        let start = (at - self.buffered_at) as usize;
        Ok(&self.buffer[start..start + n])
    }

    /// The next frame, or `None` where the data ends or a frame does not check (a zero length,
    /// a length past `limit` or past [`PAYLOAD_MAX`], a failing check).
    fn next_frame(&mut self) -> Result<Option<Frame>> {
        let offset = self.offset;
        if offset + 8 > self.limit {
            return Ok(None);
        }
        let head = self.bytes(offset, 8)?;
        let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as usize;
        let rest = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
        let size = len + FRAME_OVERHEAD;
        if len == 0 || len > PAYLOAD_MAX || offset + size as u64 > self.limit {
            return Ok(None);
        }
        let (checked, check) = self.bytes(offset, size)?.split_at(8 + len);
        if blake3::hash(checked).as_bytes()[..8] != *check {
            return Ok(None);
        }
        let payload = checked[8..].to_vec();
        self.offset += size as u64;
        Ok(Some(Frame { payload, rest }))
    }
}

/// Whether every byte of `file` in `from..to` is zero.
fn zeros_after(file: &File, path: &Path, from: u64, to: u64) -> Result<bool> {
    let mut buffer = vec![0u8; 1 << 20];
    let mut offset = from;
    while offset < to {
        let n = buffer.len().min((to - offset) as usize);
        file.read_exact_at(&mut buffer[..n], offset)
            .map_err(|source| io("read", path, source))?;
        if buffer[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        offset += n as u64;
    }
    Ok(true)
}

fn io(action: &'static str, path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
#[path = "journal_tests.rs"]
mod tests;
