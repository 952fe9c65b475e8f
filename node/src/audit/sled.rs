//! The durable [`AuditStore`]: a sled database of its own in `data_dir/audit`.
//!
//! A database of its own, not a tree in the share store's: the audit log's flush then never
//! waits for share bytes (a 64 MiB put) to reach the disk, and the share store's code and
//! format stay untouched. Nothing is lost by not sharing the share store's group commit: a get
//! writes no share, and puts flush their share before the audit entry is appended.
//!
//! Trees: `entries` maps the big-endian sequence number to `format ‖ chain ‖ entry bytes`;
//! `checkpoints` maps the big-endian tree size to the signed note; `witnessed` maps a log's node
//! id to the newest checkpoint of it this node cosigned; `meta` holds the format and node id.
//! Appends are serialised by a lock, checked against the last key, written as one insert (one
//! entry) or one batch (several, all or nothing) and flushed before returning.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use bunsan_protocol::audit::AuditRecord;
use sled::Tree;

use super::store::AuditStore;
use crate::error::{Error, Result};
use crate::store::sled::blocking;

/// The format byte in front of every stored entry and in the meta tree.
const STORED_FORMAT: u8 = 1;

/// A sled-backed audit store.
pub struct SledAuditStore {
    db: sled::Db,
    entries: Tree,
    checkpoints: Tree,
    witnessed: Tree,
    append: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for SledAuditStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledAuditStore")
            .field("entries", &self.entries.len())
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
            Ok(Arc::new(Self {
                checkpoints: db.open_tree("checkpoints")?,
                witnessed: db.open_tree("witnessed")?,
                entries,
                db,
                append: tokio::sync::Mutex::new(()),
            }))
        })
        .await
    }

    /// Overwrites entry `seq` with `record`, bypassing every check: for tests of a node
    /// operator who rewrites the log offline.
    #[doc(hidden)]
    pub fn rewrite_raw(&self, seq: u64, record: &AuditRecord) -> Result<()> {
        self.entries.insert(seq.to_be_bytes(), encode(record))?;
        self.db.flush()?;
        Ok(())
    }

    /// Removes every stored checkpoint, bypassing the trait: the other half of a rewrite.
    #[doc(hidden)]
    pub fn remove_checkpoints(&self) -> Result<()> {
        self.checkpoints.clear()?;
        self.db.flush()?;
        Ok(())
    }

    fn len_now(&self) -> Result<u64> {
        match self.entries.last()? {
            Some((key, _)) => Ok(seq_of(&key)? + 1),
            None => Ok(0),
        }
    }
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
        let _one_writer = self.append.lock().await;
        let len = self.len_now()?;
        if first_seq != len {
            return Err(Error::AuditConflict {
                seq: first_seq,
                len,
            });
        }
        match records {
            // One entry, every batch at low load: a plain insert, which sled makes atomic on
            // its own. `apply_batch` would take sled's process-wide write lock, which waits for
            // every sled read and flush in progress in this process (the share store's
            // included) and makes every later sled operation take a lock too: it cost ~95 µs
            // of each 1 KiB get at concurrency 1, against ~8 µs for the insert.
            [record] => {
                self.entries
                    .insert(first_seq.to_be_bytes(), encode(record))?;
            }
            // Several entries must land all or none: only a batch gives that.
            _ => {
                let mut batch = sled::Batch::default();
                for (seq, record) in (first_seq..).zip(records) {
                    batch.insert(&seq.to_be_bytes(), encode(record));
                }
                self.entries.apply_batch(batch)?;
            }
        }
        self.flush().await?;
        Ok(())
    }

    async fn read(&self, from: u64, limit: usize) -> Result<Vec<AuditRecord>> {
        let entries = self.entries.clone();
        blocking(move || {
            entries
                .range(from.to_be_bytes()..)
                .take(limit)
                .map(|item| {
                    let (key, value) = item?;
                    decode(seq_of(&key)?, &value)
                })
                .collect()
        })
        .await
    }

    async fn size(&self) -> Result<u64> {
        self.len_now()
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
