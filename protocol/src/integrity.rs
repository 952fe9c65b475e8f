//! Share integrity: salted per-share commitments, the end-to-end record check, and the writer's
//! signature over the record header.
//!
//! ```text
//!  record s ‖ salt (32 random bytes) ──split──▶ y_1 .. y_n          (salt is shared like s)
//!  c_j = BLAKE3(nonce_j ‖ x_j ‖ y_j)            nonce_j: 32 random bytes per share
//!  check = BLAKE3(salt ‖ s)
//!  signature = ECDSA-P256-SHA256(writer key,  DOMAIN ‖ format ‖ postcard(RecordHeader))
//!              RecordHeader = key, version, k, n, record length, tombstone,
//!                             c_1..c_n, check, sealed nonce_1..nonce_n
//! ```
//!
//! What each part guarantees:
//! - The signature binds every header field to a certificate of the cluster CA with the right
//!   role ([`Trust::verify`]): one node cannot forge a header, a commitment or a share.
//! - A commitment binds share j to the header; without nonce_j it tells nothing about y_j, so
//!   k − 1 colluding nodes cannot test guesses of a low-entropy record against other nodes'
//!   commitments. Only node j (in its envelope, and sealed to its key) and readers see nonce_j.
//! - The end-to-end check catches what commitments cannot: a writer that dealt shares which do
//!   not lie on one polynomial. It is salted with 256 secret bits shared like the record, so it
//!   tells nodes nothing either.
//!
//! Everything here is a pure function of its inputs: `now` is passed in, randomness comes from
//! the caller's RNG, except inside aws-lc-rs's ECDSA signing, whose nonce generation cannot be
//! given an RNG (its `SecureRandom` trait is sealed).

use std::sync::Arc;

use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
use rand::{CryptoRng, RngCore};
use rustls_pki_types::{CertificateDer, SignatureVerificationAlgorithm, TrustAnchor, UnixTime};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::batch::{self, BatchProof};
use crate::cert_cache::{CertCache, SignatureCache, Verified};
use crate::envelope::{RecordHeader, ShareEnvelope};
use crate::error::{Error, Result};
use crate::role::{PeerIdentity, Role};
use crate::types::{ShareIndex, WriterId};

/// Bytes of a commitment nonce.
pub const NONCE_BYTES: usize = 32;

/// Bytes of the secret salt appended to every record before it is split: shares are this much
/// longer than the record.
pub const SALT_BYTES: usize = 32;

/// The largest writer certificate an envelope may carry. Bunsan's leaves are about 600 bytes;
/// 16 KiB leaves room for longer names and extensions and bounds what a header can make a node
/// parse.
pub const CERTIFICATE_MAX_BYTES: usize = 16 * 1024;

/// The largest signature an envelope may carry (an ASN.1 ECDSA P-256 signature is at most 72
/// bytes; the margin admits a future algorithm without a format change).
pub const SIGNATURE_MAX_BYTES: usize = 512;

/// Domain separation of the signed message: a signature over a Bunsan header can never be
/// replayed as a signature over anything else made with the same certificate key.
const SIGNATURE_DOMAIN: &[u8] = b"bunsan record header signature v2\0";

/// The algorithms a writer certificate's chain may use: what `bunsan-cluster` issues (ECDSA
/// P-256) and its common neighbours. Signatures over headers are ECDSA P-256 SHA-256 only.
static CHAIN_ALGORITHMS: &[&dyn SignatureVerificationAlgorithm] = &[
    webpki::aws_lc_rs::ECDSA_P256_SHA256,
    webpki::aws_lc_rs::ECDSA_P384_SHA384,
    webpki::aws_lc_rs::ECDSA_P256_SHA384,
    webpki::aws_lc_rs::ECDSA_P384_SHA256,
    webpki::aws_lc_rs::ED25519,
];

/// A 32-byte BLAKE3 digest: a commitment or the end-to-end record check.
///
/// Equality is constant-time (through `blake3::Hash`), so comparing a received commitment with
/// a computed one does not tell an attacker how many leading bytes were right.
#[derive(Clone, Copy, Eq, Serialize, Deserialize)]
pub struct Digest(pub [u8; 32]);

impl PartialEq for Digest {
    fn eq(&self, other: &Self) -> bool {
        blake3::Hash::from_bytes(self.0) == blake3::Hash::from_bytes(other.0)
    }
}

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Digest({}…)", hex::encode(&self.0[..6]))
    }
}

/// The random nonce that salts one share's commitment.
///
/// Known to the share's node and to readers only: with it, c_j can be checked against y_j;
/// without it, c_j reveals nothing about y_j. Zeroed on drop; `Debug` does not show it.
#[derive(Clone, Eq, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct CommitNonce([u8; NONCE_BYTES]);

impl CommitNonce {
    /// A fresh nonce from `rng`.
    pub fn random<R: RngCore + CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut bytes = [0u8; NONCE_BYTES];
        rng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// Wraps nonce bytes (opened from a seal, read from a file).
    pub fn from_bytes(bytes: [u8; NONCE_BYTES]) -> Self {
        Self(bytes)
    }

    /// The nonce bytes.
    pub fn as_bytes(&self) -> &[u8; NONCE_BYTES] {
        &self.0
    }
}

impl PartialEq for CommitNonce {
    fn eq(&self, other: &Self) -> bool {
        // Constant-time, like the digests.
        blake3::Hash::from_bytes(self.0) == blake3::Hash::from_bytes(other.0)
    }
}

impl std::fmt::Debug for CommitNonce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CommitNonce(..)")
    }
}

/// The commitment to share `index` with bytes `share`: c_j = BLAKE3(nonce_j ‖ x_j ‖ y_j).
pub fn commit(nonce: &CommitNonce, index: ShareIndex, share: &[u8]) -> Digest {
    let mut hasher = blake3::Hasher::new();
    hasher.update(nonce.as_bytes());
    hasher.update(&[index.get()]);
    hasher.update(share);
    Digest(*hasher.finalize().as_bytes())
}

/// Checks `share` (at `index`, with `nonce`) against the commitment `expected`, in constant
/// time; a mismatch is [`Error::BadCommitment`].
pub fn check_commitment(
    expected: &Digest,
    nonce: &CommitNonce,
    index: ShareIndex,
    share: &[u8],
) -> Result<()> {
    if commit(nonce, index, share) == *expected {
        Ok(())
    } else {
        Err(Error::BadCommitment { index: index.get() })
    }
}

/// The end-to-end check of a record: BLAKE3(salt ‖ record).
pub fn record_check(salt: &[u8], record: &[u8]) -> Digest {
    let mut hasher = blake3::Hasher::new();
    hasher.update(salt);
    hasher.update(record);
    Digest(*hasher.finalize().as_bytes())
}

/// The writer's signature over a [`RecordHeader`], with the certificate that made it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriterSignature {
    /// The writer's certificate (DER), issued by the cluster CA.
    #[serde(with = "serde_bytes")]
    pub certificate: Vec<u8>,
    /// ECDSA P-256 SHA-256 signature (ASN.1 DER) over [`signed_message`].
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

impl std::fmt::Debug for WriterSignature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterSignature")
            .field("certificate_len", &self.certificate.len())
            .field("signature_len", &self.signature.len())
            .finish()
    }
}

impl WriterSignature {
    /// Checks the size limits ([`CERTIFICATE_MAX_BYTES`], [`SIGNATURE_MAX_BYTES`]); the
    /// signature itself is checked by [`Trust::verify`].
    pub fn validate(&self) -> Result<()> {
        let invalid = |reason: String| Err(Error::InvalidEnvelope { reason });
        if self.certificate.is_empty() || self.certificate.len() > CERTIFICATE_MAX_BYTES {
            return invalid(format!(
                "writer certificate of {} bytes (1..={CERTIFICATE_MAX_BYTES} allowed)",
                self.certificate.len()
            ));
        }
        if self.signature.len() > SIGNATURE_MAX_BYTES {
            return invalid(format!(
                "signature of {} bytes (at most {SIGNATURE_MAX_BYTES})",
                self.signature.len()
            ));
        }
        Ok(())
    }
}

/// The exact bytes a writer signs for `header` in envelope format `format`: a domain string,
/// the format byte, then the postcard encoding of the header.
///
/// Signatures are always checked against bytes re-encoded from the decoded header, never
/// against received bytes, so a different encoding of the same values cannot matter.
pub fn signed_message(format: u8, header: &RecordHeader) -> Result<Vec<u8>> {
    let mut message = Vec::with_capacity(256 + 200 * header.commitments.len());
    message.extend_from_slice(SIGNATURE_DOMAIN);
    message.push(format);
    postcard::to_io(header, &mut message).map_err(|e| Error::Encode {
        what: "record header",
        reason: e.to_string(),
    })?;
    Ok(message)
}

/// Domain separation of a refresh seal's signed message.
const REFRESH_DOMAIN: &[u8] = b"bunsan refresh seal signature v1\0";

/// The exact bytes a refresher signs: a domain string, the format byte, the writer-signed
/// header and the writer's signature (so the seal belongs to exactly this dealing), then the
/// epoch, the new commitments and the new sealed nonces.
pub fn refresh_message(
    format: u8,
    header: &RecordHeader,
    writer: &WriterSignature,
    seal: &RefreshFields<'_>,
) -> Result<Vec<u8>> {
    let mut message = Vec::with_capacity(512 + 300 * seal.commitments.len());
    message.extend_from_slice(REFRESH_DOMAIN);
    message.push(format);
    let fields = (
        header,
        writer,
        seal.epoch,
        seal.signed_micros,
        seal.commitments,
        seal.sealed_nonces,
    );
    postcard::to_io(&fields, &mut message).map_err(|e| Error::Encode {
        what: "refresh seal",
        reason: e.to_string(),
    })?;
    Ok(message)
}

/// The fields of a refresh seal that its signature covers.
#[derive(Debug, Clone, Copy)]
pub struct RefreshFields<'a> {
    /// The epoch.
    pub epoch: u32,
    /// When it is signed, microseconds since the Unix epoch.
    pub signed_micros: u64,
    /// c'_1..c'_n.
    pub commitments: &'a [Digest],
    /// nonce'_1..nonce'_n, sealed.
    pub sealed_nonces: &'a [Option<crate::seal::SealedNonce>],
}

/// A writer's signing key and certificate: what a collector (records) or an admin
/// (tombstones) signs headers with. No `Debug`: it holds a private key.
pub struct Signer {
    key: EcdsaKeyPair,
    certificate: Vec<u8>,
}

impl Signer {
    /// A signer from a PKCS#8 ECDSA P-256 private key (as `bunsan-cluster init` writes in
    /// `key.pem`) and the matching certificate (DER). Whether the two match is not checked
    /// here: a mismatched pair makes signatures that nobody accepts.
    pub fn from_pkcs8(pkcs8: &[u8], certificate: Vec<u8>) -> Result<Self> {
        let key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8).map_err(|e| {
                Error::InvalidKey {
                    reason: format!("not a PKCS#8 ECDSA P-256 key: {e}"),
                }
            })?;
        Ok(Self { key, certificate })
    }

    /// A writer id for versions signed by this signer (session half zero); any id whose
    /// certificate half matches ([`WriterId::matches_certificate`]) is accepted too.
    pub fn writer_id(&self) -> WriterId {
        WriterId::from_certificate(&self.certificate)
    }

    /// Whether versions written under `writer` may be signed by this signer.
    pub fn may_sign_for(&self, writer: WriterId) -> bool {
        writer.matches_certificate(&self.certificate)
    }

    /// Signs `header` for envelope format [`crate::envelope::ENVELOPE_FORMAT`].
    pub fn sign(&self, header: &RecordHeader) -> Result<WriterSignature> {
        let message = signed_message(crate::envelope::ENVELOPE_FORMAT, header)?;
        let signature = self
            .key
            .sign(&aws_lc_rs::rand::SystemRandom::new(), &message)
            .map_err(|_| Error::InvalidKey {
                reason: "signing failed".to_owned(),
            })?;
        Ok(WriterSignature {
            certificate: self.certificate.clone(),
            signature: signature.as_ref().to_vec(),
        })
    }
}

impl Signer {
    /// Signs `headers` together (envelope format [`batch::BATCH_FORMAT`]): one signature over
    /// their Merkle root, and each header's inclusion proof, in order.
    pub fn sign_batch(
        &self,
        headers: &[RecordHeader],
    ) -> Result<(WriterSignature, Vec<BatchProof>)> {
        let (root, proofs) = batch::prove(headers)?;
        let size = proofs.first().map_or(0, |proof| proof.size);
        let signature = self
            .key
            .sign(
                &aws_lc_rs::rand::SystemRandom::new(),
                &batch::signed_message(size, &root),
            )
            .map_err(|_| Error::InvalidKey {
                reason: "signing failed".to_owned(),
            })?;
        Ok((
            WriterSignature {
                certificate: self.certificate.clone(),
                signature: signature.as_ref().to_vec(),
            },
            proofs,
        ))
    }

    /// Signs a refresh seal (see [`refresh_message`]); the signer must be an admin for nodes
    /// and readers to accept it.
    pub fn sign_refresh(
        &self,
        header: &RecordHeader,
        writer: &WriterSignature,
        seal: &RefreshFields<'_>,
    ) -> Result<WriterSignature> {
        let message = refresh_message(crate::envelope::ENVELOPE_FORMAT, header, writer, seal)?;
        let signature = self
            .key
            .sign(&aws_lc_rs::rand::SystemRandom::new(), &message)
            .map_err(|_| Error::InvalidKey {
                reason: "signing failed".to_owned(),
            })?;
        Ok(WriterSignature {
            certificate: self.certificate.clone(),
            signature: signature.as_ref().to_vec(),
        })
    }
}

/// Who signed a header, once [`Trust::verify`] accepted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedWriter {
    /// The signing certificate's role (collector for records, admin for tombstones).
    pub role: Role,
    /// The certificate's common name.
    pub name: String,
}

/// The cluster CA, as trust anchor for writer certificates.
///
/// Remembers the certificates whose chain it verified (bounded; see `cert_cache`), so each
/// writer certificate's chain is checked once, not for every envelope; the answers are the
/// same as checking every time. Clones share what is remembered.
#[derive(Debug, Clone)]
pub struct Trust {
    anchors: Vec<TrustAnchor<'static>>,
    verified: Arc<CertCache>,
    signatures: Arc<SignatureCache>,
}

impl Trust {
    /// Trusts exactly the CA certificate `ca_der`.
    pub fn new(ca_der: &[u8]) -> Result<Self> {
        let ca = CertificateDer::from(ca_der);
        let anchor =
            webpki::anchor_from_trusted_cert(&ca).map_err(|e| Error::InvalidCertificate {
                reason: format!("the CA certificate is not a usable trust anchor: {e}"),
            })?;
        Ok(Self {
            anchors: vec![anchor.to_owned()],
            verified: Arc::default(),
            signatures: Arc::default(),
        })
    }

    /// Forgets every certificate whose chain was verified, so that the next envelope of every
    /// writer is checked in full. A node calls it whenever its CRL is reloaded.
    pub fn forget_verified(&self) {
        self.verified.clear();
        self.signatures.clear();
    }

    /// How many verified certificates are remembered (for tests and metrics).
    pub fn verified_len(&self) -> usize {
        self.verified.len()
    }

    /// The identity of `der` (parsed by webpki as `leaf`) if it chains to the CA at `at` for
    /// client authentication: from the cache when this certificate verified before and `at`
    /// lies in its validity window, else by full path validation (remembered on success).
    fn chain(
        &self,
        der: &[u8],
        leaf: &webpki::EndEntityCert<'_>,
        at: UnixTime,
    ) -> Result<PeerIdentity> {
        let fingerprint = *blake3::hash(der).as_bytes();
        if let Some(identity) = self.verified.get(&fingerprint, at.as_secs()) {
            return Ok(identity);
        }
        leaf.verify_for_usage(
            CHAIN_ALGORITHMS,
            &self.anchors,
            &[],
            at,
            webpki::KeyUsage::client_auth(),
            None,
            None,
        )
        .map_err(|e| Error::UntrustedWriter {
            reason: format!("does not chain to the cluster CA: {e}"),
        })?;
        let identity = PeerIdentity::from_certificate(der)?;
        // The validity window as webpki reads it (seconds): the chain check above passed at
        // `at`, and would pass at any other time inside it, with nothing else changing.
        if let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) {
            let validity = cert.validity();
            let (not_before, not_after) = (
                validity.not_before.timestamp(),
                validity.not_after.timestamp(),
            );
            if let (Ok(not_before), Ok(not_after)) =
                (u64::try_from(not_before), u64::try_from(not_after))
            {
                self.verified
                    .insert(Verified::new(identity.clone(), not_before, not_after));
            }
        }
        Ok(identity)
    }

    /// Verifies that `signature` is a valid signature over `header` by a certificate that
    /// chains to the CA (valid at `at`, for client authentication), whose role may sign this
    /// kind of header (collector: records; admin: tombstones), and whose writer id is the one
    /// in the header's version.
    ///
    /// Nodes pass the current time when they accept a write; readers pass the version's time,
    /// so that a record stays readable after its writer's certificate expired.
    pub fn verify(
        &self,
        header: &RecordHeader,
        signature: &WriterSignature,
        at: UnixTime,
    ) -> Result<VerifiedWriter> {
        let message = signed_message(crate::envelope::ENVELOPE_FORMAT, header)?;
        self.verify_message(header, signature, &message, at)
    }

    /// Verifies the writer's signature of `envelope` as [`Trust::verify`] does, in either
    /// format: over the header itself (format 2), or over the root its batch proof leads to
    /// from the header (format 3).
    pub fn verify_envelope(
        &self,
        envelope: &ShareEnvelope,
        at: UnixTime,
    ) -> Result<VerifiedWriter> {
        match &envelope.batch {
            None => self.verify(&envelope.header, &envelope.signature, at),
            Some(proof) => {
                let root = proof
                    .root(&envelope.header)
                    .map_err(|e| Error::BadSignature {
                        reason: format!("the batch proof does not check: {e}"),
                    })?;
                let message = batch::signed_message(proof.size, &root);
                self.verify_message(&envelope.header, &envelope.signature, &message, at)
            }
        }
    }

    /// The checks of [`Trust::verify`] with the signed bytes `message` already built.
    fn verify_message(
        &self,
        header: &RecordHeader,
        signature: &WriterSignature,
        message: &[u8],
        at: UnixTime,
    ) -> Result<VerifiedWriter> {
        signature.validate()?;
        let der = CertificateDer::from(signature.certificate.as_slice());
        let untrusted = |reason: String| Error::UntrustedWriter { reason };
        let leaf = webpki::EndEntityCert::try_from(&der)
            .map_err(|e| untrusted(format!("not a certificate: {e}")))?;
        let peer = self.chain(&signature.certificate, &leaf, at)?;
        let allowed = if header.tombstone {
            Role::Admin
        } else {
            Role::Collector
        };
        if peer.role != allowed {
            return Err(Error::WriterRoleNotAllowed {
                role: peer.role,
                tombstone: header.tombstone,
            });
        }
        if !header
            .version
            .writer
            .matches_certificate(&signature.certificate)
        {
            return Err(Error::BadSignature {
                reason: format!(
                    "version {} names another writer than certificate {:?}",
                    header.version, peer.name
                ),
            });
        }
        let checked = SignatureCache::digest(&signature.certificate, message, &signature.signature);
        if !self.signatures.contains(&checked) {
            leaf.verify_signature(
                webpki::aws_lc_rs::ECDSA_P256_SHA256,
                message,
                &signature.signature,
            )
            .map_err(|e| Error::BadSignature {
                reason: format!("does not verify with the writer certificate: {e}"),
            })?;
            self.signatures.insert(checked);
        }
        Ok(VerifiedWriter {
            role: peer.role,
            name: peer.name,
        })
    }
}

impl Trust {
    /// Verifies a refresh seal of the envelope with `header` and writer signature `writer`:
    /// signed by a certificate of the cluster CA (valid at `at`) with the admin role, over
    /// exactly this dealing, epoch, commitments and sealed nonces.
    pub fn verify_refresh(
        &self,
        header: &RecordHeader,
        writer: &WriterSignature,
        seal: &crate::refresh::RefreshSeal,
        at: UnixTime,
    ) -> Result<VerifiedWriter> {
        seal.validate(usize::from(header.scheme.shares()))?;
        let der = CertificateDer::from(seal.signature.certificate.as_slice());
        let untrusted = |reason: String| Error::UntrustedWriter { reason };
        let leaf = webpki::EndEntityCert::try_from(&der)
            .map_err(|e| untrusted(format!("not a certificate: {e}")))?;
        let peer = self.chain(&seal.signature.certificate, &leaf, at)?;
        if peer.role != Role::Admin {
            return Err(Error::BadSignature {
                reason: format!(
                    "a refresh seal is signed by an admin, not by {} {:?}",
                    peer.role, peer.name
                ),
            });
        }
        let fields = RefreshFields {
            epoch: seal.epoch,
            signed_micros: seal.signed_micros,
            commitments: &seal.commitments,
            sealed_nonces: &seal.sealed_nonces,
        };
        let message = refresh_message(crate::envelope::ENVELOPE_FORMAT, header, writer, &fields)?;
        leaf.verify_signature(
            webpki::aws_lc_rs::ECDSA_P256_SHA256,
            &message,
            &seal.signature.signature,
        )
        .map_err(|e| Error::BadSignature {
            reason: format!("the refresh seal does not verify: {e}"),
        })?;
        Ok(VerifiedWriter {
            role: peer.role,
            name: peer.name,
        })
    }
}

/// The moment a version was written, as the time readers verify its writer certificate at.
pub fn version_time(version: crate::types::Version) -> UnixTime {
    UnixTime::since_unix_epoch(std::time::Duration::from_micros(version.clock_micros))
}

#[cfg(test)]
#[path = "integrity_tests.rs"]
mod tests;
