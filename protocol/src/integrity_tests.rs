//! Unit tests of header signatures and their verification against the cluster CA.

use std::time::Duration;

use rand::SeedableRng;
use rustls_pki_types::UnixTime;

use super::*;
use crate::dealing;
use crate::envelope::ShareEnvelope;
use crate::test_pki::TestPki;
use crate::types::{RecordKey, Scheme, Version};

fn now() -> UnixTime {
    UnixTime::now()
}

fn dealt(pki: &TestPki, signer: &Signer) -> Vec<ShareEnvelope> {
    let mut rng = rand_chacha::ChaCha12Rng::seed_from_u64(5);
    let version = Version {
        clock_micros: 1_000,
        writer: signer.writer_id(),
    };
    let (_, recipients) = pki.nodes(5);
    dealing::deal(
        b"blood type 0+",
        &RecordKey::new("p/1").expect("key"),
        version,
        Scheme::new(3, 5).expect("scheme"),
        &recipients,
        signer,
        &mut rng,
    )
    .expect("deal")
}

#[test]
fn a_collector_signature_verifies_and_binds_every_field() {
    let pki = TestPki::new();
    let envelopes = dealt(&pki, &pki.signer(Role::Collector));
    let env = &envelopes[0];
    let writer = pki
        .trust()
        .verify(&env.header, &env.signature, now())
        .expect("verifies");
    assert_eq!(writer.role, Role::Collector);

    let trust = pki.trust();
    type Tamper = Box<dyn Fn(&mut RecordHeader)>;
    let tampered: Vec<Tamper> = vec![
        Box::new(|h| h.commitments[2].0[0] ^= 1),
        Box::new(|h| h.record_len += 1),
        Box::new(|h| h.version.clock_micros += 1),
        Box::new(|h| h.key = RecordKey::new("p/2").expect("key")),
        Box::new(|h| h.scheme = Scheme::new(2, 5).expect("scheme")),
        Box::new(|h| h.record_check = Some(Digest([0; 32]))),
        Box::new(|h| h.sealed_nonces[1] = None),
        Box::new(|h| h.commitments.swap(0, 1)),
    ];
    for (i, tamper) in tampered.iter().enumerate() {
        let mut header = env.header.clone();
        tamper(&mut header);
        assert!(
            matches!(
                trust.verify(&header, &env.signature, now()),
                Err(Error::BadSignature { .. })
            ),
            "tampering {i} went unnoticed"
        );
    }
}

#[test]
fn foreign_cas_wrong_roles_and_borrowed_writer_ids_are_refused() {
    let pki = TestPki::new();
    let other = TestPki::new();
    let envelopes = dealt(&other, &other.signer(Role::Collector));
    let env = &envelopes[0];
    assert!(matches!(
        pki.trust().verify(&env.header, &env.signature, now()),
        Err(Error::UntrustedWriter { .. })
    ));

    // A reader (or admin) certificate may not sign records.
    for role in [Role::Reader, Role::Admin, Role::Node] {
        let envelopes = dealt(&pki, &pki.signer(role));
        let env = &envelopes[0];
        assert_eq!(
            pki.trust().verify(&env.header, &env.signature, now()),
            Err(Error::WriterRoleNotAllowed {
                role,
                tombstone: false
            })
        );
    }

    // A version claiming another writer's id (the certificate half differs), even if validly
    // signed. The session half is the writer's own to choose.
    let signer = pki.signer(Role::Collector);
    let env = &dealt(&pki, &signer)[0];
    let mut header = env.header.clone();
    header.version.writer = WriterId(header.version.writer.0 ^ (1 << 32));
    let signature = signer.sign(&header).expect("sign");
    assert!(matches!(
        pki.trust().verify(&header, &signature, now()),
        Err(Error::BadSignature { .. })
    ));
}

#[test]
fn tombstones_need_an_admin_and_time_matters() {
    let pki = TestPki::new();
    let key = RecordKey::new("p/1").expect("key");
    let scheme = Scheme::new(3, 5).expect("scheme");
    let admin = pki.signer(Role::Admin);
    let version = Version {
        clock_micros: 7,
        writer: admin.writer_id(),
    };
    let tombs = dealing::tombstones(&key, version, scheme, &admin).expect("tombstones");
    assert_eq!(tombs.len(), 5);
    let t = &tombs[4];
    assert!(pki.trust().verify(&t.header, &t.signature, now()).is_ok());
    let collector = pki.signer(Role::Collector);
    let version = Version {
        clock_micros: 7,
        writer: collector.writer_id(),
    };
    let t = &dealing::tombstones(&key, version, scheme, &collector).expect("tombstones")[0];
    assert_eq!(
        pki.trust().verify(&t.header, &t.signature, now()),
        Err(Error::WriterRoleNotAllowed {
            role: Role::Collector,
            tombstone: true
        })
    );
    // Long after the certificate expired (rcgen's default validity ends in 4096).
    let far = UnixTime::since_unix_epoch(Duration::from_secs(4_200_000_000 * 30));
    let t = &tombs[0];
    assert!(matches!(
        pki.trust().verify(&t.header, &t.signature, far),
        Err(Error::UntrustedWriter { .. })
    ));
}

#[test]
fn bad_keys_and_cas_are_typed_errors() {
    assert!(matches!(
        Signer::from_pkcs8(b"not a key", vec![1]),
        Err(Error::InvalidKey { .. })
    ));
    assert!(matches!(
        Trust::new(b"not a certificate"),
        Err(Error::InvalidCertificate { .. })
    ));
}

#[test]
fn a_remembered_certificate_gets_the_same_answers_as_a_full_check() {
    let pki = TestPki::new();
    let trust = pki.trust();
    let envelopes = dealt(&pki, &pki.signer(Role::Collector));
    let env = &envelopes[0];
    assert_eq!(trust.verified_len(), 0);
    assert!(trust.verify(&env.header, &env.signature, now()).is_ok());
    assert_eq!(trust.verified_len(), 1, "a verified chain is remembered");
    // From the cache: still accepted, still bound to every header field.
    assert!(trust.verify(&env.header, &env.signature, now()).is_ok());
    let mut header = env.header.clone();
    header.record_len += 1;
    assert!(matches!(
        trust.verify(&header, &env.signature, now()),
        Err(Error::BadSignature { .. })
    ));
    // Outside the certificate's validity window (rcgen: 1975 to 4096) the cache does not
    // answer: before it and after it the certificate is refused as it would be unremembered.
    for at in [
        UnixTime::since_unix_epoch(Duration::ZERO),
        UnixTime::since_unix_epoch(Duration::from_secs(4_200_000_000 * 30)),
    ] {
        assert!(matches!(
            trust.verify(&env.header, &env.signature, at),
            Err(Error::UntrustedWriter { .. })
        ));
    }
    // The role is checked on every call, remembered or not: a collector's tombstone.
    let collector = pki.signer(Role::Collector);
    let version = Version {
        clock_micros: 7,
        writer: collector.writer_id(),
    };
    let key = RecordKey::new("p/1").expect("key");
    let scheme = Scheme::new(3, 5).expect("scheme");
    let tomb = &dealing::tombstones(&key, version, scheme, &collector).expect("tombstones")[0];
    for _ in 0..2 {
        assert_eq!(
            trust.verify(&tomb.header, &tomb.signature, now()),
            Err(Error::WriterRoleNotAllowed {
                role: Role::Collector,
                tombstone: true
            })
        );
    }
    // A certificate of another CA is never remembered.
    let other = TestPki::new();
    let foreign = &dealt(&other, &other.signer(Role::Collector))[0];
    let before = trust.verified_len();
    for _ in 0..2 {
        assert!(matches!(
            trust.verify(&foreign.header, &foreign.signature, now()),
            Err(Error::UntrustedWriter { .. })
        ));
    }
    assert_eq!(trust.verified_len(), before);
    // Clones share what is remembered; forgetting empties it for all of them.
    let clone = trust.clone();
    assert_eq!(clone.verified_len(), before);
    clone.forget_verified();
    assert_eq!(trust.verified_len(), 0);
    assert!(trust.verify(&env.header, &env.signature, now()).is_ok());
}

#[test]
fn the_certificate_cache_is_bounded() {
    use crate::cert_cache::{CertCache, Verified, VERIFIED_MAX};
    let cache = CertCache::default();
    let identity = |i: usize| crate::role::PeerIdentity {
        role: Role::Collector,
        name: format!("collector-{i}"),
        fingerprint: *blake3::hash(&i.to_le_bytes()).as_bytes(),
    };
    for i in 0..VERIFIED_MAX + 10 {
        cache.insert(Verified::new(identity(i), 10, 20));
    }
    assert_eq!(cache.len(), VERIFIED_MAX);
    // The oldest went first; the newest are there, and only inside their window.
    assert!(cache.get(&identity(0).fingerprint, 15).is_none());
    let newest = identity(VERIFIED_MAX + 9);
    assert_eq!(cache.get(&newest.fingerprint, 15), Some(newest.clone()));
    assert_eq!(cache.get(&newest.fingerprint, 9), None);
    assert_eq!(cache.get(&newest.fingerprint, 21), None);
    assert!(cache.get(&newest.fingerprint, 10).is_some());
    assert!(cache.get(&newest.fingerprint, 20).is_some());
}
