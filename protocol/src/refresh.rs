//! Proactive share refresh: re-randomise every share of a record without changing the record,
//! so that shares stolen before the refresh are useless with shares taken after it.
//!
//! ```text
//!  every participant j draws δ_j(x) = Σ_{i=1}^{k−1} d_{j,i} x^i   (δ_j(0) = 0, d uniform rows)
//!  j sends δ_j(x_m) to each other participant m                    (node to node, mTLS)
//!  m stages y'_m = y_m + Σ_j δ_j(x_m)                              (epoch e + 1)
//!  the coordinator commits epoch e + 1 everywhere once every participant staged it
//! ```
//!
//! δ = Σ_j δ_j is a fresh sharing of zero of degree k − 1, so the new shares are a sharing of
//! the same record with the same threshold, independent of the old ones: k − 1 old shares plus
//! one new share are k points of no common polynomial and rebuild garbage. Because every
//! participant contributes its own δ_j, nobody (the coordinator included, who sees none of it)
//! knows δ unless every participant colludes; an adversary holding fewer than k nodes across
//! one refresh learns nothing (the classic proactive secret sharing argument).
//!
//! The arithmetic is Shamir's: a node's δ_j evaluations are [`shamir::split_at`] of an all-zero
//! secret, and the sum is the XOR [`crate::repair::Accumulator`] also used by repair.

use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::integrity::{Digest, WriterSignature};
use crate::repair::SessionId;
use crate::seal::SealedNonce;
use crate::shamir::{self, Share};
use crate::types::{RecordKey, ShareIndex, Threshold, Version};

/// The public facts of refreshing one record version, identical at every party.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "UncheckedRefresh")]
pub struct RefreshPlan {
    /// Random per refresh: names the staged shares and the deals.
    pub refresh_id: SessionId,
    /// The record.
    pub key: RecordKey,
    /// The record version refreshed (unchanged by the refresh).
    pub version: Version,
    /// The epoch the participants hold now; the refresh stages `epoch + 1`.
    pub epoch: u32,
    participants: Vec<ShareIndex>,
}

#[derive(Deserialize)]
struct UncheckedRefresh {
    refresh_id: SessionId,
    key: RecordKey,
    version: Version,
    epoch: u32,
    participants: Vec<ShareIndex>,
}

impl TryFrom<UncheckedRefresh> for RefreshPlan {
    type Error = Error;

    fn try_from(raw: UncheckedRefresh) -> Result<Self> {
        RefreshPlan::new(
            raw.refresh_id,
            raw.key,
            raw.version,
            raw.epoch,
            raw.participants,
        )
    }
}

impl RefreshPlan {
    /// Checks and builds a plan; participants are sorted. Rejects fewer than two, a repeated
    /// participant, and an epoch that cannot be incremented.
    pub fn new(
        refresh_id: SessionId,
        key: RecordKey,
        version: Version,
        epoch: u32,
        mut participants: Vec<ShareIndex>,
    ) -> Result<Self> {
        let invalid = |reason: String| Err(Error::InvalidPlan { reason });
        participants.sort();
        if participants.len() < 2 {
            return invalid(format!(
                "a refresh needs at least 2 participants, not {}",
                participants.len()
            ));
        }
        if let Some(pair) = participants.windows(2).find(|pair| pair[0] == pair[1]) {
            return invalid(format!("participant {} appears twice", pair[0]));
        }
        if epoch == u32::MAX {
            return invalid("the epoch counter is exhausted".to_owned());
        }
        Ok(Self {
            refresh_id,
            key,
            version,
            epoch,
            participants,
        })
    }

    /// The participants' x-coordinates, ascending.
    pub fn participants(&self) -> &[ShareIndex] {
        &self.participants
    }

    /// The epoch the refresh stages.
    pub fn next_epoch(&self) -> u32 {
        // `new` refuses u32::MAX, so this cannot overflow.
        self.epoch.saturating_add(1)
    }

    /// Checks that the participants can carry a record of threshold `threshold`: at least k
    /// of them, or the new epoch could never be read.
    pub fn check_threshold(&self, threshold: Threshold) -> Result<()> {
        if self.participants.len() < threshold.as_usize() {
            return Err(Error::InvalidPlan {
                reason: format!(
                    "{} participants cannot carry a record of threshold {threshold}",
                    self.participants.len()
                ),
            });
        }
        Ok(())
    }
}

/// What a refresh changed in a version's sharing, carried by every envelope of the new epoch:
/// the epoch, the commitment c'_j and sealed nonce'_j of every new share, and the refresher's
/// (admin) signature over them and the writer-signed header
/// ([`crate::integrity::refresh_message`]).
///
/// The header keeps the writer's commitments and signature: the writer vouches for the record
/// (its end-to-end check), the refresher for the new shares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshSeal {
    /// The epoch, 1 after the first refresh.
    pub epoch: u32,
    /// When the refresher signed, microseconds since the Unix epoch: readers verify the
    /// refresher's certificate at this time, so a record stays readable after it expired.
    pub signed_micros: u64,
    /// c'_1..c'_n.
    pub commitments: Vec<Digest>,
    /// nonce'_j sealed to node j's key, for every j.
    pub sealed_nonces: Vec<Option<SealedNonce>>,
    /// The refresher's signature, with its (admin) certificate.
    pub signature: WriterSignature,
}

impl RefreshSeal {
    /// Checks the shape against a record of `shares` shares: epoch at least 1, one commitment
    /// and one seal slot per share, a well-formed signature.
    pub fn validate(&self, shares: usize) -> Result<()> {
        if self.epoch == 0 {
            return Err(Error::InvalidEnvelope {
                reason: "a refresh seal has an epoch of at least 1".to_owned(),
            });
        }
        if self.commitments.len() != shares || self.sealed_nonces.len() != shares {
            return Err(Error::InvalidEnvelope {
                reason: format!(
                    "a refresh seal has {} commitments and {} sealed nonces for {shares} shares",
                    self.commitments.len(),
                    self.sealed_nonces.len()
                ),
            });
        }
        self.signature.validate()
    }
}

/// One participant's δ_j: a fresh sharing of zero with threshold `threshold`, evaluated at
/// every participant (its own x included). Every byte of every coefficient is uniform.
pub fn deal_zero<R: RngCore + CryptoRng + ?Sized>(
    threshold: Threshold,
    participants: &[ShareIndex],
    len: usize,
    rng: &mut R,
) -> Result<Vec<Share>> {
    shamir::split_at(&vec![0u8; len], threshold, participants, rng)
}

/// Adds `delta` to `share` in place (XOR: addition in GF(2^8)).
pub fn add_delta(share: &mut [u8], delta: &[u8]) -> Result<()> {
    if share.len() != delta.len() {
        return Err(Error::ShareLengthMismatch {
            index: 0,
            len: delta.len(),
            expected: share.len(),
        });
    }
    for (s, d) in share.iter_mut().zip(delta) {
        *s ^= d;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repair::Accumulator;
    use proptest::prelude::*;
    use rand::{RngCore, SeedableRng};
    use rand_chacha::ChaCha20Rng;

    fn index(x: u8) -> ShareIndex {
        ShareIndex::new(x).expect("index")
    }

    /// A whole distributed refresh in memory: every participant deals, every participant sums.
    fn refresh(old: &[Share], k: Threshold, rng: &mut ChaCha20Rng) -> Vec<Share> {
        let xs: Vec<ShareIndex> = old.iter().map(Share::index).collect();
        let len = old[0].data().len();
        let deals: Vec<Vec<Share>> = xs
            .iter()
            .map(|_| deal_zero(k, &xs, len, rng).expect("deal"))
            .collect();
        old.iter()
            .enumerate()
            .map(|(m, share)| {
                let mut acc = Accumulator::new(&xs, len);
                for (j, deal) in deals.iter().enumerate() {
                    acc.add(xs[j], deal[m].data()).expect("add");
                }
                let mut data = share.data().to_vec();
                add_delta(&mut data, &acc.finish().expect("complete")).expect("add");
                Share::new(share.index(), data)
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn refresh_keeps_the_record_and_breaks_mixing(
            n in 3u8..=12,
            k_offset in 0u8..10,
            len in 8usize..300,
            seed in any::<u64>(),
        ) {
            let k = 2 + k_offset % (n - 1);
            let threshold = Threshold::new(k)?;
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            let mut record = vec![0u8; len];
            rng.fill_bytes(&mut record);
            let xs: Vec<ShareIndex> = (1..=n).map(index).collect();
            let old = shamir::split_at(&record, threshold, &xs, &mut rng)?;
            let new = refresh(&old, threshold, &mut rng);
            let k = usize::from(k);
            // Any k new shares rebuild the record.
            let rebuilt = shamir::combine(&new[n as usize - k..], threshold)?;
            prop_assert_eq!(&rebuilt[..], &record[..]);
            // Every share changed.
            for (a, b) in old.iter().zip(&new) {
                prop_assert!(a != b);
            }
            // k − 1 old shares and one new one rebuild something else.
            let mut mixed: Vec<Share> = old[..k - 1].to_vec();
            mixed.push(new[k - 1].clone());
            let wrong = shamir::combine(&mixed, threshold)?;
            prop_assert_ne!(&wrong[..], &record[..]);
        }
    }

    #[test]
    fn plans_are_checked() {
        let id = SessionId([3; 16]);
        let key = RecordKey::new("k").expect("key");
        let version = Version {
            clock_micros: 1,
            writer: crate::WriterId(1),
        };
        let make = |epoch, xs: &[u8]| {
            RefreshPlan::new(
                id,
                key.clone(),
                version,
                epoch,
                xs.iter().map(|&x| index(x)).collect(),
            )
        };
        assert!(make(0, &[1]).is_err());
        assert!(make(0, &[1, 1]).is_err());
        assert!(make(u32::MAX, &[1, 2]).is_err());
        let plan = make(4, &[3, 1, 2]).expect("plan");
        assert_eq!(plan.participants(), &[index(1), index(2), index(3)]);
        assert_eq!(plan.next_epoch(), 5);
        assert!(plan.check_threshold(Threshold::new(3).expect("k")).is_ok());
        assert!(plan.check_threshold(Threshold::new(4).expect("k")).is_err());
        let bytes = postcard::to_allocvec(&plan).expect("encode");
        assert_eq!(
            postcard::from_bytes::<RefreshPlan>(&bytes).expect("decode"),
            plan
        );
        assert!(add_delta(&mut [0u8; 2], &[1]).is_err());
    }
}
