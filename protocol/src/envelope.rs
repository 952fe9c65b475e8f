//! The share envelope: what a node stores for one version of one record.
//!
//! An envelope is one node's share plus the public facts every node holds identically (the
//! [`RecordHeader`]: key, version, scheme, length, whether it is a tombstone). Nothing in it
//! lets a node learn anything about the record beyond its length: the payload is one Shamir
//! share, which alone is uniformly random.
//!
//! Every envelope starts with a format version byte. Medical records outlive software
//! versions, so a node refuses to interpret a format it does not know rather than guess.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::types::{RecordKey, Scheme, ShareIndex, Version};

/// The envelope format this build writes and reads.
pub const ENVELOPE_FORMAT: u8 = 1;

/// The largest record stored as one envelope: 64 MiB. Larger records are chunked by the client,
/// so this bounds the memory one request can make a node or client hold.
pub const RECORD_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// Facts about one record version that every node's envelope repeats identically.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordHeader {
    /// The record's name.
    pub key: RecordKey,
    /// The version this envelope belongs to; shares of different versions never combine.
    pub version: Version,
    /// k-of-n: how many shares exist and how many rebuild the record.
    pub scheme: Scheme,
    /// The plaintext length in bytes (0 for tombstones).
    pub record_len: u64,
    /// A tombstone marks a deletion: it has a version (so late writes lose) and no payload.
    pub tombstone: bool,
    /// The sharing epoch: 0 as written, incremented by every refresh of this version. Shares
    /// of two epochs never combine; a node keeps the highest (version, epoch).
    pub epoch: u32,
}

impl RecordHeader {
    /// What orders two envelopes of one key: the version, then the epoch.
    pub fn generation(&self) -> (Version, u32) {
        (self.version, self.epoch)
    }

    /// BLAKE3 of the header's encoding: the same on every node holding this dealing, so
    /// inventories can be compared without comparing headers field by field.
    pub fn digest(&self) -> Result<[u8; 32]> {
        let bytes = postcard::to_allocvec(self).map_err(|e| Error::Encode {
            what: "record header",
            reason: e.to_string(),
        })?;
        Ok(*blake3::hash(&bytes).as_bytes())
    }
}

/// One node's share of one record version.
///
/// Deserializing always runs [`ShareEnvelope::validate`], so an envelope that came off the wire
/// or the disk is known to be self-consistent.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "UncheckedEnvelope")]
pub struct ShareEnvelope {
    /// Always [`ENVELOPE_FORMAT`] for envelopes this build writes.
    pub format: u8,
    /// The facts shared by all envelopes of this version.
    pub header: RecordHeader,
    /// The x-coordinate of this share (the node's index).
    pub index: ShareIndex,
    /// The share's y bytes: as long as the record, empty for a tombstone.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

/// The wire shape of [`ShareEnvelope`] before its fields are checked against each other.
#[derive(Deserialize)]
struct UncheckedEnvelope {
    format: u8,
    header: RecordHeader,
    index: ShareIndex,
    #[serde(with = "serde_bytes")]
    payload: Vec<u8>,
}

impl TryFrom<UncheckedEnvelope> for ShareEnvelope {
    type Error = Error;

    fn try_from(raw: UncheckedEnvelope) -> Result<Self> {
        let envelope = ShareEnvelope {
            format: raw.format,
            header: raw.header,
            index: raw.index,
            payload: raw.payload,
        };
        envelope.validate()?;
        Ok(envelope)
    }
}

impl std::fmt::Debug for ShareEnvelope {
    // The payload is share material: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShareEnvelope")
            .field("format", &self.format)
            .field("header", &self.header)
            .field("index", &self.index)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

impl ShareEnvelope {
    /// A data envelope for share `index` of a record version.
    pub fn data(
        key: RecordKey,
        version: Version,
        scheme: Scheme,
        index: ShareIndex,
        payload: Vec<u8>,
    ) -> Self {
        Self {
            format: ENVELOPE_FORMAT,
            header: RecordHeader {
                key,
                version,
                scheme,
                record_len: payload.len() as u64,
                tombstone: false,
                epoch: 0,
            },
            index,
            payload,
        }
    }

    /// A tombstone for `key` at `version`, addressed to the node holding share `index`.
    pub fn tombstone(key: RecordKey, version: Version, scheme: Scheme, index: ShareIndex) -> Self {
        Self {
            format: ENVELOPE_FORMAT,
            header: RecordHeader {
                key,
                version,
                scheme,
                record_len: 0,
                tombstone: true,
                epoch: 0,
            },
            index,
            payload: Vec::new(),
        }
    }

    /// Checks that the fields agree with each other: known format, index within n, payload
    /// length equal to the record length, tombstones empty, size within [`RECORD_MAX_BYTES`].
    pub fn validate(&self) -> Result<()> {
        if self.format != ENVELOPE_FORMAT {
            return Err(Error::UnsupportedFormat {
                what: "share envelope",
                found: self.format,
                supported: ENVELOPE_FORMAT,
            });
        }
        let h = &self.header;
        let invalid = |reason: String| Err(Error::InvalidEnvelope { reason });
        if self.index.get() > h.scheme.shares() {
            return invalid(format!(
                "share index {} is beyond the share count {}",
                self.index,
                h.scheme.shares()
            ));
        }
        if h.record_len > RECORD_MAX_BYTES {
            return invalid(format!(
                "record length {} exceeds the maximum of {RECORD_MAX_BYTES}",
                h.record_len
            ));
        }
        if h.tombstone && (h.record_len != 0 || !self.payload.is_empty()) {
            return invalid("a tombstone carries no payload".to_owned());
        }
        if self.payload.len() as u64 != h.record_len {
            return invalid(format!(
                "payload has {} bytes but the record length is {}",
                self.payload.len(),
                h.record_len
            ));
        }
        Ok(())
    }

    /// Encodes for storage: the format byte, then the postcard encoding of the envelope.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.payload.len() + 128);
        out.push(ENVELOPE_FORMAT);
        postcard::to_io(self, &mut out).map_err(|e| Error::Encode {
            what: "share envelope",
            reason: e.to_string(),
        })?;
        Ok(out)
    }

    /// Decodes and validates stored bytes; never panics, whatever the bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let (&format, body) = bytes.split_first().ok_or(Error::Decode {
            what: "share envelope",
            reason: "empty input".to_owned(),
        })?;
        if format != ENVELOPE_FORMAT {
            return Err(Error::UnsupportedFormat {
                what: "share envelope",
                found: format,
                supported: ENVELOPE_FORMAT,
            });
        }
        let (envelope, rest): (Self, _) =
            postcard::take_from_bytes(body).map_err(|e| Error::Decode {
                what: "share envelope",
                reason: e.to_string(),
            })?;
        if !rest.is_empty() {
            return Err(Error::TrailingBytes { extra: rest.len() });
        }
        Ok(envelope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::WriterId;
    use proptest::prelude::*;

    fn sample(payload: Vec<u8>) -> ShareEnvelope {
        ShareEnvelope::data(
            RecordKey::new("clinic/patient/1").expect("key"),
            Version {
                clock_micros: 42,
                writer: WriterId(7),
            },
            Scheme::new(3, 5).expect("scheme"),
            ShareIndex::new(2).expect("index"),
            payload,
        )
    }

    #[test]
    fn round_trips() {
        let env = sample(vec![1, 2, 3]);
        let bytes = env.encode().expect("encode");
        assert_eq!(ShareEnvelope::decode(&bytes), Ok(env));
    }

    #[test]
    fn rejects_unknown_format_and_trailing_bytes() {
        let mut bytes = sample(vec![9]).encode().expect("encode");
        bytes.push(0);
        assert_eq!(
            ShareEnvelope::decode(&bytes),
            Err(Error::TrailingBytes { extra: 1 })
        );
        bytes[0] = 99;
        assert!(matches!(
            ShareEnvelope::decode(&bytes),
            Err(Error::UnsupportedFormat { found: 99, .. })
        ));
        assert!(ShareEnvelope::decode(&[]).is_err());
    }

    #[test]
    fn rejects_inconsistent_fields() {
        let mut env = sample(vec![1, 2]);
        env.header.record_len = 3;
        assert!(matches!(env.validate(), Err(Error::InvalidEnvelope { .. })));
        let mut env = sample(vec![1]);
        env.index = ShareIndex::new(6).expect("index");
        assert!(matches!(env.validate(), Err(Error::InvalidEnvelope { .. })));
        let mut tomb = sample(Vec::new());
        tomb.header.tombstone = true;
        assert_eq!(tomb.validate(), Ok(()));
        tomb.payload.push(1);
        assert!(tomb.validate().is_err());
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = ShareEnvelope::decode(&bytes);
        }

        #[test]
        fn round_trip_any_payload(payload in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let env = sample(payload);
            let bytes = env.encode().expect("encode");
            prop_assert_eq!(ShareEnvelope::decode(&bytes), Ok(env));
        }
    }
}
