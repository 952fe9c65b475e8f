//! The durable [`AuditStore`]: in `data_dir/audit`, entries in an append-only journal file
//! (module `journal`), everything else in a small sled database beside it.
//!
//! Entries go to a file of their own because every share release waits for its entry to be
//! durable, and a write plus `fdatasync` of that file costs a third of a sled flush (D17 in
//! docs/DECISIONS.md). Checkpoints and witness state are rare, small and replaced in place:
//! sled keeps them. The store is a database of its own, not trees in the share store's: the
//! audit log's flush then never waits for share bytes (a 64 MiB put) to reach the disk.
//!
//! `entries.journal` holds `format ‖ chain ‖ entry bytes` per entry, in sequence order. Sled
//! trees: `checkpoints` maps the big-endian tree size to the signed note; `witnessed` maps a
//! log's node id to the newest checkpoint of it this node cosigned; `meta` holds the format,
//! the node id and `entries = journal`. A store from before the journal kept its entries in a
//! sled tree `entries`; opening it copies them into the journal once (the tree is emptied only
//! after the journal and the marker are durable, so a crash mid-way copies again).

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use bunsan_protocol::audit::AuditRecord;
use sled::Tree;

use super::journal::Journal;
use super::store::AuditStore;
use crate::error::{Error, Result};
use crate::store::sled::blocking;

/// The journal's file name inside the store directory.
const JOURNAL_FILE: &str = "entries.journal";

/// The format byte in front of every stored entry and in the meta tree.
const STORED_FORMAT: u8 = 1;

/// A sled-backed audit store.
pub struct SledAuditStore {
    db: sled::Db,
    journal: Arc<Journal>,
    checkpoints: Tree,
    witnessed: Tree,
}

impl std::fmt::Debug for SledAuditStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledAuditStore")
            .field("entries", &self.journal.count())
            .finish_non_exhaustive()
    }
}

impl SledAuditStore {
    /// Makes everything written durable. `Db::flush` on tokio's blocking pool rather than
    /// sled's `flush_async`, which runs on sled's own pool, whose threads end after a few
    /// tasks: every few audit appends started a new OS thread (as the share store found).
    async fn flush(&self) -> Result<()> {
        let db = self.db.clone();
        blocking(move || db.flush().map(drop).map_err(Error::from)).await
    }

    /// Opens (or creates) the audit store at `path` for node `node_id`; refuses a store of
    /// another node or format, and a store another process holds open.
    pub async fn open(path: &Path, node_id: &str) -> Result<Arc<Self>> {
        let (path, node_id) = (path.to_owned(), node_id.to_owned());
        blocking(move || {
            create_private_dir(&path)?;
            let db = sled::Config::new().path(&path).open()?;
            let meta = db.open_tree("meta")?;
            let entries = db.open_tree("entries")?;
            let not_ours = |reason: String| Error::NotAStore {
                path: path.clone(),
                reason,
            };
            match (meta.get("format")?, meta.get("node")?) {
                (None, None) if entries.is_empty() => {
                    meta.insert("format", &[STORED_FORMAT])?;
                    meta.insert("node", node_id.as_bytes())?;
                    meta.flush()?;
                }
                (Some(format), Some(node)) => {
                    if *format != [STORED_FORMAT] {
                        return Err(Error::StoreFormat {
                            path: path.clone(),
                            found: format.first().copied().unwrap_or(0),
                            supported: STORED_FORMAT,
                        });
                    }
                    if *node != *node_id.as_bytes() {
                        return Err(not_ours(format!(
                            "it is the audit log of {}, not of {node_id}",
                            String::from_utf8_lossy(&node)
                        )));
                    }
                }
                _ => return Err(not_ours("its audit metadata is incomplete".to_owned())),
            }
            let journal = Journal::open(&path.join(JOURNAL_FILE))?;
            if meta.get("entries")?.as_deref() != Some(b"journal") {
                migrate(&entries, &journal)?;
                meta.insert("entries", "journal")?;
                meta.flush()?;
            }
            if !entries.is_empty() {
                entries.clear()?;
                db.flush()?;
            }
            Ok(Arc::new(Self {
                checkpoints: db.open_tree("checkpoints")?,
                witnessed: db.open_tree("witnessed")?,
                journal: Arc::new(journal),
                db,
            }))
        })
        .await
    }

    /// Overwrites entry `seq` with `record`, bypassing every check: for tests of a node
    /// operator who rewrites the log offline.
    #[doc(hidden)]
    pub fn rewrite_raw(&self, seq: u64, record: &AuditRecord) -> Result<()> {
        let mut all = self.journal.read(0, usize::MAX)?;
        let slot = all.get_mut(seq as usize).ok_or(Error::AuditConflict {
            seq,
            len: self.journal.count(),
        })?;
        *slot = encode(record);
        self.journal.replace_all(&all)
    }

    /// Removes every stored checkpoint, bypassing the trait: the other half of a rewrite.
    #[doc(hidden)]
    pub fn remove_checkpoints(&self) -> Result<()> {
        self.checkpoints.clear()?;
        self.db.flush()?;
        Ok(())
    }
}

/// Copies the entries a store from before the journal kept in its `entries` tree into the
/// journal (replacing whatever an interrupted copy left there), checking that they are
/// numbered without gaps.
fn migrate(entries: &Tree, journal: &Journal) -> Result<()> {
    let mut payloads = Vec::with_capacity(entries.len());
    for (expected, item) in (0u64..).zip(entries.iter()) {
        let (key, value) = item?;
        let seq = seq_of(&key)?;
        if seq != expected {
            return Err(Error::AuditCorrupt {
                seq: expected,
                reason: format!("the entries tree skips from {expected} to {seq}"),
            });
        }
        decode(seq, &value)?;
        payloads.push(value.to_vec());
    }
    if !payloads.is_empty() {
        tracing::info!(
            entries = payloads.len(),
            "moving the audit entries from sled into the journal file"
        );
    }
    journal.replace_all(&payloads)
}

/// Creates the store directory with mode 0700: the log names who read which record.
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

fn encode(record: &AuditRecord) -> Vec<u8> {
    let mut value = Vec::with_capacity(1 + 32 + record.entry.len());
    value.push(STORED_FORMAT);
    value.extend_from_slice(&record.chain);
    value.extend_from_slice(&record.entry);
    value
}

fn decode(seq: u64, value: &[u8]) -> Result<AuditRecord> {
    let corrupt = |reason: &str| Error::AuditCorrupt {
        seq,
        reason: reason.to_owned(),
    };
    let Some((&format, rest)) = value.split_first() else {
        return Err(corrupt("empty value"));
    };
    if format != STORED_FORMAT {
        return Err(corrupt("unknown format byte"));
    }
    let Some((chain, entry)) = rest.split_first_chunk::<32>() else {
        return Err(corrupt("shorter than its chain value"));
    };
    Ok(AuditRecord {
        entry: entry.to_vec(),
        chain: *chain,
    })
}

fn seq_of(key: &[u8]) -> Result<u64> {
    let bytes: [u8; 8] = key.try_into().map_err(|_| Error::AuditCorrupt {
        seq: u64::MAX,
        reason: format!("a key of {} bytes is not a sequence number", key.len()),
    })?;
    Ok(u64::from_be_bytes(bytes))
}

fn text(value: sled::IVec) -> Result<String> {
    String::from_utf8(value.to_vec()).map_err(|_| Error::AuditCorrupt {
        seq: u64::MAX,
        reason: "a stored note is not UTF-8".to_owned(),
    })
}

#[async_trait]
impl AuditStore for SledAuditStore {
    async fn append(&self, first_seq: u64, records: &[AuditRecord]) -> Result<()> {
        let payloads: Vec<Vec<u8>> = records.iter().map(encode).collect();
        let journal = self.journal.clone();
        blocking(move || journal.append(first_seq, &payloads)).await
    }

    async fn read(&self, from: u64, limit: usize) -> Result<Vec<AuditRecord>> {
        let journal = self.journal.clone();
        blocking(move || {
            (journal.read(from, limit)?.iter().enumerate())
                .map(|(i, payload)| decode(from + i as u64, payload))
                .collect()
        })
        .await
    }

    async fn size(&self) -> Result<u64> {
        Ok(self.journal.count())
    }

    async fn put_checkpoint(&self, size: u64, note: &str) -> Result<()> {
        self.checkpoints
            .insert(size.to_be_bytes(), note.as_bytes())?;
        self.flush().await?;
        Ok(())
    }

    async fn checkpoint(&self, size: u64) -> Result<Option<String>> {
        self.checkpoints
            .get(size.to_be_bytes())?
            .map(text)
            .transpose()
    }

    async fn checkpoints(&self, from_size: u64, limit: usize) -> Result<Vec<String>> {
        self.checkpoints
            .range(from_size.to_be_bytes()..)
            .take(limit)
            .map(|item| text(item?.1))
            .collect()
    }

    async fn latest_checkpoint(&self) -> Result<Option<String>> {
        self.checkpoints.last()?.map(|(_, v)| text(v)).transpose()
    }

    async fn put_witnessed(&self, log: &str, note: &str) -> Result<()> {
        self.witnessed.insert(log.as_bytes(), note.as_bytes())?;
        self.flush().await?;
        Ok(())
    }

    async fn witnessed(&self) -> Result<Vec<(String, String)>> {
        self.witnessed
            .iter()
            .map(|item| {
                let (log, note) = item?;
                Ok((text(log)?, text(note)?))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::conformance::{run_all, Harness};
    use super::*;

    struct SledHarness(tempfile::TempDir);

    #[async_trait]
    impl Harness for SledHarness {
        async fn open(&self) -> Arc<dyn AuditStore> {
            SledAuditStore::open(&self.0.path().join("audit"), "node-1")
                .await
                .expect("open")
        }

        async fn reopen(&self, store: Arc<dyn AuditStore>) -> Arc<dyn AuditStore> {
            drop(store);
            self.open().await
        }
    }

    #[tokio::test]
    async fn the_sled_store_passes_the_conformance_suite() {
        run_all(&SledHarness(tempfile::tempdir().expect("tempdir"))).await;
    }

    /// A store written before the journal (entries in the sled tree, no marker) opens with
    /// every entry moved into the journal, once, and goes on from there.
    #[tokio::test]
    async fn entries_of_a_store_from_before_the_journal_move_into_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit");
        let records: Vec<AuditRecord> = (0..5u8)
            .map(|i| AuditRecord {
                entry: vec![i; 10 + usize::from(i)],
                chain: [i; 32],
            })
            .collect();
        {
            let db = sled::Config::new().path(&path).open().expect("sled");
            let meta = db.open_tree("meta").expect("meta");
            meta.insert("format", &[STORED_FORMAT]).expect("format");
            meta.insert("node", "node-1").expect("node");
            let entries = db.open_tree("entries").expect("entries");
            for (seq, record) in (0u64..).zip(&records) {
                entries
                    .insert(seq.to_be_bytes(), encode(record))
                    .expect("insert");
            }
            db.flush().expect("flush");
        }
        let store = SledAuditStore::open(&path, "node-1").await.expect("open");
        assert_eq!(store.size().await.expect("size"), 5);
        assert_eq!(store.read(0, 10).await.expect("read"), records);
        store.append(5, &records[..1]).await.expect("append");
        drop(store);
        let store = SledAuditStore::open(&path, "node-1").await.expect("reopen");
        assert_eq!(store.size().await.expect("size"), 6);
        assert_eq!(store.read(5, 1).await.expect("read"), records[..1]);
    }

    #[tokio::test]
    async fn a_store_of_another_node_refuses_to_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit");
        drop(SledAuditStore::open(&path, "node-1").await.expect("create"));
        assert!(matches!(
            SledAuditStore::open(&path, "node-2").await,
            Err(Error::NotAStore { .. })
        ));
    }
}
