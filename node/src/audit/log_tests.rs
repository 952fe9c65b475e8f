//! Tests of [`super::AuditLog`]: numbering, chaining, group commit, fail-closed, replay.

use std::sync::Arc;

use bunsan_protocol::audit::{chain_next, Actor, AuditEntry, Outcome, CHAIN_GENESIS};
use bunsan_protocol::checkpoint::verify_checkpoint;
use bunsan_protocol::merkle;

use super::*;
use crate::audit::event::AuditEvent;
use crate::audit::store::MemoryAuditStore;

pub(super) fn event(action: &str) -> AuditEvent {
    AuditEvent {
        actor: Actor::Node,
        action: action.to_owned(),
        key: None,
        version: None,
        purpose: None,
        request_id: None,
        outcome: Outcome::Allowed,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_get_consecutive_numbers_and_a_valid_chain() {
    let store = MemoryAuditStore::new();
    let log = AuditLog::open(
        "node-1",
        Arc::new(store.clone()),
        None,
        AuditOptions::default(),
    )
    .await
    .expect("open");
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50 {
        let log = log.clone();
        tasks.spawn(async move { log.append(event(&format!("a{i}"))).await.expect("append") });
    }
    let mut seqs = Vec::new();
    while let Some(seq) = tasks.join_next().await {
        seqs.push(seq.expect("task"));
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (0..50).collect::<Vec<_>>());
    let records = store.read(0, 100).await.expect("read");
    let mut head = CHAIN_GENESIS;
    let mut time = 0;
    let mut leaves = Vec::new();
    for (i, record) in records.iter().enumerate() {
        let entry = AuditEntry::decode(&record.entry).expect("decode");
        assert_eq!(entry.seq, i as u64);
        assert!(entry.time_micros >= time);
        time = entry.time_micros;
        head = chain_next(&head, &record.entry);
        assert_eq!(record.chain, head);
        leaves.push(record.leaf_hash());
    }
    assert_eq!(log.consistency_proof(10, 50).expect("proof"), {
        let mut tree = merkle::MerkleTree::new();
        leaves.iter().for_each(|l| tree.push(*l));
        tree.consistency_proof(10, 50).expect("proof")
    });
}

#[tokio::test]
async fn a_failed_write_poisons_the_log_until_restart() {
    let store = MemoryAuditStore::new();
    let log = AuditLog::open(
        "node-1",
        Arc::new(store.clone()),
        None,
        AuditOptions::default(),
    )
    .await
    .expect("open");
    log.append(event("ok")).await.expect("append");
    store.set_failing(true);
    assert!(log.append(event("lost")).await.is_err());
    store.set_failing(false);
    assert!(
        log.append(event("after")).await.is_err(),
        "fail closed until restart"
    );
    drop(log);
    let reopened = AuditLog::open(
        "node-1",
        Arc::new(store.clone()),
        None,
        AuditOptions::default(),
    )
    .await
    .expect("reopen");
    assert_eq!(reopened.size(), 1);
    assert_eq!(reopened.append(event("again")).await.expect("append"), 1);
}

#[tokio::test]
async fn checkpoints_are_signed_on_demand_every_n_entries_and_survive_a_restart() {
    let ca = bunsan_protocol_test_ca();
    let store = MemoryAuditStore::new();
    let options = AuditOptions {
        checkpoint_interval: std::time::Duration::from_secs(3600),
        checkpoint_entries: 4,
    };
    let log = AuditLog::open(
        "node-1",
        Arc::new(store.clone()),
        Some(ca.0),
        options.clone(),
    )
    .await
    .expect("open");
    for i in 0..9 {
        log.append(event(&format!("e{i}"))).await.expect("append");
    }
    let sizes: Vec<u64> = store
        .checkpoints(0, 10)
        .await
        .expect("list")
        .iter()
        .map(|note| {
            verify_checkpoint(note, &ca.1)
                .expect("verifies")
                .checkpoint
                .size
        })
        .collect();
    assert_eq!(sizes, vec![4, 8]);
    let now = log.checkpoint_now().await.expect("on demand");
    assert_eq!(
        verify_checkpoint(&now, &ca.1)
            .expect("verifies")
            .checkpoint
            .size,
        9
    );
    assert_eq!(
        log.checkpoint_now().await.expect("again"),
        now,
        "no re-signing"
    );
}

/// A signing identity from a throw-away CA, and its public key.
fn bunsan_protocol_test_ca() -> (SigningIdentity, bunsan_protocol::node_key::NodeKey) {
    let (mut identities, public) = test_identities(1);
    (identities.remove(0), public)
}

/// `n` signing identities of one node (its processes share key and certificate), from a
/// throw-away CA, and the node's public key.
pub(super) fn test_identities(
    n: usize,
) -> (Vec<SigningIdentity>, bunsan_protocol::node_key::NodeKey) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "ca");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = params.self_signed(&key).expect("ca");
    let issuer = rcgen::Issuer::new(params, key);
    let node_key = rcgen::KeyPair::generate().expect("node key");
    let mut node = rcgen::CertificateParams::default();
    node.distinguished_name
        .push(rcgen::DnType::CommonName, "node-1");
    node.subject_alt_names.push(rcgen::SanType::URI(
        bunsan_protocol::role::Role::Node
            .uri()
            .try_into()
            .expect("uri"),
    ));
    let cert = node.signed_by(&node_key, &issuer).expect("cert");
    let identities: Vec<SigningIdentity> = (0..n)
        .map(|_| SigningIdentity {
            signer: bunsan_protocol::node_key::NodeSigner::new(
                ca_cert.der(),
                cert.der(),
                &node_key.serialize_der(),
            )
            .expect("signer"),
            certificate: cert.der().to_vec(),
            ca: ca_cert.der().to_vec(),
        })
        .collect();
    let public = identities[0].signer.public().clone();
    (identities, public)
}
