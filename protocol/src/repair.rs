//! Repair of one share without reconstruction: k helpers send the target node masked pieces
//! whose sum is the target's share, and nobody ever holds k shares or the record.
//!
//! ```text
//!  helper i ∈ H (|H| = k):  c_i = μ_i · y_i  ⊕  ⊕_{j ∈ H, j ≠ i} PRG(seed_ij)      ──▶ target t
//!  target t:                y_t = ⊕_{i ∈ H} c_i            (every pair mask appears twice)
//!  μ_i = Π_{m ∈ H, m ≠ i} (x_t + x_m) / (x_i + x_m)         (Lagrange weight at x_t)
//!  seed_ij = BLAKE3-keyed(ECDH(node key i, node key j) → pair secret, plan ‖ {i, j} ‖ L)
//! ```
//!
//! Each pair of helpers derives a common seed from an ECDH agreement between their node keys
//! (P-256, the keys of their TLS certificates), bound by a KDF to everything the plan says:
//! repair id, record key, version, epoch, target, helper set and share length. Both members of
//! a pair XOR the same mask into their contribution, so in GF(2^8), where adding and
//! subtracting are both XOR, every mask cancels in the target's sum. No single party knows all
//! masks: the coordinator (admin) never learns a pair secret, and the target learns none.
//!
//! Binding the seed to the whole plan matters: a coordinator that sent one helper two plans
//! differing only in the target would otherwise get the same mask twice and could strip it by
//! XORing the two contributions. With the binding, any two different plans use independent
//! masks, and the same plan twice gives the same contribution (a harmless retry).
//!
//! What each party learns (docs/REPAIR.md has the full threat model): the target learns y_t
//! and k uniformly random-looking contributions; a helper learns nothing new; the coordinator
//! learns only outcomes. A coalition of the target and c < k − 1 helpers learns only the sum
//! of the honest helpers' contributions, which it could compute from y_t and its own shares.
//!
//! Everything here is pure: ECDH takes the keys as values, the PRG is BLAKE3 in XOF mode, and
//! the node crate moves the bytes.

use aws_lc_rs::agreement::{self, PrivateKey, UnparsedPublicKey, ECDH_P256};
use serde::{Deserialize, Serialize};
use x509_parser::prelude::{FromDer, X509Certificate};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::gf256;
use crate::shamir::lagrange_weights;
use crate::types::{RecordKey, ShareIndex, Version};

/// Bytes of an uncompressed P-256 point (0x04 ‖ X ‖ Y).
pub const P256_POINT_BYTES: usize = 65;

/// KDF context of a pair secret (BLAKE3 `derive_key`): fixed, unique to this use.
const PAIR_SECRET_CONTEXT: &str = "bunsan 2026-11 repair pair secret v1";

/// Domain separation prefix of the per-plan mask seed.
const MASK_DOMAIN: &[u8] = b"bunsan repair mask v1\0";

/// Identifies one repair or one refresh: random, 16 bytes, the same at every party involved.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SessionId(pub [u8; 16]);

impl SessionId {
    /// A fresh random session id.
    pub fn random<R: rand::Rng + ?Sized>(rng: &mut R) -> Self {
        let mut id = [0u8; 16];
        rng.fill(&mut id);
        Self(id)
    }
}

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl std::fmt::Debug for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SessionId({self})")
    }
}

/// The public facts of one repair, identical at the coordinator, every helper and the target.
///
/// Constructed only through [`RepairPlan::new`] (and the same checks on decode): the helpers
/// are sorted and distinct, there are at least two, and the target is not one of them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "UncheckedPlan")]
pub struct RepairPlan {
    /// Random per repair; binds the masks so that no two repairs share one.
    pub repair_id: SessionId,
    /// The record whose share is regenerated.
    pub key: RecordKey,
    /// The record version: helpers use only shares of exactly this version.
    pub version: Version,
    /// The sharing epoch (refresh count) of that version: shares of two epochs never mix.
    pub epoch: u32,
    /// The x-coordinate of the share to regenerate.
    target: ShareIndex,
    /// The k helpers' x-coordinates, ascending.
    helpers: Vec<ShareIndex>,
}

#[derive(Deserialize)]
struct UncheckedPlan {
    repair_id: SessionId,
    key: RecordKey,
    version: Version,
    epoch: u32,
    target: ShareIndex,
    helpers: Vec<ShareIndex>,
}

impl TryFrom<UncheckedPlan> for RepairPlan {
    type Error = Error;

    fn try_from(raw: UncheckedPlan) -> Result<Self> {
        let plan = RepairPlan::new(
            raw.repair_id,
            raw.key,
            raw.version,
            raw.epoch,
            raw.target,
            raw.helpers,
        )?;
        Ok(plan)
    }
}

impl RepairPlan {
    /// Checks and builds a plan; `helpers` may come in any order and are sorted. Rejects
    /// fewer than two helpers, a repeated helper, and a target among the helpers.
    pub fn new(
        repair_id: SessionId,
        key: RecordKey,
        version: Version,
        epoch: u32,
        target: ShareIndex,
        mut helpers: Vec<ShareIndex>,
    ) -> Result<Self> {
        let invalid = |reason: String| Err(Error::InvalidPlan { reason });
        helpers.sort();
        if helpers.len() < 2 {
            return invalid(format!(
                "a repair needs at least 2 helpers (k ≥ 2), not {}",
                helpers.len()
            ));
        }
        if let Some(pair) = helpers.windows(2).find(|pair| pair[0] == pair[1]) {
            return invalid(format!("helper {} appears twice", pair[0]));
        }
        if helpers.contains(&target) {
            return invalid(format!("the target {target} cannot help repair itself"));
        }
        Ok(Self {
            repair_id,
            key,
            version,
            epoch,
            target,
            helpers,
        })
    }

    /// The x-coordinate of the share to regenerate.
    pub fn target(&self) -> ShareIndex {
        self.target
    }

    /// The helpers' x-coordinates, ascending; as many as the record's threshold k.
    pub fn helpers(&self) -> &[ShareIndex] {
        &self.helpers
    }

    /// μ_i for `helper`: its Lagrange weight at the target's x for this helper set.
    pub fn weight(&self, helper: ShareIndex) -> Result<u8> {
        let position = self.position(helper)?;
        let weights = lagrange_weights(&self.helpers, self.target.get())?;
        Ok(weights[position])
    }

    fn position(&self, helper: ShareIndex) -> Result<usize> {
        self.helpers
            .iter()
            .position(|&x| x == helper)
            .ok_or(Error::Contribution {
                from: helper.get(),
                reason: "not a helper of this repair",
            })
    }

    /// The seed of the mask that helpers `a` and `b` share for this plan and share length.
    fn mask_seed(&self, secret: &PairSecret, a: ShareIndex, b: ShareIndex, len: usize) -> [u8; 32] {
        let (low, high) = if a < b { (a, b) } else { (b, a) };
        let mut hasher = blake3::Hasher::new_keyed(&secret.0);
        hasher.update(MASK_DOMAIN);
        hasher.update(&self.repair_id.0);
        hasher.update(&(self.key.as_bytes().len() as u16).to_be_bytes());
        hasher.update(self.key.as_bytes());
        hasher.update(&self.version.clock_micros.to_be_bytes());
        hasher.update(&self.version.writer.0.to_be_bytes());
        hasher.update(&self.epoch.to_be_bytes());
        hasher.update(&[self.target.get(), self.helpers.len() as u8]);
        hasher.update(&self.helpers.iter().map(|x| x.get()).collect::<Vec<u8>>());
        hasher.update(&[low.get(), high.get()]);
        hasher.update(&(len as u64).to_be_bytes());
        *hasher.finalize().as_bytes()
    }
}

/// The secret two nodes share from an ECDH agreement of their keys; wiped on drop, never
/// printed.
#[derive(Clone)]
pub struct PairSecret(Zeroizing<[u8; 32]>);

impl PairSecret {
    /// Wraps 32 secret bytes (for tests and for callers with their own agreement).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }
}

impl std::fmt::Debug for PairSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PairSecret(..)")
    }
}

/// A node's P-256 private key, used for the pairwise agreements of repair. No `Debug`;
/// aws-lc-rs wipes the key when it is dropped.
pub struct MaskKey {
    private: PrivateKey,
}

impl MaskKey {
    /// The key from its PKCS#8 (or SEC 1) DER encoding, as in a node's `key.pem`.
    pub fn from_der(der: &[u8]) -> Result<Self> {
        let private =
            PrivateKey::from_private_key_der(&ECDH_P256, der).map_err(|_| Error::KeyAgreement {
                reason: "the node key is not a P-256 private key",
            })?;
        Ok(Self { private })
    }

    /// A fresh random key (tests, simulations).
    pub fn generate() -> Result<Self> {
        let private = PrivateKey::generate(&ECDH_P256).map_err(|_| Error::KeyAgreement {
            reason: "cannot generate a P-256 key",
        })?;
        Ok(Self { private })
    }

    /// The public point (uncompressed), as it appears in the node's certificate.
    pub fn public_point(&self) -> Result<Vec<u8>> {
        Ok(self
            .private
            .compute_public_key()
            .map_err(|_| Error::KeyAgreement {
                reason: "cannot derive the public key",
            })?
            .as_ref()
            .to_vec())
    }

    /// The secret this node shares with the holder of `peer_point`. Symmetric: the peer
    /// computes the same value from its key and this node's point.
    pub fn pair_secret(&self, peer_point: &[u8]) -> Result<PairSecret> {
        agreement::agree(
            &self.private,
            UnparsedPublicKey::new(&ECDH_P256, peer_point),
            Error::KeyAgreement {
                reason: "the peer's point is not a valid P-256 point",
            },
            |shared| {
                Ok(PairSecret::from_bytes(blake3::derive_key(
                    PAIR_SECRET_CONTEXT,
                    shared,
                )))
            },
        )
    }
}

/// The uncompressed P-256 point of a certificate's key (a node certificate the TLS handshake
/// verified). Refuses other key types.
pub fn certificate_point(der: &[u8]) -> Result<Vec<u8>> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| Error::InvalidCertificate {
        reason: format!("not X.509 DER: {e}"),
    })?;
    let point = cert.public_key().subject_public_key.data.to_vec();
    if point.len() != P256_POINT_BYTES || point[0] != 4 {
        return Err(Error::InvalidCertificate {
            reason: "the certificate key is not an uncompressed P-256 point".to_owned(),
        });
    }
    Ok(point)
}

/// Helper `own`'s contribution to `plan`: μ_own · `share` with the masks of every pair it
/// belongs to XORed in. `pair_secrets` must hold exactly one secret per other helper.
///
/// The result alone is uniformly random to anyone who lacks the pair secrets; only the XOR of
/// all k contributions means something (the target's share).
pub fn contribution(
    plan: &RepairPlan,
    own: ShareIndex,
    share: &[u8],
    pair_secrets: &[(ShareIndex, PairSecret)],
) -> Result<Vec<u8>> {
    let weight = plan.weight(own)?;
    let others: Vec<ShareIndex> = plan.helpers.iter().copied().filter(|&x| x != own).collect();
    let mut given: Vec<ShareIndex> = pair_secrets.iter().map(|(x, _)| *x).collect();
    given.sort();
    if given != others {
        return Err(Error::Contribution {
            from: own.get(),
            reason: "needs exactly one pair secret per other helper",
        });
    }
    let mut out = vec![0u8; share.len()];
    gf256::mul_add_assign(&mut out, share, weight);
    for (peer, secret) in pair_secrets {
        xor_mask(&mut out, &plan.mask_seed(secret, own, *peer, share.len()));
    }
    Ok(out)
}

/// XORs the PRG stream of `seed` (BLAKE3 in keyed XOF mode) into `buf`.
fn xor_mask(buf: &mut [u8], seed: &[u8; 32]) {
    let mut stream = blake3::Hasher::new_keyed(seed).finalize_xof();
    let mut block = Zeroizing::new([0u8; 4096]);
    for chunk in buf.chunks_mut(4096) {
        let mask = &mut block[..chunk.len()];
        stream.fill(mask);
        for (byte, m) in chunk.iter_mut().zip(mask.iter()) {
            *byte ^= m;
        }
    }
}

/// The target's running sum of the contributions of one session (repair or refresh).
///
/// Memory is one share length, whatever the number of contributors: each piece is XORed in
/// as it arrives and then dropped.
pub struct Accumulator {
    expected: Vec<ShareIndex>,
    received: Vec<ShareIndex>,
    sum: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Accumulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accumulator")
            .field("expected", &self.expected)
            .field("received", &self.received)
            .field("len", &self.sum.len())
            .finish()
    }
}

impl Accumulator {
    /// Waits for one piece of `len` bytes from each of `expected`.
    pub fn new(expected: &[ShareIndex], len: usize) -> Self {
        let mut expected = expected.to_vec();
        expected.sort();
        expected.dedup();
        Self {
            expected,
            received: Vec::new(),
            sum: Zeroizing::new(vec![0u8; len]),
        }
    }

    /// Adds `from`'s piece; returns whether every expected piece is now in. Refuses a piece
    /// from a party not expected, a second piece from one party, and a wrong length, without
    /// changing the sum.
    pub fn add(&mut self, from: ShareIndex, data: &[u8]) -> Result<bool> {
        let refuse = |reason| {
            Err(Error::Contribution {
                from: from.get(),
                reason,
            })
        };
        if !self.expected.contains(&from) {
            return refuse("not expected in this session");
        }
        if self.received.contains(&from) {
            return refuse("already contributed to this session");
        }
        if data.len() != self.sum.len() {
            return refuse("has the wrong length");
        }
        for (acc, byte) in self.sum.iter_mut().zip(data) {
            *acc ^= byte;
        }
        self.received.push(from);
        Ok(self.is_complete())
    }

    /// Whether every expected piece arrived.
    pub fn is_complete(&self) -> bool {
        self.received.len() == self.expected.len()
    }

    /// Who has contributed so far.
    pub fn received(&self) -> &[ShareIndex] {
        &self.received
    }

    /// The sum, once complete; otherwise [`Error::NotEnoughShares`].
    pub fn finish(self) -> Result<Zeroizing<Vec<u8>>> {
        if !self.is_complete() {
            return Err(Error::NotEnoughShares {
                found: self.received.len(),
                needed: self.expected.len(),
            });
        }
        Ok(self.sum)
    }
}

#[cfg(test)]
#[path = "repair_tests.rs"]
mod tests;
