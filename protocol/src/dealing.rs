//! From a record to n signed envelopes ([`deal`]), and from verified shares back to the record
//! ([`reassemble`]): the writer's and the reader's halves of the integrity scheme, without I/O.
//!
//! ```text
//! deal:       record ‖ salt ─split─▶ y_1..y_n ─┬─ c_j = BLAKE3(nonce_j ‖ x_j ‖ y_j)
//!                                              ├─ seal(nonce_j → node j's key)
//!             header(key, version, k, n, len, c_1..c_n, BLAKE3(salt ‖ record), seals) ─sign─▶
//!             envelope_j = header + signature + (x_j, nonce_j, y_j)
//! reassemble: k verified shares ─combine─▶ record ‖ salt ─check BLAKE3(salt ‖ record)─▶ record
//!             on failure with m ≥ k + 2 shares: robust decoding names the bad shares
//! ```

use rand::{CryptoRng, RngCore};
use zeroize::{Zeroize, Zeroizing};

use crate::envelope::{RecordHeader, ShareEnvelope, RECORD_MAX_BYTES};
use crate::error::{Error, Result};
use crate::integrity::{commit, record_check, CommitNonce, Signer, SALT_BYTES};
use crate::robust;
use crate::seal::{seal, BatchSealer, RecipientKey, SealedNonce};
use crate::shamir::{self, Share};
use crate::types::{RecordKey, Scheme, ShareIndex, Version};

/// Splits `record` into the n envelopes of one version, signed by `signer`.
///
/// `recipients[j − 1]` is the public key of the node holding share j, as learnt from the
/// verified TLS handshake; `None` (node unreachable) leaves that node's sealed nonce absent,
/// and repair of that share then has to fall back to the node's own stored nonce. Returns the
/// envelopes in share order (x = 1..=n).
pub fn deal<R: RngCore + CryptoRng + ?Sized>(
    record: &[u8],
    key: &RecordKey,
    version: Version,
    scheme: Scheme,
    recipients: &[Option<RecipientKey>],
    signer: &Signer,
    rng: &mut R,
) -> Result<Vec<ShareEnvelope>> {
    check_recipients(scheme, recipients)?;
    let seal_to = |index: ShareIndex, nonce: &CommitNonce, rng: &mut R| {
        recipients[usize::from(index.get()) - 1]
            .as_ref()
            .map(|to| seal(to, key, version, index, nonce, rng))
            .transpose()
    };
    let dealt = split_record(record, key, version, scheme, signer, seal_to, rng)?;
    let signature = signer.sign(&dealt.header)?;
    dealt
        .shares
        .into_iter()
        .zip(dealt.nonces)
        .map(|(share, nonce)| {
            let index = share.index();
            ShareEnvelope::data(
                dealt.header.clone(),
                signature.clone(),
                index,
                nonce,
                take_payload(share),
            )
        })
        .collect()
}

/// One record of a batch for [`deal_batch`].
pub struct BatchRecord<'a> {
    /// The record's name.
    pub key: &'a RecordKey,
    /// Its new version; no two records of a batch may share a (key, version).
    pub version: Version,
    /// The plaintext.
    pub record: &'a [u8],
}

/// Deals several records at once (envelope format 3): each is split and committed exactly as
/// by [`deal`], but their headers are signed together ([`Signer::sign_batch`]) and each node's
/// nonces are sealed under one key agreement per batch ([`BatchSealer`]), so a batch of m
/// records costs one signature and n key agreements instead of m and m·n. Returns each
/// record's envelopes in share order, records in the order given.
pub fn deal_batch<R: RngCore + CryptoRng + ?Sized>(
    records: &[BatchRecord<'_>],
    scheme: Scheme,
    recipients: &[Option<RecipientKey>],
    signer: &Signer,
    rng: &mut R,
) -> Result<Vec<Vec<ShareEnvelope>>> {
    check_recipients(scheme, recipients)?;
    let mut seen = std::collections::HashSet::with_capacity(records.len());
    if let Some(repeated) = records.iter().find(|r| !seen.insert((r.key, r.version))) {
        // A repeat would seal two nonces under one AEAD key and nonce.
        return Err(Error::InvalidEnvelope {
            reason: format!(
                "version {} of {} appears twice in one batch",
                repeated.version, repeated.key
            ),
        });
    }
    let sealers = recipients
        .iter()
        .map(|to| to.as_ref().map(|to| BatchSealer::new(to, rng)).transpose())
        .collect::<Result<Vec<_>>>()?;
    let dealt = records
        .iter()
        .map(|r| {
            let seal_to = |index: ShareIndex, nonce: &CommitNonce, _: &mut R| {
                sealers[usize::from(index.get()) - 1]
                    .as_ref()
                    .map(|sealer| sealer.seal(r.key, r.version, index, nonce))
                    .transpose()
            };
            split_record(r.record, r.key, r.version, scheme, signer, seal_to, rng)
        })
        .collect::<Result<Vec<_>>>()?;
    drop(sealers);
    let headers: Vec<RecordHeader> = dealt.iter().map(|d| d.header.clone()).collect();
    let (signature, proofs) = signer.sign_batch(&headers)?;
    dealt
        .into_iter()
        .zip(proofs)
        .map(|(dealt, proof)| {
            dealt
                .shares
                .into_iter()
                .zip(dealt.nonces)
                .map(|(share, nonce)| {
                    let index = share.index();
                    ShareEnvelope::batched(
                        dealt.header.clone(),
                        signature.clone(),
                        proof.clone(),
                        index,
                        nonce,
                        take_payload(share),
                    )
                })
                .collect()
        })
        .collect()
}

/// One record split and committed, before its header is signed.
struct Dealt {
    header: RecordHeader,
    shares: Vec<Share>,
    nonces: Vec<CommitNonce>,
}

fn check_recipients(scheme: Scheme, recipients: &[Option<RecipientKey>]) -> Result<()> {
    let n = usize::from(scheme.shares());
    if recipients.len() != n {
        return Err(Error::InvalidEnvelope {
            reason: format!("{} recipients for {n} shares", recipients.len()),
        });
    }
    Ok(())
}

/// Salts and splits `record`, commits to every share under a fresh nonce, seals each nonce with
/// `seal_to`, and builds the (unsigned) header.
fn split_record<R, S>(
    record: &[u8],
    key: &RecordKey,
    version: Version,
    scheme: Scheme,
    signer: &Signer,
    seal_to: S,
    rng: &mut R,
) -> Result<Dealt>
where
    R: RngCore + CryptoRng + ?Sized,
    S: Fn(ShareIndex, &CommitNonce, &mut R) -> Result<Option<SealedNonce>>,
{
    if record.len() as u64 > RECORD_MAX_BYTES {
        return Err(Error::InvalidEnvelope {
            reason: format!(
                "a record of {} bytes exceeds the maximum of {RECORD_MAX_BYTES}",
                record.len()
            ),
        });
    }
    if !signer.may_sign_for(version.writer) {
        return Err(Error::BadSignature {
            reason: format!("version {version} names another writer than the signer"),
        });
    }
    let n = usize::from(scheme.shares());
    let mut salt = Zeroizing::new([0u8; SALT_BYTES]);
    rng.fill_bytes(salt.as_mut());
    let mut salted = Zeroizing::new(Vec::with_capacity(record.len() + SALT_BYTES));
    salted.extend_from_slice(record);
    salted.extend_from_slice(salt.as_ref());
    let check = record_check(salt.as_ref(), record);
    let shares = shamir::split(&salted, scheme, rng);
    drop(salted);

    let nonces: Vec<CommitNonce> = (0..n).map(|_| CommitNonce::random(rng)).collect();
    let commitments = shares
        .iter()
        .zip(&nonces)
        .map(|(share, nonce)| commit(nonce, share.index(), share.data()))
        .collect();
    let sealed_nonces = shares
        .iter()
        .zip(&nonces)
        .map(|(share, nonce)| seal_to(share.index(), nonce, rng))
        .collect::<Result<Vec<_>>>()?;
    let header = RecordHeader {
        key: key.clone(),
        version,
        scheme,
        record_len: record.len() as u64,
        tombstone: false,
        commitments,
        record_check: Some(check),
        sealed_nonces,
    };
    Ok(Dealt {
        header,
        shares,
        nonces,
    })
}

/// Moves a share's bytes out instead of copying a share of up to 64 MiB.
fn take_payload(share: Share) -> Vec<u8> {
    let mut data = share.into_data();
    std::mem::take(&mut *data)
}

/// The tombstone envelopes of (`key`, `version`), one per share index 1..=n, signed by
/// `signer` (an admin).
pub fn tombstones(
    key: &RecordKey,
    version: Version,
    scheme: Scheme,
    signer: &Signer,
) -> Result<Vec<ShareEnvelope>> {
    let header = RecordHeader {
        key: key.clone(),
        version,
        scheme,
        record_len: 0,
        tombstone: true,
        commitments: Vec::new(),
        record_check: None,
        sealed_nonces: Vec::new(),
    };
    let signature = signer.sign(&header)?;
    (1..=scheme.shares())
        .map(|x| ShareEnvelope::tombstone(header.clone(), signature.clone(), ShareIndex::new(x)?))
        .collect()
}

/// A record rebuilt by [`reassemble`]. No `Debug`: it holds the plaintext.
pub struct Reassembled {
    /// The record, checked against the signed end-to-end hash; wiped when dropped.
    pub record: Zeroizing<Vec<u8>>,
    /// Shares that passed their commitments but do not lie on the record's polynomial (a writer
    /// that dealt inconsistent shares, or damage the commitments missed).
    pub inconsistent: Vec<ShareIndex>,
}

/// Rebuilds the record of `header` from `shares` (already checked against their commitments)
/// and checks it against the signed end-to-end hash. Never returns a record that fails it.
///
/// The first k shares are combined first. If the check fails: with k + 1 shares, each share
/// is left out in turn; with m ≥ k + 2, robust decoding ([`robust::decode`]) locates up to
/// ⌊(m − k)/2⌋ wrong shares. Then [`Error::RecordCheckFailed`] or
/// [`Error::TooManyBadShares`].
pub fn reassemble(header: &RecordHeader, shares: &[Share]) -> Result<Reassembled> {
    let threshold = header.scheme.threshold();
    let k = threshold.as_usize();
    if header.tombstone {
        return Err(Error::InvalidEnvelope {
            reason: "a tombstone has no record to rebuild".to_owned(),
        });
    }
    if shares.len() < k {
        return Err(Error::NotEnoughShares {
            found: shares.len(),
            needed: k,
        });
    }
    if let Ok(record) = open_record(header, shamir::combine(shares, threshold)?) {
        return Ok(Reassembled {
            record,
            inconsistent: Vec::new(),
        });
    }
    if shares.len() == k + 1 {
        // One share too few to locate an error by decoding, but the end-to-end check can
        // tell which share, left out, gives the record.
        for left_out in 0..shares.len() {
            let rest: Vec<Share> = (0..shares.len())
                .filter(|&i| i != left_out)
                .map(|i| shares[i].clone())
                .collect();
            if let Ok(record) = open_record(header, shamir::combine(&rest, threshold)?) {
                return Ok(Reassembled {
                    record,
                    inconsistent: vec![shares[left_out].index()],
                });
            }
        }
        return Err(Error::RecordCheckFailed);
    }
    if shares.len() < k + 2 {
        return Err(Error::RecordCheckFailed);
    }
    let decoded = robust::decode(shares, threshold)?;
    let record = open_record(header, decoded.secret)?;
    Ok(Reassembled {
        record,
        inconsistent: decoded.bad,
    })
}

/// Splits a combined `salted` secret into record and salt and checks BLAKE3(salt ‖ record)
/// against the header (constant-time); returns the record without the salt.
pub fn open_record(
    header: &RecordHeader,
    mut salted: Zeroizing<Vec<u8>>,
) -> Result<Zeroizing<Vec<u8>>> {
    let expected = header.record_check.ok_or(Error::RecordCheckFailed)?;
    let len = usize::try_from(header.record_len).map_err(|_| Error::RecordCheckFailed)?;
    if salted.len() != len + SALT_BYTES {
        return Err(Error::RecordCheckFailed);
    }
    let (record, salt) = salted.split_at(len);
    if record_check(salt, record) != expected {
        return Err(Error::RecordCheckFailed);
    }
    salted[len..].zeroize();
    salted.truncate(len);
    Ok(salted)
}

#[cfg(test)]
#[path = "dealing_tests.rs"]
mod tests;
