//! Sealing a share's commitment nonce to the node that holds the share.
//!
//! Every envelope of a record version carries nonce_j for every node j, each sealed to node j's
//! certificate key, so a node that lost its disk but kept its key can recover its nonce from any
//! other node's envelope (repair) and check a regenerated share against c_j. Nobody else can
//! open it: other nodes would otherwise learn nonce_j and could test guesses of y_j.
//!
//! The construction is ECIES over P-256 with aws-lc-rs (the library rustls already uses):
//!
//! ```text
//! e      = fresh ephemeral P-256 scalar (from the caller's RNG), E = e·G
//! shared = ECDH(e, node public key P)
//! key    = HKDF-SHA256(salt = DOMAIN, ikm = shared, info = E ‖ P)   (32 bytes)
//! sealed = E ‖ AES-256-GCM(key, nonce = 0^12, aad = DOMAIN ‖ key ‖ version ‖ x_j, nonce_j)
//! ```
//!
//! Each AEAD key is used for exactly one message (a new ephemeral key per seal), so the fixed
//! all-zero AEAD nonce is safe. The AAD binds the seal to (record key, version, x_j): a seal
//! copied into another record or another share index does not open.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use aws_lc_rs::agreement::{self, PrivateKey, UnparsedPublicKey, ECDH_P256};
use aws_lc_rs::hkdf;
use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use x509_parser::prelude::{FromDer, X509Certificate};
use zeroize::Zeroizing;

use crate::batch::BATCH_FORMAT;
use crate::envelope::ShareEnvelope;
use crate::error::{Error, Result};
use crate::integrity::{CommitNonce, NONCE_BYTES};
use crate::types::{RecordKey, ShareIndex, Version};

/// Bytes of an uncompressed P-256 point (0x04 ‖ X ‖ Y).
pub const POINT_BYTES: usize = 65;

/// Bytes of a sealed nonce's ciphertext: the nonce plus the 16-byte GCM tag.
pub const SEALED_BYTES: usize = NONCE_BYTES + 16;

/// Domain separation for the KDF salt and the AAD.
const DOMAIN: &[u8] = b"bunsan sealed commitment nonce v1\0";

/// How many scalars to draw before giving up: a uniformly random 32-byte string is a valid
/// P-256 scalar with probability 1 − 2^-32, so more than one retry means a broken RNG.
const SCALAR_TRIES: usize = 4;

/// nonce_j sealed to node j's key: the ephemeral public point and the AEAD ciphertext.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "UncheckedSeal")]
pub struct SealedNonce {
    #[serde(with = "serde_bytes")]
    ephemeral: Vec<u8>,
    #[serde(with = "serde_bytes")]
    ciphertext: Vec<u8>,
}

#[derive(Deserialize)]
struct UncheckedSeal {
    #[serde(with = "serde_bytes")]
    ephemeral: Vec<u8>,
    #[serde(with = "serde_bytes")]
    ciphertext: Vec<u8>,
}

impl TryFrom<UncheckedSeal> for SealedNonce {
    type Error = Error;

    fn try_from(raw: UncheckedSeal) -> Result<Self> {
        if raw.ephemeral.len() != POINT_BYTES || raw.ciphertext.len() != SEALED_BYTES {
            return Err(Error::InvalidEnvelope {
                reason: format!(
                    "a sealed nonce has a {POINT_BYTES}-byte point and {SEALED_BYTES}-byte \
                     ciphertext, not {} and {}",
                    raw.ephemeral.len(),
                    raw.ciphertext.len()
                ),
            });
        }
        Ok(Self {
            ephemeral: raw.ephemeral,
            ciphertext: raw.ciphertext,
        })
    }
}

impl std::fmt::Debug for SealedNonce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealedNonce(..)")
    }
}

/// A node's public key, taken from its certificate, to seal nonces to.
#[derive(Clone, PartialEq, Eq)]
pub struct RecipientKey {
    point: Vec<u8>,
}

impl std::fmt::Debug for RecipientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RecipientKey({}…)", hex::encode(&self.point[1..7]))
    }
}

impl RecipientKey {
    /// The P-256 public key of the certificate `der` (a node certificate as the TLS handshake
    /// verified it). Refuses certificates whose key is not an uncompressed P-256 point.
    pub fn from_certificate(der: &[u8]) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidCertificate { reason };
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|e| invalid(format!("not X.509 DER: {e}")))?;
        let point = cert.public_key().subject_public_key.data.to_vec();
        // Parsing the point checks that it is on the curve.
        if point.len() != POINT_BYTES
            || agreement::ParsedPublicKey::try_from(&UnparsedPublicKey::new(&ECDH_P256, &point))
                .is_err()
        {
            return Err(invalid("the certificate key is not a P-256 key".to_owned()));
        }
        Ok(Self { point })
    }
}

/// Seals `nonce` to `recipient` for share `index` of (`key`, `version`).
pub fn seal<R: RngCore + CryptoRng + ?Sized>(
    recipient: &RecipientKey,
    key: &RecordKey,
    version: Version,
    index: ShareIndex,
    nonce: &CommitNonce,
    rng: &mut R,
) -> Result<SealedNonce> {
    let fail = |reason: &str| Error::Seal {
        index: index.get(),
        reason: reason.to_owned(),
    };
    let ephemeral = ephemeral_key(rng).ok_or_else(|| fail("no valid ephemeral scalar"))?;
    let public = ephemeral
        .compute_public_key()
        .map_err(|_| fail("cannot derive the ephemeral point"))?;
    let public = public.as_ref().to_vec();
    let aead = derive_key(&ephemeral, &recipient.point, &public, &recipient.point)
        .ok_or_else(|| fail("key agreement failed"))?;
    let mut in_out = nonce.as_bytes().to_vec();
    aead.seal_in_place_append_tag(
        Nonce::assume_unique_for_key([0; 12]),
        Aad::from(aad(key, version, index)),
        &mut in_out,
    )
    .map_err(|_| fail("encryption failed"))?;
    Ok(SealedNonce {
        ephemeral: public,
        ciphertext: in_out,
    })
}

/// Domain separation of the per-batch derivation (envelope format 3).
const BATCH_DOMAIN: &[u8] = b"bunsan sealed commitment nonce batch v1\0";

/// How many key agreements [`Openers`] keeps: one per writer batch being opened at once.
const OPENERS_MAX: usize = 16;

/// One key agreement with one node, shared by every nonce a batch (envelope format 3) seals
/// to it: the ECDH then costs one scalar multiplication per node per batch instead of one per
/// record.
///
/// ```text
/// e, E = e·G fresh per batch and node;  prk = HKDF-Extract(salt = BATCH_DOMAIN, ECDH(e, P))
/// key_r = HKDF-Expand(prk, info = E ‖ P ‖ AAD_r)        (AAD_r as for a single seal)
/// sealed_r = E ‖ AES-256-GCM(key_r, nonce = 0^12, aad = AAD_r, nonce_j of record r)
/// ```
///
/// Each AEAD key is bound to one (record key, version, share index), so the all-zero AEAD
/// nonce stays single-use as long as no (key, version) repeats within a batch, which
/// [`crate::dealing::deal_batch`] refuses. The ephemeral scalar is dropped with the sealer.
pub struct BatchSealer {
    ephemeral: Vec<u8>,
    recipient: Vec<u8>,
    prk: hkdf::Prk,
}

impl BatchSealer {
    /// A fresh ephemeral key agreed with `recipient`.
    pub fn new<R: RngCore + CryptoRng + ?Sized>(
        recipient: &RecipientKey,
        rng: &mut R,
    ) -> Result<Self> {
        let fail = |reason: &str| Error::InvalidKey {
            reason: format!("cannot seal to a node: {reason}"),
        };
        let private = ephemeral_key(rng).ok_or_else(|| fail("no valid ephemeral scalar"))?;
        let ephemeral = private
            .compute_public_key()
            .map_err(|_| fail("cannot derive the ephemeral point"))?
            .as_ref()
            .to_vec();
        let prk =
            batch_prk(&private, &recipient.point).ok_or_else(|| fail("key agreement failed"))?;
        Ok(Self {
            ephemeral,
            recipient: recipient.point.clone(),
            prk,
        })
    }

    /// Seals `nonce` for share `index` of (`key`, `version`).
    pub fn seal(
        &self,
        key: &RecordKey,
        version: Version,
        index: ShareIndex,
        nonce: &CommitNonce,
    ) -> Result<SealedNonce> {
        let aad = aad(key, version, index);
        let aead =
            batch_key(&self.prk, &self.ephemeral, &self.recipient, &aad).ok_or(Error::Seal {
                index: index.get(),
                reason: "key derivation failed".to_owned(),
            })?;
        let mut in_out = nonce.as_bytes().to_vec();
        aead.seal_in_place_append_tag(
            Nonce::assume_unique_for_key([0; 12]),
            Aad::from(aad),
            &mut in_out,
        )
        .map_err(|_| Error::Seal {
            index: index.get(),
            reason: "encryption failed".to_owned(),
        })?;
        Ok(SealedNonce {
            ephemeral: self.ephemeral.clone(),
            ciphertext: in_out,
        })
    }
}

/// The key agreements a node made while opening the seals of one request, by ephemeral point,
/// so the envelopes of one writer batch cost one ECDH. Keep one per request and drop it after:
/// it holds derived key material (at most a few agreements).
#[derive(Default)]
pub struct Openers {
    agreed: Vec<(Vec<u8>, hkdf::Prk)>,
}

/// A node's private key, able to open the nonces sealed to it. No `Debug`; aws-lc-rs wipes
/// the key material when it is dropped.
pub struct NodeKey {
    private: PrivateKey,
    point: Vec<u8>,
}

impl NodeKey {
    /// The node key from its PKCS#8 (or SEC 1) DER encoding, as in the node's `key.pem`.
    pub fn from_der(der: &[u8]) -> Result<Self> {
        let private =
            PrivateKey::from_private_key_der(&ECDH_P256, der).map_err(|e| Error::InvalidKey {
                reason: format!("not a P-256 private key: {e}"),
            })?;
        let point = private
            .compute_public_key()
            .map_err(|_| Error::InvalidKey {
                reason: "cannot derive the public key".to_owned(),
            })?
            .as_ref()
            .to_vec();
        Ok(Self { private, point })
    }

    /// The matching public key: what writers seal to.
    pub fn recipient(&self) -> RecipientKey {
        RecipientKey {
            point: self.point.clone(),
        }
    }

    /// Opens `sealed` as the nonce of share `index` of (`key`, `version`). Fails with
    /// [`Error::Seal`] if it was sealed to another key or for another share, or was altered.
    pub fn open(
        &self,
        sealed: &SealedNonce,
        key: &RecordKey,
        version: Version,
        index: ShareIndex,
    ) -> Result<CommitNonce> {
        let fail = |reason: &str| Error::Seal {
            index: index.get(),
            reason: reason.to_owned(),
        };
        let aead = derive_key(
            &self.private,
            &sealed.ephemeral,
            &sealed.ephemeral,
            &self.point,
        )
        .ok_or_else(|| fail("key agreement failed"))?;
        open_with(&aead, &sealed.ciphertext, aad(key, version, index))
            .ok_or_else(|| fail("does not open with this node's key for this share"))
    }
}

impl NodeKey {
    /// Opens the nonce in force for share `index` of `envelope` with this node's key, by the
    /// construction its format uses: per batch ([`BatchSealer`]) for the writer's seals of a
    /// format-3 envelope, one ephemeral key per seal otherwise (a refresh seals one by one).
    /// `None` if the envelope holds no seal for `index`.
    pub fn open_envelope(
        &self,
        envelope: &ShareEnvelope,
        index: ShareIndex,
        openers: &mut Openers,
    ) -> Option<Result<CommitNonce>> {
        let sealed = envelope.sealed_nonce(index)?;
        let (key, version) = (&envelope.header.key, envelope.header.version);
        Some(
            if envelope.format == BATCH_FORMAT && envelope.refresh.is_none() {
                self.open_batched(sealed, key, version, index, openers)
            } else {
                self.open(sealed, key, version, index)
            },
        )
    }

    /// Opens a nonce sealed by a [`BatchSealer`], reusing an agreement with the same
    /// ephemeral point from `openers`.
    pub fn open_batched(
        &self,
        sealed: &SealedNonce,
        key: &RecordKey,
        version: Version,
        index: ShareIndex,
        openers: &mut Openers,
    ) -> Result<CommitNonce> {
        let fail = |reason: &str| Error::Seal {
            index: index.get(),
            reason: reason.to_owned(),
        };
        let position = match openers
            .agreed
            .iter()
            .position(|(point, _)| *point == sealed.ephemeral)
        {
            Some(position) => position,
            None => {
                let prk = batch_prk(&self.private, &sealed.ephemeral)
                    .ok_or_else(|| fail("key agreement failed"))?;
                if openers.agreed.len() == OPENERS_MAX {
                    openers.agreed.remove(0);
                }
                openers.agreed.push((sealed.ephemeral.clone(), prk));
                openers.agreed.len() - 1
            }
        };
        let aad = aad(key, version, index);
        let aead = batch_key(
            &openers.agreed[position].1,
            &sealed.ephemeral,
            &self.point,
            &aad,
        )
        .ok_or_else(|| fail("key derivation failed"))?;
        open_with(&aead, &sealed.ciphertext, aad)
            .ok_or_else(|| fail("does not open with this node's key for this share"))
    }
}

/// AES-256-GCM opening of a sealed nonce under `aead` with the all-zero nonce.
fn open_with(aead: &LessSafeKey, ciphertext: &[u8], aad: Vec<u8>) -> Option<CommitNonce> {
    let mut in_out = Zeroizing::new(ciphertext.to_vec());
    let plain = aead
        .open_in_place(
            Nonce::assume_unique_for_key([0; 12]),
            Aad::from(aad),
            &mut in_out,
        )
        .ok()?;
    let bytes: [u8; NONCE_BYTES] = plain.try_into().ok()?;
    Some(CommitNonce::from_bytes(bytes))
}

/// ECDH between `private` and `peer`, extracted to the per-batch pseudorandom key.
fn batch_prk(private: &PrivateKey, peer: &[u8]) -> Option<hkdf::Prk> {
    agreement::agree(
        private,
        UnparsedPublicKey::new(&ECDH_P256, peer),
        (),
        |shared| Ok(hkdf::Salt::new(hkdf::HKDF_SHA256, BATCH_DOMAIN).extract(shared)),
    )
    .ok()
}

/// The AES-256-GCM key of one record's seal in a batch: bound to both points and the AAD.
fn batch_key(
    prk: &hkdf::Prk,
    ephemeral: &[u8],
    recipient: &[u8],
    aad: &[u8],
) -> Option<LessSafeKey> {
    let info = [ephemeral, recipient, aad];
    let okm = prk.expand(&info, &AES_256_GCM).ok()?;
    Some(LessSafeKey::new(UnboundKey::from(okm)))
}

/// Draws a P-256 scalar from `rng`, retrying the rare out-of-range draw.
fn ephemeral_key<R: RngCore + CryptoRng + ?Sized>(rng: &mut R) -> Option<PrivateKey> {
    let mut scalar = Zeroizing::new([0u8; 32]);
    for _ in 0..SCALAR_TRIES {
        rng.fill_bytes(scalar.as_mut());
        if let Ok(key) = PrivateKey::from_private_key(&ECDH_P256, scalar.as_ref()) {
            return Some(key);
        }
    }
    None
}

/// ECDH between `private` and `peer`, then HKDF to a one-time AES-256-GCM key bound to both
/// points: info = ephemeral point ‖ recipient point, computed alike by sealer and opener.
fn derive_key(
    private: &PrivateKey,
    peer: &[u8],
    ephemeral: &[u8],
    recipient: &[u8],
) -> Option<LessSafeKey> {
    agreement::agree(
        private,
        UnparsedPublicKey::new(&ECDH_P256, peer),
        (),
        |shared| {
            let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, DOMAIN).extract(shared);
            let info = [ephemeral, recipient];
            let okm = prk.expand(&info, &AES_256_GCM).map_err(|_| ())?;
            Ok(LessSafeKey::new(UnboundKey::from(okm)))
        },
    )
    .ok()
}

/// The associated data: the domain, then the record key (length-prefixed), the version and the
/// share index, so a seal opens only for the share it was made for.
fn aad(key: &RecordKey, version: Version, index: ShareIndex) -> Vec<u8> {
    let mut aad = Vec::with_capacity(DOMAIN.len() + 2 + key.as_bytes().len() + 17);
    aad.extend_from_slice(DOMAIN);
    aad.extend_from_slice(&(key.as_bytes().len() as u16).to_be_bytes());
    aad.extend_from_slice(key.as_bytes());
    aad.extend_from_slice(&version.clock_micros.to_be_bytes());
    aad.extend_from_slice(&version.writer.0.to_be_bytes());
    aad.push(index.get());
    aad
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::WriterId;
    use rand::SeedableRng;

    fn fixture() -> (NodeKey, RecordKey, Version, ShareIndex) {
        let pkcs8 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .expect("key")
            .serialize_der();
        (
            NodeKey::from_der(&pkcs8).expect("node key"),
            RecordKey::new("a/b").expect("key"),
            Version {
                clock_micros: 9,
                writer: WriterId(4),
            },
            ShareIndex::new(3).expect("index"),
        )
    }

    #[test]
    fn only_the_recipient_opens_only_this_share() {
        let (node, key, version, index) = fixture();
        let (other, ..) = fixture();
        let mut rng = rand_chacha::ChaCha12Rng::seed_from_u64(1);
        let nonce = CommitNonce::random(&mut rng);
        let sealed = seal(&node.recipient(), &key, version, index, &nonce, &mut rng).expect("seal");
        assert_eq!(
            node.open(&sealed, &key, version, index).expect("open"),
            nonce
        );
        assert!(other.open(&sealed, &key, version, index).is_err());
        let elsewhere = ShareIndex::new(4).expect("index");
        assert!(node.open(&sealed, &key, version, elsewhere).is_err());
        let other_key = RecordKey::new("a/c").expect("key");
        assert!(node.open(&sealed, &other_key, version, index).is_err());
        let later = Version {
            clock_micros: 10,
            ..version
        };
        assert!(node.open(&sealed, &key, later, index).is_err());
        let mut altered = sealed.clone();
        altered.ciphertext[0] ^= 1;
        assert!(node.open(&altered, &key, version, index).is_err());
    }

    #[test]
    fn a_batch_seal_opens_only_for_its_recipient_and_share() {
        let (node, key, version, index) = fixture();
        let (other, ..) = fixture();
        let mut rng = rand_chacha::ChaCha12Rng::seed_from_u64(2);
        let sealer = BatchSealer::new(&node.recipient(), &mut rng).expect("sealer");
        let later = Version {
            clock_micros: 10,
            ..version
        };
        let (first, second) = (CommitNonce::random(&mut rng), CommitNonce::random(&mut rng));
        let sealed_first = sealer.seal(&key, version, index, &first).expect("seal");
        let sealed_second = sealer.seal(&key, later, index, &second).expect("seal");
        assert_eq!(sealed_first.ephemeral, sealed_second.ephemeral);
        let mut openers = Openers::default();
        let open = |sealed, version, index, openers: &mut Openers| {
            node.open_batched(sealed, &key, version, index, openers)
        };
        assert_eq!(
            open(&sealed_first, version, index, &mut openers).expect("open"),
            first
        );
        assert_eq!(
            open(&sealed_second, later, index, &mut openers).expect("open"),
            second
        );
        assert_eq!(openers.agreed.len(), 1, "one agreement serves the batch");
        // Swapped between records, moved to another share, opened singly or by another key:
        assert!(open(&sealed_first, later, index, &mut openers).is_err());
        let elsewhere = ShareIndex::new(4).expect("index");
        assert!(open(&sealed_first, version, elsewhere, &mut openers).is_err());
        assert!(node.open(&sealed_first, &key, version, index).is_err());
        assert!(other
            .open_batched(&sealed_first, &key, version, index, &mut Openers::default())
            .is_err());
        let mut altered = sealed_first.clone();
        altered.ciphertext[3] ^= 1;
        assert!(open(&altered, version, index, &mut openers).is_err());
    }

    #[test]
    fn openers_stay_bounded() {
        let (node, key, version, index) = fixture();
        let mut rng = rand_chacha::ChaCha12Rng::seed_from_u64(3);
        let mut openers = Openers::default();
        for _ in 0..OPENERS_MAX + 3 {
            let nonce = CommitNonce::random(&mut rng);
            let sealed = BatchSealer::new(&node.recipient(), &mut rng)
                .expect("sealer")
                .seal(&key, version, index, &nonce)
                .expect("seal");
            assert_eq!(
                node.open_batched(&sealed, &key, version, index, &mut openers)
                    .expect("open"),
                nonce
            );
        }
        assert_eq!(openers.agreed.len(), OPENERS_MAX);
    }

    #[test]
    fn decoding_checks_the_sizes() {
        let bad = postcard::to_allocvec(&(
            serde_bytes::Bytes::new(&[4; 10]),
            serde_bytes::Bytes::new(&[0; 48]),
        ))
        .expect("encode");
        assert!(postcard::from_bytes::<SealedNonce>(&bad).is_err());
    }
}
