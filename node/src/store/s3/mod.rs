//! The [`ShareStore`] on a site's S3-compatible object store (Ceph RGW, MinIO, Garage, AWS),
//! through [`ObjectSite`]: keyed-hash names, sealed bodies.
//!
//! ```text
//! meta/store                          [STORE_VALUE_FORMAT, share index], created once
//! shares/<hk>/<clock><writer><epoch>-<t|d><record_len>
//!          │    16 hex  16 hex  8 hex  flag  16 hex         one write-once object per
//!          └ hashed("share", key)                           (version, epoch) of a record
//! staged/<hk>                         the staged refresh of the key, replaced in place
//! ```
//!
//! Each body is sealed by [`ObjectSite`] with its name as associated data; inside is
//! `[OBJECT_FORMAT, key length (u16 BE), key, codec value]` (staged: the codec staged form).
//! The key is framed outside the codec value so a damaged value still names its record in
//! the inventory, as sled's tree key does.
//!
//! **Why the head is in the name.** Fixed-width hex makes name order (version, epoch) order,
//! so a put or a get lists one small folder and takes the last name. The tombstone flag and
//! record length let [`S3Store::open`] rebuild the counters from names alone, with no GET;
//! they tell the bucket's operator nothing the object's size and timing do not already.
//!
//! **Put.** Puts of one key in this process take a per-key lock (so the counters stay exact).
//! A put lists the folder, reads and checks the highest object (its name is trusted only once
//! its body opens under it: a garbage object must refuse a put, as damage does in sled, not
//! silently outrank it), and applies `codec::decide`. A newer value is written with
//! `If-None-Match: *`; `AlreadyExists` means another process wrote that very name, whose
//! bytes decide AlreadyStored or Conflict. Then the folder is listed again: a higher
//! (version, epoch) written meanwhile by another process makes this put
//! [`PutOutcome::Superseded`] (its own object is deleted); a sibling of the same (version,
//! epoch) under another name (different flag or length, so `If-None-Match` could not see it)
//! makes it [`Error::Conflict`] (deleted too; if both writers see each other both get the
//! conflict and neither version stays, which is right for two different envelopes signed with
//! one version); otherwise every lower object that is not kept (module `retained`: older data
//! versions under a new data version, until a commit) is deleted, so a tombstone removes every
//! older share. Whichever of two racing writers lists last sees the other, so every lower
//! object is deleted by someone. A failed delete is logged and retried by the key's next put
//! or commit; until then the leftover lingers under the newer object but is never served.
//!
//! **Kept versions** are simply the lower objects of the key's folder that
//! `retained::normalize` keeps: their names say everything a reader needs to be told, and a
//! commit deletes the objects below the committed version.
//!
//! Assumes the strong read-after-write and list-after-write consistency of AWS S3 (since
//! 2020), RGW, MinIO and Garage.
//!
//! **Costs.** A put is LIST + GET of the current object (if any) + PUT + LIST + DELETEs; an
//! update of a 64 MiB share reads the old 64 MiB once. A get is LIST + GET. `list` must return
//! keys in order but names are hashes: it lists every object and GETs the highest of every
//! key, O(objects) requests and bytes — an admin operation. `inventory` pages in hash order
//! (the store's own stable order) instead, so each page costs only its own objects.
//!
//! **Counters** come from names at open and from this process's own puts after; writes of
//! other processes serving the site show after a restart.
//!
//! An object that does not open (damaged, moved, sealed with another key) has no readable
//! key: `get` and `put` of its key give [`Error::Corrupt`] and `list` fails, but `inventory`
//! leaves it out with a warning, counted in [`S3Store::unreadable`]. Repair then sees the key
//! missing here and rewrites it with [`ShareStore::put_over_damage`], which deletes it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bunsan_protocol::envelope::ShareEnvelope;
use bunsan_protocol::message::{ListEntry, PutOutcome, RetainedVersion};
use bunsan_protocol::repair::SessionId;
use bunsan_protocol::{RecordKey, ShareIndex, Version};
use futures_util::{stream, StreamExt, TryStreamExt};

use super::codec::{self, Decision, Head, STORE_VALUE_FORMAT};
use super::{retained, Counters, InventoryPage, ShareStore, StoreStats};
use crate::error::{Error, Result};
use crate::objstore::{Created, ObjectSite};

mod layout;
use layout::{corrupt, frame, parse, staged_value, unframe, version_name, Versioned};

/// Names one LIST call returns: S3's own page size.
const LIST_PAGE: usize = 1000;
/// GETs in flight at once while listing: enough to hide latency, few enough that 64 MiB
/// shares do not pile up in memory (at most 16 × 64 MiB).
const FETCHES_IN_FLIGHT: usize = 16;
/// How often a read lists again when the object it listed vanished (a newer version's put
/// deleted it); more than a couple in a row means something keeps deleting.
const READ_ATTEMPTS: usize = 4;
/// Stripes of the per-key put lock: puts of different keys rarely wait on each other.
const KEY_LOCKS: usize = 64;
const META: &str = "meta/store";
const SITE: &str = "<store.s3>";

/// A key's highest object, and the heads of the objects below it (oldest first).
type Top = (Versioned, Vec<Head>);

/// A share store in an object-store bucket.
pub struct S3Store {
    site: ObjectSite,
    counters: Counters,
    locks: Vec<tokio::sync::Mutex<()>>,
    unreadable: AtomicU64,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store")
            .field("site", &self.site)
            .field("stats", &self.counters.snapshot())
            .finish_non_exhaustive()
    }
}

impl S3Store {
    /// Opens the store on `site` for the node holding share `index`: records the store format
    /// and index on first use and checks them after (node-2 pointed at node-1's bucket refuses
    /// to start), then rebuilds the counters from the object names.
    pub async fn open(site: ObjectSite, index: ShareIndex) -> Result<Self> {
        let meta = [STORE_VALUE_FORMAT, index.get()];
        let found = match site.create(META, &meta).await? {
            Created::New => meta.to_vec(),
            Created::AlreadyExists => site.get(META).await?.ok_or_else(|| Error::NotAStore {
                path: PathBuf::from(SITE),
                reason: "its meta/store object vanished while opening".to_owned(),
            })?,
        };
        match found[..] {
            [format, _] if format != STORE_VALUE_FORMAT => {
                return Err(Error::StoreFormat {
                    path: PathBuf::from(SITE),
                    found: format,
                    supported: STORE_VALUE_FORMAT,
                })
            }
            [_, found] if found != index.get() => {
                return Err(Error::WrongIndex {
                    expected: index,
                    found,
                })
            }
            [_, _] => {}
            _ => {
                return Err(Error::NotAStore {
                    path: PathBuf::from(SITE),
                    reason: "its meta/store object is malformed".to_owned(),
                })
            }
        }
        let store = Self {
            site,
            counters: Counters::default(),
            locks: (0..KEY_LOCKS)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            unreadable: AtomicU64::new(0),
        };
        for (top, _) in store.tops(None, usize::MAX).await?.0 {
            store.counters.replace(None, &top.head);
        }
        Ok(store)
    }

    /// Replaces the highest stored version of `key` on `site` with `raw` as its stored value,
    /// sealed and framed as this store writes it, bypassing every check: the conformance
    /// suite's `corrupt` for this backend, on an in-memory site or a real object store.
    #[doc(hidden)]
    pub async fn plant_raw_value(site: &ObjectSite, key: &RecordKey, raw: &[u8]) -> Result<()> {
        let hk = site.hashed("share", key.as_bytes());
        let top = site
            .list(&format!("shares/{hk}/"), None, usize::MAX)
            .await?
            .pop()
            .ok_or_else(|| Error::Corrupt {
                key: key.to_string(),
                reason: "no stored version to damage".to_owned(),
            })?;
        let body = site.seal(&top.name, &layout::frame(key.as_bytes(), raw))?;
        site.put_raw(&top.name, body).await
    }

    /// Every check a stored share object goes through after it was opened, on untrusted
    /// bytes: its name parsed, the frame split, the value decoded against the key inside it.
    /// For the fuzz targets and the never-panic tests; the result only says whether it passed.
    pub(crate) fn check_object(name: &str, body: &[u8]) -> bool {
        let listed = crate::objstore::Listed {
            name: name.to_owned(),
            size: body.len() as u64,
        };
        let top = layout::parse(listed);
        let framed = match &top {
            Some(top) => layout::unframe(top, body),
            None => layout::split_frame(name, body),
        };
        let Ok((key, value)) = framed else {
            return false;
        };
        let staged = RecordKey::from_bytes(key)
            .ok()
            .and_then(|record| layout::staged_value(name, &record, body).ok())
            .is_some_and(|staged| codec::decode_staged(key, staged).is_ok());
        codec::decode(key, value).is_ok() || staged
    }

    /// Objects this process's inventories left out because they did not open.
    pub fn unreadable(&self) -> u64 {
        self.unreadable.load(Ordering::Relaxed)
    }

    fn hk(&self, key: &RecordKey) -> String {
        self.site.hashed("share", key.as_bytes())
    }

    async fn lock(&self, hk: &str) -> tokio::sync::MutexGuard<'_, ()> {
        let stripe = usize::from_str_radix(&hk[..2], 16).unwrap_or(0) % KEY_LOCKS;
        self.locks[stripe].lock().await
    }

    /// Every version object of `hk`, in (version, epoch) order.
    async fn versions(&self, hk: &str) -> Result<Vec<Versioned>> {
        // A key has a version or two; `list` follows the server's pages itself.
        let listed = self
            .site
            .list(&format!("shares/{hk}/"), None, usize::MAX)
            .await?;
        Ok(listed.into_iter().filter_map(parse).collect())
    }

    /// The highest object of `hk` and its opened body (or why it does not open); lists again
    /// when the object vanished between the listing and the read.
    async fn load(&self, hk: &str) -> Result<Option<(Versioned, Result<Vec<u8>>)>> {
        for _ in 0..READ_ATTEMPTS {
            let Some(top) = self.versions(hk).await?.pop() else {
                return Ok(None);
            };
            match self.site.get(&top.name).await {
                Ok(Some(body)) => return Ok(Some((top, Ok(body)))),
                Ok(None) => continue,
                Err(e @ Error::Corrupt { .. }) => return Ok(Some((top, Err(e)))),
                Err(e) => return Err(e),
            }
        }
        Err(Error::ObjectStore {
            operation: "get",
            name: format!("shares/{hk}/"),
            reason: format!("the highest object vanished {READ_ATTEMPTS} times in a row"),
        })
    }

    /// The stored value of `key` from [`S3Store::load`], with the framing checked.
    async fn current(
        &self,
        key: &RecordKey,
        hk: &str,
    ) -> Result<Option<(Versioned, Result<Vec<u8>>)>> {
        Ok(self.load(hk).await?.map(|(top, body)| {
            let value = body.and_then(|body| {
                let (stored_key, value) = unframe(&top, &body)?;
                if stored_key != key.as_bytes() {
                    return Err(corrupt(&top.name, "object holds another record key"));
                }
                Ok(value.to_vec())
            });
            (top, value)
        }))
    }

    /// The highest object of every key after `offset` with the heads of the objects below it,
    /// in hash order: at most `want` keys, and whether no key follows them.
    async fn tops(&self, offset: Option<String>, want: usize) -> Result<(Vec<Top>, bool)> {
        let mut tops: Vec<Top> = Vec::new();
        let mut offset = offset;
        loop {
            let page = self
                .site
                .list("shares/", offset.as_deref(), LIST_PAGE)
                .await?;
            let full = page.len() == LIST_PAGE;
            offset = page.last().map(|listed| listed.name.clone());
            for version in page.into_iter().filter_map(parse) {
                // Name order within a key is (version, epoch) order: the last one wins.
                if let Some((top, lower)) = tops.last_mut().filter(|(t, _)| t.hk == version.hk) {
                    lower.push(top.head);
                    *top = version;
                    continue;
                }
                if tops.len() == want {
                    return Ok((tops, false));
                }
                tops.push((version, Vec::new()));
            }
            if !full {
                return Ok((tops, true));
            }
        }
    }

    /// An atomic put-if-newer with `decide` (see the module doc for the steps).
    async fn put_with(&self, envelope: &ShareEnvelope, over_damage: bool) -> Result<PutOutcome> {
        let decide: codec::DecideFn = match over_damage {
            true => codec::decide_over_damage,
            false => codec::decide,
        };
        let value = codec::encode(envelope)?;
        let head = Head::of(envelope);
        let epoch = envelope.epoch();
        let slot = (head.version, epoch);
        let key = &envelope.header.key;
        let hk = self.hk(key);
        let ours = Versioned {
            name: version_name(&hk, slot, &head),
            hk: hk.clone(),
            slot,
            head,
            size: 0,
        };
        let _guard = self.lock(&hk).await;
        let mut replaced = None;
        if let Some((top, current)) = self.current(key, &hk).await? {
            let decision = match current {
                Ok(current) => decide(key, Some(&current), &head, epoch, &value)?,
                // An object that does not open: only a repair's put may replace it.
                Err(e) if !over_damage => return Err(e),
                Err(_) => Decision::Write {
                    replaced: None,
                    keep_replaced: false,
                },
            };
            if let Decision::Keep(outcome) = decision {
                return Ok(outcome);
            }
            // Writing at or below the highest object only happens over damage: remove it.
            if top.slot >= slot {
                self.site.delete(&top.name).await?;
            }
            // The counters counted names, so the name's head is what they must forget.
            replaced = Some(top.head);
        }
        let outcome = self.create(key, &ours, epoch, &value).await?;
        if matches!(
            outcome,
            PutOutcome::Stored | PutOutcome::StoredKeepingOlder { .. }
        ) {
            self.counters.replace(replaced.as_ref(), &head);
        }
        Ok(outcome)
    }

    /// Writes `value` as the new object `ours` with `If-None-Match: *`, then settles races
    /// with other processes and deletes the lower versions (see the module doc).
    async fn create(
        &self,
        key: &RecordKey,
        ours: &Versioned,
        epoch: u32,
        value: &[u8],
    ) -> Result<PutOutcome> {
        let (name, head, slot) = (&ours.name, &ours.head, ours.slot);
        let body = frame(key.as_bytes(), value);
        if self.site.create(name, &body).await? == Created::AlreadyExists {
            // Another process wrote this very name; its bytes decide.
            let Some(theirs) = self.site.get(name).await? else {
                return Err(Error::ObjectStore {
                    operation: "create",
                    name: name.clone(),
                    reason: "a concurrent writer's object vanished".to_owned(),
                });
            };
            let (stored_key, theirs) = unframe(ours, &theirs)?;
            if stored_key != key.as_bytes() {
                return Err(corrupt(name, "object holds another record key"));
            }
            return match codec::decide(key, Some(theirs), head, epoch, value)? {
                Decision::Keep(outcome) => Ok(outcome),
                Decision::Write { .. } => Err(Error::Conflict {
                    key: key.clone(),
                    version: head.version,
                }),
            };
        }
        let versions = self.versions(&ours.hk).await?;
        if let Some(higher) = versions.iter().rfind(|v| v.slot > slot) {
            self.site.delete(name).await?;
            return Ok(PutOutcome::Superseded {
                current: higher.slot.0,
            });
        }
        if versions.iter().any(|v| v.slot == slot && v.name != *name) {
            self.site.delete(name).await?;
            return Err(Error::Conflict {
                key: key.clone(),
                version: head.version,
            });
        }
        let lower: Vec<Versioned> = versions.into_iter().filter(|v| v.slot < slot).collect();
        let kept = Self::kept(lower.clone(), head);
        for older in lower.iter().filter(|v| !kept.contains(v)) {
            if let Err(e) = self.site.delete(&older.name).await {
                tracing::warn!(error = %e, "an older version object was not deleted; the next put retries");
            }
        }
        Ok(match kept.len() as u32 {
            0 => PutOutcome::Stored,
            retained => PutOutcome::StoredKeepingOlder { retained },
        })
    }

    /// The objects among `lower` (sorted, all below `top`) kept under `top` (module
    /// `retained`); the others are leftovers any put or commit of the key may delete.
    fn kept(lower: Vec<Versioned>, top: &Head) -> Vec<Versioned> {
        let items = lower.into_iter().map(|v| (v.head, v)).collect();
        retained::normalize(items, Some(top))
            .into_iter()
            .map(|(_, v)| v)
            .collect()
    }

    /// Reads and checks the envelope in object `listed` of `key`; `None` if it vanished.
    async fn open_share(
        &self,
        key: &RecordKey,
        listed: &Versioned,
    ) -> Result<Option<ShareEnvelope>> {
        let Some(body) = self.site.get(&listed.name).await? else {
            return Ok(None);
        };
        let (stored_key, value) = unframe(listed, &body)?;
        if stored_key != key.as_bytes() {
            return Err(corrupt(&listed.name, "object holds another record key"));
        }
        let envelope = codec::decode(key.as_bytes(), value)?;
        if (envelope.header.version, envelope.epoch()) != listed.slot {
            return Err(corrupt(
                &listed.name,
                "object name disagrees with its envelope",
            ));
        }
        Ok(Some(envelope))
    }

    /// The highest object of `key` opened, and the objects kept under it; lists again when
    /// the object vanished between the listing and the read.
    async fn held(&self, key: &RecordKey) -> Result<Option<(ShareEnvelope, Vec<Versioned>)>> {
        let hk = self.hk(key);
        for _ in 0..READ_ATTEMPTS {
            let mut versions = self.versions(&hk).await?;
            let Some(top) = versions.pop() else {
                return Ok(None);
            };
            if let Some(envelope) = self.open_share(key, &top).await? {
                return Ok(Some((envelope, Self::kept(versions, &top.head))));
            }
        }
        Err(Error::ObjectStore {
            operation: "get",
            name: format!("shares/{hk}/"),
            reason: format!("the highest object vanished {READ_ATTEMPTS} times in a row"),
        })
    }

    /// The opened body of a listed object, reloading its key's highest when it vanished.
    async fn fetch(&self, top: Versioned) -> Result<Option<(Versioned, Result<Vec<u8>>)>> {
        match self.site.get(&top.name).await {
            Ok(Some(body)) => Ok(Some((top, Ok(body)))),
            Ok(None) => self.load(&top.hk).await,
            Err(e @ Error::Corrupt { .. }) => Ok(Some((top, Err(e)))),
            Err(e) => Err(e),
        }
    }
}

#[async_trait]
impl ShareStore for S3Store {
    async fn put(&self, envelope: &ShareEnvelope) -> Result<PutOutcome> {
        self.put_with(envelope, false).await
    }

    async fn get(&self, key: &RecordKey) -> Result<Option<ShareEnvelope>> {
        let Some((top, value)) = self.current(key, &self.hk(key)).await? else {
            return Ok(None);
        };
        let envelope = codec::decode(key.as_bytes(), &value?)?;
        if (envelope.header.version, envelope.epoch()) != top.slot {
            return Err(corrupt(
                &top.name,
                "object name disagrees with its envelope",
            ));
        }
        Ok(Some(envelope))
    }

    async fn head(&self, key: &RecordKey) -> Result<Option<ListEntry>> {
        match self.current(key, &self.hk(key)).await? {
            Some((_, value)) => Ok(Some(codec::list_entry(key.as_bytes(), &value?)?)),
            None => Ok(None),
        }
    }

    async fn get_held(
        &self,
        key: &RecordKey,
    ) -> Result<Option<(ShareEnvelope, Vec<RetainedVersion>)>> {
        Ok(self.held(key).await?.map(|(envelope, kept)| {
            let items: Vec<_> = kept.into_iter().map(|v| (v.head, ())).collect();
            (envelope, retained::listing(&items))
        }))
    }

    async fn get_version(
        &self,
        key: &RecordKey,
        version: Version,
    ) -> Result<Option<ShareEnvelope>> {
        let Some((envelope, kept)) = self.held(key).await? else {
            return Ok(None);
        };
        if envelope.header.version == version {
            return Ok(Some(envelope));
        }
        match kept.iter().find(|v| v.slot.0 == version) {
            // Gone since the listing: a commit dropped it, as if it had never been kept.
            Some(listed) => self.open_share(key, listed).await,
            None => Ok(None),
        }
    }

    async fn drop_tombstone(&self, key: &RecordKey, version: Version) -> Result<bool> {
        let hk = self.hk(key);
        let _guard = self.lock(&hk).await;
        let versions = self.versions(&hk).await?;
        let Some(top) = versions.last() else {
            return Ok(false);
        };
        if !(top.head.tombstone && top.slot.0 == version) {
            return Ok(false);
        }
        // Lower leftovers first, the tombstone last: an interrupted compaction never leaves an
        // older share without the tombstone above it.
        for listed in versions.iter().rev().skip(1).chain(std::iter::once(top)) {
            self.site.delete(&listed.name).await?;
        }
        self.counters.forget(&top.head);
        Ok(true)
    }

    async fn commit(&self, key: &RecordKey, version: Version) -> Result<u32> {
        let hk = self.hk(key);
        let _guard = self.lock(&hk).await;
        let mut versions = self.versions(&hk).await?;
        let Some(top) = versions.pop() else {
            return Ok(0);
        };
        let mut items: Vec<_> = Self::kept(versions.clone(), &top.head)
            .into_iter()
            .map(|v| (v.head, ()))
            .collect();
        if !retained::holds(&items, Some(&top.head), version) {
            return Ok(0);
        }
        // Every object below the committed version goes: the kept ones and any leftover a put
        // failed to delete.
        for lower in versions.iter().filter(|v| v.slot.0 < version) {
            self.site.delete(&lower.name).await?;
        }
        Ok(retained::commit(&mut items, Some(&top.head), version))
    }

    async fn list(
        &self,
        prefix: &str,
        start_after: Option<&RecordKey>,
        limit: usize,
    ) -> Result<Vec<ListEntry>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let (tops, _) = self.tops(None, usize::MAX).await?;
        let mut entries: Vec<ListEntry> = stream::iter(tops)
            .map(|(top, _)| self.fetch(top))
            .buffer_unordered(FETCHES_IN_FLIGHT)
            .try_filter_map(|loaded| async move {
                let Some((top, body)) = loaded else {
                    return Ok(None);
                };
                // An object that does not open might be under the prefix: the listing fails.
                let body = body?;
                let (key, value) = unframe(&top, &body)?;
                let wanted = key.starts_with(prefix.as_bytes())
                    && start_after.is_none_or(|after| key > after.as_bytes());
                wanted.then(|| codec::list_entry(key, value)).transpose()
            })
            .try_collect()
            .await?;
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        entries.truncate(limit);
        Ok(entries)
    }

    async fn stats(&self) -> Result<StoreStats> {
        Ok(self.counters.snapshot())
    }

    async fn flush(&self) -> Result<()> {
        // Every write is durable when its PUT or DELETE returns.
        Ok(())
    }

    async fn put_over_damage(&self, envelope: &ShareEnvelope) -> Result<PutOutcome> {
        self.put_with(envelope, true).await
    }

    async fn inventory(
        &self,
        start_after: Option<&RecordKey>,
        limit: usize,
        bytes_max: u64,
    ) -> Result<InventoryPage> {
        let mut page = InventoryPage::default();
        // Past every object of the previous page's last key: 'z' sorts after every name in
        // the folder ('~' would be percent-encoded by object_store, and sort first).
        let mut offset = start_after.map(|key| format!("shares/{}/z", self.hk(key)));
        let mut bytes = 0u64;
        while page.entries.len() < limit && (bytes < bytes_max || page.entries.is_empty()) {
            let (mut tops, exhausted) = self
                .tops(offset.clone(), limit - page.entries.len())
                .await?;
            // Object sizes bound the bytes before they are read; always at least one.
            let mut taken = 0;
            let mut budget = bytes;
            while taken < tops.len() && (taken == 0 || budget < bytes_max) {
                budget += tops[taken].0.size;
                taken += 1;
            }
            let complete = exhausted && taken == tops.len();
            tops.truncate(taken);
            offset = tops
                .last()
                .map(|(top, _)| format!("shares/{}/z", top.hk))
                .or(offset);
            bytes = budget;
            let loaded: Vec<_> = stream::iter(tops)
                .map(|(top, lower)| async move {
                    Ok::<_, Error>(self.fetch(top).await?.map(|loaded| (loaded, lower)))
                })
                .buffered(FETCHES_IN_FLIGHT)
                .try_collect()
                .await?;
            for ((top, body), lower) in loaded.into_iter().flatten() {
                let kept = retained::normalize(
                    lower.into_iter().map(|head| (head, ())).collect(),
                    Some(&top.head),
                );
                match body.and_then(|body| {
                    let (key, value) = unframe(&top, &body)?;
                    Ok(codec::inventory_entry(key, value))
                }) {
                    Ok(Some(mut entry)) => {
                        entry.kept = retained::listing(&kept);
                        page.entries.push(entry);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        self.unreadable.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, "an object that does not open left out of the inventory");
                    }
                }
            }
            if complete {
                page.exhausted = true;
                break;
            }
        }
        Ok(page)
    }

    async fn stage(&self, refresh_id: SessionId, envelope: &ShareEnvelope) -> Result<()> {
        let key = &envelope.header.key;
        let hk = self.hk(key);
        let body = frame(key.as_bytes(), &codec::encode_staged(refresh_id, envelope)?);
        let _guard = self.lock(&hk).await;
        self.site.replace(&format!("staged/{hk}"), &body).await
    }

    async fn staged(&self, key: &RecordKey) -> Result<Option<(SessionId, ShareEnvelope)>> {
        let name = format!("staged/{}", self.hk(key));
        let Some(body) = self.site.get(&name).await? else {
            return Ok(None);
        };
        let value = staged_value(&name, key, &body)?;
        codec::decode_staged(key.as_bytes(), value).map(Some)
    }

    async fn unstage(&self, key: &RecordKey, refresh_id: SessionId) -> Result<bool> {
        let hk = self.hk(key);
        let name = format!("staged/{hk}");
        // The lock keeps a newer stage by this process; S3 has no conditional delete, so a
        // stage of the same key by another process at this instant could be removed too.
        let _guard = self.lock(&hk).await;
        let Some(body) = self.site.get(&name).await? else {
            return Ok(false);
        };
        if staged_value(&name, key, &body)?.get(..16) != Some(&refresh_id.0[..]) {
            return Ok(false);
        }
        self.site.delete(&name).await?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests;
