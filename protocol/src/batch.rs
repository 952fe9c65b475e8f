//! One writer signature over a batch of record headers (envelope format 3).
//!
//! A collector that writes many small records at once signs them together: each header is a
//! leaf of an RFC 6962 Merkle tree ([`crate::merkle`]), the writer signs the root once, and every
//! envelope carries its header's inclusion proof ([`BatchProof`]). An envelope still verifies on
//! its own, years later and on any node: the proof leads from its header to the signed root.
//! What one signature costs is then shared by the whole batch, on the writer and on every node
//! that checks it (nodes and readers remember verified signatures; see
//! [`crate::integrity::Trust`]).
//!
//! ```text
//! leaf_i  = SHA-256(0x00 ‖ "bunsan header signature v1\0" ‖ 3 ‖ postcard(header_i))
//! root    = RFC 6962 root over leaf_1..leaf_m
//! message = "bunsan header batch v1\0" ‖ 3 ‖ m (u32 BE) ‖ root      ← ECDSA P-256 signs this
//! ```
//!
//! Nothing is learnt from a proof but hashes of the other headers of the batch, which are
//! public facts the other envelopes carry anyway (commitments are salted with secret nonces).

use serde::{Deserialize, Serialize};

use crate::envelope::RecordHeader;
use crate::error::{Error, Result};
use crate::merkle::{self, Hash, MerkleTree};

/// The envelope format of records signed as part of a batch.
pub const BATCH_FORMAT: u8 = 3;

/// The most records one batch signature covers. Bounds a proof to 12 hashes.
pub const BATCH_MAX: u32 = 4096;

/// Domain separation of the signed batch root.
const BATCH_DOMAIN: &[u8] = b"bunsan header batch v1\0";

/// Where one header sits in the batch its writer signed: the leaf position, the batch size,
/// and the RFC 6962 inclusion proof from the header's leaf to the signed root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "UncheckedProof")]
pub struct BatchProof {
    /// The header's leaf position, below `size`.
    pub position: u32,
    /// How many headers the signature covers, 1..=[`BATCH_MAX`].
    pub size: u32,
    /// The sibling hashes from the leaf up to the root.
    pub path: Vec<Hash>,
}

#[derive(Deserialize)]
struct UncheckedProof {
    position: u32,
    size: u32,
    path: Vec<Hash>,
}

impl TryFrom<UncheckedProof> for BatchProof {
    type Error = Error;

    fn try_from(raw: UncheckedProof) -> Result<Self> {
        let proof = BatchProof {
            position: raw.position,
            size: raw.size,
            path: raw.path,
        };
        proof.validate()?;
        Ok(proof)
    }
}

impl BatchProof {
    /// Checks the shape: a position below a size within [`BATCH_MAX`], and no more hashes
    /// than a tree of that size is deep. Whether the path leads to the signed root is
    /// [`crate::integrity::Trust::verify`]'s to check.
    pub fn validate(&self) -> Result<()> {
        let depth = 32 - self.size.saturating_sub(1).leading_zeros() as usize;
        if self.size == 0
            || self.size > BATCH_MAX
            || self.position >= self.size
            || self.path.len() > depth
        {
            return Err(Error::InvalidEnvelope {
                reason: format!(
                    "a batch proof for position {} of {} with {} hashes (batches hold \
                     1..={BATCH_MAX} records, a proof at most {depth} hashes)",
                    self.position,
                    self.size,
                    self.path.len()
                ),
            });
        }
        Ok(())
    }

    /// The root this proof leads to from `header`: what the writer's signature must cover.
    pub fn root(&self, header: &RecordHeader) -> Result<Hash> {
        self.validate()?;
        merkle::root_from_inclusion(
            &leaf(header)?,
            u64::from(self.position),
            u64::from(self.size),
            &self.path,
        )
    }
}

/// The leaf hash of `header` in a batch.
pub fn leaf(header: &RecordHeader) -> Result<Hash> {
    Ok(merkle::leaf_hash(&crate::integrity::signed_message(
        BATCH_FORMAT,
        header,
    )?))
}

/// The bytes a writer signs for a batch of `size` headers with Merkle root `root`.
pub fn signed_message(size: u32, root: &Hash) -> Vec<u8> {
    let mut message = Vec::with_capacity(BATCH_DOMAIN.len() + 1 + 4 + 32);
    message.extend_from_slice(BATCH_DOMAIN);
    message.push(BATCH_FORMAT);
    message.extend_from_slice(&size.to_be_bytes());
    message.extend_from_slice(root);
    message
}

/// The root over `headers` and each header's proof, in order. Fails on an empty batch or one
/// larger than [`BATCH_MAX`].
pub fn prove(headers: &[RecordHeader]) -> Result<(Hash, Vec<BatchProof>)> {
    let size = u32::try_from(headers.len())
        .ok()
        .filter(|size| (1..=BATCH_MAX).contains(size))
        .ok_or_else(|| Error::InvalidEnvelope {
            reason: format!(
                "a batch of {} records (1..={BATCH_MAX} allowed)",
                headers.len()
            ),
        })?;
    let mut tree = MerkleTree::new();
    for header in headers {
        tree.push(leaf(header)?);
    }
    let root = tree.root(u64::from(size))?;
    let proofs = (0..size)
        .map(|position| {
            Ok(BatchProof {
                position,
                size,
                path: tree.inclusion_proof(u64::from(position), u64::from(size))?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((root, proofs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::sample;
    use proptest::prelude::*;

    fn headers(count: usize) -> Vec<RecordHeader> {
        (0..count)
            .map(|i| {
                let mut header = sample(1, vec![i as u8; 3]).header;
                header.version.clock_micros = i as u64;
                header
            })
            .collect()
    }

    proptest! {
        #[test]
        fn every_proof_leads_to_the_root(count in 1usize..70) {
            let headers = headers(count);
            let (root, proofs) = prove(&headers).expect("prove");
            for (header, proof) in headers.iter().zip(&proofs) {
                prop_assert_eq!(proof.root(header).expect("root"), root);
            }
        }

        #[test]
        fn a_proof_never_fits_another_header(count in 2usize..40, pick in 0usize..40) {
            let headers = headers(count);
            let (root, proofs) = prove(&headers).expect("prove");
            let (i, j) = (pick % count, (pick + 1) % count);
            prop_assert_ne!(proofs[i].root(&headers[j]).ok(), Some(root));
        }
    }

    #[test]
    fn a_changed_header_or_position_leads_elsewhere() {
        let headers = headers(5);
        let (root, proofs) = prove(&headers).expect("prove");
        let mut changed = headers[2].clone();
        changed.record_len += 1;
        assert_ne!(proofs[2].root(&changed).ok(), Some(root));
        let mut moved = proofs[2].clone();
        moved.position = 3;
        assert_ne!(moved.root(&headers[2]).ok(), Some(root));
    }

    #[test]
    fn shapes_outside_the_limits_are_refused() {
        assert!(prove(&[]).is_err());
        for (position, size, hashes) in [(0, 0, 0), (3, 3, 2), (0, BATCH_MAX + 1, 0), (0, 4, 3)] {
            let proof = BatchProof {
                position,
                size,
                path: vec![[0; 32]; hashes],
            };
            assert!(proof.validate().is_err(), "{position}/{size}/{hashes}");
            let bytes = postcard::to_allocvec(&(position, size, &proof.path)).expect("encode");
            assert!(postcard::from_bytes::<BatchProof>(&bytes).is_err());
        }
    }
}
