use std::sync::Arc;

use bunsan_protocol::message::HeldShare;
use bunsan_protocol::{Version, WriterId};
use object_store::memory::InMemory;

use super::super::conformance::{sample_share, sample_tombstone, Harness};
use super::layout::*;
use super::*;

fn index(i: u8) -> ShareIndex {
    ShareIndex::new(i).expect("index")
}

fn key(name: &str) -> RecordKey {
    RecordKey::new(name).expect("key")
}

fn share(name: &str, clock: u64, payload: &[u8]) -> ShareEnvelope {
    sample_share(
        key(name),
        Version {
            clock_micros: clock,
            writer: WriterId(0xbeef),
        },
        index(1),
        payload,
    )
}

fn site(backing: &Arc<InMemory>) -> ObjectSite {
    ObjectSite::new(backing.clone(), "site-1", &[7; 32]).expect("site")
}

/// Every object name and raw body in the bucket.
async fn objects(site: &ObjectSite) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for folder in ["shares/", "staged/", "meta/"] {
        for listed in site.list(folder, None, usize::MAX).await.expect("list") {
            let body = site
                .get_raw(&listed.name)
                .await
                .expect("get")
                .expect("there");
            out.push((listed.name, body));
        }
    }
    out
}

/// The conformance harness over one in-memory bucket; `corrupt` seals `raw` as the value of
/// the key's highest object, the S3 counterpart of overwriting sled's stored value.
struct S3Harness {
    backing: Arc<InMemory>,
}

impl S3Harness {
    fn new() -> Self {
        Self {
            backing: Arc::new(InMemory::new()),
        }
    }
}

#[async_trait]
impl Harness for S3Harness {
    async fn open(&self) -> Arc<dyn ShareStore> {
        Arc::new(
            S3Store::open(site(&self.backing), index(1))
                .await
                .expect("open"),
        )
    }

    async fn reopen(&self, store: Arc<dyn ShareStore>) -> Arc<dyn ShareStore> {
        drop(store);
        self.open().await
    }

    async fn corrupt(&self, key: &RecordKey, raw: &[u8]) {
        S3Store::plant_raw_value(&site(&self.backing), key, raw)
            .await
            .expect("plant a damaged value");
    }
}

crate::share_store_conformance_tests!(S3Harness::new());

#[tokio::test]
async fn names_and_bodies_hold_no_key_or_share_bytes() {
    let backing = Arc::new(InMemory::new());
    let store = S3Store::open(site(&backing), index(1)).await.expect("open");
    let secret = b"diagnosis: confidential";
    store
        .put(&share("patient/4711/notes", 1, secret))
        .await
        .expect("put");
    store
        .stage(
            SessionId([3; 16]),
            &super::super::conformance::with_epoch(share("patient/4711/notes", 1, secret), 1),
        )
        .await
        .expect("stage");
    let all = objects(&site(&backing)).await;
    assert_eq!(all.len(), 3, "meta, one share, one staged");
    for (name, body) in all {
        assert!(
            !name.contains("patient") && !name.contains("4711"),
            "{name}"
        );
        for needle in [&b"patient"[..], b"4711", b"confidential"] {
            assert!(!body.windows(needle.len()).any(|w| w == needle), "{name}");
        }
    }
}

#[tokio::test]
async fn an_object_copied_under_another_keys_name_is_corrupt() {
    let backing = Arc::new(InMemory::new());
    let site = site(&backing);
    let store = S3Store::open(site.clone(), index(1)).await.expect("open");
    store.put(&share("a", 1, b"aaaa")).await.expect("put");
    store.put(&share("b", 1, b"bbbb")).await.expect("put");
    let name_of = |k: &str| format!("shares/{}/", site.hashed("share", k.as_bytes()));
    let a = site
        .list(&name_of("a"), None, 10)
        .await
        .expect("list")
        .remove(0);
    let b = site
        .list(&name_of("b"), None, 10)
        .await
        .expect("list")
        .remove(0);
    let body = site.get_raw(&a.name).await.expect("get").expect("there");
    site.put_raw(&b.name, body).await.expect("copy");
    assert!(matches!(
        store.get(&key("b")).await,
        Err(Error::Corrupt { .. })
    ));
    assert!(matches!(
        store.put(&share("b", 2, b"new")).await,
        Err(Error::Corrupt { .. })
    ));
    assert_eq!(
        store.get(&key("a")).await.expect("get"),
        Some(share("a", 1, b"aaaa"))
    );
}

#[tokio::test]
async fn a_tombstone_deletes_the_older_share_objects() {
    let backing = Arc::new(InMemory::new());
    let site = site(&backing);
    let store = S3Store::open(site.clone(), index(1)).await.expect("open");
    store.put(&share("k", 1, b"one")).await.expect("put");
    store.put(&share("k", 2, b"two")).await.expect("put");
    let tombstone = sample_tombstone(
        key("k"),
        Version {
            clock_micros: 3,
            writer: WriterId(0xbeef),
        },
        index(1),
    );
    store.put(&tombstone).await.expect("tombstone");
    let left = site.list("shares/", None, 10).await.expect("list");
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].name.contains("-t"), "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_racing_versions_converge_to_the_highest() {
    const VERSIONS: u64 = 24;
    let backing = Arc::new(InMemory::new());
    let one = Arc::new(S3Store::open(site(&backing), index(1)).await.expect("open"));
    let two = Arc::new(S3Store::open(site(&backing), index(1)).await.expect("open"));
    let mut tasks = tokio::task::JoinSet::new();
    for clock in 1..=VERSIONS {
        let store = if clock % 2 == 0 {
            one.clone()
        } else {
            two.clone()
        };
        tasks.spawn(async move {
            store
                .put(&share("hot", clock, &[clock as u8; 8]))
                .await
                .expect("put")
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("task");
    }
    for store in [&one, &two] {
        let stored = store.get(&key("hot")).await.expect("get").expect("stored");
        assert_eq!(stored.header.version.clock_micros, VERSIONS);
    }
    let listed = || async {
        site(&backing)
            .list("shares/", None, 100)
            .await
            .expect("list")
    };
    let left = listed().await;
    assert!(
        left.len() <= 1 + crate::store::retained::RETAINED_MAX,
        "lower versions beyond the kept ones deleted: {left:?}"
    );
    let top = Version {
        clock_micros: VERSIONS,
        writer: WriterId(0xbeef),
    };
    one.commit(&key("hot"), top).await.expect("commit");
    let left = listed().await;
    assert_eq!(
        left.len(),
        1,
        "every lower version deleted by the commit: {left:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_racing_one_version_store_one_and_conflict_the_other() {
    let backing = Arc::new(InMemory::new());
    let one = Arc::new(S3Store::open(site(&backing), index(1)).await.expect("open"));
    let two = Arc::new(S3Store::open(site(&backing), index(1)).await.expect("open"));
    for round in 0..16 {
        let name = format!("k/{round}");
        let (a, b) = (share(&name, 5, b"first"), share(&name, 5, b"other"));
        let (first, second) = (one.clone(), two.clone());
        let (ta, tb) = (a.clone(), b.clone());
        let (ra, rb) = tokio::join!(
            tokio::spawn(async move { first.put(&ta).await }),
            tokio::spawn(async move { second.put(&tb).await })
        );
        let (ra, rb) = (ra.expect("task"), rb.expect("task"));
        let stored = one.get(&key(&name)).await.expect("get").expect("stored");
        match (ra, rb) {
            (Ok(PutOutcome::Stored), Err(Error::Conflict { .. })) => assert_eq!(stored, a),
            (Err(Error::Conflict { .. }), Ok(PutOutcome::Stored)) => assert_eq!(stored, b),
            other => panic!("round {round}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn inventory_pages_in_hash_order_and_skips_what_does_not_open() {
    let backing = Arc::new(InMemory::new());
    let site = site(&backing);
    let store = S3Store::open(site.clone(), index(1)).await.expect("open");
    for i in 0..30u64 {
        store
            .put(&share(&format!("r/{i:02}"), i + 1, &[1; 4]))
            .await
            .expect("put");
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .inventory(after.as_ref(), 7, u64::MAX)
            .await
            .expect("page");
        assert!(page.exhausted || !page.entries.is_empty());
        seen.extend(page.entries.iter().map(|e| e.key.clone()));
        after = page.entries.last().map(|e| e.key.clone());
        if page.exhausted {
            break;
        }
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 30, "every key exactly once");
    // An object that does not open has no key to report: left out and counted; repair's put
    // replaces it.
    let hk = site.hashed("share", b"r/05");
    let top = site
        .list(&format!("shares/{hk}/"), None, 10)
        .await
        .expect("list")
        .remove(0);
    site.put_raw(&top.name, b"bitrot".to_vec())
        .await
        .expect("damage");
    let page = store.inventory(None, 100, u64::MAX).await.expect("page");
    assert_eq!(page.entries.len(), 29);
    assert!(page
        .entries
        .iter()
        .all(|e| matches!(e.state, HeldShare::Held { .. })));
    assert_eq!(store.unreadable(), 1);
    assert!(matches!(
        store.get(&key("r/05")).await,
        Err(Error::Corrupt { .. })
    ));
    assert!(matches!(
        store.list("", None, 100).await,
        Err(Error::Corrupt { .. })
    ));
    let good = share("r/05", 6, &[1; 4]);
    assert_eq!(
        store.put_over_damage(&good).await.expect("repair"),
        PutOutcome::Stored
    );
    assert_eq!(store.get(&key("r/05")).await.expect("get"), Some(good));
}

#[tokio::test]
async fn a_bucket_created_for_another_index_refuses_to_open() {
    let backing = Arc::new(InMemory::new());
    drop(
        S3Store::open(site(&backing), index(1))
            .await
            .expect("create"),
    );
    match S3Store::open(site(&backing), index(2)).await {
        Err(Error::WrongIndex { expected, found }) => assert_eq!((expected, found), (index(2), 1)),
        other => panic!("expected WrongIndex, got {other:?}"),
    }
    assert!(S3Store::open(site(&backing), index(1)).await.is_ok());
}

/// What another process may have written between a put's first listing and its create:
/// planted by hand, so every resolution runs deterministically.
#[tokio::test]
async fn races_with_another_process_are_settled_after_the_create() {
    let backing = Arc::new(InMemory::new());
    let site = site(&backing);
    let store = S3Store::open(site.clone(), index(1)).await.expect("open");
    let slot_of = |envelope: &ShareEnvelope| {
        let head = Head::of(envelope);
        let slot = (head.version, envelope.epoch());
        let hk = site.hashed("share", envelope.header.key.as_bytes());
        Versioned {
            name: version_name(&hk, slot, &head),
            hk,
            slot,
            head,
            size: 0,
        }
    };
    let plant = |envelope: ShareEnvelope| {
        let site = site.clone();
        let ours = slot_of(&envelope);
        async move {
            let value = codec::encode(&envelope).expect("encode");
            let body = frame(envelope.header.key.as_bytes(), &value);
            site.create(&ours.name, &body).await.expect("plant");
        }
    };
    let create = |envelope: ShareEnvelope| {
        let store = &store;
        let ours = slot_of(&envelope);
        async move {
            let value = codec::encode(&envelope).expect("encode");
            store
                .create(&envelope.header.key, &ours, envelope.epoch(), &value)
                .await
        }
    };
    let folder = |k: &str| format!("shares/{}/", site.hashed("share", k.as_bytes()));

    // The very same name: identical bytes are a retry, other bytes a conflict.
    plant(share("same", 5, b"first")).await;
    assert_eq!(
        create(share("same", 5, b"first")).await.expect("retry"),
        PutOutcome::AlreadyStored
    );
    assert!(matches!(
        create(share("same", 5, b"other")).await,
        Err(Error::Conflict { .. })
    ));

    // A sibling of the same version under another name (another length): a conflict, and
    // the loser's object is gone.
    plant(share("sib", 5, b"long payload")).await;
    assert!(matches!(
        create(share("sib", 5, b"short")).await,
        Err(Error::Conflict { .. })
    ));
    assert_eq!(
        site.list(&folder("sib"), None, 10)
            .await
            .expect("list")
            .len(),
        1
    );

    // A higher version written meanwhile: superseded, and the lower object deleted.
    plant(share("high", 9, b"newer")).await;
    assert_eq!(
        create(share("high", 7, b"older")).await.expect("create"),
        PutOutcome::Superseded {
            current: Version {
                clock_micros: 9,
                writer: WriterId(0xbeef)
            }
        }
    );
    let left = site.list(&folder("high"), None, 10).await.expect("list");
    assert_eq!(left.len(), 1);
    assert_eq!(
        store.get(&key("high")).await.expect("get"),
        Some(share("high", 9, b"newer"))
    );

    // A lower version written meanwhile: kept under the higher put until a commit.
    plant(share("low", 2, b"older")).await;
    assert_eq!(
        create(share("low", 3, b"newer")).await.expect("create"),
        PutOutcome::StoredKeepingOlder { retained: 1 }
    );
    let version = |clock| Version {
        clock_micros: clock,
        writer: WriterId(0xbeef),
    };
    assert_eq!(
        store.commit(&key("low"), version(3)).await.expect("commit"),
        1
    );
    assert_eq!(
        site.list(&folder("low"), None, 10)
            .await
            .expect("list")
            .len(),
        1
    );
}
