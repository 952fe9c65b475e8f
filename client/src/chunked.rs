//! Records of any size in bounded memory: a layer over [`Client::put`] and
//! [`Client::get_versioned`].
//!
//! A record up to one chunk (4 MiB by default) is stored as it is, one envelope per node. A
//! larger one is read from its source a chunk at a time; each chunk is stored as its own record
//! under an internal key (shared k-of-n on its own, with its own version), and then a
//! [`ChunkManifest`] naming every chunk's length, version and BLAKE3 digest is stored at the
//! record's key, like any record. Reading opens the manifest and streams the chunks out in
//! order, a few in flight, each checked against the manifest before a byte of it is written.
//!
//! ```text
//! put: source ─▶ chunk 0 ─split─▶ n nodes ┐  (≤ put_concurrency chunks in flight)
//!             ─▶ chunk 1 ─split─▶ n nodes ├─▶ manifest (lengths, versions, digests) ─▶ KEY
//!             ─▶ ...                      ┘
//! get: KEY ─▶ manifest ─▶ chunk i: get, check version + length + BLAKE3 ─▶ sink, in order
//! ```
//!
//! Memory: a few chunk sizes per chunk in flight (its shares and frames), whatever the record
//! size; see [`ChunkOptions`].
//!
//! The manifest is written last, so a reader sees the old record or the new one, never a mix;
//! a write that fails half-way leaves orphan chunks, and so does overwriting a chunked record
//! (a collector may not delete). `delete` (admin) removes every chunk set stored under the key.

use std::ops::Range;

use bunsan_protocol::chunk::{
    chunk_key, chunk_prefix, ChunkEntry, ChunkManifest, ChunkSetId, CHUNK_SIZE_DEFAULT,
    CHUNK_SIZE_MAX, MANIFEST_CHUNKS_MAX,
};
use bunsan_protocol::envelope::RECORD_MAX_BYTES;
use bunsan_protocol::{Purpose, RecordKey, Version};
use futures_util::stream::{FuturesOrdered, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use zeroize::{Zeroize, Zeroizing};

use crate::client::{Client, PutReceipt};
use crate::error::{Error, Result};

/// How large records are cut and how many chunks move at once.
#[derive(Debug, Clone)]
pub struct ChunkOptions {
    /// Records longer than this are chunked, into chunks of this size (1..=16 MiB).
    pub chunk_size: u64,
    /// Chunks being written at once. Each holds the chunk and its n shares.
    pub put_concurrency: usize,
    /// Chunks being read at once. Each holds up to n shares and the rebuilt chunk.
    pub get_concurrency: usize,
}

impl Default for ChunkOptions {
    fn default() -> Self {
        // Three chunks written at once keep every node busy while the next chunk is read and
        // split: about 3 × (n + 1) × 4 MiB = 72 MiB of buffers for a 3-of-5 cluster. Reads hold
        // more per chunk (each of the n answers is briefly held twice, as the frame and as the
        // decoded share, and stragglers finish in the background), so two at a time: the
        // benchmark's 256 MiB get peaked at 230 MiB of RSS with three, 205 MiB with two, at
        // the same speed.
        Self {
            chunk_size: CHUNK_SIZE_DEFAULT,
            put_concurrency: 3,
            get_concurrency: 2,
        }
    }
}

/// What a put of a record of any size did.
#[derive(Debug, Clone)]
pub struct ChunkedReceipt {
    /// The record's length in bytes.
    pub record_len: u64,
    /// The receipt of the write at the record's key: the manifest, or the record itself when
    /// it was stored in one piece.
    pub receipt: PutReceipt,
    /// How many chunks were written; 0 when the record was stored in one piece.
    pub chunks: usize,
    /// Chunks that fewer than all n nodes acknowledged (a repair should follow).
    pub under_replicated_chunks: usize,
}

/// What a streamed get wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamedRecord {
    /// The version of the record's key (the manifest's version for a chunked record).
    pub version: Version,
    /// The whole record's length.
    pub record_len: u64,
    /// Bytes written to the sink (the requested range's length).
    pub written: u64,
    /// Chunks read; 0 for a record stored in one piece.
    pub chunks: usize,
}

/// What deleting a record of any size did.
#[derive(Debug, Clone)]
pub struct ChunkedDeletion {
    /// The tombstone written at the record's key.
    pub receipt: PutReceipt,
    /// Chunks deleted (of every chunk set stored under the key).
    pub chunks: usize,
}

/// Large-record operations over one [`Client`].
pub struct Chunked<'c> {
    client: &'c Client,
    options: ChunkOptions,
}

impl<'c> Chunked<'c> {
    /// Chunked operations over `client` with default options.
    pub fn new(client: &'c Client) -> Self {
        Self::with_options(client, ChunkOptions::default())
    }

    /// Chunked operations over `client`; out-of-range options are brought into range (chunk
    /// size 1..=16 MiB, at least one chunk in flight).
    pub fn with_options(client: &'c Client, options: ChunkOptions) -> Self {
        let options = ChunkOptions {
            chunk_size: options.chunk_size.clamp(1, CHUNK_SIZE_MAX),
            put_concurrency: options.put_concurrency.max(1),
            get_concurrency: options.get_concurrency.max(1),
        };
        Self { client, options }
    }

    /// Stores `data` (in one piece, or chunked if longer than a chunk).
    pub async fn put(&self, key: &RecordKey, data: &[u8]) -> Result<ChunkedReceipt> {
        self.put_stream(key, data).await
    }

    /// Stores the record read from `source` until its end, holding at most
    /// `put_concurrency + 1` chunks of it in memory.
    pub async fn put_stream<R: AsyncRead + Unpin>(
        &self,
        key: &RecordKey,
        mut source: R,
    ) -> Result<ChunkedReceipt> {
        let chunk_size = self.options.chunk_size as usize;
        let mut first = ChunkBuf::default();
        read_chunk(&mut source, &mut first, chunk_size).await?;
        let mut ready = vec![first];
        if ready[0].0.len() == chunk_size {
            // A full first chunk: only the next read tells whether the record goes on.
            let mut second = ChunkBuf::default();
            read_chunk(&mut source, &mut second, chunk_size).await?;
            if !second.0.is_empty() {
                ready.push(second);
            }
        }
        let ended = ready.len() == 1;
        // One chunk or less, and not mistakable for a manifest: stored in one piece.
        if ended && !ChunkManifest::is_manifest(&ready[0].0) {
            let receipt = self.client.put(key, &ready[0].0).await?;
            return Ok(ChunkedReceipt {
                record_len: ready[0].0.len() as u64,
                receipt,
                chunks: 0,
                under_replicated_chunks: 0,
            });
        }
        self.put_chunks(key, ready, source, ended).await
    }

    /// Writes the chunks (`ready` ones first, then the rest of `source`), then the manifest.
    async fn put_chunks<R: AsyncRead + Unpin>(
        &self,
        key: &RecordKey,
        ready: Vec<ChunkBuf>,
        mut source: R,
        mut ended: bool,
    ) -> Result<ChunkedReceipt> {
        let chunk_size = self.options.chunk_size as usize;
        let set = ChunkSetId::random(&mut rand::rng());
        let mut ready = std::collections::VecDeque::from(ready);
        let mut whole = blake3::Hasher::new();
        let mut record_len: u64 = 0;
        let mut entries: Vec<ChunkEntry> = Vec::new();
        let mut under_replicated_chunks = 0;
        let mut free: Vec<ChunkBuf> = Vec::new();
        let mut in_flight = FuturesOrdered::new();
        let mut next_index: u32 = 0;
        loop {
            while in_flight.len() < self.options.put_concurrency {
                let chunk = match ready.pop_front() {
                    Some(chunk) => chunk,
                    None if ended => break,
                    None => {
                        let mut chunk = free.pop().unwrap_or_default();
                        read_chunk(&mut source, &mut chunk, chunk_size).await?;
                        ended = chunk.0.len() < chunk_size;
                        if chunk.0.is_empty() {
                            break;
                        }
                        chunk
                    }
                };
                if next_index as usize >= MANIFEST_CHUNKS_MAX {
                    return Err(Error::RecordTooLarge {
                        len: record_len + chunk.0.len() as u64,
                        max: MANIFEST_CHUNKS_MAX as u64 * self.options.chunk_size,
                    });
                }
                whole.update(&chunk.0);
                record_len += chunk.0.len() as u64;
                let digest = *blake3::hash(&chunk.0).as_bytes();
                let chunk_key = chunk_key(key, set, next_index);
                next_index += 1;
                in_flight.push_back(async move {
                    let stored = self.client.put(&chunk_key, &chunk.0).await;
                    (stored, chunk, digest)
                });
            }
            let Some((stored, mut chunk, digest)) = in_flight.next().await else {
                break;
            };
            let receipt = stored?;
            if receipt.under_replicated() {
                under_replicated_chunks += 1;
            }
            entries.push(ChunkEntry {
                len: chunk.0.len() as u64,
                version: receipt.version,
                digest,
            });
            chunk.wipe();
            free.push(chunk);
        }
        let manifest = ChunkManifest {
            set,
            record_len,
            chunk_size: self.options.chunk_size,
            digest: *whole.finalize().as_bytes(),
            chunks: entries,
        };
        // The manifest goes last: until it is stored, readers see the previous version.
        let encoded = Zeroizing::new(manifest.encode()?);
        let receipt = self.client.put(key, &encoded).await?;
        Ok(ChunkedReceipt {
            record_len,
            receipt,
            chunks: manifest.chunks.len(),
            under_replicated_chunks,
        })
    }

    /// Rebuilds a whole record into memory (for records known to be small enough; the
    /// buffer grows as chunks arrive, and its earlier allocations are not wiped).
    pub async fn get(&self, key: &RecordKey, purpose: &Purpose) -> Result<Zeroizing<Vec<u8>>> {
        let mut out = Zeroizing::new(Vec::new());
        self.get_to(key, purpose, &mut *out, None).await?;
        Ok(out)
    }

    /// Writes the record at `key` (or the bytes `range` of it, clamped to its length) to `sink`
    /// in order, holding at most `get_concurrency` chunks in memory. Every chunk is checked
    /// against the manifest (version, length, BLAKE3) before any of its bytes is written, and
    /// a whole-record read is checked against the record's digest at the end.
    pub async fn get_to<W: AsyncWrite + Unpin>(
        &self,
        key: &RecordKey,
        purpose: &Purpose,
        sink: &mut W,
        range: Option<Range<u64>>,
    ) -> Result<StreamedRecord> {
        let head = self.client.get_versioned(key, purpose).await?;
        let version = head.version;
        if !ChunkManifest::is_manifest(&head.data) {
            let record_len = head.data.len() as u64;
            let (start, end) = clamp(range, record_len);
            // Both bounds are at most the in-memory record's length.
            sink.write_all(&head.data[start as usize..end as usize])
                .await
                .map_err(stream_error("write"))?;
            sink.flush().await.map_err(stream_error("write"))?;
            return Ok(StreamedRecord {
                version,
                record_len,
                written: end - start,
                chunks: 0,
            });
        }
        let manifest =
            ChunkManifest::decode(&head.data).map_err(|source| Error::ManifestCorrupt {
                key: key.clone(),
                source,
            })?;
        drop(head);
        let whole_record = range.is_none();
        let (start, end) = clamp(range, manifest.record_len);
        let covering = manifest.chunks_covering(start..end);
        let mut whole = whole_record.then(blake3::Hasher::new);
        let mut next = covering.start;
        let mut in_flight = FuturesOrdered::new();
        loop {
            while in_flight.len() < self.options.get_concurrency && next < covering.end {
                in_flight.push_back(self.fetch_chunk(key, purpose, &manifest, next));
                next += 1;
            }
            let Some(fetched) = in_flight.next().await else {
                break;
            };
            let (index, mut chunk) = fetched?;
            if let Some(whole) = whole.as_mut() {
                whole.update(&chunk.0);
            }
            let offset = manifest.chunk_offset(index);
            // Within the chunk, whose length the manifest bounds to 16 MiB.
            let from = start.saturating_sub(offset) as usize;
            let to = (end - offset).min(chunk.0.len() as u64) as usize;
            sink.write_all(&chunk.0[from..to])
                .await
                .map_err(stream_error("write"))?;
            chunk.wipe();
        }
        if let Some(whole) = whole {
            if whole.finalize() != blake3::Hash::from(manifest.digest) {
                return Err(Error::RecordDigestMismatch { key: key.clone() });
            }
        }
        sink.flush().await.map_err(stream_error("write"))?;
        Ok(StreamedRecord {
            version,
            record_len: manifest.record_len,
            written: end - start,
            chunks: covering.len(),
        })
    }

    /// Reads chunk `index` and checks it against its manifest entry.
    async fn fetch_chunk(
        &self,
        key: &RecordKey,
        purpose: &Purpose,
        manifest: &ChunkManifest,
        index: usize,
    ) -> Result<(usize, ChunkBuf)> {
        // Decoding checked that the chunks cover exactly `record_len` in `chunk_size` steps, so
        // every index of `chunks_covering` is below the chunk count (at most 2^18).
        let chunk = index as u32;
        let entry = &manifest.chunks[index];
        let outcome = self
            .client
            .get_versioned(&chunk_key(key, manifest.set, chunk), purpose)
            .await
            .map_err(|source| Error::ChunkUnavailable {
                key: key.clone(),
                chunk,
                source: Box::new(source),
            })?;
        let mismatch = |what| Error::ChunkMismatch {
            key: key.clone(),
            chunk,
            what,
        };
        if outcome.version != entry.version {
            return Err(mismatch("version"));
        }
        // Taken out of its `Zeroizing`, which would wipe it a byte at a time; `ChunkBuf` wipes
        // it with one memset.
        let mut outcome = outcome;
        let data = ChunkBuf(std::mem::take(&mut *outcome.data));
        if data.0.len() as u64 != entry.len {
            return Err(mismatch("length"));
        }
        if blake3::hash(&data.0) != blake3::Hash::from(entry.digest) {
            return Err(mismatch("digest"));
        }
        Ok((index, data))
    }

    /// Deletes the record at `key` and every chunk stored under it (admin role).
    ///
    /// The record's key gets its tombstone first, so readers see the record as deleted before
    /// any chunk goes; then every chunk set under the key's chunk prefix is deleted, including
    /// those orphaned by failed or overwritten writes. Deleting again finishes an interrupted
    /// deletion.
    pub async fn delete(&self, key: &RecordKey) -> Result<ChunkedDeletion> {
        let receipt = self.client.delete(key).await?;
        let chunks = self.client.list(&chunk_prefix(key)).await?;
        let mut pending = chunks.iter();
        let mut in_flight = futures_util::stream::FuturesUnordered::new();
        loop {
            while in_flight.len() < DELETE_CONCURRENCY {
                let Some(chunk) = pending.next() else { break };
                in_flight.push(self.client.delete(&chunk.key));
            }
            match in_flight.next().await {
                Some(deleted) => {
                    deleted?;
                }
                None => break,
            }
        }
        Ok(ChunkedDeletion {
            receipt,
            chunks: chunks.len(),
        })
    }
}

/// Tombstones written at once when deleting chunks: small requests, so a few dozen keep the
/// nodes' group commit busy without a burst of thousands of streams.
const DELETE_CONCURRENCY: usize = 32;

/// A buffer holding plaintext of one chunk, wiped with one memset before it is reused or freed.
#[derive(Default)]
struct ChunkBuf(Vec<u8>);

impl ChunkBuf {
    /// Zeroes the bytes and empties the buffer, keeping its allocation. Every byte past the
    /// length was zeroed this way before, so the whole allocation is clean afterwards.
    fn wipe(&mut self) {
        self.0.as_mut_slice().zeroize();
        self.0.clear();
    }
}

impl Drop for ChunkBuf {
    fn drop(&mut self) {
        self.wipe();
    }
}

/// Reads from `source` into `buf` until it holds `len` bytes or the source ends. Fills a
/// buffer of exactly `len` bytes rather than `read_to_end`, which would double the allocation
/// to look for the end.
async fn read_chunk<R: AsyncRead + Unpin>(
    source: &mut R,
    buf: &mut ChunkBuf,
    len: usize,
) -> Result<()> {
    buf.wipe();
    buf.0.resize(len, 0);
    let mut filled = 0;
    while filled < len {
        match source.read(&mut buf.0[filled..]).await {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(stream_error("read")(e)),
        }
    }
    buf.0.truncate(filled);
    Ok(())
}

/// The byte range to return of a record of `len` bytes: `range` clamped to it, or all of it.
fn clamp(range: Option<Range<u64>>, len: u64) -> (u64, u64) {
    match range {
        Some(range) => {
            let end = range.end.min(len);
            (range.start.min(end), end)
        }
        None => (0, len),
    }
}

fn stream_error(action: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Stream { action, source }
}

/// Records above this are never stored in one piece, whatever the chunk size: one envelope
/// may hold at most [`RECORD_MAX_BYTES`].
const _: () = assert!(CHUNK_SIZE_MAX <= RECORD_MAX_BYTES);
