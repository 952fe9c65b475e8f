//! Tests of [`super::S3AuditStore`] over `object_store`'s in-memory store, as is and with its
//! conditional puts ignored (as Garage 2.5.0 does): the conformance suite, several writers on
//! one log, races settled after the create, what the bucket reveals, damage.

use std::sync::Arc;

use futures_util::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

use super::super::conformance::{run_all, Harness};
use super::*;

fn site() -> ObjectSite {
    ObjectSite::new(Arc::new(InMemory::new()), "p", &[7; 32]).expect("site")
}

/// A site whose store turns every conditional create into a plain overwrite.
fn ignoring_site() -> ObjectSite {
    ObjectSite::new(Arc::new(IgnoresConditions::default()), "p", &[7; 32]).expect("site")
}

/// `InMemory`, but `If-None-Match: *` is ignored: a create replaces an existing object.
#[derive(Debug, Default)]
struct IgnoresConditions(InMemory);

impl std::fmt::Display for IgnoresConditions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IgnoresConditions({})", self.0)
    }
}

#[async_trait]
impl ObjectStore for IgnoresConditions {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        mut opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        if matches!(opts.mode, PutMode::Create) {
            opts.mode = PutMode::Overwrite;
        }
        self.0.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.0.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.0.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.0.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.0.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.0.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.0.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.0.copy_opts(from, to, options).await
    }
}

#[tokio::test]
async fn the_wrapper_really_ignores_conditional_puts() {
    let site = ignoring_site();
    assert_eq!(
        site.create("x", b"one").await.expect("create"),
        Created::New
    );
    assert_eq!(
        site.create("x", b"two").await.expect("create"),
        Created::New
    );
    assert_eq!(
        site.get("x").await.expect("get").as_deref(),
        Some(&b"two"[..])
    );
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

/// The one stored batch name starting at `start`.
async fn batch_name(site: &ObjectSite, start: u64) -> String {
    let names: Vec<String> = site
        .list(ENTRIES, None, usize::MAX)
        .await
        .expect("list")
        .into_iter()
        .map(|listed| listed.name)
        .filter(|name| entry_seq(name).expect("seq") == start)
        .collect();
    assert_eq!(names.len(), 1, "one batch at {start}: {names:?}");
    names.into_iter().next().expect("name")
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
async fn the_s3_store_passes_the_conformance_suite_without_conditional_puts() {
    run_all(&S3Harness(ignoring_site())).await;
}

#[tokio::test]
async fn stale_writers_conflict_and_never_overwrite_or_split_a_batch() {
    stale_writers_conflict(site()).await;
}

#[tokio::test]
async fn stale_writers_conflict_without_conditional_puts() {
    stale_writers_conflict(ignoring_site()).await;
}

async fn stale_writers_conflict(site: ObjectSite) {
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
    racing_writers(site()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_writers_lose_nothing_without_conditional_puts() {
    racing_writers(ignoring_site()).await;
}

/// Stores with stale views append at once; every acknowledged batch must be in the log,
/// exactly once, where it was acknowledged.
async fn racing_writers(site: ObjectSite) {
    let stores = [
        open(site.clone()).await.expect("open"),
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
    // One stored batch per acknowledged append, at its seq, and they tile the log.
    let starts: Vec<u64> = written.iter().map(|(at, _)| *at).collect();
    assert_eq!(batch_starts(&site).await, starts);
    let mut end = 0;
    for (at, batch) in &written {
        assert_eq!(*at, end, "the batches tile");
        end += batch.len() as u64;
    }
    let all: Vec<AuditRecord> = written.into_iter().flat_map(|(_, b)| b).collect();
    let reopened = open(site.clone()).await.expect("reopen");
    assert_eq!(reopened.size().await.expect("size"), all.len() as u64);
    assert_eq!(reopened.read(0, usize::MAX).await.expect("read"), all);
}

/// Seals `records` as another writer's batch at `start` and stores it.
async fn plant_rival(site: &ObjectSite, start: u64, tag: u64, records: &[AuditRecord]) -> String {
    let name = entry_name(start, tag);
    let body = site.seal(&name, &encode_batch(records)).expect("seal");
    site.put_raw(&name, body).await.expect("plant");
    name
}

/// What another writer may create between an append's create and its check: planted by hand,
/// so the loser's path runs deterministically.
#[tokio::test]
async fn a_rival_created_before_the_check_makes_the_append_withdraw() {
    for site in [site(), ignoring_site()] {
        let store = open(site.clone()).await.expect("open");
        store.append(0, &records("a", 0, 2)).await.expect("append");
        let ours = records("ours", 2, 3);
        let name = store.own_entry_name(2);
        // Rivals sorting before and after our tag.
        for rival_tag in [0, u64::MAX] {
            assert_eq!(
                site.create(&name, &encode_batch(&ours))
                    .await
                    .expect("create"),
                Created::New
            );
            let rival = plant_rival(&site, 2, rival_tag, &records("rival", 2, 1)).await;
            let settled = store.settle_after_create(2, &name, 3);
            // Our batch is deleted first, so the conflict's refresh finds the rival alone.
            match settled.await {
                Err(Error::AuditConflict { seq: 2, len: 3 }) => {}
                other => panic!("the loser must withdraw, got {other:?}"),
            }
            assert_eq!(site.get(&name).await.expect("get"), None, "ours is gone");
            assert_eq!(batch_name(&site, 2).await, rival);
            site.delete(&rival).await.expect("clean up");
            store.lock().end = 2;
        }
        // Alone, it stays; a batch at a later start (someone extended ours) changes nothing.
        site.create(&name, &encode_batch(&ours))
            .await
            .expect("create");
        plant_rival(&site, 5, 9, &records("next", 5, 1)).await;
        store
            .settle_after_create(2, &name, 3)
            .await
            .expect("settled");
        assert_eq!(batch_name(&site, 2).await, name);
        assert_eq!(
            site.get(HEAD).await.expect("head"),
            Some(encode_head(2, 5, store.tag))
        );
        assert_eq!(store.size().await.expect("size"), 6);
        assert_eq!(store.read(2, 3).await.expect("read"), ours);
    }
}

#[tokio::test]
async fn a_contest_that_never_resolves_is_reported_at_its_seq() {
    let site = ignoring_site();
    let store = open(site.clone()).await.expect("open");
    store.append(0, &records("a", 0, 2)).await.expect("append");
    store.append(2, &records("a", 2, 2)).await.expect("append");
    // Two writers' batches at 2 that both stay (as if both writers died before their check).
    plant_rival(&site, 2, 1, &records("b", 2, 2)).await;
    let contested = |result: Result<()>| match result {
        Err(Error::AuditCorrupt { seq: 2, reason }) => {
            assert!(reason.contains("entry 2"), "{reason}")
        }
        other => panic!("a lasting contest at 2 must be damage there, got {other:?}"),
    };
    let started = std::time::Instant::now();
    contested(store.read(0, 10).await.map(drop));
    assert!(
        started.elapsed() >= CONTEST_PATIENCE,
        "the contest was waited out"
    );
    site.delete(HEAD).await.expect("no hint");
    contested(open(site.clone()).await.map(drop));
    // Reading before the contest needs no decision about it.
    assert_eq!(store.read(0, 2).await.expect("read"), records("a", 0, 2));
}

#[tokio::test]
async fn a_transient_contest_is_waited_out() {
    let site = site();
    let store = open(site.clone()).await.expect("open");
    store.append(0, &records("a", 0, 2)).await.expect("append");
    let rival = plant_rival(&site, 0, 1, &records("b", 0, 1)).await;
    let reader = open(site.clone());
    let loser = async {
        tokio::time::sleep(Duration::from_millis(60)).await;
        site.delete(&rival).await.expect("withdraw");
    };
    let (reader, ()) = tokio::join!(reader, loser);
    assert_eq!(reader.expect("open").size().await.expect("size"), 2);
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
        Some(encode_head(10, 12, first.tag))
    );
    // A lagging hint, hints naming no batch (no such start, another writer, a wrong end), a
    // damaged hint, no hint: the end is found.
    let hints: [Option<Vec<u8>>; 6] = [
        Some(
            site.seal(HEAD, &encode_head(4, 6, first.tag))
                .expect("seal"),
        ),
        Some(
            site.seal(HEAD, &encode_head(40, 41, first.tag))
                .expect("seal"),
        ),
        Some(
            site.seal(HEAD, &encode_head(4, 6, !first.tag))
                .expect("seal"),
        ),
        Some(
            site.seal(HEAD, &encode_head(4, 7, first.tag))
                .expect("seal"),
        ),
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
    let (first_name, second_name) = (batch_name(&site, 0).await, batch_name(&site, 3).await);
    let second = site
        .get_raw(&second_name)
        .await
        .expect("get")
        .expect("body");
    let mut flipped = second.clone();
    *flipped.last_mut().expect("byte") ^= 1;
    let wellformed_seal_bad_body = site.seal(&second_name, &[BODY_FORMAT, 0, 0]).expect("seal");
    let moved = site.get_raw(&first_name).await.expect("get").expect("body");
    for damage in [flipped, wellformed_seal_bad_body, moved, Vec::new()] {
        site.put_raw(&second_name, damage).await.expect("damage");
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
    site.put_raw(&second_name, second).await.expect("restore");
    store.append(5, &records("d", 5, 1)).await.expect("append");
    site.delete(&second_name).await.expect("delete");
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
