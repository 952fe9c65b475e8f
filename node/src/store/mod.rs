//! The share store: per record key, the highest version envelope this node holds, and the
//! older versions it keeps under it until that one is known complete (module `retained`).
//!
//! [`ShareStore`] is a small async trait so that backends with very different engines fit
//! behind it: [`sled`] (the default, on local disk), [`memory`] (tests), and [`s3`], an
//! S3-compatible object store with conditional writes. Every backend must pass the one
//! [`conformance`] suite; Garage learnt that a trait with a shared suite is what makes
//! replacing a storage engine cheap.
//!
//! Stored values share one byte layout (module `codec`): a store format byte, a fixed header
//! (version, tombstone flag, record length) readable without decoding the share, a BLAKE3
//! checksum, then the envelope as [`ShareEnvelope::encode`] writes it. The header lets a put
//! compare versions and a listing build entries without touching payload bytes; the checksum
//! is checked on every read, the pair to the validation done before every write.

pub(crate) mod codec;
#[doc(hidden)]
pub mod conformance;
mod group_commit;
pub mod memory;
pub(crate) mod retained;
pub mod s3;
pub mod sled;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bunsan_protocol::envelope::ShareEnvelope;
use bunsan_protocol::message::{InventoryEntry, ListEntry, PutOutcome, RetainedVersion};
use bunsan_protocol::repair::SessionId;
use bunsan_protocol::{RecordKey, ShareIndex, Version};

use crate::config::{StoreBackend, StoreConfig};
use crate::error::Result;
use crate::objstore::ObjectSite;

/// A node's share store. Implementations are safe to share between tasks (`Arc<dyn ShareStore>`).
///
/// Invariants every backend keeps: for each key, the head is the envelope with the highest
/// version ever successfully put (tombstones included); an older data version replaced by a
/// newer data version stays readable by version until a [`ShareStore::commit`] of a newer
/// version the store holds, or a tombstone, removes it (module `retained`, at most
/// `RETAINED_MAX` per key); every acknowledged put survives a crash.
#[async_trait]
pub trait ShareStore: Send + Sync + 'static {
    /// Stores `envelope` if the store holds nothing for its key or an older version; atomic
    /// against concurrent puts of the same key.
    ///
    /// - newer than the stored version (or nothing stored): written, [`PutOutcome::Stored`],
    ///   or [`PutOutcome::StoredKeepingOlder`] when older data versions are kept under it;
    /// - same version, identical bytes: [`PutOutcome::AlreadyStored`] (an idempotent retry);
    /// - same version, different bytes: [`Error::Conflict`](crate::Error::Conflict);
    /// - older: [`PutOutcome::Superseded`] with the stored version, nothing written.
    ///
    /// Returns only once the outcome is durable (for the memory backend: visible). A tombstone
    /// replaces the stored share, so its payload is no longer readable through the store.
    async fn put(&self, envelope: &ShareEnvelope) -> Result<PutOutcome>;

    /// [`ShareStore::put`] of each of `envelopes`, with one outcome each, in order; returns
    /// once every outcome is durable. Envelopes of one key are put in the order given, so the
    /// outcomes are those of putting them one by one. The default runs different keys
    /// concurrently; a store can do better by sharing one hand-off and one flush among them.
    async fn put_many(&self, envelopes: &[&ShareEnvelope]) -> Vec<Result<PutOutcome>> {
        let mut by_key: std::collections::BTreeMap<&RecordKey, Vec<usize>> = Default::default();
        for (position, envelope) in envelopes.iter().enumerate() {
            by_key
                .entry(&envelope.header.key)
                .or_default()
                .push(position);
        }
        let keys = by_key.into_values().map(|positions| async move {
            let mut outcomes = Vec::with_capacity(positions.len());
            for position in positions {
                outcomes.push((position, self.put(envelopes[position]).await));
            }
            outcomes
        });
        let mut outcomes: Vec<Option<Result<PutOutcome>>> =
            envelopes.iter().map(|_| None).collect();
        for (position, outcome) in futures_util::future::join_all(keys)
            .await
            .into_iter()
            .flatten()
        {
            outcomes[position] = Some(outcome);
        }
        outcomes
            .into_iter()
            .map(|outcome| {
                outcome.unwrap_or_else(|| {
                    Err(crate::Error::StorageTask {
                        reason: "a put of the batch was not run".to_owned(),
                    })
                })
            })
            .collect()
    }

    /// The stored envelope for `key` (possibly a tombstone), decoded and checked; damaged bytes
    /// give [`Error::Corrupt`](crate::Error::Corrupt), never a panic.
    async fn get(&self, key: &RecordKey) -> Result<Option<ShareEnvelope>>;

    /// Like [`ShareStore::get`], with the older versions kept under the head, oldest first.
    async fn get_held(
        &self,
        key: &RecordKey,
    ) -> Result<Option<(ShareEnvelope, Vec<RetainedVersion>)>>;

    /// The highest version held for `key` (a tombstone included) without reading its share:
    /// what a get's version probe ([`Request::Head`](bunsan_protocol::message::Request::Head))
    /// answers. Damaged bytes give [`Error::Corrupt`](crate::Error::Corrupt).
    async fn head(&self, key: &RecordKey) -> Result<Option<ListEntry>>;

    /// The envelope of exactly `version` of `key`: the head or a kept older version, decoded
    /// and checked.
    async fn get_version(&self, key: &RecordKey, version: Version)
        -> Result<Option<ShareEnvelope>>;

    /// Removes the record's tombstone if the head of `key` is a tombstone of exactly `version`
    /// (compaction, once the tombstone outlived its retention); returns whether it did.
    /// Atomic against puts of the key.
    async fn drop_tombstone(&self, key: &RecordKey, version: Version) -> Result<bool>;

    /// `version` of `key` reached its write quorum: if this store holds it, the kept versions
    /// below it are dropped. Returns how many. Need not be durable when it returns: a lost
    /// commit only keeps more, and the next commit of the key catches up.
    async fn commit(&self, key: &RecordKey, version: Version) -> Result<u32>;

    /// [`ShareStore::commit`] of each (key, version) of `commits`, in order; returns how many
    /// kept versions were dropped in all. Stops at the first failure. The default commits one
    /// by one; a store can share one hand-off among them.
    async fn commit_many(&self, commits: &[(RecordKey, Version)]) -> Result<u64> {
        let mut dropped = 0;
        for (key, version) in commits {
            dropped += u64::from(self.commit(key, *version).await?);
        }
        Ok(dropped)
    }

    /// Up to `limit` entries whose keys start with `prefix` and sort after `start_after`, in
    /// key (byte) order, tombstones included.
    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&RecordKey>,
        limit: usize,
    ) -> Result<Vec<ListEntry>>;

    /// Counts and payload bytes, in O(1): counters are kept on every put and recomputed when
    /// the store is opened.
    async fn stats(&self) -> Result<StoreStats>;

    /// Makes everything written so far durable. Puts already are; this is for shutdown.
    async fn flush(&self) -> Result<()>;

    /// Like [`ShareStore::put`], except that a stored value failing its checks is replaced
    /// rather than refusing the put: for repair, which decided from every node's inventory
    /// which version belongs here. Durable before it returns.
    async fn put_over_damage(&self, envelope: &ShareEnvelope) -> Result<PutOutcome>;

    /// Reads and checks up to `limit` stored values after `start_after`, stopping early once
    /// `bytes_max` bytes were read. The order is the store's own stable order (key order for
    /// sled and memory, hash order for [`s3`]); `start_after` is the last key of the previous
    /// page, and paging that way yields every key exactly once. A page that is not the last
    /// holds at least one entry. Damaged values are reported as
    /// [`HeldShare::Corrupt`](bunsan_protocol::message::HeldShare::Corrupt) entries, not as an
    /// error of the whole page.
    async fn inventory(
        &self,
        start_after: Option<&RecordKey>,
        limit: usize,
        bytes_max: u64,
    ) -> Result<InventoryPage>;

    /// Keeps `envelope` (a refreshed share of the next epoch) beside the current one, under
    /// `refresh_id`, durably; replaces an earlier staged envelope of the same key.
    async fn stage(&self, refresh_id: SessionId, envelope: &ShareEnvelope) -> Result<()>;

    /// The staged envelope of `key` and its refresh id, if any.
    async fn staged(&self, key: &RecordKey) -> Result<Option<(SessionId, ShareEnvelope)>>;

    /// Removes the staged envelope of `key` if it belongs to `refresh_id`; returns whether one
    /// was removed. Durable before it returns.
    async fn unstage(&self, key: &RecordKey, refresh_id: SessionId) -> Result<bool>;
}

/// One page of [`ShareStore::inventory`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InventoryPage {
    /// Checked entries in the store's inventory order.
    pub entries: Vec<InventoryEntry>,
    /// True when the store holds nothing after these entries.
    pub exhausted: bool,
}

/// What a store holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Keys whose highest version is a live record.
    pub records: u64,
    /// Keys whose highest version is a tombstone.
    pub tombstones: u64,
    /// Share payload bytes of the live records.
    pub bytes: u64,
}

/// Opens the store `config` names for the node holding share `index`: a sled store lives in
/// `data_dir/shares`, an S3 store in the bucket of `config.s3`.
pub async fn open(
    config: &StoreConfig,
    data_dir: &Path,
    index: ShareIndex,
) -> Result<Arc<dyn ShareStore>> {
    Ok(match config.backend {
        StoreBackend::Sled => {
            Arc::new(sled::SledStore::open(&data_dir.join("shares"), index).await?)
        }
        StoreBackend::Memory => Arc::new(memory::MemoryStore::new()),
        StoreBackend::S3 => {
            let s3 = config.s3.as_ref().ok_or_else(|| crate::Error::Config {
                path: std::path::PathBuf::from("<store>"),
                reason: "store.backend = \"s3\" needs a [store.s3] table".to_owned(),
            })?;
            Arc::new(s3::S3Store::open(ObjectSite::connect(s3)?, index).await?)
        }
    })
}

/// The O(1) counters behind [`ShareStore::stats`], adjusted by the head that a put replaced
/// and the head it wrote.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    records: AtomicU64,
    tombstones: AtomicU64,
    bytes: AtomicU64,
}

impl Counters {
    /// Accounts for `new` replacing `old` (if any).
    pub(crate) fn replace(&self, old: Option<&codec::Head>, new: &codec::Head) {
        // Relaxed is enough: each counter is independent and only read for reporting.
        if let Some(old) = old {
            self.adjust(old, |counter, n| counter.fetch_sub(n, Ordering::Relaxed));
        }
        self.adjust(new, |counter, n| counter.fetch_add(n, Ordering::Relaxed));
    }

    /// Accounts for `old` removed without a replacement.
    pub(crate) fn forget(&self, old: &codec::Head) {
        self.adjust(old, |counter, n| counter.fetch_sub(n, Ordering::Relaxed));
    }

    fn adjust(&self, head: &codec::Head, op: impl Fn(&AtomicU64, u64) -> u64) {
        if head.tombstone {
            op(&self.tombstones, 1);
        } else {
            op(&self.records, 1);
            op(&self.bytes, head.record_len);
        }
    }

    pub(crate) fn snapshot(&self) -> StoreStats {
        StoreStats {
            records: self.records.load(Ordering::Relaxed),
            tombstones: self.tombstones.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }
}
