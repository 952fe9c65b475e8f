//! Tests of several [`super::AuditLog`]s on one store, as the node processes of a site share
//! its S3 log: unique numbers, one chain, consistent checkpoints, tampering caught.

use std::sync::Arc;

use bunsan_protocol::audit::{chain_next, AuditEntry, CHAIN_GENESIS};
use bunsan_protocol::checkpoint::verify_checkpoint;
use bunsan_protocol::merkle::{verify_consistency, MerkleTree};
use object_store::memory::InMemory;

use super::tests::{event, test_identities};
use super::*;
use crate::audit::s3;
use crate::audit::store::MemoryAuditStore;
use crate::objstore::ObjectSite;

/// Tasks per log, and appends per task.
const TASKS: u64 = 30;
const APPENDS: u64 = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_logs_share_one_memory_store() {
    let store = MemoryAuditStore::new();
    two_writers_share_one_log(
        [Arc::new(store.clone()), Arc::new(store.clone())],
        Arc::new(store),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_logs_share_one_s3_store() {
    let site = ObjectSite::new(Arc::new(InMemory::new()), "p", &[7; 32]).expect("site");
    let a: Arc<dyn AuditStore> = s3::open(site.clone()).await.expect("open");
    let b: Arc<dyn AuditStore> = s3::open(site.clone()).await.expect("open");
    two_writers_share_one_log([a, b], s3::open(site).await.expect("open")).await;
}

async fn two_writers_share_one_log(stores: [Arc<dyn AuditStore>; 2], reader: Arc<dyn AuditStore>) {
    let (identities, public) = test_identities(2);
    let options = AuditOptions {
        checkpoint_interval: Duration::from_millis(20),
        checkpoint_entries: 7,
    };
    let mut logs = Vec::new();
    for (store, identity) in stores.into_iter().zip(identities) {
        let log = AuditLog::open("node-1", store, Some(identity), options.clone());
        logs.push(log.await.expect("open"));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (l, log) in logs.iter().enumerate() {
        for t in 0..TASKS {
            let log = log.clone();
            tasks.spawn(async move {
                let (mut replies, mut notes) = (Vec::new(), Vec::new());
                for i in 0..APPENDS {
                    let action = format!("l{l}t{t}i{i}");
                    let seq = log.append(event(&action)).await.expect("append");
                    replies.push((seq, action));
                    if (t + i) % 9 == 0 {
                        notes.push(log.checkpoint_now().await.expect("checkpoint"));
                    }
                }
                (replies, notes)
            });
        }
    }
    let (mut replies, mut notes) = (Vec::new(), Vec::new());
    while let Some(done) = tasks.join_next().await {
        let (r, n) = done.expect("task");
        replies.extend(r);
        notes.extend(n);
    }
    let total = 2 * TASKS * APPENDS;
    replies.sort();
    let seqs: Vec<u64> = replies.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(
        seqs,
        (0..total).collect::<Vec<_>>(),
        "every reply seq unique"
    );

    // The store holds every entry, at the number its caller was told, on one chain.
    let records = reader.read(0, usize::MAX).await.expect("read");
    assert_eq!(records.len() as u64, total);
    let (mut tree, mut heads, mut time) = (MerkleTree::new(), vec![CHAIN_GENESIS], 0);
    for ((seq, action), record) in replies.iter().zip(&records) {
        let entry = AuditEntry::decode(&record.entry).expect("decode");
        assert_eq!((entry.seq, &entry.action), (*seq, action));
        assert!(entry.time_micros >= time, "time never goes back");
        time = entry.time_micros;
        let head = chain_next(heads.last().expect("head"), &record.entry);
        assert_eq!(record.chain, head, "entry {seq} chains on");
        heads.push(head);
        tree.push(record.leaf_hash());
    }

    // Both sign checkpoints of the store's real end, and every checkpoint either signed is a
    // prefix of the one log, as a witness checks with either process's proofs.
    for log in &logs {
        notes.push(log.checkpoint_now().await.expect("final checkpoint"));
        assert_eq!(log.size(), total, "caught up before signing");
    }
    notes.extend(reader.checkpoints(0, usize::MAX).await.expect("list"));
    let mut checkpoints: Vec<_> = notes
        .iter()
        .map(|note| {
            verify_checkpoint(note, &public)
                .expect("verifies")
                .checkpoint
        })
        .collect();
    checkpoints.sort_by_key(|c| c.size);
    assert_eq!(checkpoints.last().map(|c| c.size), Some(total));
    for checkpoint in &checkpoints {
        let size = checkpoint.size;
        assert_eq!(
            tree.root(size).expect("root"),
            checkpoint.root,
            "root at {size}"
        );
        assert_eq!(heads[size as usize], checkpoint.chain, "chain at {size}");
    }
    for (pair, log) in checkpoints.windows(2).zip(logs.iter().cycle()) {
        let (old, new) = (&pair[0], &pair[1]);
        let proof = log.consistency_proof(old.size, new.size).expect("proof");
        verify_consistency(old.size, new.size, &old.root, &new.root, &proof)
            .expect("checkpoints are consistent");
    }
}

#[tokio::test]
async fn another_writers_entry_that_does_not_chain_poisons_the_log() {
    let store = MemoryAuditStore::new();
    let (mine, other) = (
        AuditLog::open(
            "node-1",
            Arc::new(store.clone()),
            None,
            AuditOptions::default(),
        ),
        AuditLog::open(
            "node-1",
            Arc::new(store.clone()),
            None,
            AuditOptions::default(),
        ),
    );
    let (mine, other) = (mine.await.expect("open"), other.await.expect("open"));
    assert_eq!(mine.append(event("a")).await.expect("append"), 0);
    assert_eq!(other.append(event("b")).await.expect("caught up"), 1);
    assert_eq!(mine.append(event("c")).await.expect("caught up"), 2);
    let entry = AuditEntry {
        seq: 3,
        time_micros: now_micros(),
        node_id: "node-1".to_owned(),
        ..AuditEntry::decode(&store.read(2, 1).await.expect("read")[0].entry).expect("decode")
    };
    let forged = AuditRecord::new(&entry, &[9; 32]).expect("record");
    store
        .append(3, &[forged])
        .await
        .expect("a writer that forges");
    assert!(matches!(
        mine.append(event("d")).await,
        Err(Error::AuditUnavailable { .. })
    ));
    assert!(
        mine.append(event("e")).await.is_err(),
        "poisoned until restart"
    );
    assert_eq!(
        store.size().await.expect("size"),
        4,
        "nothing written after it"
    );
}
