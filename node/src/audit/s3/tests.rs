//! Tests of [`super::S3AuditStore`] over `object_store`'s in-memory store, as is and with its
//! conditional puts ignored (as Garage 2.5.0 does): the conformance suite, several writers on
//! one log, races settled by commit markers, abandoned batches, what the bucket reveals,
//! damage.

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

async fn batch_names(site: &ObjectSite) -> Vec<String> {
    site.list(ENTRIES, None, usize::MAX)
        .await
        .expect("list")
        .into_iter()
        .map(|listed| listed.name)
        .collect()
}

/// The batch names that commit markers name.
async fn marked_batches(site: &ObjectSite) -> Vec<String> {
    site.list(COMMITS, None, usize::MAX)
        .await
        .expect("list")
        .iter()
        .map(|listed| {
            let (start, tag) = start_and_tag(&listed.name, COMMITS).expect("marker name");
            entry_name(start, tag)
        })
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
    assert_eq!(
        marked_batches(&site).await,
        batch_names(&site).await,
        "every batch marked"
    );
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

/// Seals `records` as another writer's batch at `start` and stores it, unmarked.
async fn plant_rival(site: &ObjectSite, start: u64, tag: u64, records: &[AuditRecord]) -> String {
    let name = entry_name(start, tag);
    let body = site.seal(&name, &encode_batch(records)).expect("seal");
    site.put_raw(&name, body).await.expect("plant");
    name
}

/// Stores the commit marker of the batch `start-tag`.
async fn plant_marker(site: &ObjectSite, start: u64, tag: u64) -> String {
    let name = commit_name(start, tag);
    let body = site.seal(&name, &[BODY_FORMAT]).expect("seal");
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
        // Rivals sorting before and after our tag, marked (it won) or not (in flight).
        for (rival_tag, marked) in [(0, false), (u64::MAX, false), (0, true), (u64::MAX, true)] {
            let tag = 0x5555_5555_5555_5555;
            let name = entry_name(2, tag);
            assert_eq!(
                site.create(&name, &encode_batch(&ours))
                    .await
                    .expect("create"),
                Created::New
            );
            let rival = plant_rival(&site, 2, rival_tag, &records("rival", 2, 1)).await;
            if marked {
                plant_marker(&site, 2, rival_tag).await;
            }
            let mut seen = HashMap::new();
            let settled = store.commit_after_create(2, tag, 3, Instant::now(), &mut seen);
            match settled.await {
                Err(Error::AuditConflict { seq: 2, len }) => {
                    assert_eq!(len, if marked { 3 } else { 2 })
                }
                other => panic!("the loser must withdraw, got {other:?}"),
            }
            assert_eq!(site.get(&name).await.expect("get"), None, "ours is gone");
            assert_eq!(batch_name(&site, 2).await, rival, "the rival stays");
            assert!(
                marked_batches(&site).await.iter().all(|m| *m != name),
                "ours never marked"
            );
            assert_eq!(
                seen.len(),
                usize::from(!marked),
                "unmarked rivals are timed"
            );
            site.delete(&rival).await.expect("clean up");
            site.delete(&commit_name(2, rival_tag))
                .await
                .expect("clean up");
            store.lock().end = 2;
        }
        // Alone, it is marked; a batch at a later start (unmarked: in flight) changes nothing.
        let tag = 0x7777;
        let name = entry_name(2, tag);
        site.create(&name, &encode_batch(&ours))
            .await
            .expect("create");
        plant_rival(&site, 5, 9, &records("next", 5, 1)).await;
        store
            .commit_after_create(2, tag, 3, Instant::now(), &mut HashMap::new())
            .await
            .expect("committed");
        assert_eq!(batch_name(&site, 2).await, name);
        assert!(marked_batches(&site).await.contains(&name));
        assert_eq!(
            site.get(HEAD).await.expect("head"),
            Some(encode_head(2, 5, tag))
        );
        assert_eq!(store.size().await.expect("size"), 5, "5 is not committed");
        assert_eq!(store.read(2, 10).await.expect("read"), ours);
    }
}

/// (a) A reader that lists between another writer's create and its marker must not adopt the
/// batch: it may still be withdrawn.
#[tokio::test]
async fn readers_ignore_unmarked_batches_until_they_are_marked() {
    let site = site();
    let store = open(site.clone()).await.expect("open");
    store.append(0, &records("a", 0, 2)).await.expect("append");
    let in_flight = records("b", 2, 3);
    plant_rival(&site, 2, 0xb, &in_flight).await;
    let reader = open(site.clone()).await.expect("open a reader");
    for view in [&store, &reader] {
        assert_eq!(view.size().await.expect("size"), 2, "the end does not move");
        assert_eq!(view.read(0, 10).await.expect("read"), records("a", 0, 2));
        assert!(view.read(2, 10).await.expect("read").is_empty());
    }
    // Its writer withdraws: nothing anyone read is gone.
    site.delete(&entry_name(2, 0xb)).await.expect("withdraw");
    assert_eq!(reader.size().await.expect("size"), 2);
    // Planted again and marked: now it is the log's.
    plant_rival(&site, 2, 0xb, &in_flight).await;
    plant_marker(&site, 2, 0xb).await;
    let mut all = records("a", 0, 2);
    all.extend(in_flight);
    for view in [&store, &reader] {
        assert_eq!(view.size().await.expect("size"), 5);
        assert_eq!(view.read(0, 10).await.expect("read"), all);
    }
    // A marker alone does not commit an unmarked batch at the next position either.
    plant_rival(&site, 5, 0xc, &records("c", 5, 1)).await;
    plant_marker(&site, 5, 0xd).await;
    site.delete(&commit_name(5, 0xd)).await.expect("withdrawn");
    assert_eq!(reader.size().await.expect("size"), 5);
}

/// (b) A writer killed between its create and its marker: the position is refused for 2 ×
/// the deadline, then its batch is deleted and the log goes on.
#[tokio::test]
async fn an_abandoned_batch_is_deleted_after_twice_the_deadline() {
    for site in [site(), ignoring_site()] {
        let deadline = Duration::from_millis(400);
        let store = open_with_deadline(site.clone(), deadline)
            .await
            .expect("open");
        store.append(0, &records("a", 0, 2)).await.expect("append");
        let dead = plant_rival(&site, 2, 0xdead, &records("dead", 2, 4)).await;
        let first = Instant::now();
        match store.append(2, &records("a", 2, 1)).await {
            Err(Error::AuditConflict { seq: 2, len: 2 }) => {}
            other => panic!("an unmarked rival must make the append withdraw, got {other:?}"),
        }
        // Still refused while the dead writer could, for all we know, be about to mark it; fast
        // now that the rival is no longer new.
        let again = Instant::now();
        if first.elapsed() < 2 * deadline - RIVAL_PATIENCE {
            assert!(matches!(
                store.append(2, &records("a", 2, 1)).await,
                Err(Error::AuditConflict { seq: 2, len: 2 })
            ));
            assert!(again.elapsed() < RIVAL_PATIENCE, "refused without waiting");
        }
        assert_eq!(batch_names(&site).await.len(), 2, "only ours withdrew");
        // The first sighting came after `first`: a little margin.
        let window = 2 * deadline + Duration::from_millis(50);
        tokio::time::sleep(window.saturating_sub(first.elapsed())).await;
        store
            .append(2, &records("a", 2, 1))
            .await
            .expect("the abandoned batch no longer blocks");
        assert_eq!(site.get(&dead).await.expect("get"), None, "deleted");
        assert_eq!(batch_starts(&site).await, vec![0, 2]);
        assert_eq!(marked_batches(&site).await, batch_names(&site).await);
        store.append(3, &records("a", 3, 2)).await.expect("append");
        let mut all = records("a", 0, 3);
        all.extend(records("a", 3, 2));
        let reopened = open(site.clone()).await.expect("reopen");
        assert_eq!(reopened.size().await.expect("size"), 5);
        assert_eq!(reopened.read(0, 10).await.expect("read"), all);
    }
}

/// A writer that stalls past its deadline between create and marker withdraws.
#[tokio::test]
async fn a_writer_past_its_deadline_withdraws() {
    let site = site();
    let slow = open_with_deadline(site.clone(), Duration::ZERO)
        .await
        .expect("open");
    match slow.append(0, &records("s", 0, 2)).await {
        Err(Error::AuditConflict { seq: 0, len: 0 }) => {}
        other => panic!("a writer past its deadline must withdraw, got {other:?}"),
    }
    assert!(batch_names(&site).await.is_empty(), "its batch is gone");
    assert!(marked_batches(&site).await.is_empty(), "never marked");
    // A writer whose batch was deleted (as abandoned) while it stalled finds it gone and
    // withdraws, leaving no marker.
    let store = open(site.clone()).await.expect("open");
    let mut seen = HashMap::new();
    let settled = store.commit_after_create(0, 0xabc, 2, Instant::now(), &mut seen);
    match settled.await {
        Err(Error::AuditConflict { seq: 0, len: 0 }) => {}
        other => panic!("a batch deleted before its check must withdraw, got {other:?}"),
    }
    assert!(marked_batches(&site).await.is_empty(), "no marker left");
}

/// (c) A marker whose batch stays missing is damage at its position, after a wait.
#[tokio::test]
async fn a_marker_without_its_batch_is_reported_at_its_seq() {
    let site = ignoring_site();
    let store = open(site.clone()).await.expect("open");
    store.append(0, &records("a", 0, 2)).await.expect("append");
    store.append(2, &records("a", 2, 2)).await.expect("append");
    plant_marker(&site, 4, 1).await;
    let missing = |result: Result<()>| match result {
        Err(Error::AuditCorrupt { seq: 4, reason }) => {
            assert!(reason.contains("committed batch missing"), "{reason}")
        }
        other => panic!("a lasting marker without batch must be damage at 4, got {other:?}"),
    };
    let started = Instant::now();
    missing(store.size().await.map(drop));
    assert!(
        started.elapsed() >= ORPHAN_PATIENCE,
        "the marker was waited out"
    );
    missing(store.read(3, 10).await.map(drop));
    site.delete(HEAD).await.expect("no hint");
    missing(open(site.clone()).await.map(drop));
    // Reading before it needs no decision about it.
    assert_eq!(store.read(0, 3).await.expect("read"), records("a", 0, 3));
}

#[tokio::test]
async fn two_committed_batches_at_one_position_are_damage() {
    let site = ignoring_site();
    let store = open(site.clone()).await.expect("open");
    store.append(0, &records("a", 0, 2)).await.expect("append");
    store.append(2, &records("a", 2, 2)).await.expect("append");
    plant_rival(&site, 2, 1, &records("b", 2, 2)).await;
    plant_marker(&site, 2, 1).await;
    let contested = |result: Result<()>| match result {
        Err(Error::AuditCorrupt { seq: 2, reason }) => {
            assert!(reason.contains("entry 2"), "{reason}")
        }
        other => panic!("two committed batches at 2 must be damage there, got {other:?}"),
    };
    contested(store.read(0, 10).await.map(drop));
    site.delete(HEAD).await.expect("no hint");
    contested(open(site.clone()).await.map(drop));
    assert_eq!(store.read(0, 2).await.expect("read"), records("a", 0, 2));
}

#[tokio::test]
async fn a_transient_marker_without_batch_is_waited_out() {
    let site = site();
    let store = open(site.clone()).await.expect("open");
    store.append(0, &records("a", 0, 2)).await.expect("append");
    // A writer that found its batch deleted after marking, about to take its marker back.
    let marker = plant_marker(&site, 2, 1).await;
    let reader = open(site.clone());
    let loser = async {
        tokio::time::sleep(Duration::from_millis(60)).await;
        site.delete(&marker).await.expect("withdraw");
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
    let head = decode_head(&site.get(HEAD).await.expect("head").expect("a head"));
    let (start, end, tag) = head.expect("well-formed");
    assert_eq!((start, end), (10, 12));
    assert_eq!(batch_name(&site, 10).await, entry_name(10, tag));
    // A batch that exists with that end but is not marked is no committed batch.
    let unmarked = plant_rival(&site, 12, 3, &records("u", 12, 2)).await;
    site.replace(HEAD, &encode_head(12, 14, 3))
        .await
        .expect("hint");
    assert_eq!(
        open(site.clone())
            .await
            .expect("open")
            .size()
            .await
            .expect("size"),
        12
    );
    site.delete(&unmarked).await.expect("clean up");
    // A lagging hint, hints naming no batch (no such start, another writer, a wrong end), a
    // damaged hint, no hint: the end is found.
    let at4 = batch_name(&site, 4).await;
    let (_, tag4) = start_and_tag(&at4, ENTRIES).expect("name");
    let hints: [Option<Vec<u8>>; 6] = [
        Some(site.seal(HEAD, &encode_head(4, 6, tag4)).expect("seal")),
        Some(site.seal(HEAD, &encode_head(40, 41, tag)).expect("seal")),
        Some(site.seal(HEAD, &encode_head(4, 6, !tag4)).expect("seal")),
        Some(site.seal(HEAD, &encode_head(4, 7, tag4)).expect("seal")),
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
    assert_eq!(
        listed.len(),
        5,
        "batch, marker, head, checkpoint, witnessed"
    );
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
