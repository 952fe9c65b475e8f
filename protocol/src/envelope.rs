//! The share envelope: what a node stores for one version of one record.
//!
//! An envelope is one node's share plus the public facts every node holds identically: the
//! [`RecordHeader`] (key, version, scheme, length, tombstone flag, the commitments c_1..c_n,
//! the end-to-end check, the sealed nonces) and the writer's [`WriterSignature`] over it. The
//! node's own commitment nonce travels beside its share. Nothing in an envelope lets a node
//! learn anything about the record beyond its length: the payload is one Shamir share of the
//! salted record, the commitments are salted with nonces the node does not know (except its
//! own), and the end-to-end check is salted with a secret shared like the record.
//!
//! A refresh (see [`crate::refresh`]) re-deals a version's shares: the envelope then also
//! carries a [`RefreshSeal`] with the epoch, the new commitments and sealed nonces, signed by
//! the refresher; the header and the writer's signature stay as written, so the writer-signed
//! end-to-end check still vouches for the record. [`ShareEnvelope::commitment`] and
//! [`ShareEnvelope::sealed_nonce`] give the ones in force.
//!
//! Every envelope starts with a format version byte. Medical records outlive software
//! versions, so a node refuses to interpret a format it does not know rather than guess.
//! Format 2 (this one) added the integrity fields; format 1 was never released, so nothing
//! stored in it needs migrating (docs/DECISIONS.md D8).

use serde::{Deserialize, Serialize};

use crate::batch::{BatchProof, BATCH_FORMAT};
use crate::error::{Error, Result};
use crate::integrity::{CommitNonce, Digest, WriterSignature, SALT_BYTES};
use crate::refresh::RefreshSeal;
use crate::seal::SealedNonce;
use crate::types::{RecordKey, Scheme, ShareIndex, Version};

/// The envelope format this build writes and reads.
pub const ENVELOPE_FORMAT: u8 = 2;

/// The largest record stored as one envelope: 64 MiB. Larger records are chunked by the client,
/// so this bounds the memory one request can make a node or client hold. A share is
/// [`SALT_BYTES`] longer than its record.
pub const RECORD_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// Facts about one record version that every node's envelope repeats identically, all covered
/// by the writer's signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordHeader {
    /// The record's name.
    pub key: RecordKey,
    /// The version this envelope belongs to; shares of different versions never combine.
    pub version: Version,
    /// k-of-n: how many shares exist and how many rebuild the record.
    pub scheme: Scheme,
    /// The plaintext length in bytes (0 for tombstones); shares are [`SALT_BYTES`] longer.
    pub record_len: u64,
    /// A tombstone marks a deletion: it has a version (so late writes lose) and no payload.
    pub tombstone: bool,
    /// c_1..c_n, the salted commitment to every share (empty for a tombstone).
    pub commitments: Vec<Digest>,
    /// BLAKE3(salt ‖ record), the end-to-end check of the rebuilt record (none for a
    /// tombstone).
    pub record_check: Option<Digest>,
    /// nonce_j sealed to node j's key, for every j; absent for a node the writer could not
    /// reach when it dealt the shares (empty for a tombstone).
    pub sealed_nonces: Vec<Option<SealedNonce>>,
}

impl RecordHeader {
    /// The length of every share of this record: record length plus the salt (0 for a
    /// tombstone).
    pub fn share_len(&self) -> u64 {
        if self.tombstone {
            0
        } else {
            self.record_len + SALT_BYTES as u64
        }
    }

    /// The commitment to share `index`, if the header has one.
    pub fn commitment(&self, index: ShareIndex) -> Option<&Digest> {
        self.commitments
            .get(usize::from(index.get()).checked_sub(1)?)
    }

    /// The nonce sealed to the node at `index`, if the writer could seal one.
    pub fn sealed_nonce(&self, index: ShareIndex) -> Option<&SealedNonce> {
        self.sealed_nonces
            .get(usize::from(index.get()).checked_sub(1)?)?
            .as_ref()
    }
}

/// One node's share of one record version.
///
/// Deserializing always runs [`ShareEnvelope::validate`], so an envelope that came off the wire
/// or the disk is known to be self-consistent (not yet authentic: that is
/// [`crate::integrity::Trust::verify`] and [`ShareEnvelope::check_commitment`]).
///
/// The encoding is the fields in order, with `batch` present only in format
/// [`BATCH_FORMAT`]: format-2 envelopes encode exactly as they always did.
#[derive(Clone, PartialEq, Eq)]
pub struct ShareEnvelope {
    /// [`ENVELOPE_FORMAT`] for a header signed on its own, [`BATCH_FORMAT`] for one signed
    /// as part of a batch.
    pub format: u8,
    /// The facts shared by all envelopes of this version.
    pub header: RecordHeader,
    /// The writer's signature over `header` (format 2) or over its batch's root (format 3),
    /// with the writer's certificate.
    pub signature: WriterSignature,
    /// Format 3 only: where `header` sits in the batch the signature covers.
    pub batch: Option<BatchProof>,
    /// After a refresh: the epoch and the commitments and sealed nonces of the refreshed
    /// shares, signed by the refresher. `None` as written (epoch 0).
    pub refresh: Option<Box<RefreshSeal>>,
    /// The x-coordinate of this share (the node's index).
    pub index: ShareIndex,
    /// nonce_j in the clear, for the node and for readers to check c_j (none for a tombstone,
    /// and none for a share regenerated by repair at a node that could not open its sealed
    /// nonce: such a share fails its commitment check and is not released until a refresh
    /// commits it anew).
    pub nonce: Option<CommitNonce>,
    /// The share's y bytes: [`RecordHeader::share_len`] long, empty for a tombstone.
    pub payload: Vec<u8>,
}

/// The fields of a format-2 envelope, in encoding order.
const FIELDS_FORMAT_2: usize = 7;

impl Serialize for ShareEnvelope {
    fn serialize<S: serde::Serializer>(
        &self,
        serializer: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::{Error as _, SerializeTuple};
        let batched = self.format == BATCH_FORMAT;
        let mut fields = serializer.serialize_tuple(FIELDS_FORMAT_2 + usize::from(batched))?;
        fields.serialize_element(&self.format)?;
        fields.serialize_element(&self.header)?;
        fields.serialize_element(&self.signature)?;
        if batched {
            let proof = self
                .batch
                .as_ref()
                .ok_or_else(|| S::Error::custom("a format-3 envelope needs its batch proof"))?;
            fields.serialize_element(proof)?;
        }
        fields.serialize_element(&self.refresh)?;
        fields.serialize_element(&self.index)?;
        fields.serialize_element(&self.nonce)?;
        fields.serialize_element(serde_bytes::Bytes::new(&self.payload))?;
        fields.end()
    }
}

impl<'de> Deserialize<'de> for ShareEnvelope {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> std::result::Result<Self, D::Error> {
        deserializer.deserialize_tuple(FIELDS_FORMAT_2 + 1, EnvelopeVisitor)
    }
}

/// Reads the format byte first, then the fields of that format; then validates.
struct EnvelopeVisitor;

impl<'de> serde::de::Visitor<'de> for EnvelopeVisitor {
    type Value = ShareEnvelope;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a share envelope")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<ShareEnvelope, A::Error> {
        use serde::de::Error as _;
        let missing = |field: &str| A::Error::custom(format!("share envelope without {field}"));
        let format: u8 = seq.next_element()?.ok_or_else(|| missing("format"))?;
        if format != ENVELOPE_FORMAT && format != BATCH_FORMAT {
            // The fields of an unknown format cannot be read, so stop before them.
            return Err(A::Error::custom(Error::UnsupportedFormat {
                what: "share envelope",
                found: format,
                supported: BATCH_FORMAT,
            }));
        }
        let header = seq.next_element()?.ok_or_else(|| missing("header"))?;
        let signature = seq.next_element()?.ok_or_else(|| missing("signature"))?;
        let batch = match format {
            BATCH_FORMAT => Some(seq.next_element()?.ok_or_else(|| missing("batch proof"))?),
            _ => None,
        };
        let refresh = seq.next_element()?.ok_or_else(|| missing("refresh"))?;
        let index = seq.next_element()?.ok_or_else(|| missing("index"))?;
        let nonce = seq.next_element()?.ok_or_else(|| missing("nonce"))?;
        let payload: serde_bytes::ByteBuf =
            seq.next_element()?.ok_or_else(|| missing("payload"))?;
        let envelope = ShareEnvelope {
            format,
            header,
            signature,
            batch,
            refresh,
            index,
            nonce,
            payload: payload.into_vec(),
        };
        envelope.validate().map_err(A::Error::custom)?;
        Ok(envelope)
    }
}

impl std::fmt::Debug for ShareEnvelope {
    // The payload is share material and the nonce is secret: never print them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShareEnvelope")
            .field("format", &self.format)
            .field("header", &self.header)
            .field("signature", &self.signature)
            .field("epoch", &self.epoch())
            .field("index", &self.index)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

impl ShareEnvelope {
    /// A data envelope for share `index`, checked with [`ShareEnvelope::validate`].
    pub fn data(
        header: RecordHeader,
        signature: WriterSignature,
        index: ShareIndex,
        nonce: CommitNonce,
        payload: Vec<u8>,
    ) -> Result<Self> {
        Self::dealt(header, signature, None, index, nonce, payload)
    }

    /// A data envelope for share `index` of a record whose header the writer signed as part of
    /// a batch (format [`BATCH_FORMAT`]), checked with [`ShareEnvelope::validate`].
    pub fn batched(
        header: RecordHeader,
        signature: WriterSignature,
        proof: BatchProof,
        index: ShareIndex,
        nonce: CommitNonce,
        payload: Vec<u8>,
    ) -> Result<Self> {
        Self::dealt(header, signature, Some(proof), index, nonce, payload)
    }

    /// A data envelope as written, in the format its batch proof (or its absence) calls for.
    fn dealt(
        header: RecordHeader,
        signature: WriterSignature,
        batch: Option<BatchProof>,
        index: ShareIndex,
        nonce: CommitNonce,
        payload: Vec<u8>,
    ) -> Result<Self> {
        let envelope = Self {
            format: match batch {
                Some(_) => BATCH_FORMAT,
                None => ENVELOPE_FORMAT,
            },
            header,
            signature,
            batch,
            refresh: None,
            index,
            nonce: Some(nonce),
            payload,
        };
        envelope.validate()?;
        Ok(envelope)
    }

    /// The tombstone envelope addressed to the node holding share `index`.
    pub fn tombstone(
        header: RecordHeader,
        signature: WriterSignature,
        index: ShareIndex,
    ) -> Result<Self> {
        let envelope = Self {
            format: ENVELOPE_FORMAT,
            header,
            signature,
            batch: None,
            refresh: None,
            index,
            nonce: None,
            payload: Vec::new(),
        };
        envelope.validate()?;
        Ok(envelope)
    }

    /// Checks that the fields agree with each other: known format, index within n, size within
    /// [`RECORD_MAX_BYTES`], payload length equal to the share length; a data envelope has n
    /// commitments, n seal slots, an end-to-end check and a nonce; a tombstone has none of
    /// them and no payload.
    pub fn validate(&self) -> Result<()> {
        match (self.format, &self.batch) {
            (ENVELOPE_FORMAT, None) => {}
            (BATCH_FORMAT, Some(proof)) if !self.header.tombstone => proof.validate()?,
            (ENVELOPE_FORMAT | BATCH_FORMAT, _) => {
                return Err(Error::InvalidEnvelope {
                    reason: format!(
                        "format {} {} a batch proof{}",
                        self.format,
                        if self.batch.is_some() {
                            "with"
                        } else {
                            "without"
                        },
                        if self.header.tombstone {
                            " (tombstones are signed one by one)"
                        } else {
                            ""
                        }
                    ),
                })
            }
            _ => {
                return Err(Error::UnsupportedFormat {
                    what: "share envelope",
                    found: self.format,
                    supported: BATCH_FORMAT,
                })
            }
        }
        self.signature.validate()?;
        let h = &self.header;
        let n = usize::from(h.scheme.shares());
        let invalid = |reason: String| Err(Error::InvalidEnvelope { reason });
        if self.index.get() > h.scheme.shares() {
            return invalid(format!(
                "share index {} is beyond the share count {n}",
                self.index
            ));
        }
        if h.record_len > RECORD_MAX_BYTES {
            return invalid(format!(
                "record length {} exceeds the maximum of {RECORD_MAX_BYTES}",
                h.record_len
            ));
        }
        if h.tombstone {
            if h.record_len != 0
                || !self.payload.is_empty()
                || !h.commitments.is_empty()
                || !h.sealed_nonces.is_empty()
                || h.record_check.is_some()
                || self.nonce.is_some()
                || self.refresh.is_some()
            {
                return invalid("a tombstone carries no payload, commitments or nonces".to_owned());
            }
            return Ok(());
        }
        if h.commitments.len() != n || h.sealed_nonces.len() != n {
            return invalid(format!(
                "{} commitments and {} sealed nonces for {n} shares",
                h.commitments.len(),
                h.sealed_nonces.len()
            ));
        }
        if h.record_check.is_none() {
            return invalid("a share needs the end-to-end check".to_owned());
        }
        if let Some(refresh) = &self.refresh {
            refresh.validate(n)?;
        }
        if self.payload.len() as u64 != h.share_len() {
            return invalid(format!(
                "payload has {} bytes but shares of a {}-byte record have {}",
                self.payload.len(),
                h.record_len,
                h.share_len()
            ));
        }
        Ok(())
    }

    /// The sharing epoch: 0 as written, raised by every refresh.
    pub fn epoch(&self) -> u32 {
        self.refresh.as_ref().map_or(0, |refresh| refresh.epoch)
    }

    /// What orders two envelopes of one key, and what shares must agree on to combine: the
    /// version, then the epoch.
    pub fn generation(&self) -> (Version, u32) {
        (self.header.version, self.epoch())
    }

    /// The commitment in force for share `index`: the refresh's, else the writer's.
    pub fn commitment(&self, index: ShareIndex) -> Option<&Digest> {
        match &self.refresh {
            Some(refresh) => refresh
                .commitments
                .get(usize::from(index.get()).checked_sub(1)?),
            None => self.header.commitment(index),
        }
    }

    /// The nonce sealed to the node at `index` in force: the refresh's, else the writer's.
    pub fn sealed_nonce(&self, index: ShareIndex) -> Option<&SealedNonce> {
        match &self.refresh {
            Some(refresh) => refresh
                .sealed_nonces
                .get(usize::from(index.get()).checked_sub(1)?)?
                .as_ref(),
            None => self.header.sealed_nonce(index),
        }
    }

    /// BLAKE3 over everything but the share and its nonce (header, writer signature, refresh
    /// seal): equal on every node holding the same dealing of the same generation, so
    /// inventories compare without shipping headers.
    pub fn dealing_digest(&self) -> Result<[u8; 32]> {
        let bytes = postcard::to_allocvec(&(&self.header, &self.signature, &self.refresh))
            .map_err(|e| Error::Encode {
                what: "record header",
                reason: e.to_string(),
            })?;
        Ok(*blake3::hash(&bytes).as_bytes())
    }

    /// Checks this envelope's share against its commitment in force with its own nonce
    /// ([`Error::BadCommitment`] if it does not match, or if the envelope has no nonce).
    /// Tombstones have nothing to check.
    pub fn check_commitment(&self) -> Result<()> {
        if self.header.tombstone {
            return Ok(());
        }
        let bad = Error::BadCommitment {
            index: self.index.get(),
        };
        match (self.commitment(self.index), &self.nonce) {
            (Some(expected), Some(nonce)) => {
                crate::integrity::check_commitment(expected, nonce, self.index, &self.payload)
            }
            _ => Err(bad),
        }
    }

    /// Encodes for storage: the format byte, then the postcard encoding of the envelope.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.payload.len() + 128);
        out.push(self.format);
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
        if format != ENVELOPE_FORMAT && format != BATCH_FORMAT {
            return Err(Error::UnsupportedFormat {
                what: "share envelope",
                found: format,
                supported: BATCH_FORMAT,
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
        if envelope.format != format {
            return Err(Error::Decode {
                what: "share envelope",
                reason: format!(
                    "stored as format {format} but encodes format {}",
                    envelope.format
                ),
            });
        }
        Ok(envelope)
    }
}

/// A structurally valid, unsigned data envelope for unit tests of encoding and framing.
#[cfg(test)]
pub(crate) fn sample(index: u8, record: Vec<u8>) -> ShareEnvelope {
    use crate::types::WriterId;
    let scheme = Scheme::new(3, 5).expect("scheme");
    let mut payload = record;
    payload.extend_from_slice(&[7; SALT_BYTES]);
    ShareEnvelope::data(
        RecordHeader {
            key: RecordKey::new("clinic/patient/1").expect("key"),
            version: Version {
                clock_micros: 42,
                writer: WriterId(7),
            },
            scheme,
            record_len: (payload.len() - SALT_BYTES) as u64,
            tombstone: false,
            commitments: vec![Digest([1; 32]); 5],
            record_check: Some(Digest([2; 32])),
            sealed_nonces: vec![None; 5],
        },
        WriterSignature {
            certificate: vec![0x30],
            signature: vec![1, 2, 3],
        },
        ShareIndex::new(index).expect("index"),
        CommitNonce::from_bytes([3; 32]),
        payload,
    )
    .expect("a valid sample")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trips() {
        let env = sample(2, vec![1, 2, 3]);
        let bytes = env.encode().expect("encode");
        assert_eq!(ShareEnvelope::decode(&bytes), Ok(env));
    }

    /// The layout format-2 envelopes had when serde derived it: stored envelopes must still
    /// read, and signatures over them still check.
    #[derive(Serialize)]
    struct Format2Layout<'a> {
        format: u8,
        header: &'a RecordHeader,
        signature: &'a WriterSignature,
        refresh: &'a Option<Box<RefreshSeal>>,
        index: ShareIndex,
        nonce: &'a Option<CommitNonce>,
        #[serde(with = "serde_bytes")]
        payload: &'a [u8],
    }

    #[test]
    fn format_2_encodes_as_it_always_did() {
        let env = sample(3, vec![5; 40]);
        let old = Format2Layout {
            format: env.format,
            header: &env.header,
            signature: &env.signature,
            refresh: &env.refresh,
            index: env.index,
            nonce: &env.nonce,
            payload: &env.payload,
        };
        let bytes = postcard::to_allocvec(&old).expect("encode");
        assert_eq!(postcard::to_allocvec(&env).expect("encode"), bytes);
        assert_eq!(postcard::from_bytes::<ShareEnvelope>(&bytes), Ok(env));
    }

    #[test]
    fn format_3_carries_its_batch_proof_and_only_it_does() {
        let proof = BatchProof {
            position: 1,
            size: 3,
            path: vec![[9; 32], [8; 32]],
        };
        let mut env = sample(2, vec![1, 2]);
        env.format = BATCH_FORMAT;
        env.batch = Some(proof.clone());
        let bytes = env.encode().expect("encode");
        assert_eq!(ShareEnvelope::decode(&bytes).as_ref(), Ok(&env));
        let mut without = env.clone();
        without.batch = None;
        assert!(without.validate().is_err());
        assert!(without.encode().is_err());
        let mut format_2_with = sample(2, vec![1, 2]);
        format_2_with.batch = Some(proof);
        assert!(format_2_with.validate().is_err());
        // The stored format byte and the encoded one must agree.
        let mut relabelled = bytes.clone();
        relabelled[0] = ENVELOPE_FORMAT;
        assert!(ShareEnvelope::decode(&relabelled).is_err());
    }

    #[test]
    fn rejects_unknown_format_and_trailing_bytes() {
        let mut bytes = sample(2, vec![9]).encode().expect("encode");
        bytes.push(0);
        assert_eq!(
            ShareEnvelope::decode(&bytes),
            Err(Error::TrailingBytes { extra: 1 })
        );
        bytes[0] = 1;
        assert!(matches!(
            ShareEnvelope::decode(&bytes),
            Err(Error::UnsupportedFormat { found: 1, .. })
        ));
        assert!(ShareEnvelope::decode(&[]).is_err());
    }

    #[test]
    fn rejects_inconsistent_fields() {
        let mut env = sample(2, vec![1, 2]);
        env.header.record_len = 3;
        assert!(matches!(env.validate(), Err(Error::InvalidEnvelope { .. })));
        let mut env = sample(1, vec![1]);
        env.index = ShareIndex::new(6).expect("index");
        assert!(matches!(env.validate(), Err(Error::InvalidEnvelope { .. })));
        let mut env = sample(1, vec![1]);
        env.header.commitments.pop();
        assert!(env.validate().is_err());
        let mut env = sample(1, vec![1]);
        env.nonce = None;
        assert!(
            env.validate().is_ok(),
            "a repaired share may lack its nonce"
        );
        assert!(env.check_commitment().is_err(), "but then it never checks");
        let mut env = sample(1, vec![1]);
        env.signature.certificate.clear();
        assert!(env.validate().is_err());

        let mut tomb = sample(1, Vec::new());
        tomb.header.tombstone = true;
        assert!(tomb.validate().is_err(), "a tombstone with commitments");
        tomb.header.commitments.clear();
        tomb.header.sealed_nonces.clear();
        tomb.header.record_check = None;
        tomb.nonce = None;
        tomb.payload.clear();
        assert_eq!(tomb.validate(), Ok(()));
        tomb.payload.push(1);
        assert!(tomb.validate().is_err());
    }

    #[test]
    fn commitments_bind_nonce_index_and_bytes() {
        let mut env = sample(2, vec![1, 2, 3]);
        let nonce = env.nonce.clone().expect("nonce");
        let c = crate::integrity::commit(&nonce, env.index, &env.payload);
        env.header.commitments[1] = c;
        assert_eq!(env.check_commitment(), Ok(()));
        let mut flipped = env.clone();
        flipped.payload[0] ^= 1;
        assert_eq!(
            flipped.check_commitment(),
            Err(Error::BadCommitment { index: 2 })
        );
        let mut renonced = env.clone();
        renonced.nonce = Some(CommitNonce::from_bytes([9; 32]));
        assert!(renonced.check_commitment().is_err());
        let mut moved = env;
        moved.index = ShareIndex::new(3).expect("index");
        moved.header.commitments[2] = c;
        assert!(moved.check_commitment().is_err(), "x is committed too");
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = ShareEnvelope::decode(&bytes);
        }

        #[test]
        fn a_damaged_format_3_envelope_never_panics(
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        ) {
            let mut env = sample(2, vec![3; 20]);
            env.format = BATCH_FORMAT;
            env.batch = Some(BatchProof { position: 2, size: 5, path: vec![[4; 32]; 3] });
            let mut bytes = env.encode().expect("encode");
            for (at, value) in flips {
                let at = at % bytes.len();
                bytes[at] = value;
            }
            if let Ok(decoded) = ShareEnvelope::decode(&bytes) {
                prop_assert!(decoded.validate().is_ok());
                if let Some(proof) = &decoded.batch {
                    let _ = proof.root(&decoded.header);
                }
            }
        }

        #[test]
        fn round_trip_any_payload(record in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let env = sample(4, record);
            let bytes = env.encode().expect("encode");
            prop_assert_eq!(ShareEnvelope::decode(&bytes), Ok(env));
        }
    }
}
