//! The one conformance suite every [`ShareStore`] backend must pass.
//!
//! A backend provides a [`Harness`] (open, reopen, corrupt) and either calls [`run_all`] or
//! expands [`share_store_conformance_tests!`](crate::share_store_conformance_tests) inside a
//! test module to get one `#[tokio::test]` per property. Public (but hidden from the docs) so
//! that a backend in another crate runs the very same checks.

use std::sync::Arc;

use async_trait::async_trait;
use bunsan_protocol::envelope::{RecordHeader, ShareEnvelope};
use bunsan_protocol::integrity::{commit, CommitNonce, Digest, WriterSignature, SALT_BYTES};
use bunsan_protocol::message::{HeldShare, PutOutcome};
use bunsan_protocol::repair::SessionId;
use bunsan_protocol::{RecordKey, Scheme, ShareIndex, Version, WriterId};

use super::{codec, ShareStore, StoreStats};
use crate::error::Error;

/// What the suite needs from a backend besides the trait itself.
#[async_trait]
pub trait Harness: Send + Sync {
    /// Opens the store over this harness's storage (empty on the first call).
    async fn open(&self) -> Arc<dyn ShareStore>;
    /// Closes `store` (the last handle) and opens the same storage again, as after a restart.
    async fn reopen(&self, store: Arc<dyn ShareStore>) -> Arc<dyn ShareStore>;
    /// Overwrites the raw stored value of `key` with `raw`, bypassing every check.
    async fn corrupt(&self, key: &RecordKey, raw: &[u8]);
}

/// Expands to one `#[tokio::test]` per conformance property; `$make` is an expression that
/// builds a fresh [`Harness`] (evaluated once per test).
#[macro_export]
#[doc(hidden)]
macro_rules! share_store_conformance_tests {
    ($make:expr) => {
        $crate::share_store_conformance_tests!(@each $make;
            keeps_the_highest_version, retries_are_idempotent, same_version_other_bytes_conflicts,
            tombstone_beats_older_puts, tombstone_purges_payload, list_order_prefix_and_paging,
            stats_follow_every_put, concurrent_puts_converge_to_the_highest,
            reopen_keeps_everything_acknowledged, corrupt_values_give_typed_errors,
            epochs_order_within_a_version, older_versions_are_kept_until_a_commit,
            tombstones_are_dropped_only_when_asked,
            repair_puts_replace_damage,
            inventory_reports_damage_per_entry, staged_shares_survive_and_belong_to_one_refresh);
    };
    (@each $make:expr; $($check:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                $crate::store::conformance::$check(&$make).await;
            }
        )*
    };
}

/// Runs every property against fresh harnesses made by `make`.
pub async fn run_all<H: Harness>(make: impl Fn() -> H) {
    keeps_the_highest_version(&make()).await;
    retries_are_idempotent(&make()).await;
    same_version_other_bytes_conflicts(&make()).await;
    tombstone_beats_older_puts(&make()).await;
    tombstone_purges_payload(&make()).await;
    list_order_prefix_and_paging(&make()).await;
    stats_follow_every_put(&make()).await;
    concurrent_puts_converge_to_the_highest(&make()).await;
    reopen_keeps_everything_acknowledged(&make()).await;
    corrupt_values_give_typed_errors(&make()).await;
    epochs_order_within_a_version(&make()).await;
    older_versions_are_kept_until_a_commit(&make()).await;
    tombstones_are_dropped_only_when_asked(&make()).await;
    repair_puts_replace_damage(&make()).await;
    inventory_reports_damage_per_entry(&make()).await;
    staged_shares_survive_and_belong_to_one_refresh(&make()).await;
    batches_answer_each_put_and_commit_as_one_would(&make()).await;
}

fn key(name: &str) -> RecordKey {
    RecordKey::new(name).expect("test key")
}

fn version(clock: u64) -> Version {
    Version {
        clock_micros: clock,
        writer: WriterId(0xbeef),
    }
}

fn share(name: &str, clock: u64, payload: &[u8]) -> ShareEnvelope {
    sample_share(
        key(name),
        version(clock),
        ShareIndex::new(1).expect("index"),
        payload,
    )
}

fn tombstone(name: &str, clock: u64) -> ShareEnvelope {
    sample_tombstone(
        key(name),
        version(clock),
        ShareIndex::new(1).expect("index"),
    )
}

/// A structurally valid data envelope of a 2-of-3 record whose share at `index` is `record`
/// followed by a fixed salt part, with a correct commitment but a placeholder signature: the
/// same arguments always give the same bytes. Stores do not check signatures (the handler
/// does), so this is what store-level tests put.
pub fn sample_share(
    key: RecordKey,
    version: Version,
    index: ShareIndex,
    record: &[u8],
) -> ShareEnvelope {
    let mut payload = record.to_vec();
    payload.extend_from_slice(&[0x5a; SALT_BYTES]);
    let nonce = CommitNonce::from_bytes([index.get(); 32]);
    let mut commitments = vec![Digest([0; 32]); 3];
    commitments[usize::from(index.get()) - 1] = commit(&nonce, index, &payload);
    let header = RecordHeader {
        key,
        version,
        scheme: Scheme::new(2, 3).expect("scheme"),
        record_len: record.len() as u64,
        tombstone: false,
        commitments,
        record_check: Some(Digest([0; 32])),
        sealed_nonces: vec![None; 3],
    };
    ShareEnvelope::data(header, placeholder_signature(), index, nonce, payload)
        .expect("a valid sample share")
}

/// The tombstone counterpart of [`sample_share`].
pub fn sample_tombstone(key: RecordKey, version: Version, index: ShareIndex) -> ShareEnvelope {
    let header = RecordHeader {
        key,
        version,
        scheme: Scheme::new(2, 3).expect("scheme"),
        record_len: 0,
        tombstone: true,
        commitments: Vec::new(),
        record_check: None,
        sealed_nonces: Vec::new(),
    };
    ShareEnvelope::tombstone(header, placeholder_signature(), index)
        .expect("a valid sample tombstone")
}

fn placeholder_signature() -> WriterSignature {
    WriterSignature {
        certificate: b"placeholder certificate".to_vec(),
        signature: b"placeholder signature".to_vec(),
    }
}

async fn put(store: &dyn ShareStore, envelope: &ShareEnvelope) -> PutOutcome {
    store.put(envelope).await.expect("put")
}

async fn get(store: &dyn ShareStore, name: &str) -> Option<ShareEnvelope> {
    store.get(&key(name)).await.expect("get")
}

/// Newer versions replace older ones (which are kept under them); an older put is answered
/// with the stored version.
pub async fn keeps_the_highest_version(h: &impl Harness) {
    let store = h.open().await;
    assert_eq!(get(&*store, "k").await, None);
    assert_eq!(
        put(&*store, &share("k", 1, b"one")).await,
        PutOutcome::Stored
    );
    assert_eq!(
        put(&*store, &share("k", 3, b"three")).await,
        PutOutcome::StoredKeepingOlder { retained: 1 }
    );
    assert_eq!(
        put(&*store, &share("k", 2, b"two")).await,
        PutOutcome::Superseded {
            current: version(3)
        }
    );
    assert_eq!(get(&*store, "k").await, Some(share("k", 3, b"three")));
    // The version probe names the same head without the share, and nothing for a missing key.
    let head = store.head(&key("k")).await.expect("head").expect("held");
    assert_eq!((head.version, head.tombstone), (version(3), false));
    assert_eq!(store.head(&key("k2")).await.expect("head"), None);
}

/// Putting the same envelope again is acknowledged without a second write.
pub async fn retries_are_idempotent(h: &impl Harness) {
    let store = h.open().await;
    let env = share("k", 5, b"payload");
    assert_eq!(put(&*store, &env).await, PutOutcome::Stored);
    assert_eq!(put(&*store, &env).await, PutOutcome::AlreadyStored);
    let stats = store.stats().await.expect("stats");
    assert_eq!((stats.records, stats.bytes), (1, 7));
}

/// The same version with other bytes is a conflict and leaves the stored envelope alone.
pub async fn same_version_other_bytes_conflicts(h: &impl Harness) {
    let store = h.open().await;
    put(&*store, &share("k", 5, b"first")).await;
    match store.put(&share("k", 5, b"other")).await {
        Err(Error::Conflict { key: k, version: v }) => {
            assert_eq!((k, v), (key("k"), version(5)));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(get(&*store, "k").await, Some(share("k", 5, b"first")));
}

/// A tombstone is a version: older puts cannot resurrect the record.
pub async fn tombstone_beats_older_puts(h: &impl Harness) {
    let store = h.open().await;
    put(&*store, &share("k", 2, b"live")).await;
    assert_eq!(put(&*store, &tombstone("k", 3)).await, PutOutcome::Stored);
    for clock in [1, 2] {
        assert_eq!(
            put(&*store, &share("k", clock, b"late")).await,
            PutOutcome::Superseded {
                current: version(3)
            }
        );
    }
    assert_eq!(get(&*store, "k").await, Some(tombstone("k", 3)));
    let head = store.head(&key("k")).await.expect("head").expect("held");
    assert_eq!((head.version, head.tombstone), (version(3), true));
    // The tombstone is kept under the revival (a reader may need to know of it).
    assert_eq!(
        put(&*store, &share("k", 4, b"again")).await,
        PutOutcome::StoredKeepingOlder { retained: 1 }
    );
}

/// After a tombstone the payload is gone from reads and from the byte count.
pub async fn tombstone_purges_payload(h: &impl Harness) {
    let store = h.open().await;
    put(&*store, &share("k", 1, &[7; 100])).await;
    assert_eq!(store.stats().await.expect("stats").bytes, 100);
    put(&*store, &tombstone("k", 2)).await;
    let stored = get(&*store, "k").await.expect("tombstone kept");
    assert!(stored.header.tombstone && stored.payload.is_empty());
    assert_eq!(
        store.stats().await.expect("stats"),
        StoreStats {
            records: 0,
            tombstones: 1,
            bytes: 0
        }
    );
}

/// Listing is in byte order, filtered by prefix, paged by `start_after`, tombstones included.
pub async fn list_order_prefix_and_paging(h: &impl Harness) {
    let store = h.open().await;
    for name in ["b/1", "a/2", "a", "a/10", "a/1", "c"] {
        put(&*store, &share(name, 1, b"x")).await;
    }
    put(&*store, &tombstone("a/10", 2)).await;
    let names = |entries: Vec<bunsan_protocol::message::ListEntry>| {
        entries
            .into_iter()
            .map(|e| e.key.as_str().to_owned())
            .collect::<Vec<_>>()
    };
    let all = store.list("", None, 100).await.expect("list");
    assert_eq!(names(all), ["a", "a/1", "a/10", "a/2", "b/1", "c"]);
    let under_a = store.list("a/", None, 100).await.expect("list");
    let tombstoned: Vec<bool> = under_a.iter().map(|e| e.tombstone).collect();
    assert_eq!(tombstoned, [false, true, false]);
    assert_eq!(under_a[1].version, version(2));
    let page1 = store.list("a/", None, 2).await.expect("list");
    assert_eq!(names(page1), ["a/1", "a/10"]);
    let page2 = store.list("a/", Some(&key("a/10")), 2).await.expect("list");
    assert_eq!(names(page2), ["a/2"]);
    // A start_after before the prefix starts at the prefix; one after it ends the listing.
    let from_before = store.list("b/", Some(&key("a")), 10).await.expect("list");
    assert_eq!(names(from_before), ["b/1"]);
    assert!(store
        .list("a/", Some(&key("a/3")), 10)
        .await
        .expect("list")
        .is_empty());
    assert!(store.list("", None, 0).await.expect("list").is_empty());
    assert!(store.list("zzz", None, 10).await.expect("list").is_empty());
}

/// Counters match the contents after puts, replacements, tombstones and revivals.
pub async fn stats_follow_every_put(h: &impl Harness) {
    let store = h.open().await;
    assert_eq!(store.stats().await.expect("stats"), StoreStats::default());
    put(&*store, &share("a", 1, &[1; 10])).await;
    put(&*store, &share("b", 1, &[1; 20])).await;
    put(&*store, &share("a", 2, &[1; 5])).await;
    put(&*store, &tombstone("c", 1)).await;
    put(&*store, &share("a", 1, &[1; 99])).await; // superseded: no change
    assert_eq!(
        store.stats().await.expect("stats"),
        StoreStats {
            records: 2,
            tombstones: 1,
            bytes: 25
        }
    );
    put(&*store, &share("c", 2, &[1; 3])).await;
    put(&*store, &tombstone("b", 2)).await;
    assert_eq!(
        store.stats().await.expect("stats"),
        StoreStats {
            records: 2,
            tombstones: 1,
            bytes: 8
        }
    );
}

/// Many versions of one key put concurrently leave exactly the highest, counted once.
pub async fn concurrent_puts_converge_to_the_highest(h: &impl Harness) {
    const VERSIONS: u64 = 48;
    let store = h.open().await;
    let mut tasks = tokio::task::JoinSet::new();
    // Interleave the order so later versions do not simply arrive last.
    for clock in (1..=VERSIONS)
        .rev()
        .step_by(2)
        .chain((1..=VERSIONS).step_by(2))
    {
        let store = store.clone();
        tasks.spawn(async move {
            let payload = vec![clock as u8; clock as usize];
            store
                .put(&share("hot", clock, &payload))
                .await
                .expect("put");
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("put task");
    }
    let highest = get(&*store, "hot").await.expect("stored");
    assert_eq!(highest.header.version, version(VERSIONS));
    assert_eq!(
        store.stats().await.expect("stats"),
        StoreStats {
            records: 1,
            tombstones: 0,
            bytes: VERSIONS
        }
    );
}

/// Everything acknowledged before a restart is there after it, counters included.
pub async fn reopen_keeps_everything_acknowledged(h: &impl Harness) {
    let store = h.open().await;
    for i in 0..20u64 {
        put(&*store, &share(&format!("r/{i:02}"), i + 1, &[i as u8; 16])).await;
    }
    put(&*store, &tombstone("r/03", 100)).await;
    let before = store.stats().await.expect("stats");
    let store = h.reopen(store).await;
    assert_eq!(store.stats().await.expect("stats"), before);
    assert_eq!(get(&*store, "r/07").await, Some(share("r/07", 8, &[7; 16])));
    assert_eq!(get(&*store, "r/03").await, Some(tombstone("r/03", 100)));
    assert_eq!(store.list("r/", None, 100).await.expect("list").len(), 20);
}

/// Damaged stored bytes give `Error::Corrupt` on get, put and list; never a panic, never a
/// silently wrong share.
pub async fn corrupt_values_give_typed_errors(h: &impl Harness) {
    let store = h.open().await;
    let good = share("k", 1, &[5; 32]);
    put(&*store, &good).await;
    let mut flipped = codec::encode(&good).expect("encode");
    let last = flipped.len() - 1;
    flipped[last] ^= 0x01;
    let garbage = b"\x01not a stored value at all, but long enough to have a head......".to_vec();
    for raw in [flipped.clone(), garbage, Vec::new(), vec![0xff; 80]] {
        h.corrupt(&key("k"), &raw).await;
        assert!(
            matches!(store.get(&key("k")).await, Err(Error::Corrupt { .. })),
            "get over {raw:?}"
        );
    }
    // A readable head but a damaged body: a put of the same version reports the damage, not a
    // conflict between writers.
    h.corrupt(&key("k"), &flipped).await;
    assert!(matches!(
        store.put(&share("k", 1, &[6; 32])).await,
        Err(Error::Corrupt { .. })
    ));
    // An unreadable head: no put can be decided, no listing row built, no probe answered.
    h.corrupt(&key("k"), b"short").await;
    assert!(matches!(
        store.head(&key("k")).await,
        Err(Error::Corrupt { .. })
    ));
    assert!(matches!(
        store.list("", None, 10).await,
        Err(Error::Corrupt { .. })
    ));
    assert!(matches!(
        store.put(&share("k", 9, b"new")).await,
        Err(Error::Corrupt { .. })
    ));
}

fn refreshed(name: &str, clock: u64, epoch: u32, payload: &[u8]) -> ShareEnvelope {
    with_epoch(share(name, clock, payload), epoch)
}

/// `envelope` as if refreshed to `epoch` (a seal with its own commitments and a placeholder
/// signature: stores do not verify signatures, nodes do).
pub fn with_epoch(mut envelope: ShareEnvelope, epoch: u32) -> ShareEnvelope {
    envelope.refresh = Some(Box::new(bunsan_protocol::refresh::RefreshSeal {
        epoch,
        signed_micros: 0,
        commitments: envelope.header.commitments.clone(),
        sealed_nonces: envelope.header.sealed_nonces.clone(),
        signature: envelope.signature.clone(),
    }));
    envelope
}

/// A refresh re-deals one version: a higher epoch replaces a lower one, never the reverse, and
/// a newer version beats every epoch of an older one.
pub async fn epochs_order_within_a_version(h: &impl Harness) {
    let store = h.open().await;
    put(&*store, &share("k", 5, b"epoch0")).await;
    assert_eq!(
        put(&*store, &refreshed("k", 5, 1, b"epoch1")).await,
        PutOutcome::Stored
    );
    assert_eq!(
        put(&*store, &share("k", 5, b"epoch0")).await,
        PutOutcome::Superseded {
            current: version(5)
        }
    );
    assert_eq!(
        get(&*store, "k").await,
        Some(refreshed("k", 5, 1, b"epoch1"))
    );
    // The refreshed epoch is kept under the new version, not the epoch it replaced.
    assert_eq!(
        put(&*store, &share("k", 6, b"new")).await,
        PutOutcome::StoredKeepingOlder { retained: 1 }
    );
    assert_eq!(
        store.get_version(&key("k"), version(5)).await.expect("get"),
        Some(refreshed("k", 5, 1, b"epoch1"))
    );
    assert_eq!(
        store.stats().await.expect("stats"),
        StoreStats {
            records: 1,
            tombstones: 0,
            bytes: 3
        }
    );
}

/// Compaction removes a tombstone of exactly the version asked, and nothing else.
pub async fn tombstones_are_dropped_only_when_asked(h: &impl Harness) {
    let store = h.open().await;
    let k = key("k");
    put(&*store, &share("k", 1, b"live")).await;
    put(&*store, &tombstone("k", 2)).await;
    put(&*store, &share("other", 1, b"x")).await;
    assert!(!store.drop_tombstone(&k, version(1)).await.expect("drop"));
    assert!(!store
        .drop_tombstone(&key("other"), version(1))
        .await
        .expect("drop"));
    assert!(store.drop_tombstone(&k, version(2)).await.expect("drop"));
    assert_eq!(get(&*store, "k").await, None);
    assert_eq!(store.get_version(&k, version(1)).await.expect("get"), None);
    assert!(!store.drop_tombstone(&k, version(2)).await.expect("again"));
    assert_eq!(
        store.stats().await.expect("stats"),
        StoreStats {
            records: 1,
            tombstones: 0,
            bytes: 1
        }
    );
    let store = h.reopen(store).await;
    assert_eq!(get(&*store, "k").await, None);
    assert_eq!(store.list("", None, 10).await.expect("list").len(), 1);
}

/// An older data version replaced by a newer one stays readable by version until a commit of
/// a version the store holds; a tombstone keeps nothing under it; kept versions survive a
/// restart and are bounded.
pub async fn older_versions_are_kept_until_a_commit(h: &impl Harness) {
    let store = h.open().await;
    let k = key("k");
    let held = |store: Arc<dyn ShareStore>| {
        let k = k.clone();
        async move {
            let (envelope, older) = store.get_held(&k).await.expect("held").expect("some");
            let older: Vec<(u64, bool)> = older
                .iter()
                .map(|o| (o.version.clock_micros, o.tombstone))
                .collect();
            (envelope.header.version.clock_micros, older)
        }
    };
    put(&*store, &share("k", 1, b"one")).await;
    put(&*store, &share("k", 3, b"three")).await;
    assert_eq!(
        put(&*store, &share("k", 5, b"five")).await,
        PutOutcome::StoredKeepingOlder { retained: 2 }
    );
    assert_eq!(held(store.clone()).await, (5, vec![(1, false), (3, false)]));
    // The inventory (repair's input) reports them too.
    let page = store
        .inventory(None, 10, u64::MAX)
        .await
        .expect("inventory");
    let kept: Vec<u64> = page.entries[0]
        .kept
        .iter()
        .map(|o| o.version.clock_micros)
        .collect();
    assert_eq!(kept, [1, 3]);
    let by_version = |clock| {
        let (store, k) = (store.clone(), k.clone());
        async move { store.get_version(&k, version(clock)).await.expect("get") }
    };
    assert_eq!(by_version(1).await, Some(share("k", 1, b"one")));
    assert_eq!(by_version(5).await, Some(share("k", 5, b"five")));
    assert_eq!(by_version(2).await, None);
    // A commit of a version the store does not hold changes nothing.
    assert_eq!(store.commit(&k, version(4)).await.expect("commit"), 0);
    assert_eq!(store.commit(&k, version(3)).await.expect("commit"), 1);
    assert_eq!(held(store.clone()).await, (5, vec![(3, false)]));
    let store = h.reopen(store).await;
    assert_eq!(held(store.clone()).await, (5, vec![(3, false)]));
    assert_eq!(store.commit(&k, version(5)).await.expect("commit"), 1);
    assert_eq!(held(store.clone()).await, (5, vec![]));
    // A tombstone purges every older share; a later put keeps the tombstone under it.
    put(&*store, &share("k", 6, b"six")).await;
    assert_eq!(put(&*store, &tombstone("k", 7)).await, PutOutcome::Stored);
    assert_eq!(held(store.clone()).await, (7, vec![]));
    assert_eq!(store.get_version(&k, version(6)).await.expect("get"), None);
    assert_eq!(
        put(&*store, &share("k", 9, b"nine")).await,
        PutOutcome::StoredKeepingOlder { retained: 1 }
    );
    assert_eq!(held(store.clone()).await, (9, vec![(7, true)]));
    // Bounded, newest kept.
    let mut last = PutOutcome::Stored;
    for clock in 10..30 {
        last = put(&*store, &share("k", clock, b"many")).await;
    }
    let max = super::retained::RETAINED_MAX as u32;
    assert_eq!(last, PutOutcome::StoredKeepingOlder { retained: max });
    let (top, older) = held(store.clone()).await;
    assert_eq!(top, 29);
    assert_eq!(older.first().map(|o| o.0), Some(29 - u64::from(max)));
    assert_eq!(
        store.stats().await.expect("stats"),
        StoreStats {
            records: 1,
            tombstones: 0,
            bytes: 4
        }
    );
}

/// A repair's put replaces a damaged value (which a normal put refuses), and otherwise follows
/// the normal put-if-newer rules.
pub async fn repair_puts_replace_damage(h: &impl Harness) {
    let store = h.open().await;
    let good = share("k", 3, &[5; 32]);
    put(&*store, &good).await;
    let mut flipped = codec::encode(&good).expect("encode");
    let last = flipped.len() - 1;
    flipped[last] ^= 0x01;
    h.corrupt(&key("k"), &flipped).await;
    assert!(store.put(&good).await.is_err());
    assert_eq!(
        store.put_over_damage(&good).await.expect("repair"),
        PutOutcome::Stored
    );
    assert_eq!(get(&*store, "k").await, Some(good.clone()));
    assert_eq!(
        store
            .put_over_damage(&share("k", 2, b"old"))
            .await
            .expect("older"),
        PutOutcome::Superseded {
            current: version(3)
        }
    );
    h.corrupt(&key("k"), b"no head at all").await;
    assert_eq!(
        store.put_over_damage(&good).await.expect("repair"),
        PutOutcome::Stored
    );
    // Damage under a running store bypasses the counters (they still count the value that
    // rotted, whose head can no longer be read); they are right again from the next open.
    let store = h.reopen(store).await;
    assert_eq!(store.stats().await.expect("stats").records, 1);
    assert_eq!(get(&*store, "k").await, Some(good));
}

/// The inventory reads every value, reports damage entry by entry, pages and stops at its
/// byte budget. Its order is the store's own (key order, or hash order for S3), so the checks
/// are order-agnostic but strict: paging by the last key yields every key exactly once.
pub async fn inventory_reports_damage_per_entry(h: &impl Harness) {
    let store = h.open().await;
    for (i, name) in ["a", "b", "c", "d"].iter().enumerate() {
        put(&*store, &share(name, i as u64 + 1, &[i as u8; 10])).await;
    }
    put(&*store, &tombstone("c", 9)).await;
    h.corrupt(&key("b"), b"damaged").await;
    let page = store
        .inventory(None, 100, u64::MAX)
        .await
        .expect("inventory");
    assert!(page.exhausted);
    let mut states: Vec<(&str, bool)> = page
        .entries
        .iter()
        .map(|e| (e.key.as_str(), matches!(e.state, HeldShare::Corrupt { .. })))
        .collect();
    states.sort();
    assert_eq!(
        states,
        [("a", false), ("b", true), ("c", false), ("d", false)]
    );
    let c = page
        .entries
        .iter()
        .find(|e| e.key == key("c"))
        .expect("c listed");
    match &c.state {
        HeldShare::Held {
            version: v,
            tombstone,
            ..
        } => assert_eq!((*v, *tombstone), (version(9), true)),
        other => panic!("expected a tombstone, got {other:?}"),
    }
    let order: Vec<RecordKey> = page.entries.iter().map(|e| e.key.clone()).collect();
    let first = store.inventory(None, 2, u64::MAX).await.expect("page");
    assert_eq!((first.entries.len(), first.exhausted), (2, false));
    let last = first.entries.last().map(|e| e.key.clone());
    let rest = store
        .inventory(last.as_ref(), 10, u64::MAX)
        .await
        .expect("page");
    assert_eq!((rest.entries.len(), rest.exhausted), (2, true));
    let paged: Vec<RecordKey> = first
        .entries
        .iter()
        .chain(&rest.entries)
        .map(|e| e.key.clone())
        .collect();
    assert_eq!(paged, order, "pages follow one stable order, each key once");
    let budget = store.inventory(None, 10, 1).await.expect("page");
    assert_eq!((budget.entries.len(), budget.exhausted), (1, false));
}

/// A staged share sits beside the current one, survives a restart, and only its own refresh
/// can remove it.
pub async fn staged_shares_survive_and_belong_to_one_refresh(h: &impl Harness) {
    let store = h.open().await;
    let (one, two) = (SessionId([1; 16]), SessionId([2; 16]));
    put(&*store, &share("k", 5, b"current")).await;
    assert_eq!(store.staged(&key("k")).await.expect("staged"), None);
    let next = refreshed("k", 5, 1, b"refresh");
    store.stage(one, &next).await.expect("stage");
    let store = h.reopen(store).await;
    assert_eq!(
        store.staged(&key("k")).await.expect("staged"),
        Some((one, next.clone()))
    );
    assert_eq!(get(&*store, "k").await, Some(share("k", 5, b"current")));
    assert!(!store.unstage(&key("k"), two).await.expect("other refresh"));
    assert!(store.unstage(&key("k"), one).await.expect("own refresh"));
    assert_eq!(store.staged(&key("k")).await.expect("staged"), None);
    assert!(!store.unstage(&key("k"), one).await.expect("idempotent"));
}

/// `put_many` answers each envelope as `put` would, in order, and `commit_many` drops what
/// each `commit` would.
pub async fn batches_answer_each_put_and_commit_as_one_would(h: &impl Harness) {
    let store = h.open().await;
    assert_eq!(
        put(&*store, &share("b", 5, b"five")).await,
        PutOutcome::Stored
    );
    let batch = [
        share("a", 1, b"new"),
        share("b", 4, b"older"),
        share("b", 5, b"five"),
        share("b", 5, b"other"),
        share("c", 2, b"c-two"),
        share("c", 3, b"c-three"),
    ];
    let outcomes = store.put_many(&batch.iter().collect::<Vec<_>>()).await;
    assert_eq!(outcomes.len(), batch.len());
    assert_eq!(outcomes[0].as_ref().ok(), Some(&PutOutcome::Stored));
    assert_eq!(
        outcomes[1].as_ref().ok(),
        Some(&PutOutcome::Superseded {
            current: version(5)
        })
    );
    assert_eq!(outcomes[2].as_ref().ok(), Some(&PutOutcome::AlreadyStored));
    assert!(
        matches!(outcomes[3], Err(crate::Error::Conflict { .. })),
        "{:?}",
        outcomes[3]
    );
    assert_eq!(outcomes[4].as_ref().ok(), Some(&PutOutcome::Stored));
    assert_eq!(
        outcomes[5].as_ref().ok(),
        Some(&PutOutcome::StoredKeepingOlder { retained: 1 })
    );
    assert_eq!(get(&*store, "a").await, Some(share("a", 1, b"new")));
    assert_eq!(get(&*store, "c").await, Some(share("c", 3, b"c-three")));
    let dropped = store
        .commit_many(&[
            (key("c"), version(3)),
            (key("a"), version(1)),
            (key("z"), version(9)),
        ])
        .await
        .expect("commit");
    assert_eq!(dropped, 1, "c kept version 2 until its commit");
    assert_eq!(
        store
            .get_version(&key("c"), version(2))
            .await
            .expect("get version"),
        None
    );
}
