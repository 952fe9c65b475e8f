//! The one conformance suite every [`AuditStore`] backend must pass (memory, sled, and later
//! an object store). Public but hidden so a backend in another crate runs the same checks.

use std::sync::Arc;

use async_trait::async_trait;
use bunsan_protocol::audit::AuditRecord;

use super::store::AuditStore;
use crate::error::Error;

/// What the suite needs from a backend besides the trait.
#[async_trait]
pub trait Harness: Send + Sync {
    /// Opens the store over this harness's storage (empty on the first call).
    async fn open(&self) -> Arc<dyn AuditStore>;
    /// Drops `store` (the last handle) and opens the same storage again, as after a restart.
    async fn reopen(&self, store: Arc<dyn AuditStore>) -> Arc<dyn AuditStore>;
}

fn record(i: u8) -> AuditRecord {
    AuditRecord {
        entry: vec![i; usize::from(i) + 1],
        chain: [i; 32],
    }
}

/// Runs every property against a fresh harness.
pub async fn run_all(harness: &dyn Harness) {
    let store = harness.open().await;
    appends_are_numbered_and_conditional(store.as_ref()).await;
    checkpoints_and_witness_state(store.as_ref()).await;
    let store = harness.reopen(store).await;
    everything_survives_a_reopen(store.as_ref()).await;
}

async fn appends_are_numbered_and_conditional(store: &dyn AuditStore) {
    assert_eq!(store.size().await.expect("len"), 0);
    store
        .append(0, &[record(0), record(1)])
        .await
        .expect("append at 0");
    store.append(2, &[record(2)]).await.expect("append at 2");
    for wrong in [0, 1, 4] {
        match store.append(wrong, &[record(9)]).await {
            Err(Error::AuditConflict { seq, len }) => assert_eq!((seq, len), (wrong, 3)),
            other => panic!("append at {wrong} must conflict, got {other:?}"),
        }
    }
    assert_eq!(store.size().await.expect("len"), 3);
    assert_eq!(
        store.read(1, 10).await.expect("read"),
        vec![record(1), record(2)]
    );
    assert_eq!(store.read(0, 1).await.expect("read"), vec![record(0)]);
    assert!(store.read(3, 10).await.expect("read").is_empty());
    assert!(store.read(u64::MAX, 10).await.expect("read").is_empty());
}

async fn checkpoints_and_witness_state(store: &dyn AuditStore) {
    assert_eq!(store.latest_checkpoint().await.expect("latest"), None);
    for size in [3u64, 1, 2] {
        store
            .put_checkpoint(size, &format!("cp {size}"))
            .await
            .expect("put checkpoint");
    }
    store
        .put_checkpoint(2, "cp 2 cosigned")
        .await
        .expect("replace");
    assert_eq!(
        store.checkpoints(2, 10).await.expect("list"),
        vec!["cp 2 cosigned".to_owned(), "cp 3".to_owned()]
    );
    assert_eq!(
        store.checkpoints(0, 1).await.expect("list"),
        vec!["cp 1".to_owned()]
    );
    assert_eq!(
        store.checkpoint(2).await.expect("get"),
        Some("cp 2 cosigned".to_owned())
    );
    assert_eq!(store.checkpoint(9).await.expect("get"), None);
    assert_eq!(
        store.latest_checkpoint().await.expect("latest"),
        Some("cp 3".to_owned())
    );
    store.put_witnessed("node-2", "w1").await.expect("witness");
    store.put_witnessed("node-3", "w2").await.expect("witness");
    store.put_witnessed("node-2", "w3").await.expect("witness");
    assert_eq!(
        store.witnessed().await.expect("witnessed"),
        vec![
            ("node-2".to_owned(), "w3".to_owned()),
            ("node-3".to_owned(), "w2".to_owned())
        ]
    );
}

async fn everything_survives_a_reopen(store: &dyn AuditStore) {
    assert_eq!(store.size().await.expect("len"), 3);
    assert_eq!(store.read(2, 1).await.expect("read"), vec![record(2)]);
    assert_eq!(
        store.latest_checkpoint().await.expect("latest"),
        Some("cp 3".to_owned())
    );
    assert_eq!(store.witnessed().await.expect("witnessed").len(), 2);
    store
        .append(3, &[record(3)])
        .await
        .expect("append after reopen");
}
