//! Dealing and reassembly: round trips, seals, inconsistent writers, and what k − 1 nodes see.

use rand::SeedableRng;

use super::*;
use crate::integrity::{check_commitment, Digest};
use crate::role::Role;
use crate::test_pki::TestPki;

fn rng(seed: u64) -> rand_chacha::ChaCha12Rng {
    rand_chacha::ChaCha12Rng::seed_from_u64(seed)
}

fn key() -> RecordKey {
    RecordKey::new("clinic-1/patient-7/note").expect("key")
}

fn version(signer: &Signer, clock: u64) -> Version {
    Version {
        clock_micros: clock,
        writer: signer.writer_id(),
    }
}

fn shares_of(envelopes: &[ShareEnvelope]) -> Vec<Share> {
    envelopes
        .iter()
        .map(|e| Share::new(e.index, e.payload.clone()))
        .collect()
}

#[test]
fn a_dealt_record_verifies_opens_and_comes_back_from_any_k() {
    let pki = TestPki::new();
    let signer = pki.signer(Role::Collector);
    let (node_keys, recipients) = pki.nodes(5);
    let scheme = Scheme::new(3, 5).expect("scheme");
    let record = b"2026-01-05 discharge summary: stable".to_vec();
    let v = version(&signer, 99);
    let envelopes = deal(
        &record,
        &key(),
        v,
        scheme,
        &recipients,
        &signer,
        &mut rng(1),
    )
    .expect("deal");
    assert_eq!(envelopes.len(), 5);
    for (env, node) in envelopes.iter().zip(&node_keys) {
        assert_eq!(env.validate(), Ok(()));
        assert_eq!(env.payload.len(), record.len() + SALT_BYTES);
        assert_eq!(env.check_commitment(), Ok(()));
        assert_eq!(env.header, envelopes[0].header, "one header for all");
        let sealed = env.header.sealed_nonce(env.index).expect("sealed");
        let opened = node.open(sealed, &key(), v, env.index).expect("opens");
        assert_eq!(Some(&opened), env.nonce.as_ref());
        // Any other node's envelope carries the same sealed copy (for repair).
        let elsewhere = envelopes[0].header.sealed_nonce(env.index).expect("sealed");
        assert_eq!(node.open(elsewhere, &key(), v, env.index), Ok(opened));
    }
    // No node opens another node's nonce.
    let sealed_2 = envelopes[0]
        .header
        .sealed_nonce(envelopes[1].index)
        .expect("sealed");
    assert!(node_keys[0]
        .open(sealed_2, &key(), v, envelopes[1].index)
        .is_err());
    let shares = shares_of(&envelopes);
    for subset in [[0, 1, 2], [2, 3, 4], [4, 0, 2]] {
        let chosen: Vec<Share> = subset.iter().map(|&i| shares[i].clone()).collect();
        let back = reassemble(&envelopes[0].header, &chosen).expect("reassemble");
        assert_eq!(back.record.as_slice(), record.as_slice());
        assert!(back.inconsistent.is_empty());
    }
}

#[test]
fn unreachable_nodes_get_no_seal_and_wrong_writers_are_refused() {
    let pki = TestPki::new();
    let signer = pki.signer(Role::Collector);
    let (_, mut recipients) = pki.nodes(3);
    recipients[1] = None;
    let scheme = Scheme::new(2, 3).expect("scheme");
    let v = version(&signer, 1);
    let envelopes = deal(b"x", &key(), v, scheme, &recipients, &signer, &mut rng(2)).expect("deal");
    let header = &envelopes[0].header;
    assert!(header
        .sealed_nonce(ShareIndex::new(2).expect("x"))
        .is_none());
    assert!(header
        .sealed_nonce(ShareIndex::new(3).expect("x"))
        .is_some());
    let other = Version {
        writer: crate::types::WriterId(1),
        ..v
    };
    assert!(deal(
        b"x",
        &key(),
        other,
        scheme,
        &recipients,
        &signer,
        &mut rng(2)
    )
    .is_err());
    assert!(deal(
        b"x",
        &key(),
        v,
        scheme,
        &recipients[..2],
        &signer,
        &mut rng(2)
    )
    .is_err());
}

/// A malicious writer: share `at` (0-based) replaced by other bytes, with a matching commitment
/// and a valid signature, so every per-share check passes.
fn inconsistent(signer: &Signer, envelopes: &mut [ShareEnvelope], at: &[usize]) {
    let mut header = envelopes[0].header.clone();
    for &i in at {
        let env = &mut envelopes[i];
        env.payload[0] ^= 0x5a;
        env.payload[7] ^= 0x01;
        let nonce = env.nonce.clone().expect("nonce");
        header.commitments[i] = crate::integrity::commit(&nonce, env.index, &env.payload);
    }
    let signature = signer.sign(&header).expect("sign");
    for env in envelopes.iter_mut() {
        env.header = header.clone();
        env.signature = signature.clone();
        assert_eq!(env.check_commitment(), Ok(()));
    }
}

#[test]
fn shares_dealt_inconsistently_are_named_or_refused_never_combined_wrongly() {
    let pki = TestPki::new();
    let signer = pki.signer(Role::Collector);
    let (_, recipients) = pki.nodes(5);
    let scheme = Scheme::new(3, 5).expect("scheme");
    let record = vec![0x42; 300];
    let v = version(&signer, 5);
    let mut envelopes = deal(
        &record,
        &key(),
        v,
        scheme,
        &recipients,
        &signer,
        &mut rng(3),
    )
    .expect("deal");
    inconsistent(&signer, &mut envelopes, &[1]);
    let header = envelopes[0].header.clone();
    let shares = shares_of(&envelopes);

    // All five: robust decoding names share 2.
    let back = reassemble(&header, &shares).expect("corrected");
    assert_eq!(back.record.as_slice(), record.as_slice());
    assert_eq!(back.inconsistent, vec![ShareIndex::new(2).expect("x")]);
    // Four (k + 1): leaving each out in turn finds it.
    let back = reassemble(&header, &shares[..4]).expect("corrected");
    assert_eq!(back.record.as_slice(), record.as_slice());
    assert_eq!(back.inconsistent, vec![ShareIndex::new(2).expect("x")]);
    // Exactly k including the bad one: refused.
    assert_eq!(
        reassemble(&header, &shares[..3]).err(),
        Some(Error::RecordCheckFailed)
    );

    // Two bad of five is beyond ⌊(5 − 3)/2⌋ = 1: an error, never a wrong record.
    inconsistent(&signer, &mut envelopes, &[3]);
    let header = envelopes[0].header.clone();
    let result = reassemble(&header, &shares_of(&envelopes));
    assert!(
        matches!(
            result.as_ref().map(|r| r.record.as_slice()),
            Err(Error::RecordCheckFailed | Error::TooManyBadShares { .. })
        ),
        "got {:?}",
        result.as_ref().map(|r| r.inconsistent.clone())
    );
}

#[test]
fn open_record_refuses_a_wrong_salt_or_length() {
    let pki = TestPki::new();
    let signer = pki.signer(Role::Collector);
    let (_, recipients) = pki.nodes(3);
    let scheme = Scheme::new(2, 3).expect("scheme");
    let envelopes = deal(
        b"abc",
        &key(),
        version(&signer, 1),
        scheme,
        &recipients,
        &signer,
        &mut rng(4),
    )
    .expect("deal");
    let header = &envelopes[0].header;
    let salted = shamir::combine(&shares_of(&envelopes), scheme.threshold()).expect("combine");
    assert_eq!(
        open_record(header, salted.clone())
            .expect("opens")
            .as_slice(),
        b"abc"
    );
    let mut wrong = salted.clone();
    let last = wrong.len() - 1;
    wrong[last] ^= 1;
    assert_eq!(
        open_record(header, wrong).err(),
        Some(Error::RecordCheckFailed)
    );
    let mut short = salted;
    short.pop();
    assert_eq!(
        open_record(header, short).err(),
        Some(Error::RecordCheckFailed)
    );
}

/// Counts, over many dealings, how often each bit of `view` is set.
fn bit_counts(views: &[Vec<u8>]) -> Vec<u32> {
    let mut counts = vec![0u32; views[0].len() * 8];
    for view in views {
        for (i, count) in counts.iter_mut().enumerate() {
            *count += u32::from(view[i / 8] >> (i % 8) & 1);
        }
    }
    counts
}

/// Whether some bit's frequency differs between the two sets of views by more than six
/// standard deviations: a simple, powerful test for a view that depends on the secret.
fn distinguishable(a: &[Vec<u8>], b: &[Vec<u8>]) -> bool {
    let sigma = (a.len() as f64 * 0.5).sqrt();
    bit_counts(a)
        .iter()
        .zip(bit_counts(b))
        .any(|(&x, y)| (f64::from(x) - f64::from(y)).abs() > 6.0 * sigma)
}

/// What k − 1 colluding nodes see of one dealing: their envelopes (share, own nonce) and the
/// whole signed header (all commitments, the end-to-end check, every sealed nonce).
fn colluders_view(envelopes: &[ShareEnvelope], k: usize) -> Vec<u8> {
    let mut view = Vec::new();
    for env in &envelopes[..k - 1] {
        view.extend_from_slice(&env.payload);
        view.extend_from_slice(env.nonce.as_ref().expect("nonce").as_bytes());
    }
    let header = &envelopes[0].header;
    for c in &header.commitments {
        view.extend_from_slice(&c.0);
    }
    view.extend_from_slice(&header.record_check.expect("check").0);
    view
}

#[test]
fn k_minus_one_shares_and_all_commitments_reveal_nothing_checkable() {
    let pki = TestPki::new();
    let signer = pki.signer(Role::Collector);
    let (_, recipients) = pki.nodes(5);
    let scheme = Scheme::new(3, 5).expect("scheme");
    // Two low-entropy candidates an attacker might try: same length, one character apart.
    let (a, b) = (b"dx=I21.4".to_vec(), b"dx=J45.0".to_vec());
    let deals = 300;
    let mut r = rng(6);
    let mut views = |record: &[u8]| -> Vec<Vec<u8>> {
        (0..deals)
            .map(|i| {
                let envelopes = deal(
                    record,
                    &key(),
                    version(&signer, i),
                    scheme,
                    &recipients,
                    &signer,
                    &mut r,
                )
                .expect("deal");
                colluders_view(&envelopes, 3)
            })
            .collect()
    };
    let (views_a, views_b) = (views(&a), views(&b));
    assert!(
        !distinguishable(&views_a, &views_b),
        "the colluders' view depends on the record"
    );
    // Every header field is fresh per dealing: nothing repeats that could be a function of
    // the record alone.
    let mut seen = std::collections::HashSet::new();
    for view in views_a.iter().chain(&views_b) {
        for chunk in view[view.len() - 6 * 32..].chunks(32) {
            assert!(seen.insert(chunk.to_vec()), "a digest repeated");
        }
    }
    // The test has power: an unsalted hash of the record, or an unsalted commitment, in the
    // view would be told apart at once.
    let leaky = |views: &[Vec<u8>], record: &[u8]| -> Vec<Vec<u8>> {
        views
            .iter()
            .map(|v| {
                let mut v = v.clone();
                v.extend_from_slice(blake3::hash(record).as_bytes());
                v
            })
            .collect()
    };
    assert!(distinguishable(&leaky(&views_a, &a), &leaky(&views_b, &b)));
    // And a commitment cannot be checked without its nonce: the colluders' best guess of a
    // third node's share (right bytes, wrong nonce) does not match.
    let envelopes = deal(
        &a,
        &key(),
        version(&signer, 1),
        scheme,
        &recipients,
        &signer,
        &mut r,
    )
    .expect("deal");
    let third = &envelopes[2];
    let guess = CommitNonce::from_bytes([0; 32]);
    let c: &Digest = third.header.commitment(third.index).expect("commitment");
    assert!(check_commitment(c, &guess, third.index, &third.payload).is_err());
}

fn batch_keys(count: usize) -> Vec<RecordKey> {
    (0..count)
        .map(|i| RecordKey::new(format!("clinic-1/patient-{i}/note")).expect("key"))
        .collect()
}

#[test]
fn a_dealt_batch_verifies_opens_and_comes_back_record_by_record() {
    let pki = TestPki::new();
    let signer = pki.signer(Role::Collector);
    let (node_keys, recipients) = pki.nodes(5);
    let scheme = Scheme::new(3, 5).expect("scheme");
    let keys = batch_keys(6);
    let records: Vec<Vec<u8>> = (0..6).map(|i| vec![i as u8; 10 + i * 7]).collect();
    let batch: Vec<BatchRecord<'_>> = keys
        .iter()
        .zip(&records)
        .enumerate()
        .map(|(i, (key, record))| BatchRecord {
            key,
            version: version(&signer, 100 + i as u64),
            record,
        })
        .collect();
    let dealt = deal_batch(&batch, scheme, &recipients, &signer, &mut rng(4)).expect("deal");
    let trust = pki.trust();
    let now = rustls_pki_types::UnixTime::now();
    for ((envelopes, record), entry) in dealt.iter().zip(&records).zip(&batch) {
        assert_eq!(envelopes.len(), 5);
        for (env, node) in envelopes.iter().zip(&node_keys) {
            assert_eq!(env.format, crate::batch::BATCH_FORMAT);
            assert_eq!(env.check_commitment(), Ok(()));
            assert!(trust.verify_envelope(env, now).is_ok());
            // Signed as part of a batch, not on its own.
            assert!(trust.verify(&env.header, &env.signature, now).is_err());
            let opened = node
                .open_envelope(env, env.index, &mut crate::seal::Openers::default())
                .expect("sealed")
                .expect("opens");
            assert_eq!(Some(&opened), env.nonce.as_ref());
            let bytes = env.encode().expect("encode");
            assert_eq!(ShareEnvelope::decode(&bytes).as_ref(), Ok(env));
        }
        assert_eq!(envelopes[0].header.key, *entry.key);
        let back = reassemble(&envelopes[0].header, &shares_of(envelopes)[1..4]).expect("back");
        assert_eq!(back.record.as_slice(), record.as_slice());
    }
    // One signature for the batch.
    assert!(dealt
        .iter()
        .all(|envelopes| envelopes[0].signature == dealt[0][0].signature));
    // A header moved under another record's proof, or altered, no longer verifies.
    let mut swapped = dealt[1][0].clone();
    swapped.batch = dealt[2][0].batch.clone();
    assert!(trust.verify_envelope(&swapped, now).is_err());
    let mut altered = dealt[1][0].clone();
    altered.header.record_len += 1;
    altered.payload.push(0);
    assert!(matches!(
        trust.verify_envelope(&altered, now),
        Err(Error::BadSignature { .. })
    ));
}

#[test]
fn a_batch_refuses_a_repeated_version_and_an_empty_one() {
    let pki = TestPki::new();
    let signer = pki.signer(Role::Collector);
    let (_, recipients) = pki.nodes(5);
    let scheme = Scheme::new(3, 5).expect("scheme");
    let key = key();
    let v = version(&signer, 7);
    let twice = [
        BatchRecord {
            key: &key,
            version: v,
            record: b"a",
        },
        BatchRecord {
            key: &key,
            version: v,
            record: b"b",
        },
    ];
    assert!(matches!(
        deal_batch(&twice, scheme, &recipients, &signer, &mut rng(5)),
        Err(Error::InvalidEnvelope { .. })
    ));
    assert!(deal_batch(&[], scheme, &recipients, &signer, &mut rng(5)).is_err());
}
