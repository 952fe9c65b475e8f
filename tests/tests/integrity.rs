//! Integrity against lying and rotten storage, on a live 5-node 3-of-5 cluster: bad shares
//! are named and outvoted, too many bad shares are an error (never wrong data), nodes refuse
//! forged or altered puts, and bitrot on disk is caught before a share is released.
//!
//! Nodes lie through a [`LyingProxy`] (node j's real certificate, forwarding to node j and
//! tampering with the shares it returns), so no fault-injection code sits in production.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bunsan_client::{BadShareReason, Client, Error, Identity};
use bunsan_cluster::init::{init, InitOptions};
use bunsan_cluster::local::LocalCluster;
use bunsan_node::store::sled::SledStore;
use bunsan_protocol::dealing;
use bunsan_protocol::envelope::ShareEnvelope;
use bunsan_protocol::integrity::{commit, Signer};
use bunsan_protocol::message::{ErrorCode, PutOutcome, Request, Response};
use bunsan_protocol::seal::RecipientKey;
use bunsan_protocol::{RecordKey, RequestId, ShareIndex, Version};
use bunsan_tests::proxy::{reader_via, LyingProxy, Tamper};
use bunsan_tests::{client, key, pattern, purpose, start_cluster};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

const NODE: &str = env!("CARGO_BIN_EXE_bunsan-test-node");

fn flip_bits() -> Tamper {
    Arc::new(|e: &mut ShareEnvelope| e.payload[17] ^= 0x24)
}

fn shift() -> Tamper {
    Arc::new(|e: &mut ShareEnvelope| e.payload.rotate_right(1))
}

/// Forges the commitment vector so that it matches an altered share (the signature cannot
/// follow).
fn forge_commitments() -> Tamper {
    Arc::new(|e: &mut ShareEnvelope| {
        e.payload[0] ^= 0xff;
        if let Some(nonce) = &e.nonce {
            let slot = usize::from(e.index.get()) - 1;
            e.header.commitments[slot] = commit(nonce, e.index, &e.payload);
        }
    })
}

/// The nodes named as bad, and why, in node order.
fn named(bad: &[bunsan_client::BadShare]) -> Vec<(String, BadShareReason)> {
    let mut named: Vec<_> = bad
        .iter()
        .map(|b| (b.node.clone(), b.reason.clone()))
        .collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lying_nodes_are_named_and_the_record_still_comes_back() {
    let cluster = start_cluster(NODE, 5, 3).await;
    let record = pattern(4096, 1);
    let k = key("integrity/liars");
    client(&cluster, "collector")
        .put(&k, &record)
        .await
        .expect("put");

    // ⌊(n − k)/2⌋ = 1 liar, flipping bits, then shifting its share.
    for (tamper, node) in [(flip_bits(), 2u8), (shift(), 4)] {
        let liar = LyingProxy::start(&cluster, node, tamper);
        let outcome = reader_via(&cluster, &[&liar])
            .get_versioned(&k, &purpose())
            .await
            .expect("the record comes back");
        assert!(outcome.data.as_slice() == record.as_slice());
        assert_eq!(
            named(&outcome.bad_shares),
            vec![(format!("node-{node}"), BadShareReason::BadCommitment)]
        );
        assert!(!outcome.sources.contains(&format!("node-{node}")));
    }
    // Commitments locate bad shares by themselves, so even n − k = 2 liars are outvoted.
    let (a, b) = (
        LyingProxy::start(&cluster, 1, flip_bits()),
        LyingProxy::start(&cluster, 5, shift()),
    );
    let outcome = reader_via(&cluster, &[&a, &b])
        .get_versioned(&k, &purpose())
        .await
        .expect("the record comes back");
    assert!(outcome.data.as_slice() == record.as_slice());
    let nodes: Vec<String> = named(&outcome.bad_shares)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(nodes, vec!["node-1", "node-5"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_commitment_vector_from_one_node_is_rejected() {
    let cluster = start_cluster(NODE, 5, 3).await;
    let record = pattern(1000, 2);
    let k = key("integrity/forged");
    client(&cluster, "collector")
        .put(&k, &record)
        .await
        .expect("put");
    let liar = LyingProxy::start(&cluster, 3, forge_commitments());
    let outcome = reader_via(&cluster, &[&liar])
        .get_versioned(&k, &purpose())
        .await
        .expect("the record comes back");
    assert!(outcome.data.as_slice() == record.as_slice());
    match named(&outcome.bad_shares).as_slice() {
        [(node, BadShareReason::BadSignature(_) | BadShareReason::HeaderMismatch)] => {
            assert_eq!(node, "node-3")
        }
        other => panic!("expected node-3 rejected for its header, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_bad_shares_than_correctable_is_an_error_never_wrong_data() {
    let cluster = start_cluster(NODE, 5, 3).await;
    let record = pattern(2048, 3);
    let k = key("integrity/too-many");
    client(&cluster, "collector")
        .put(&k, &record)
        .await
        .expect("put");
    let liars: Vec<LyingProxy> = [1u8, 2, 3]
        .into_iter()
        .map(|node| LyingProxy::start(&cluster, node, flip_bits()))
        .collect();
    let reader = reader_via(&cluster, &liars.iter().collect::<Vec<_>>());
    match reader.get_versioned(&k, &purpose()).await {
        Err(Error::NotEnoughShares {
            found,
            needed,
            failures,
            ..
        }) => {
            assert_eq!((found, needed), (2, 3));
            for node in ["node-1", "node-2", "node-3"] {
                assert!(
                    failures
                        .iter()
                        .any(|f| f.node == node && f.reason.contains("commitment")),
                    "{node} is named in {failures:?}"
                );
            }
        }
        Err(other) => panic!("expected NotEnoughShares, got {other}"),
        Ok(_) => panic!("a record was returned from two good shares"),
    }

    // Inconsistently dealt shares pass their commitments. Two of five exceed
    // ⌊(5 − 3)/2⌋ = 1: the get may still find the three good ones (then the record is right,
    // its end-to-end check says so) or fail; it never returns other data.
    let k2 = key("integrity/too-many-dealt");
    put_inconsistently(&cluster, &k2, &record, &[2, 4]).await;
    match client(&cluster, "reader")
        .get_versioned(&k2, &purpose())
        .await
    {
        Ok(outcome) => assert!(outcome.data.as_slice() == record.as_slice()),
        Err(Error::Integrity { .. }) => {}
        Err(other) => panic!("expected the record or an integrity error, got {other}"),
    }
    // Three of five: no k shares agree, so it must fail.
    let k3 = key("integrity/too-many-dealt-3");
    put_inconsistently(&cluster, &k3, &record, &[1, 2, 4]).await;
    match client(&cluster, "reader")
        .get_versioned(&k3, &purpose())
        .await
    {
        Err(Error::Integrity { bad_shares, .. }) => assert!(bad_shares.is_empty()),
        Err(other) => panic!("expected an integrity error, got {other}"),
        Ok(_) => panic!("a record was returned from inconsistent shares"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inconsistent_dealing_is_located_by_robust_decoding() {
    let cluster = start_cluster(NODE, 5, 3).await;
    let record = pattern(3000, 4);
    let k = key("integrity/dealt");
    // Whether or not share 1 is among the first k to arrive (robust decoding, or the check of
    // the shares the rebuild did not need), node 1 is named.
    put_inconsistently(&cluster, &k, &record, &[1]).await;
    let outcome = client(&cluster, "reader")
        .get_versioned(&k, &purpose())
        .await
        .expect("corrected");
    assert!(outcome.data.as_slice() == record.as_slice());
    assert_eq!(
        named(&outcome.bad_shares),
        vec![("node-1".to_owned(), BadShareReason::Inconsistent)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_refuse_altered_puts_bad_signatures_and_foreign_collectors() {
    let cluster = start_cluster(NODE, 5, 3).await;
    let collector = client(&cluster, "collector");
    let k = key("integrity/refused");
    let signer = signer_of(&cluster.dir().join("clients/collector"));
    let put_to_node_1 = |envelope: ShareEnvelope| Request::Put {
        request_id: RequestId([9; 16]),
        envelope,
    };
    let refused = |response: Response, code: ErrorCode| match response {
        Response::Error(error) => assert_eq!(error.code, code, "{}", error.message),
        other => panic!("expected {code:?}, got {other:?}"),
    };

    // A share that does not match its commitment.
    let mut altered = deal(&cluster, &signer, &k, b"record").swap_remove(0);
    altered.payload[3] ^= 1;
    refused(
        collector
            .call("node-1", &put_to_node_1(altered))
            .await
            .expect("answer"),
        ErrorCode::BadCommitment,
    );
    // A header whose signature does not cover it (a forged commitment vector).
    let mut forged = deal(&cluster, &signer, &k, b"record").swap_remove(0);
    forged.payload[3] ^= 1;
    let nonce = forged.nonce.clone().expect("nonce");
    forged.header.commitments[0] = commit(&nonce, forged.index, &forged.payload);
    refused(
        collector
            .call("node-1", &put_to_node_1(forged))
            .await
            .expect("answer"),
        ErrorCode::BadSignature,
    );
    // A collector certificate of another cluster's CA, sent over our own collector's
    // connection.
    let other = tempfile::tempdir().expect("tempdir");
    init(
        other.path(),
        &InitOptions {
            base_port: 0,
            ..InitOptions::default()
        },
    )
    .expect("a second cluster");
    let foreign = signer_of(&other.path().join("clients/collector"));
    let envelope = deal(&cluster, &foreign, &k, b"record").swap_remove(0);
    refused(
        collector
            .call("node-1", &put_to_node_1(envelope))
            .await
            .expect("answer"),
        ErrorCode::BadSignature,
    );
    // Nothing was stored; a genuine put still goes through.
    assert!(matches!(
        client(&cluster, "reader").get(&k, &purpose()).await,
        Err(Error::NotFound { .. })
    ));
    let genuine = deal(&cluster, &signer, &k, b"record").swap_remove(0);
    assert_eq!(
        collector
            .call("node-1", &put_to_node_1(genuine))
            .await
            .expect("answer"),
        Response::Stored(PutOutcome::Stored)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bitrot_on_disk_is_detected_on_read() {
    let mut cluster = start_cluster(NODE, 5, 3).await;
    let record = pattern(5000, 5);
    let k = key("integrity/rot");
    client(&cluster, "collector")
        .put(&k, &record)
        .await
        .expect("put");
    cluster.stop_node(3).await.expect("stop node 3");
    {
        // Rot the share inside node 3's store and give the value a fresh checksum, so that
        // only the commitment can notice.
        let store = SledStore::open(
            &cluster.node_data_dir(3).join("shares"),
            ShareIndex::new(3).expect("index"),
        )
        .await
        .expect("open node 3's store");
        let raw = store.raw(k.as_bytes()).expect("read").expect("stored");
        let mut envelope = ShareEnvelope::decode(&raw[58..]).expect("envelope");
        envelope.payload[100] ^= 0x08;
        let body = envelope.encode().expect("encode");
        let mut rotten = raw[..26].to_vec();
        rotten.extend_from_slice(blake3::hash(&body).as_bytes());
        rotten.extend_from_slice(&body);
        store.insert_raw(k.as_bytes(), &rotten).expect("write");
    }
    cluster.start_node(3).await.expect("restart node 3");

    let reader = client(&cluster, "reader");
    match reader
        .call(
            "node-3",
            &Request::Get {
                request_id: RequestId([1; 16]),
                key: k.clone(),
                purpose: Some(purpose()),
                version: None,
            },
        )
        .await
        .expect("answer")
    {
        Response::Error(error) => assert_eq!(error.code, ErrorCode::Corrupt, "{}", error.message),
        other => panic!("a rotten share was released: {other:?}"),
    }
    let outcome = reader.get_versioned(&k, &purpose()).await.expect("get");
    assert!(outcome.data.as_slice() == record.as_slice());
    assert!(
        outcome
            .failures
            .iter()
            .any(|f| f.node == "node-3" && f.reason.contains("Corrupt")),
        "{:?}",
        outcome.failures
    );
}

fn signer_of(dir: &std::path::Path) -> Signer {
    Identity::load(dir)
        .expect("identity")
        .signer()
        .expect("signer")
}

/// The five envelopes of `record`, dealt and signed by `signer`, nonces sealed to the nodes.
fn deal(
    cluster: &LocalCluster,
    signer: &Signer,
    key: &RecordKey,
    record: &[u8],
) -> Vec<ShareEnvelope> {
    let recipients: Vec<Option<RecipientKey>> = (1..=5)
        .map(|i| {
            let pem = cluster.dir().join(format!("nodes/node-{i}/cert.pem"));
            let der = CertificateDer::from_pem_file(pem).expect("node certificate");
            Some(RecipientKey::from_certificate(&der).expect("recipient"))
        })
        .collect();
    let clock_micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_micros() as u64;
    let version = Version {
        clock_micros,
        writer: signer.writer_id(),
    };
    dealing::deal(
        record,
        key,
        version,
        cluster.manifest().scheme,
        &recipients,
        signer,
        &mut rand::rng(),
    )
    .expect("deal")
}

/// Puts `record` as a dishonest (or buggy) collector would: shares at `bad` (1-based) are
/// altered, with commitments recomputed and the header re-signed, so every per-share check
/// passes and only the end-to-end check can tell.
async fn put_inconsistently(cluster: &LocalCluster, key: &RecordKey, record: &[u8], bad: &[u8]) {
    let signer = signer_of(&cluster.dir().join("clients/collector"));
    let mut envelopes = deal(cluster, &signer, key, record);
    let mut header = envelopes[0].header.clone();
    for &x in bad {
        let envelope = &mut envelopes[usize::from(x) - 1];
        // A different byte per share: equal errors on several shares can cancel out in a
        // combination (in GF(2^8) the Lagrange weights of x = 1 and 2 at 0 are equal).
        envelope.payload[7 + usize::from(x)] ^= 0x5a;
        let nonce = envelope.nonce.clone().expect("nonce");
        header.commitments[usize::from(x) - 1] = commit(&nonce, envelope.index, &envelope.payload);
    }
    let signature = signer.sign(&header).expect("sign");
    let collector: Client = client(cluster, "collector");
    for mut envelope in envelopes {
        envelope.header = header.clone();
        envelope.signature = signature.clone();
        let node = format!("node-{}", envelope.index);
        let request = Request::Put {
            request_id: RequestId([5; 16]),
            envelope,
        };
        assert_eq!(
            collector.call(&node, &request).await.expect("answer"),
            Response::Stored(PutOutcome::Stored),
            "{node}"
        );
    }
}
