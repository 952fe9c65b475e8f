//! Unit tests of [`Handler`](super::Handler): roles, envelope checks, listing, status.

use std::sync::{Arc, OnceLock};

use bunsan_protocol::dealing;
use bunsan_protocol::envelope::ShareEnvelope;
use bunsan_protocol::integrity::{Signer, Trust};
use bunsan_protocol::message::{
    ErrorCode, PutOutcome, Request, Response, RetainedVersion, LIST_LIMIT_MAX,
};
use bunsan_protocol::role::{PeerIdentity, Role};
use bunsan_protocol::seal::{seal, NodeKey, RecipientKey};
use bunsan_protocol::{Purpose, RecordKey, RequestId, Scheme, ShareIndex, Version};
use rand::SeedableRng;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    SanType,
};

use super::{action, Handler};
use crate::checks::Checks;
use crate::store::memory::MemoryStore;

/// A certificate (DER) and its PKCS#8 key.
struct Leaf {
    cert: Vec<u8>,
    key: Vec<u8>,
}

/// Two CAs (ours and a foreign one) and the identities the tests sign and seal with.
struct Fixture {
    ca: Vec<u8>,
    collector: Leaf,
    admin: Leaf,
    reader: Leaf,
    foreign_collector: Leaf,
    nodes: Vec<Leaf>,
}

fn ca(name: &str) -> (Issuer<'static, KeyPair>, Vec<u8>) {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let cert = params.self_signed(&key).expect("CA");
    (Issuer::new(params, key), cert.der().to_vec())
}

fn leaf(issuer: &Issuer<'static, KeyPair>, role: Role, name: &str) -> Leaf {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.subject_alt_names = vec![SanType::URI(role.uri().try_into().expect("uri"))];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, issuer).expect("leaf");
    Leaf {
        cert: cert.der().to_vec(),
        key: key.serialize_der(),
    }
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let (ours, ca_der) = ca("test CA");
        let (theirs, _) = ca("foreign CA");
        Fixture {
            ca: ca_der,
            collector: leaf(&ours, Role::Collector, "collector"),
            admin: leaf(&ours, Role::Admin, "admin"),
            reader: leaf(&ours, Role::Reader, "reader"),
            foreign_collector: leaf(&theirs, Role::Collector, "collector"),
            nodes: (1..=3)
                .map(|i| leaf(&ours, Role::Node, &format!("node-{i}")))
                .collect(),
        }
    })
}

fn signer(leaf: &Leaf) -> Signer {
    Signer::from_pkcs8(&leaf.key, leaf.cert.clone()).expect("signer")
}

pub(crate) fn checks() -> Checks {
    let f = fixture();
    Checks::new(
        Trust::new(&f.ca).expect("trust"),
        NodeKey::from_der(&f.nodes[0].key).expect("node key"),
    )
}

fn handler() -> Handler {
    Handler::new("node-1", index(1), Arc::new(MemoryStore::new()), checks())
}

fn index(i: u8) -> ShareIndex {
    ShareIndex::new(i).expect("index")
}

fn peer(role: Role) -> PeerIdentity {
    PeerIdentity {
        role,
        name: format!("test-{role}"),
        fingerprint: [0; 32],
    }
}

fn key(name: &str) -> RecordKey {
    RecordKey::new(name).expect("key")
}

fn version(clock: u64) -> Version {
    Version {
        clock_micros: clock,
        writer: signer(&fixture().collector).writer_id(),
    }
}

fn scheme() -> Scheme {
    Scheme::new(2, 3).expect("scheme")
}

fn recipients() -> Vec<Option<RecipientKey>> {
    fixture()
        .nodes
        .iter()
        .map(|n| Some(RecipientKey::from_certificate(&n.cert).expect("recipient")))
        .collect()
}

/// Share `at` of a record dealt and signed by `by`, with every node's nonce sealed.
fn share_by(by: &Leaf, name: &str, clock: u64, at: u8, record: &[u8]) -> ShareEnvelope {
    let signer = signer(by);
    let version = Version {
        clock_micros: clock,
        writer: signer.writer_id(),
    };
    let mut rng = rand_chacha::ChaCha12Rng::seed_from_u64(clock);
    let mut all = dealing::deal(
        record,
        &key(name),
        version,
        scheme(),
        &recipients(),
        &signer,
        &mut rng,
    )
    .expect("deal");
    all.swap_remove(usize::from(at) - 1)
}

pub(crate) fn share(name: &str, clock: u64, at: u8, record: &[u8]) -> ShareEnvelope {
    share_by(&fixture().collector, name, clock, at, record)
}

fn tombstone(name: &str, clock: u64) -> ShareEnvelope {
    let admin = signer(&fixture().admin);
    let version = Version {
        clock_micros: clock,
        writer: admin.writer_id(),
    };
    dealing::tombstones(&key(name), version, scheme(), &admin)
        .expect("tombstones")
        .swap_remove(0)
}

fn put(envelope: ShareEnvelope) -> Request {
    Request::Put {
        request_id: RequestId([1; 16]),
        envelope,
    }
}

fn delete(tombstone: ShareEnvelope) -> Request {
    Request::Delete {
        request_id: RequestId([2; 16]),
        tombstone,
    }
}

fn get(name: &str, purpose: bool) -> Request {
    Request::Get {
        request_id: RequestId([3; 16]),
        key: key(name),
        purpose: purpose.then(|| Purpose::new("treatment", "follow-up").expect("purpose")),
        version: None,
    }
}

fn list(start_after: Option<&str>, limit: u32, include_tombstones: bool) -> Request {
    Request::List {
        request_id: RequestId([4; 16]),
        prefix: "a/".to_owned(),
        start_after: start_after.map(key),
        limit,
        include_tombstones,
    }
}

fn error_code(response: &Response) -> Option<ErrorCode> {
    match response {
        Response::Error(e) => Some(e.code),
        _ => None,
    }
}

fn listed(response: Response) -> (Vec<String>, Option<String>) {
    match response {
        Response::Listing { entries, next } => (
            entries.iter().map(|e| e.key.as_str().to_owned()).collect(),
            next.map(|k| k.as_str().to_owned()),
        ),
        other => panic!("expected a listing, got {other:?}"),
    }
}

#[tokio::test]
async fn every_role_gets_exactly_its_actions() {
    let h = handler();
    let requests = [
        Request::Health,
        put(share("a/1", 1, 1, b"x")),
        put_batch(batch_shares(&[("a/2", 2)], 1)),
        get("a/1", true),
        delete(tombstone("a/1", 9)),
        list(None, 10, true),
        Request::Status,
    ];
    for role in Role::ALL {
        for request in &requests {
            let allowed = role.allows(action(request));
            let response = h.handle(&peer(role), request.clone()).await;
            match (&response, allowed) {
                (Response::Error(e), false) => {
                    assert_eq!(e.code, ErrorCode::Forbidden);
                    assert!(e.message.contains(role.as_str()), "{}", e.message);
                    assert!(e.message.contains(request.action()), "{}", e.message);
                }
                (r, true) => assert_ne!(error_code(r), Some(ErrorCode::Forbidden), "{role}"),
                (r, false) => panic!("{role} {} was not refused: {r:?}", request.action()),
            }
        }
    }
}

#[tokio::test]
async fn envelopes_must_fit_the_node_and_the_request() {
    let h = handler();
    let collector = peer(Role::Collector);
    let wrong_node = h.handle(&collector, put(share("a/1", 1, 2, b"x"))).await;
    assert_eq!(error_code(&wrong_node), Some(ErrorCode::WrongNode));
    let tomb_put = h.handle(&collector, put(tombstone("a/1", 1))).await;
    assert_eq!(error_code(&tomb_put), Some(ErrorCode::BadRequest));
    let share_delete = h
        .handle(&peer(Role::Admin), delete(share("a/1", 1, 1, b"x")))
        .await;
    assert_eq!(error_code(&share_delete), Some(ErrorCode::BadRequest));
    let stored = h.handle(&collector, put(share("a/1", 5, 1, b"x"))).await;
    assert_eq!(stored, Response::Stored(PutOutcome::Stored));
    let conflict = h.handle(&collector, put(share("a/1", 5, 1, b"y"))).await;
    assert_eq!(error_code(&conflict), Some(ErrorCode::Conflict));
    let older = h.handle(&collector, put(share("a/1", 4, 1, b"x"))).await;
    assert_eq!(
        older,
        Response::Stored(PutOutcome::Superseded {
            current: version(5)
        })
    );
}

#[tokio::test]
async fn get_needs_a_purpose_and_returns_the_highest_version() {
    let h = handler();
    let reader = peer(Role::Reader);
    h.handle(&peer(Role::Collector), put(share("a/1", 1, 1, b"old")))
        .await;
    h.handle(&peer(Role::Collector), put(share("a/1", 2, 1, b"new")))
        .await;
    match h.handle(&reader, get("a/1", false)).await {
        Response::Error(e) => {
            assert_eq!(e.code, ErrorCode::BadRequest);
            assert!(e.message.contains("purpose is required"), "{}", e.message);
        }
        other => panic!("released without a purpose: {other:?}"),
    }
    // Version 1 is kept under version 2 until the writer commits version 2.
    match h.handle(&reader, get("a/1", true)).await {
        Response::ShareWithOlder { envelope, older } => {
            assert_eq!(envelope.header.version, version(2));
            assert_eq!(envelope.check_commitment(), Ok(()));
            assert_eq!(
                older,
                [RetainedVersion {
                    version: version(1),
                    tombstone: false
                }]
            );
        }
        other => panic!("expected the share and the kept version, got {other:?}"),
    }
    let mut exact = get("a/1", true);
    if let Request::Get { version: v, .. } = &mut exact {
        *v = Some(version(1));
    }
    match h.handle(&reader, exact.clone()).await {
        Response::Share(envelope) => assert_eq!(envelope.header.version, version(1)),
        other => panic!("expected version 1, got {other:?}"),
    }
    let commit = |clock| Request::Commit {
        request_id: RequestId([5; 16]),
        commits: vec![(key("a/1"), version(clock))],
    };
    let refused = h.handle(&reader, commit(2)).await;
    assert_eq!(error_code(&refused), Some(ErrorCode::Forbidden));
    assert_eq!(
        h.handle(&peer(Role::Collector), commit(2)).await,
        Response::Committed { dropped: 1 }
    );
    assert_eq!(h.handle(&reader, exact).await, Response::NotFound);
    match h.handle(&reader, get("a/1", true)).await {
        Response::Share(envelope) => assert_eq!(envelope.header.version, version(2)),
        other => panic!("expected the share alone, got {other:?}"),
    }
    assert_eq!(
        h.handle(&reader, get("a/9", true)).await,
        Response::NotFound
    );
    let tomb = tombstone("a/1", 3);
    h.handle(&peer(Role::Admin), delete(tomb.clone())).await;
    assert_eq!(
        h.handle(&reader, get("a/1", true)).await,
        Response::Share(tomb)
    );
}

#[tokio::test]
async fn listing_pages_and_filters_tombstones() {
    let h = handler();
    let admin = peer(Role::Admin);
    for i in 0..5 {
        h.handle(
            &peer(Role::Collector),
            put(share(&format!("a/{i}"), 1, 1, b"x")),
        )
        .await;
    }
    h.handle(&peer(Role::Collector), put(share("b/0", 1, 1, b"x")))
        .await;
    h.handle(&admin, delete(tombstone("a/1", 2))).await;
    h.handle(&admin, delete(tombstone("a/3", 2))).await;
    let first = listed(h.handle(&admin, list(None, 2, false)).await);
    assert_eq!(
        first,
        (vec!["a/0".into(), "a/2".into()], Some("a/2".into()))
    );
    let second = listed(h.handle(&admin, list(Some("a/2"), 2, false)).await);
    assert_eq!(second, (vec!["a/4".into()], None));
    let all = listed(h.handle(&admin, list(None, 10, true)).await);
    assert_eq!((all.0.len(), all.1), (5, None));
    let zero = h.handle(&admin, list(None, 0, true)).await;
    assert_eq!(error_code(&zero), Some(ErrorCode::BadRequest));
}

#[tokio::test]
async fn list_limits_are_capped() {
    let store = Arc::new(MemoryStore::new());
    let h = Handler::new("node-1", index(1), store.clone(), checks());
    // Straight into the store: ten thousand signed dealings would only slow the test down.
    for i in 0..LIST_LIMIT_MAX + 3 {
        let envelope = crate::store::conformance::sample_share(
            key(&format!("a/{i:06}")),
            version(1),
            index(1),
            b"x",
        );
        crate::store::ShareStore::put(&*store, &envelope)
            .await
            .expect("put");
    }
    let (entries, next) = listed(
        h.handle(&peer(Role::Admin), list(None, u32::MAX, true))
            .await,
    );
    assert_eq!(entries.len(), LIST_LIMIT_MAX as usize);
    assert_eq!(next.as_deref(), entries.last().map(String::as_str));
}

#[tokio::test]
async fn health_and_status_describe_the_node() {
    let h = handler();
    h.handle(&peer(Role::Collector), put(share("a/1", 1, 1, &[0; 10])))
        .await;
    h.handle(&peer(Role::Collector), put(share("a/2", 1, 1, &[0; 5])))
        .await;
    h.handle(&peer(Role::Admin), delete(tombstone("a/2", 2)))
        .await;
    match h.handle(&peer(Role::Auditor), Request::Health).await {
        Response::Health(health) => assert_eq!(
            (health.node_id.as_str(), health.index),
            ("node-1", index(1))
        ),
        other => panic!("{other:?}"),
    }
    match h.handle(&peer(Role::Admin), Request::Status).await {
        Response::Status(s) => assert_eq!((s.records, s.tombstones, s.bytes), (1, 1, 10)),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn forged_or_altered_envelopes_are_refused_before_anything_is_stored() {
    let h = handler();
    let collector = peer(Role::Collector);
    let f = fixture();
    let refused = |response: &Response, code: ErrorCode| {
        assert_eq!(error_code(response), Some(code), "{response:?}");
    };

    // A flipped bit in the share: its commitment no longer matches.
    let mut flipped = share("a/1", 1, 1, b"record");
    flipped.payload[2] ^= 0x04;
    refused(
        &h.handle(&collector, put(flipped)).await,
        ErrorCode::BadCommitment,
    );

    // A commitment vector forged to match an altered share: the signature no longer verifies.
    let mut forged = share("a/1", 1, 1, b"record");
    forged.payload[0] ^= 1;
    let nonce = forged.nonce.clone().expect("nonce");
    forged.header.commitments[0] =
        bunsan_protocol::integrity::commit(&nonce, forged.index, &forged.payload);
    refused(
        &h.handle(&collector, put(forged)).await,
        ErrorCode::BadSignature,
    );

    // A collector certificate of another CA, and a reader certificate of ours.
    let foreign = share_by(&f.foreign_collector, "a/1", 1, 1, b"record");
    refused(
        &h.handle(&collector, put(foreign)).await,
        ErrorCode::BadSignature,
    );
    let by_reader = share_by(&f.reader, "a/1", 1, 1, b"record");
    refused(
        &h.handle(&collector, put(by_reader)).await,
        ErrorCode::BadSignature,
    );

    // A tombstone signed by a collector.
    let c = signer(&f.collector);
    let v = version(9);
    let bad_tomb = dealing::tombstones(&key("a/1"), v, scheme(), &c)
        .expect("tombstones")
        .swap_remove(0);
    refused(
        &h.handle(&peer(Role::Admin), delete(bad_tomb)).await,
        ErrorCode::BadSignature,
    );

    // A validly signed header whose nonce sealed to this node is another nonce, or is sealed
    // to another node's key.
    let mut rng = rand_chacha::ChaCha12Rng::seed_from_u64(77);
    for recipient in [0usize, 1] {
        let mut env = share("a/1", 1, 1, b"record");
        let other = bunsan_protocol::integrity::CommitNonce::random(&mut rng);
        let nonce = if recipient == 0 {
            other
        } else {
            env.nonce.clone().expect("nonce")
        };
        let to = RecipientKey::from_certificate(&f.nodes[recipient].cert).expect("recipient");
        env.header.sealed_nonces[0] = Some(
            seal(
                &to,
                &env.header.key,
                env.header.version,
                index(1),
                &nonce,
                &mut rng,
            )
            .expect("seal"),
        );
        env.signature = c.sign(&env.header).expect("sign");
        refused(
            &h.handle(&collector, put(env)).await,
            ErrorCode::BadCommitment,
        );
    }

    // Nothing was stored by any of these.
    assert_eq!(
        h.handle(&peer(Role::Reader), get("a/1", true)).await,
        Response::NotFound
    );
    // The genuine envelope is accepted, also without a seal for this node.
    let mut unsealed = share("a/2", 1, 1, b"record");
    unsealed.header.sealed_nonces[0] = None;
    unsealed.signature = c.sign(&unsealed.header).expect("sign");
    assert_eq!(
        h.handle(&collector, put(unsealed)).await,
        Response::Stored(PutOutcome::Stored)
    );
    assert_eq!(
        h.handle(&collector, put(share("a/1", 1, 1, b"record")))
            .await,
        Response::Stored(PutOutcome::Stored)
    );
}

#[tokio::test]
async fn a_share_rotten_on_disk_is_never_released() {
    let store = Arc::new(MemoryStore::new());
    let h = Handler::new("node-1", index(1), store.clone(), checks());
    let good = share("a/1", 1, 1, b"record");
    h.handle(&peer(Role::Collector), put(good.clone())).await;
    // Rot that the store's own checksum cannot see: the value is rewritten whole, with a
    // checksum over the rotten bytes.
    let mut rotten = good;
    rotten.payload[4] ^= 0x80;
    let value = crate::store::codec::encode(&rotten).expect("encode");
    store.insert_raw(b"a/1", &value);
    let answer = h.handle(&peer(Role::Reader), get("a/1", true)).await;
    assert_eq!(error_code(&answer), Some(ErrorCode::Corrupt), "{answer:?}");
}

/// Share `at` of each record of one batch dealt and signed by the collector.
fn batch_shares(records: &[(&str, u64)], at: u8) -> Vec<ShareEnvelope> {
    let signer = signer(&fixture().collector);
    let keys: Vec<RecordKey> = records.iter().map(|(name, _)| key(name)).collect();
    let batch: Vec<dealing::BatchRecord<'_>> = keys
        .iter()
        .zip(records)
        .map(|(key, (_, clock))| dealing::BatchRecord {
            key,
            version: version(*clock),
            record: b"batched record",
        })
        .collect();
    let mut rng = rand_chacha::ChaCha12Rng::seed_from_u64(77);
    dealing::deal_batch(&batch, scheme(), &recipients(), &signer, &mut rng)
        .expect("deal")
        .into_iter()
        .map(|mut envelopes| envelopes.swap_remove(usize::from(at) - 1))
        .collect()
}

fn put_batch(envelopes: Vec<ShareEnvelope>) -> Request {
    Request::PutBatch {
        request_id: RequestId([5; 16]),
        envelopes,
    }
}

#[tokio::test]
async fn a_put_batch_answers_each_envelope_as_a_put_would() {
    let h = handler();
    let collector = peer(Role::Collector);
    // b/2 is already stored at a newer version; b/3 is altered after signing.
    let newer = h.handle(&collector, put(share("b/2", 50, 1, b"x"))).await;
    assert_eq!(newer, Response::Stored(PutOutcome::Stored));
    let mut envelopes = batch_shares(&[("b/1", 10), ("b/2", 11), ("b/3", 12), ("b/4", 13)], 1);
    envelopes[2].header.record_len += 1;
    envelopes[2].payload.push(0);
    let first = envelopes[0].clone();
    let mut wrong_node = batch_shares(&[("b/5", 14)], 2);
    envelopes.append(&mut wrong_node);
    let Response::StoredBatch(outcomes) = h.handle(&collector, put_batch(envelopes)).await else {
        panic!("not a batch answer");
    };
    assert_eq!(outcomes.len(), 5);
    assert_eq!(outcomes[0], Ok(PutOutcome::Stored));
    assert_eq!(
        outcomes[1],
        Ok(PutOutcome::Superseded {
            current: version(50)
        })
    );
    assert_eq!(
        outcomes[2].as_ref().map_err(|e| e.code),
        Err(ErrorCode::BadSignature)
    );
    assert_eq!(outcomes[3], Ok(PutOutcome::Stored));
    assert_eq!(
        outcomes[4].as_ref().map_err(|e| e.code),
        Err(ErrorCode::WrongNode)
    );
    // What was stored reads back, signed as a batch; what was refused is not there.
    let released = h.handle(&peer(Role::Reader), get("b/4", true)).await;
    let Response::Share(envelope) = released else {
        panic!("b/4 not released: {released:?}");
    };
    assert_eq!(envelope.format, bunsan_protocol::batch::BATCH_FORMAT);
    assert_eq!(
        h.handle(&peer(Role::Reader), get("b/3", true)).await,
        Response::NotFound
    );
    // The same envelope again is idempotent; the same version signed in another batch is
    // another dealing, so a conflict.
    let again = h.handle(&collector, put_batch(vec![first])).await;
    assert_eq!(
        again,
        Response::StoredBatch(vec![Ok(PutOutcome::AlreadyStored)])
    );
    let redealt = h
        .handle(&collector, put_batch(batch_shares(&[("b/1", 10)], 1)))
        .await;
    let Response::StoredBatch(redealt) = redealt else {
        panic!("not a batch answer");
    };
    assert_eq!(
        redealt[0].as_ref().map_err(|e| e.code),
        Err(ErrorCode::Conflict)
    );
    // One audit entry per envelope, each a put of its record.
    let entries = h.audit().size();
    assert!(entries >= 8, "{entries} audit entries");
}

#[tokio::test]
async fn a_put_batch_needs_the_put_role_and_a_size_within_limits() {
    let h = handler();
    let batch = put_batch(batch_shares(&[("c/1", 10)], 1));
    for role in [Role::Reader, Role::Auditor, Role::Admin] {
        let refused = h.handle(&peer(role), batch.clone()).await;
        assert_eq!(error_code(&refused), Some(ErrorCode::Forbidden), "{role}");
    }
    let empty = h
        .handle(&peer(Role::Collector), put_batch(Vec::new()))
        .await;
    assert_eq!(error_code(&empty), Some(ErrorCode::BadRequest));
    let one = batch_shares(&[("c/2", 11)], 1).swap_remove(0);
    let too_many = vec![one; bunsan_protocol::message::PUT_BATCH_MAX + 1];
    let refused = h.handle(&peer(Role::Collector), put_batch(too_many)).await;
    assert_eq!(error_code(&refused), Some(ErrorCode::BadRequest));
    assert_eq!(
        h.handle(&peer(Role::Reader), get("c/2", true)).await,
        Response::NotFound
    );
}
