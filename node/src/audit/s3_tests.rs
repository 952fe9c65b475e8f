//! Tests of [`super::S3AuditStore`] over `object_store`'s in-memory store: the conformance
//! suite, several writers on one log, what the bucket reveals, damage.

use std::sync::Arc;

use object_store::memory::InMemory;

use super::super::conformance::{run_all, Harness};
use super::*;

fn site() -> ObjectSite {
    ObjectSite::new(Arc::new(InMemory::new()), "p", &[7; 32]).expect("site")
}

fn record(tag: &str, i: u64) -> AuditRecord {
    AuditRecord {
        entry: format!("{tag}-{i}").into_bytes(),
        chain: [(i % 251) as u8; 32],
    }
}

fn records(tag: &str, from: u64, n: u64) -> Vec<AuditRecord> {
    (from..from + n).map(|i| record(tag, i)).collect()
}

async fn batch_starts(site: &ObjectSite) -> Vec<u64> {
    site.list(ENTRIES, None, usize::MAX)
        .await
        .expect("list")
        .iter()
        .map(|listed| entry_seq(&listed.name).expect("seq"))
        .collect()
}

struct S3Harness(ObjectSite);

#[async_trait]
impl Harness for S3Harness {
    async fn open(&self) -> Arc<dyn AuditStore> {
        open(self.0.clone()).await.expect("open")
    }

    async fn reopen(&self, store: Arc<dyn AuditStore>) -> Arc<dyn AuditStore> {
        drop(store);
        self.open().await
    }
}

#[tokio::test]
async fn the_s3_store_passes_the_conformance_suite() {
    run_all(&S3Harness(site())).await;
}

#[tokio::test]
async fn stale_writers_conflict_and_never_overwrite_or_split_a_batch() {
    let site = site();
    let a = open(site.clone()).await.expect("open a");
    let b = open(site.clone()).await.expect("open b");
    a.append(0, &records("a", 0, 3)).await.expect("a at 0");
    // B still believes the log is empty: its append collides with A's batch.
    match b.append(0, &records("b", 0, 1)).await {
        Err(Error::AuditConflict { seq: 0, len: 3 }) => {}
        other => panic!("a stale append must conflict, got {other:?}"),
    }
    b.append(3, &records("b", 3, 2)).await.expect("b at 3");
    // A's cached end (3) is now the start of B's batch, and 4 lies inside it.
    for (seq, tag) in [(3, "a"), (4, "a"), (6, "a")] {
        match a.append(seq, &records(tag, seq, 1)).await {
            Err(Error::AuditConflict { len: 5, .. }) => {}
            other => panic!("append at {seq} must conflict, got {other:?}"),
        }
    }
    assert_eq!(
        batch_starts(&site).await,
        vec![0, 3],
        "no batch inside another"
    );
    let mut expected = records("a", 0, 3);
    expected.extend(records("b", 3, 2));
    assert_eq!(a.read(0, 100).await.expect("read"), expected);
    assert_eq!(b.read(2, 2).await.expect("read"), expected[2..4]);
    assert_eq!(a.size().await.expect("size"), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_writers_tile_the_log_and_lose_nothing() {
    let site = site();
    let stores = [
        open(site.clone()).await.expect("open"),
        open(site.clone()).await.expect("open"),
        open(site.clone()).await.expect("open"),
    ];
    let mut tasks = tokio::task::JoinSet::new();
    for (w, store) in stores.iter().enumerate() {
        for t in 0..4 {
            let store = store.clone();
            tasks.spawn(async move {
                let mut written = Vec::new();
                for i in 0..10u64 {
                    loop {
                        // A view that is often stale: the cached end, without a refresh.
                        let at = store.lock().end;
                        let batch = records(&format!("w{w}t{t}i{i}"), at, 1 + i % 3);
                        match store.append(at, &batch).await {
                            Ok(()) => {
                                written.push((at, batch));
                                break;
                            }
                            Err(Error::AuditConflict { .. }) => tokio::task::yield_now().await,
                            Err(e) => panic!("append: {e}"),
                        }
                    }
                }
                written
            });
        }
    }
    let mut written = Vec::new();
    while let Some(batches) = tasks.join_next().await {
        written.extend(batches.expect("task"));
    }
    written.sort_by_key(|(at, _)| *at);
    let starts: Vec<u64> = written.iter().map(|(at, _)| *at).collect();
    assert_eq!(batch_starts(&site).await, starts);
    let all: Vec<AuditRecord> = written.into_iter().flat_map(|(_, b)| b).collect();
    let reopened = open(site.clone()).await.expect("reopen");
    assert_eq!(reopened.size().await.expect("size"), all.len() as u64);
    assert_eq!(reopened.read(0, usize::MAX).await.expect("read"), all);
}

#[tokio::test]
async fn reads_find_the_batch_holding_any_entry() {
    let store = open(site()).await.expect("open");
    let mut all = records("x", 0, 1);
    store.append(0, &all).await.expect("append");
    let full = records("x", 1, BATCH_MAX as u64);
    store.append(1, &full).await.expect("a full batch");
    all.extend(full);
    for at in 513..540 {
        let one = records("x", at, 1);
        store.append(at, &one).await.expect("append");
        all.extend(one);
    }
    assert!(store.append(540, &records("x", 540, 513)).await.is_err());
    for (from, limit) in [(0, 2), (1, 1), (512, 3), (513, 1), (520, 100), (539, 5)] {
        let end = (from + limit).min(all.len());
        assert_eq!(
            store.read(from as u64, limit).await.expect("read"),
            all[from..end],
            "read({from}, {limit})"
        );
    }
    assert!(store.read(540, 5).await.expect("read").is_empty());
}

#[tokio::test]
async fn a_reopened_store_continues_from_the_head_or_a_full_listing() {
    let site = site();
    let first = open(site.clone()).await.expect("open");
    for at in 0..6 {
        first
            .append(at * 2, &records("h", at * 2, 2))
            .await
            .expect("append");
    }
    assert_eq!(
        site.get(HEAD).await.expect("head"),
        Some(encode_head(10, 12))
    );
    // A lagging hint, a hint naming no batch, a damaged hint, no hint: the end is found.
    let hints: [Option<Vec<u8>>; 4] = [
        Some(site.seal(HEAD, &encode_head(4, 6)).expect("seal")),
        Some(site.seal(HEAD, &encode_head(40, 41)).expect("seal")),
        Some(b"garbage".to_vec()),
        None,
    ];
    for hint in hints {
        match hint {
            Some(body) => site.put_raw(HEAD, body).await.expect("put"),
            None => site.delete(HEAD).await.expect("delete"),
        }
        let store = open(site.clone()).await.expect("reopen");
        assert_eq!(store.size().await.expect("size"), 12);
    }
    let store = open(site.clone()).await.expect("reopen");
    store
        .append(12, &records("h", 12, 1))
        .await
        .expect("continue");
    assert_eq!(store.read(11, 5).await.expect("read").len(), 2);
}

#[tokio::test]
async fn names_and_bodies_reveal_no_entry_content() {
    let site = site();
    let store = open(site.clone()).await.expect("open");
    let secret = "patient-4711/record-key";
    let record = AuditRecord {
        entry: format!("get {secret} by dr-house for treatment").into_bytes(),
        chain: [1; 32],
    };
    store.append(0, &[record]).await.expect("append");
    store
        .put_checkpoint(1, &format!("checkpoint mentioning {secret}"))
        .await
        .expect("checkpoint");
    store
        .put_witnessed("node-secret-7", secret)
        .await
        .expect("witness");
    let listed = site.list("audit/", None, usize::MAX).await.expect("list");
    assert_eq!(listed.len(), 4, "entries, head, checkpoint, witnessed");
    for object in listed {
        for needle in [secret, "patient", "dr-house", "node-secret"] {
            assert!(
                !object.name.contains(needle),
                "{} names {needle}",
                object.name
            );
        }
        let body = site
            .get_raw(&object.name)
            .await
            .expect("get")
            .expect("body");
        for needle in [secret.as_bytes(), b"patient", b"dr-house", b"node-secret"] {
            assert!(
                !body.windows(needle.len()).any(|w| w == needle),
                "{} holds plaintext",
                object.name
            );
        }
    }
    assert_eq!(
        store.witnessed().await.expect("witnessed"),
        vec![("node-secret-7".to_owned(), secret.to_owned())]
    );
}

#[tokio::test]
async fn damaged_or_moved_batches_are_reported_with_their_seq() {
    let site = site();
    let store = open(site.clone()).await.expect("open");
    store.append(0, &records("d", 0, 3)).await.expect("append");
    store.append(3, &records("d", 3, 2)).await.expect("append");
    let second = site
        .get_raw(&entry_name(3))
        .await
        .expect("get")
        .expect("body");
    let mut flipped = second.clone();
    *flipped.last_mut().expect("byte") ^= 1;
    let wellformed_seal_bad_body = site
        .seal(&entry_name(3), &[BODY_FORMAT, 0, 0])
        .expect("seal");
    let moved = site
        .get_raw(&entry_name(0))
        .await
        .expect("get")
        .expect("body");
    for damage in [flipped, wellformed_seal_bad_body, moved, Vec::new()] {
        site.put_raw(&entry_name(3), damage).await.expect("damage");
        match store.read(3, 10).await {
            Err(Error::AuditCorrupt { seq: 3, .. }) => {}
            other => panic!("damage must be reported at 3, got {other:?}"),
        }
        site.delete(HEAD).await.expect("no hint");
        match open(site.clone()).await {
            Err(Error::AuditCorrupt { seq: 3, .. }) => {}
            other => panic!("open must report the damage at 3, got {other:?}"),
        }
    }
    // A batch missing from the middle is a gap, not a shorter log.
    site.put_raw(&entry_name(3), second).await.expect("restore");
    store.append(5, &records("d", 5, 1)).await.expect("append");
    site.delete(&entry_name(3)).await.expect("delete");
    site.delete(HEAD).await.expect("no hint");
    assert!(matches!(
        open(site.clone()).await,
        Err(Error::AuditCorrupt { seq: 3, .. })
    ));
    assert!(matches!(
        store.read(4, 1).await,
        Err(Error::AuditCorrupt { seq: 3, .. })
    ));
}

#[tokio::test]
async fn the_latest_checkpoint_follows_other_writers() {
    let site = site();
    let (a, b) = (
        open(site.clone()).await.expect("open"),
        open(site.clone()).await.expect("open"),
    );
    assert_eq!(b.latest_checkpoint().await.expect("latest"), None);
    a.put_checkpoint(5, "cp 5").await.expect("put");
    assert_eq!(
        b.latest_checkpoint().await.expect("latest").as_deref(),
        Some("cp 5")
    );
    a.put_checkpoint(9, "cp 9").await.expect("put");
    b.put_checkpoint(7, "cp 7").await.expect("put");
    assert_eq!(
        b.latest_checkpoint().await.expect("latest").as_deref(),
        Some("cp 9")
    );
    assert_eq!(
        a.checkpoints(6, 10).await.expect("list"),
        vec!["cp 7".to_owned(), "cp 9".to_owned()]
    );
}
