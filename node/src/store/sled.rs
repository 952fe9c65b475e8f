//! The durable [`ShareStore`]: sled 0.34 on local disk.
//!
//! Layout: tree `shares` maps record key bytes to a stored value (see `codec`); tree `older`
//! maps a key to the older versions kept under it (module `retained`); tree `staged`
//! holds refreshed shares of the next epoch until their refresh commits; tree `meta` records
//! the store format and the node's share index, written once when the store is created and
//! checked on every open, so node-2 pointed at node-1's disk refuses to start.
//!
//! A put decides and writes under a per-key lock stripe (the head and the kept versions live
//! in two trees and must change together), then waits for durability through group commit:
//! concurrent puts share one `flush_async` (one fsync) instead of paying one each. The two
//! trees are written in the order that leaves a crash harmless: a kept version before the head
//! that replaces it, a tombstone before the purge of what it deletes; reads normalise the list
//! under the head they see.
//!
//! Known limit: sled keeps replaced values in its log until it rewrites the segment, so a
//! tombstone removes a share from every read path at once but not yet from the disk blocks.

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_trait::async_trait;
use bunsan_protocol::envelope::ShareEnvelope;
use bunsan_protocol::message::{ListEntry, PutOutcome, RetainedVersion};
use bunsan_protocol::repair::SessionId;
use bunsan_protocol::{RecordKey, ShareIndex, Version};
use sled::{IVec, Tree};

use super::codec::{self, Decision, Head, STORE_VALUE_FORMAT};
use super::group_commit::GroupCommit;
use super::{retained, Counters, InventoryPage, ShareStore, StoreStats};
use crate::error::{Error, Result};

const META_FORMAT: &[u8] = b"format";
const META_INDEX: &[u8] = b"index";
/// Stored values up to this size are read and checked on the calling task (see `get_held`).
const INLINE_READ_MAX: usize = 64 * 1024;
/// Stripes of the per-key write lock: writes of different keys rarely wait on each other.
const KEY_LOCKS: usize = 64;

/// A share store in a sled database directory.
pub struct SledStore {
    db: sled::Db,
    shares: Tree,
    older: Tree,
    staged: Tree,
    counters: Arc<Counters>,
    commit: GroupCommit,
    locks: Arc<KeyLocks>,
}

/// The per-key write lock stripes.
struct KeyLocks([std::sync::Mutex<()>; KEY_LOCKS]);

impl KeyLocks {
    fn new() -> Self {
        Self(std::array::from_fn(|_| std::sync::Mutex::new(())))
    }

    fn lock(&self, key: &[u8]) -> std::sync::MutexGuard<'_, ()> {
        let stripe = blake3::hash(key).as_bytes()[0] as usize % KEY_LOCKS;
        // The lock guards no data of its own: a poisoned one is as good as any.
        self.0[stripe]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore")
            .field("stats", &self.counters.snapshot())
            .finish_non_exhaustive()
    }
}

impl SledStore {
    /// Opens (or creates) the store at `path` for the node holding share `index`. Fails if the
    /// store was created for another index or by an unknown format, or if another process
    /// holds it open. Counters are recomputed by reading every value's head.
    pub async fn open(path: &Path, index: ShareIndex) -> Result<Self> {
        let path = path.to_owned();
        blocking(move || Self::open_blocking(&path, index)).await
    }

    fn open_blocking(path: &Path, index: ShareIndex) -> Result<Self> {
        if let Some(parent) = path.parent() {
            create_private_dir(parent)?;
        }
        let db = sled::Config::new().path(path).open()?;
        let meta = db.open_tree("meta")?;
        let shares = db.open_tree("shares")?;
        let older = db.open_tree("older")?;
        let staged = db.open_tree("staged")?;
        check_meta(path, &meta, &shares, index)?;
        let counters = Counters::default();
        for item in shares.iter() {
            let (key, value) = item?;
            match codec::head(&key, &value) {
                Ok(head) => counters.replace(None, &head),
                // A damaged value must not stop the node: it is reported here and on every
                // read, and repair can replace it.
                Err(e) => tracing::warn!(error = %e, "damaged stored value left out of the counts"),
            }
        }
        Ok(Self {
            commit: GroupCommit::new(db.clone()),
            db,
            shares,
            older,
            staged,
            counters: Arc::new(counters),
            locks: Arc::new(KeyLocks::new()),
        })
    }

    /// How many flushes (fsyncs) puts have triggered so far: fewer than puts when group commit
    /// batches them.
    pub fn flushes(&self) -> u64 {
        self.commit.flushes.load(Ordering::Relaxed)
    }

    /// Overwrites the raw stored bytes of `key`, bypassing every check: for corruption tests.
    #[doc(hidden)]
    pub fn insert_raw(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.shares.insert(key, value)?;
        self.shares.flush()?;
        Ok(())
    }

    /// The raw stored bytes of `key`, unchecked: for corruption tests.
    #[doc(hidden)]
    pub fn raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.shares.get(key)?.map(|value| value.to_vec()))
    }
}

impl SledStore {
    /// An atomic put-if-newer with the given decision rule, under the key's lock stripe, then
    /// a wait for durability.
    async fn put_with(
        &self,
        envelope: &ShareEnvelope,
        decide: codec::DecideFn,
    ) -> Result<PutOutcome> {
        let write = Write::of(envelope)?;
        let trees = self.trees();
        let outcome = blocking(move || write.apply(&trees, decide)).await?;
        // Every outcome waits, not only writes: AlreadyStored and Superseded report a value
        // another put may have written but not yet flushed.
        self.commit.durable().await?;
        Ok(outcome)
    }

    fn trees(&self) -> Trees {
        Trees {
            shares: self.shares.clone(),
            older: self.older.clone(),
            counters: self.counters.clone(),
            locks: self.locks.clone(),
        }
    }

    /// The head of `key` (if any) and the kept versions under it.
    fn held_blocking(shares: &Tree, older: &Tree, key: &[u8]) -> Result<Option<Held>> {
        let Some(value) = shares.get(key)? else {
            return Ok(None);
        };
        kept_under(older, key, value).map(Some)
    }
}

/// [`ShareStore::commit`] on the calling thread.
fn commit_blocking(trees: &Trees, key: &RecordKey, version: Version) -> Result<u32> {
    let key = key.as_bytes();
    let _guard = trees.locks.lock(key);
    let Some((_, top, mut items)) = SledStore::held_blocking(&trees.shares, &trees.older, key)?
    else {
        return Ok(0);
    };
    let dropped = retained::commit(&mut items, Some(&top), version);
    if dropped > 0 {
        write_kept(&trees.older, key, &items, true)?;
    }
    Ok(dropped)
}

/// One failure of a shared step (hand-off, flush) as each put's error.
fn shared(error: &Error) -> Error {
    Error::StorageTask {
        reason: error.to_string(),
    }
}

/// What a put needs of the store, to move into a blocking closure.
struct Trees {
    shares: Tree,
    older: Tree,
    counters: Arc<Counters>,
    locks: Arc<KeyLocks>,
}

/// One put, encoded and ready to apply.
struct Write {
    value: IVec,
    head: Head,
    epoch: u32,
    key: RecordKey,
}

impl Write {
    fn of(envelope: &ShareEnvelope) -> Result<Self> {
        Ok(Self {
            value: IVec::from(codec::encode(envelope)?),
            head: Head::of(envelope),
            epoch: envelope.epoch(),
            key: envelope.header.key.clone(),
        })
    }

    /// Applies the put under the key's lock (not yet durable).
    fn apply(self, trees: &Trees, decide: codec::DecideFn) -> Result<PutOutcome> {
        let Write {
            value,
            head,
            epoch,
            key,
        } = self;
        let key = key.as_bytes();
        let _guard = trees.locks.lock(key);
        let current = trees.shares.get(key)?;
        let (replaced, keep_replaced) = match decide(
            &envelope_key(key)?,
            current.as_deref(),
            &head,
            epoch,
            &value,
        )? {
            Decision::Keep(outcome) => return Ok(outcome),
            Decision::Write {
                replaced,
                keep_replaced,
            } => (replaced, keep_replaced),
        };
        let kept_now = trees.older.get(key)?;
        let mut items = retained::read(key, kept_now.as_deref(), replaced.as_ref())?;
        if let (true, Some(old), Some(current)) = (keep_replaced, replaced, current) {
            items.push((old, current.to_vec()));
        }
        let items = retained::normalize(items, Some(&head));
        if head.tombstone {
            trees.shares.insert(key, value)?;
            write_kept(&trees.older, key, &items, kept_now.is_some())?;
        } else {
            write_kept(&trees.older, key, &items, kept_now.is_some())?;
            trees.shares.insert(key, value)?;
        }
        trees.counters.replace(replaced.as_ref(), &head);
        Ok(match items.len() as u32 {
            0 => PutOutcome::Stored,
            retained => PutOutcome::StoredKeepingOlder { retained },
        })
    }
}

/// A key's stored head value, its fixed head, and the versions kept under it.
type Held = (IVec, Head, retained::KeptValues);

/// `value`, the stored head of `key`, with its fixed head and the versions kept under it.
fn kept_under(older: &Tree, key: &[u8], value: IVec) -> Result<Held> {
    let top = codec::head(key, &value)?;
    let kept = older.get(key)?;
    let items = retained::read(key, kept.as_deref(), Some(&top))?;
    Ok((value, top, items))
}

/// The answer to a get from what [`kept_under`] read.
fn envelope_and_listing(
    key: &[u8],
    (value, _, items): Held,
) -> Result<Option<(ShareEnvelope, Vec<RetainedVersion>)>> {
    Ok(Some((
        codec::decode(key, &value)?,
        retained::listing(&items),
    )))
}

/// Writes the kept list of `key`: `items`, or no list at all when empty (`existed`: a list is
/// stored now and must go).
fn write_kept(older: &Tree, key: &[u8], items: &retained::KeptValues, existed: bool) -> Result<()> {
    if items.is_empty() {
        if existed {
            older.remove(key)?;
        }
    } else {
        let values: Vec<&[u8]> = items.iter().map(|(_, v)| v.as_slice()).collect();
        older.insert(key, retained::encode(&values))?;
    }
    Ok(())
}

/// The record key a stored key names; a stored key that is not one is damage.
fn envelope_key(key: &[u8]) -> Result<RecordKey> {
    RecordKey::from_bytes(key).map_err(|e| Error::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    })
}

/// Creates the data directory with mode 0700: it holds share material.
fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| Error::Io {
            action: "create directory",
            path: dir.to_owned(),
            source,
        })
}

/// Initialises the meta tree of a new store, or checks that of an existing one.
fn check_meta(path: &Path, meta: &Tree, shares: &Tree, index: ShareIndex) -> Result<()> {
    let not_a_store = |reason: &str| Error::NotAStore {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    match (meta.get(META_FORMAT)?, meta.get(META_INDEX)?) {
        (None, None) if shares.is_empty() => {
            let mut batch = sled::Batch::default();
            batch.insert(META_FORMAT, &[STORE_VALUE_FORMAT]);
            batch.insert(META_INDEX, &[index.get()]);
            meta.apply_batch(batch)?;
            meta.flush()?;
            Ok(())
        }
        (None, None) => Err(not_a_store("it holds shares but no metadata")),
        (Some(format), Some(found)) => {
            if *format != [STORE_VALUE_FORMAT] {
                return Err(Error::StoreFormat {
                    path: PathBuf::from(path),
                    found: format.first().copied().unwrap_or(0),
                    supported: STORE_VALUE_FORMAT,
                });
            }
            match *found {
                [found] if found == index.get() => Ok(()),
                [found] => Err(Error::WrongIndex {
                    expected: index,
                    found,
                }),
                _ => Err(not_a_store("the recorded share index is malformed")),
            }
        }
        _ => Err(not_a_store("its metadata is incomplete")),
    }
}

/// Runs blocking sled work off the async workers: sled may read pages from disk. Shared with
/// the sled audit store.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::StorageTask {
            reason: e.to_string(),
        })?
}

#[async_trait]
impl ShareStore for SledStore {
    async fn put(&self, envelope: &ShareEnvelope) -> Result<PutOutcome> {
        self.put_with(envelope, codec::decide).await
    }

    async fn put_many(&self, envelopes: &[&ShareEnvelope]) -> Vec<Result<PutOutcome>> {
        // One hand-off to the blocking pool and one flush for the lot: per put, both cost more
        // than a small put's sled work.
        let writes: Vec<Result<Write>> = envelopes.iter().map(|e| Write::of(e)).collect();
        let trees = self.trees();
        let applied = blocking(move || {
            Ok(writes
                .into_iter()
                .map(|write| write.and_then(|write| write.apply(&trees, codec::decide)))
                .collect::<Vec<_>>())
        })
        .await;
        let mut outcomes = match applied {
            Ok(outcomes) => outcomes,
            Err(e) => return envelopes.iter().map(|_| Err(shared(&e))).collect(),
        };
        if let Err(e) = self.commit.durable().await {
            for outcome in &mut outcomes {
                if outcome.is_ok() {
                    *outcome = Err(shared(&e));
                }
            }
        }
        outcomes
    }

    async fn get(&self, key: &RecordKey) -> Result<Option<ShareEnvelope>> {
        let (shares, key) = (self.shares.clone(), key.clone());
        blocking(move || {
            shares
                .get(key.as_bytes())?
                .map(|value| codec::decode(key.as_bytes(), &value))
                .transpose()
        })
        .await
    }

    async fn get_held(
        &self,
        key: &RecordKey,
    ) -> Result<Option<(ShareEnvelope, Vec<RetainedVersion>)>> {
        // The get path's fast lane: a small value is read and checked right here. Measured on
        // the 2-core bench machine, the hand-off to the blocking pool cost 0.17-0.23 ms of a
        // 1 KiB get, while sled answers from its page cache in microseconds; a cold page blocks
        // this worker for one disk read, the price of the fast lane. Large shares (checksums of
        // megabytes) still go to the blocking pool.
        match self.shares.get(key.as_bytes())? {
            None => return Ok(None),
            Some(value) if value.len() <= INLINE_READ_MAX => {
                let held = kept_under(&self.older, key.as_bytes(), value)?;
                return envelope_and_listing(key.as_bytes(), held);
            }
            Some(_) => {}
        }
        let (shares, older, key) = (self.shares.clone(), self.older.clone(), key.clone());
        blocking(
            move || match Self::held_blocking(&shares, &older, key.as_bytes())? {
                Some(held) => envelope_and_listing(key.as_bytes(), held),
                None => Ok(None),
            },
        )
        .await
    }

    async fn head(&self, key: &RecordKey) -> Result<Option<ListEntry>> {
        // Read on the calling task, like the get fast lane: the probe only parses the value's
        // leading header, and sled answers from its page cache.
        match self.shares.get(key.as_bytes())? {
            Some(value) => Ok(Some(codec::list_entry(key.as_bytes(), &value)?)),
            None => Ok(None),
        }
    }

    async fn get_version(
        &self,
        key: &RecordKey,
        version: Version,
    ) -> Result<Option<ShareEnvelope>> {
        let (shares, older, key) = (self.shares.clone(), self.older.clone(), key.clone());
        blocking(move || {
            let key = key.as_bytes();
            let Some((value, top, items)) = Self::held_blocking(&shares, &older, key)? else {
                return Ok(None);
            };
            if top.version == version {
                return codec::decode(key, &value).map(Some);
            }
            items
                .into_iter()
                .find(|(head, _)| head.version == version)
                .map(|(_, value)| codec::decode(key, &value))
                .transpose()
        })
        .await
    }

    async fn drop_tombstone(&self, key: &RecordKey, version: Version) -> Result<bool> {
        let (shares, older, locks, counters, key) = (
            self.shares.clone(),
            self.older.clone(),
            self.locks.clone(),
            self.counters.clone(),
            key.clone(),
        );
        blocking(move || {
            let key = key.as_bytes();
            let _guard = locks.lock(key);
            let Some(value) = shares.get(key)? else {
                return Ok(false);
            };
            let head = codec::head(key, &value)?;
            if !(head.tombstone && head.version == version) {
                return Ok(false);
            }
            // Not flushed: a tombstone that comes back after a crash is only compacted again.
            shares.remove(key)?;
            older.remove(key)?;
            counters.forget(&head);
            Ok(true)
        })
        .await
    }

    async fn commit(&self, key: &RecordKey, version: Version) -> Result<u32> {
        let trees = self.trees();
        let key = key.clone();
        blocking(move || commit_blocking(&trees, &key, version)).await
    }

    async fn commit_many(&self, commits: &[(RecordKey, Version)]) -> Result<u64> {
        // One hand-off for the batch: a commit's sled work is smaller than the hand-off.
        let trees = self.trees();
        let commits = commits.to_vec();
        blocking(move || {
            commits.iter().try_fold(0u64, |dropped, (key, version)| {
                Ok(dropped + u64::from(commit_blocking(&trees, key, *version)?))
            })
        })
        .await
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&RecordKey>,
        limit: usize,
    ) -> Result<Vec<ListEntry>> {
        let shares = self.shares.clone();
        let prefix = prefix.as_bytes().to_vec();
        let lower = match start_after {
            Some(after) if after.as_bytes() >= prefix.as_slice() => {
                Bound::Excluded(after.as_bytes().to_vec())
            }
            _ => Bound::Included(prefix.clone()),
        };
        blocking(move || {
            let mut entries = Vec::with_capacity(limit.min(1024));
            for item in shares.range::<Vec<u8>, _>((lower, Bound::Unbounded)) {
                if entries.len() >= limit {
                    break;
                }
                let (key, value) = item?;
                if !key.starts_with(&prefix) {
                    break;
                }
                entries.push(codec::list_entry(&key, &value)?);
            }
            Ok(entries)
        })
        .await
    }

    async fn stats(&self) -> Result<StoreStats> {
        Ok(self.counters.snapshot())
    }

    async fn flush(&self) -> Result<()> {
        self.db.flush_async().await?;
        Ok(())
    }

    async fn put_over_damage(&self, envelope: &ShareEnvelope) -> Result<PutOutcome> {
        self.put_with(envelope, codec::decide_over_damage).await
    }

    async fn inventory(
        &self,
        start_after: Option<&RecordKey>,
        limit: usize,
        bytes_max: u64,
    ) -> Result<InventoryPage> {
        let (shares, older) = (self.shares.clone(), self.older.clone());
        let lower = match start_after {
            Some(after) => Bound::Excluded(after.as_bytes().to_vec()),
            None => Bound::Unbounded,
        };
        blocking(move || {
            let mut page = InventoryPage::default();
            let mut bytes = 0u64;
            let mut rows = shares.range::<Vec<u8>, _>((lower, Bound::Unbounded));
            loop {
                if page.entries.len() >= limit || bytes >= bytes_max {
                    return Ok(page);
                }
                let Some(row) = rows.next() else {
                    page.exhausted = true;
                    return Ok(page);
                };
                let (key, value) = row?;
                bytes += value.len() as u64;
                let Some(mut entry) = codec::inventory_entry(&key, &value) else {
                    continue;
                };
                if let (Ok(top), Some(kept)) = (codec::head(&key, &value), older.get(&key)?) {
                    // A damaged list hides nothing repair needs: the head is still reported.
                    if let Ok(items) = retained::read(&key, Some(&kept), Some(&top)) {
                        entry.kept = retained::listing(&items);
                    }
                }
                page.entries.push(entry);
            }
        })
        .await
    }

    async fn stage(&self, refresh_id: SessionId, envelope: &ShareEnvelope) -> Result<()> {
        let value = codec::encode_staged(refresh_id, envelope)?;
        self.staged.insert(envelope.header.key.as_bytes(), value)?;
        self.commit.durable().await
    }

    async fn staged(&self, key: &RecordKey) -> Result<Option<(SessionId, ShareEnvelope)>> {
        let (staged, key) = (self.staged.clone(), key.clone());
        blocking(move || {
            staged
                .get(key.as_bytes())?
                .map(|value| codec::decode_staged(key.as_bytes(), &value))
                .transpose()
        })
        .await
    }

    async fn unstage(&self, key: &RecordKey, refresh_id: SessionId) -> Result<bool> {
        let Some(current) = self.staged.get(key.as_bytes())? else {
            return Ok(false);
        };
        if current.get(..16) != Some(&refresh_id.0[..]) {
            return Ok(false);
        }
        // Only this refresh's value: a newer stage of the same key is left alone.
        let removed = self
            .staged
            .compare_and_swap(key.as_bytes(), Some(current), None::<IVec>)?
            .is_ok();
        self.commit.durable().await?;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::super::conformance::Harness;
    use super::*;

    struct SledHarness {
        dir: tempfile::TempDir,
        store: std::sync::Mutex<Option<Arc<SledStore>>>,
    }

    impl SledHarness {
        fn new() -> Self {
            Self {
                dir: tempfile::tempdir().expect("tempdir"),
                store: std::sync::Mutex::new(None),
            }
        }

        async fn open_store(&self) -> Arc<SledStore> {
            let index = ShareIndex::new(1).expect("index");
            let store = Arc::new(
                SledStore::open(&self.dir.path().join("shares"), index)
                    .await
                    .expect("open"),
            );
            *self.store.lock().expect("lock") = Some(store.clone());
            store
        }
    }

    #[async_trait]
    impl Harness for SledHarness {
        async fn open(&self) -> Arc<dyn ShareStore> {
            self.open_store().await
        }

        async fn reopen(&self, store: Arc<dyn ShareStore>) -> Arc<dyn ShareStore> {
            drop(store);
            // The harness's own handle is the last one; dropping it releases sled's file lock.
            drop(self.store.lock().expect("lock").take());
            self.open_store().await
        }

        async fn corrupt(&self, key: &RecordKey, raw: &[u8]) {
            let store = self
                .store
                .lock()
                .expect("lock")
                .clone()
                .expect("open store");
            store.insert_raw(key.as_bytes(), raw).expect("insert raw");
        }
    }

    crate::share_store_conformance_tests!(SledHarness::new());

    fn index(i: u8) -> ShareIndex {
        ShareIndex::new(i).expect("index")
    }

    #[tokio::test]
    async fn a_store_created_for_another_index_refuses_to_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("shares");
        drop(SledStore::open(&path, index(1)).await.expect("create"));
        match SledStore::open(&path, index(2)).await {
            Err(Error::WrongIndex { expected, found }) => {
                assert_eq!((expected, found), (index(2), 1))
            }
            other => panic!("expected WrongIndex, got {other:?}"),
        }
        assert!(SledStore::open(&path, index(1)).await.is_ok());
    }

    #[tokio::test]
    async fn an_unknown_store_format_refuses_to_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("shares");
        {
            let db = sled::open(&path).expect("sled");
            let meta = db.open_tree("meta").expect("meta");
            meta.insert(META_FORMAT, &[99]).expect("insert");
            meta.insert(META_INDEX, &[1]).expect("insert");
            db.flush().expect("flush");
        }
        assert!(matches!(
            SledStore::open(&path, index(1)).await,
            Err(Error::StoreFormat { found: 99, .. })
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_puts_share_flushes() {
        const PUTS: u64 = 64;
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(
            SledStore::open(&dir.path().join("shares"), index(1))
                .await
                .expect("open"),
        );
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..PUTS {
            let store = store.clone();
            tasks.spawn(async move {
                let envelope = super::super::conformance::sample_share(
                    RecordKey::new(format!("k/{i}")).expect("key"),
                    bunsan_protocol::Version {
                        clock_micros: 1,
                        writer: bunsan_protocol::WriterId(1),
                    },
                    index(1),
                    &[1; 64],
                );
                store.put(&envelope).await.expect("put");
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("task");
        }
        assert_eq!(store.stats().await.expect("stats").records, PUTS);
        assert!(
            store.flushes() < PUTS / 2,
            "{} flushes for {PUTS} concurrent puts",
            store.flushes()
        );
    }
}
