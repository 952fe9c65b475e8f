//! Large records as chunks: the chunk manifest and the keys chunks are stored under.
//!
//! A record larger than one chunk is cut into chunks of `chunk_size` bytes (the last one may be
//! shorter). Each chunk is stored as an ordinary record, split k-of-n on its own, under an
//! internal key (see [`chunk_key`]); a [`ChunkManifest`] stored at the record's own key ties
//! them together:
//!
//! ```text
//!  KEY                                   ─▶ manifest: magic, format, set id, lengths, chunk
//!                                           versions, BLAKE3 of every chunk and of the record
//!  ~bunsan/chunk/<H(KEY)>/<set>/00000000 ─▶ chunk 0
//!  ~bunsan/chunk/<H(KEY)>/<set>/00000001 ─▶ chunk 1 ...
//! ```
//!
//! The manifest is secret-shared like any record, so no node learns the digests (which would
//! let it test guesses of a low-entropy record). Each write of a chunked record draws a fresh
//! set id, so a new version never overwrites the chunks the current manifest points to: the
//! switch from the old record to the new one is the single write of the manifest.
//!
//! `H(KEY)` (a BLAKE3 derivation of the record key) puts every chunk set of one record under one
//! prefix, so that deleting a record can find its chunks by listing, without the reader role
//! needed to open the manifest.
//!
//! Pure code: the client drives the I/O (`bunsan_client::chunked`).

use std::fmt;
use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::envelope::RECORD_MAX_BYTES;
use crate::error::{Error, Result};
use crate::types::{RecordKey, Version, RESERVED_KEY_PREFIX};

/// The bytes every encoded manifest starts with. A reader tells a manifest from a plain record
/// by them; the chunked writer stores any record that starts with them as chunks, so through
/// that writer the test is never ambiguous.
pub const MANIFEST_MAGIC: [u8; 12] = *b"\x89BUNSAN-CHK\n";

/// The manifest format this build writes and reads (the byte after the magic).
pub const MANIFEST_FORMAT: u8 = 1;

/// The default chunk size: 4 MiB. Large enough that the per-request cost (five QUIC streams,
/// five fsyncs) is small against the bytes moved, small enough that a few chunks in flight stay
/// far below the client's memory budget.
pub const CHUNK_SIZE_DEFAULT: u64 = 4 << 20;

/// The largest chunk size a manifest may declare: 16 MiB. A reader holds a few chunks (and
/// their shares) at once, so this bounds a reader's memory whatever a manifest says.
pub const CHUNK_SIZE_MAX: u64 = 16 << 20;

/// The most chunks one manifest may list: 2^18, i.e. 1 TiB at the default chunk size. Bounds
/// the manifest (about 60 bytes a chunk, so at most ~16 MiB) that a reader must hold.
pub const MANIFEST_CHUNKS_MAX: usize = 1 << 18;

/// The namespace of chunk keys, inside [`RESERVED_KEY_PREFIX`].
pub const CHUNK_KEY_PREFIX: &str = "~bunsan/chunk/";

/// A BLAKE3 digest.
pub type Digest = [u8; 32];

/// A random id drawn for each write of a chunked record; its chunks live under it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChunkSetId(pub [u8; 16]);

impl ChunkSetId {
    /// A fresh id; 128 random bits, so two writes never share one.
    pub fn random<R: rand::Rng + ?Sized>(rng: &mut R) -> Self {
        let mut id = [0u8; 16];
        rng.fill(&mut id);
        Self(id)
    }
}

impl fmt::Display for ChunkSetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for ChunkSetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkSetId({self})")
    }
}

/// The prefix under which every chunk of every version of `key` is stored:
/// `~bunsan/chunk/<32 hex digits of a BLAKE3 derivation of the key>/`.
pub fn chunk_prefix(key: &RecordKey) -> String {
    let derived = blake3::derive_key("bunsan 2026-11 chunk key prefix", key.as_bytes());
    format!("{CHUNK_KEY_PREFIX}{}/", hex::encode(&derived[..16]))
}

/// The key of chunk `index` of chunk set `set` of `key`. Always a valid internal key: about 90
/// bytes of hex digits and slashes whatever the record key.
pub fn chunk_key(key: &RecordKey, set: ChunkSetId, index: u32) -> RecordKey {
    let text = format!("{}{set}/{index:08}", chunk_prefix(key));
    debug_assert!(text.starts_with(RESERVED_KEY_PREFIX));
    // The text is short printable ASCII in the reserved namespace, which `internal` accepts.
    RecordKey::internal(text).unwrap_or_else(|_| unreachable!("chunk keys are valid keys"))
}

/// What the manifest says about one chunk.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkEntry {
    /// The chunk's length in bytes.
    pub len: u64,
    /// The version the chunk was written with; a reader accepts no other.
    pub version: Version,
    /// BLAKE3 of the chunk's plaintext.
    pub digest: Digest,
}

impl fmt::Debug for ChunkEntry {
    // Digests of plaintext let anyone test guesses of it: they stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChunkEntry")
            .field("len", &self.len)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// The record stored at a chunked record's key: which chunks make it up, in order, and how to
/// check each one.
///
/// Decoding always validates: lengths add up to `record_len`, every chunk but the last is
/// exactly `chunk_size` long, sizes and counts are within the limits above.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "UncheckedManifest")]
pub struct ChunkManifest {
    /// The chunk set of this write.
    pub set: ChunkSetId,
    /// The whole record's length in bytes.
    pub record_len: u64,
    /// The length of every chunk but the last.
    pub chunk_size: u64,
    /// BLAKE3 of the whole record.
    pub digest: Digest,
    /// The chunks, in record order.
    pub chunks: Vec<ChunkEntry>,
}

/// The wire shape of [`ChunkManifest`] before its fields are checked against each other.
#[derive(Deserialize)]
struct UncheckedManifest {
    set: ChunkSetId,
    record_len: u64,
    chunk_size: u64,
    digest: Digest,
    chunks: Vec<ChunkEntry>,
}

impl TryFrom<UncheckedManifest> for ChunkManifest {
    type Error = Error;

    fn try_from(raw: UncheckedManifest) -> Result<Self> {
        let manifest = ChunkManifest {
            set: raw.set,
            record_len: raw.record_len,
            chunk_size: raw.chunk_size,
            digest: raw.digest,
            chunks: raw.chunks,
        };
        manifest.validate()?;
        Ok(manifest)
    }
}

impl fmt::Debug for ChunkManifest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChunkManifest")
            .field("set", &self.set)
            .field("record_len", &self.record_len)
            .field("chunk_size", &self.chunk_size)
            .field("chunks", &self.chunks.len())
            .finish_non_exhaustive()
    }
}

impl ChunkManifest {
    /// Whether `record` is a manifest, as far as its first bytes tell: it starts with
    /// [`MANIFEST_MAGIC`]. Whether it is a valid one, [`ChunkManifest::decode`] says.
    pub fn is_manifest(record: &[u8]) -> bool {
        record.starts_with(&MANIFEST_MAGIC)
    }

    /// Checks that the fields agree with each other and with the limits.
    pub fn validate(&self) -> Result<()> {
        let invalid = |reason: String| {
            Err(Error::Decode {
                what: "chunk manifest",
                reason,
            })
        };
        if self.chunk_size == 0 || self.chunk_size > CHUNK_SIZE_MAX {
            return invalid(format!(
                "chunk size {} is outside 1..={CHUNK_SIZE_MAX}",
                self.chunk_size
            ));
        }
        if self.chunks.len() > MANIFEST_CHUNKS_MAX {
            return invalid(format!(
                "{} chunks exceed the maximum of {MANIFEST_CHUNKS_MAX}",
                self.chunks.len()
            ));
        }
        let last = self.chunks.len().saturating_sub(1);
        let mut total: u64 = 0;
        for (i, chunk) in self.chunks.iter().enumerate() {
            let fits = if i == last {
                (1..=self.chunk_size).contains(&chunk.len)
            } else {
                chunk.len == self.chunk_size
            };
            if !fits {
                return invalid(format!(
                    "chunk {i} has {} bytes with chunk size {}",
                    chunk.len, self.chunk_size
                ));
            }
            // Cannot overflow: at most 2^18 chunks of at most 2^24 bytes.
            total += chunk.len;
        }
        if total != self.record_len {
            return invalid(format!(
                "the chunks hold {total} bytes but the record length is {}",
                self.record_len
            ));
        }
        Ok(())
    }

    /// Encodes as [`MANIFEST_MAGIC`], [`MANIFEST_FORMAT`], then the postcard body.
    pub fn encode(&self) -> Result<Vec<u8>> {
        self.validate()?;
        let mut out = Vec::with_capacity(MANIFEST_MAGIC.len() + 96 + 64 * self.chunks.len());
        out.extend_from_slice(&MANIFEST_MAGIC);
        out.push(MANIFEST_FORMAT);
        postcard::to_io(self, &mut out).map_err(|e| Error::Encode {
            what: "chunk manifest",
            reason: e.to_string(),
        })?;
        if out.len() as u64 > RECORD_MAX_BYTES {
            return Err(Error::Encode {
                what: "chunk manifest",
                reason: format!("{} bytes exceed one record", out.len()),
            });
        }
        Ok(out)
    }

    /// Decodes and validates a manifest; never panics, whatever the bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let Some(rest) = bytes.strip_prefix(&MANIFEST_MAGIC) else {
            return Err(Error::Decode {
                what: "chunk manifest",
                reason: "no manifest magic".to_owned(),
            });
        };
        let (&format, body) = rest.split_first().ok_or(Error::Decode {
            what: "chunk manifest",
            reason: "no format byte".to_owned(),
        })?;
        if format != MANIFEST_FORMAT {
            return Err(Error::UnsupportedFormat {
                what: "chunk manifest",
                found: format,
                supported: MANIFEST_FORMAT,
            });
        }
        let (manifest, rest): (Self, _) =
            postcard::take_from_bytes(body).map_err(|e| Error::Decode {
                what: "chunk manifest",
                reason: e.to_string(),
            })?;
        if !rest.is_empty() {
            return Err(Error::TrailingBytes { extra: rest.len() });
        }
        Ok(manifest)
    }

    /// Where chunk `index` starts in the record.
    pub fn chunk_offset(&self, index: usize) -> u64 {
        index as u64 * self.chunk_size
    }

    /// The chunks that hold the bytes `range` of the record (clamped to the record), as a
    /// range of chunk indices; empty for an empty range.
    pub fn chunks_covering(&self, range: Range<u64>) -> Range<usize> {
        let end = range.end.min(self.record_len);
        if range.start >= end {
            return 0..0;
        }
        // Both quotients are below the chunk count (≤ 2^18), so they fit usize.
        let first = (range.start / self.chunk_size) as usize;
        let last = ((end - 1) / self.chunk_size) as usize;
        first..last + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::WriterId;
    use proptest::prelude::*;

    fn version(n: u64) -> Version {
        Version {
            clock_micros: n,
            writer: WriterId(n ^ 0xabcd),
        }
    }

    fn manifest(record_len: u64, chunk_size: u64) -> ChunkManifest {
        let count = record_len.div_ceil(chunk_size);
        let chunks = (0..count)
            .map(|i| ChunkEntry {
                len: (record_len - i * chunk_size).min(chunk_size),
                version: version(i + 1),
                digest: *blake3::hash(&i.to_le_bytes()).as_bytes(),
            })
            .collect();
        ChunkManifest {
            set: ChunkSetId([7; 16]),
            record_len,
            chunk_size,
            digest: [9; 32],
            chunks,
        }
    }

    #[test]
    fn round_trips_and_is_recognised() {
        let m = manifest(10 * 1024 + 5, 1024);
        let bytes = m.encode().expect("encode");
        assert!(ChunkManifest::is_manifest(&bytes));
        assert_eq!(bytes[MANIFEST_MAGIC.len()], MANIFEST_FORMAT);
        assert_eq!(ChunkManifest::decode(&bytes), Ok(m));
        assert!(!ChunkManifest::is_manifest(b"plain record"));
    }

    #[test]
    fn refuses_bad_magic_format_and_trailing_bytes() {
        let mut bytes = manifest(3000, 1024).encode().expect("encode");
        bytes.push(0);
        assert_eq!(
            ChunkManifest::decode(&bytes),
            Err(Error::TrailingBytes { extra: 1 })
        );
        bytes.pop();
        bytes[MANIFEST_MAGIC.len()] = 2;
        assert!(matches!(
            ChunkManifest::decode(&bytes),
            Err(Error::UnsupportedFormat { found: 2, .. })
        ));
        assert!(ChunkManifest::decode(b"\x89BUNSAN-CHK").is_err());
        assert!(ChunkManifest::decode(&MANIFEST_MAGIC).is_err());
    }

    #[test]
    fn refuses_inconsistent_lengths() {
        let mut m = manifest(3000, 1024);
        m.record_len += 1;
        assert!(m.validate().is_err());
        let mut m = manifest(3000, 1024);
        m.chunks[0].len -= 1;
        m.chunks[2].len += 1;
        assert!(m.validate().is_err(), "only the last chunk may be short");
        let mut m = manifest(3000, 1024);
        m.chunk_size = CHUNK_SIZE_MAX + 1;
        assert!(m.validate().is_err());
        let mut m = manifest(2048, 1024);
        m.chunks[1].len = 0;
        m.record_len = 1024;
        assert!(m.validate().is_err(), "no empty chunk");
        // A forged body behind a valid magic is refused when decoded, not only when encoded.
        let mut m = manifest(3000, 1024);
        m.record_len = 1;
        let mut bytes = MANIFEST_MAGIC.to_vec();
        bytes.push(MANIFEST_FORMAT);
        bytes.extend(postcard::to_allocvec(&m).expect("encode"));
        assert!(matches!(
            ChunkManifest::decode(&bytes),
            Err(Error::Decode { .. })
        ));
    }

    #[test]
    fn chunk_keys_are_internal_distinct_and_grouped_by_record() {
        let key = RecordKey::new("clinic/patient/scan.dcm").expect("key");
        let other = RecordKey::new("clinic/patient/scan.dcm2").expect("key");
        let a = chunk_key(&key, ChunkSetId([1; 16]), 0);
        let b = chunk_key(&key, ChunkSetId([1; 16]), 1);
        let c = chunk_key(&key, ChunkSetId([2; 16]), 0);
        assert!(a.is_internal());
        assert!(
            RecordKey::new(a.as_str()).is_err(),
            "users cannot name a chunk"
        );
        assert!(a != b && a != c && b != c);
        assert!(a.as_str().starts_with(&chunk_prefix(&key)));
        assert!(c.as_str().starts_with(&chunk_prefix(&key)));
        assert!(!a.as_str().starts_with(&chunk_prefix(&other)));
        let longest = RecordKey::new("x".repeat(512)).expect("key");
        assert!(
            chunk_key(&longest, ChunkSetId([0xff; 16]), u32::MAX)
                .as_str()
                .len()
                < 100
        );
    }

    #[test]
    fn covering_chunks() {
        let m = manifest(10 * 1024 + 5, 1024);
        assert_eq!(m.chunks_covering(0..1), 0..1);
        assert_eq!(m.chunks_covering(1023..1025), 0..2);
        assert_eq!(m.chunks_covering(0..u64::MAX), 0..11);
        assert_eq!(m.chunks_covering(5..5), 0..0);
        assert_eq!(m.chunks_covering(20_000..30_000), 0..0);
        assert_eq!(m.chunk_offset(3), 3072);
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = ChunkManifest::decode(&bytes);
            let mut framed = MANIFEST_MAGIC.to_vec();
            framed.push(MANIFEST_FORMAT);
            framed.extend(&bytes);
            let _ = ChunkManifest::decode(&framed);
        }

        #[test]
        fn any_valid_manifest_round_trips(len in 1u64..1_000_000, size in 1u64..100_000) {
            prop_assume!(len.div_ceil(size) <= 2_000);
            let m = manifest(len, size);
            let bytes = m.encode().expect("encode");
            prop_assert_eq!(ChunkManifest::decode(&bytes), Ok(m));
        }

        #[test]
        fn covering_chunks_hold_the_range(len in 1u64..100_000, size in 1u64..5_000,
                                          a in 0u64..120_000, b in 0u64..120_000) {
            prop_assume!(len.div_ceil(size) <= 2_000);
            let m = manifest(len, size);
            let (start, end) = (a.min(b), a.max(b).min(len));
            let chunks = m.chunks_covering(start..end);
            if start < end {
                prop_assert!(m.chunk_offset(chunks.start) <= start);
                let last = chunks.end - 1;
                prop_assert!(m.chunk_offset(last) + m.chunks[last].len >= end);
                prop_assert!(m.chunk_offset(last) < end);
            } else {
                prop_assert!(chunks.is_empty());
            }
        }
    }
}
