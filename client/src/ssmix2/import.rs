//! Walking an SS-MIX2 tree and uploading what the collector has not uploaded yet.
//!
//! ```text
//! walk ROOT ─▶ Document::parse ─▶ record key ─▶ state: same size and mtime? ─▶ skipped
//!   (not SS-MIX2: ignored)                           │ no
//!                                                    ▼
//!                                  read, BLAKE3 ─▶ state: same hash? ─▶ skipped (state updated)
//!                                                    │ no
//!                                                    ▼
//!                                  Client::put ─▶ uploaded (state appended) | failed
//! ```
//!
//! Up to `jobs` documents are read and uploaded at once; each is one record (SS-MIX2
//! messages are kilobytes, far below the 64 MiB record limit). A failed document is counted
//! and reported, and the run goes on; it is retried by the next run because the state file
//! only ever records successes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use bunsan_protocol::envelope::RECORD_MAX_BYTES;
use bunsan_protocol::RecordKey;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::task::JoinSet;

use super::state::{Entry, State};
use super::{Document, PseudonymKey};
use crate::client::Client;
use crate::error::{Error, Result};

/// How a collector run goes.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// The SS-MIX2 standardized storage root (the directory holding the 3-character hash
    /// directories).
    pub root: PathBuf,
    /// Put before every record key, e.g. `ssmix2/clinic-7`; may be empty.
    pub prefix: String,
    /// The collector's state file (created if missing).
    pub state: PathBuf,
    /// Documents read and uploaded at once.
    pub jobs: usize,
    /// Draw a progress bar on standard error (only when it is a terminal).
    pub progress: bool,
}

/// What a run did. `found = uploaded + skipped + failed`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Documents in the tree that follow the SS-MIX2 layout.
    pub found: u64,
    /// Documents stored in the cluster by this run.
    pub uploaded: u64,
    /// Of those, documents stored on fewer than all n nodes (durable on W; repair restores).
    pub under_replicated: u64,
    /// Documents already uploaded by an earlier run, unchanged since.
    pub skipped: u64,
    /// Documents that could not be read or stored; the next run tries them again.
    pub failed: u64,
    /// Files that are not SS-MIX2 documents (wrong depth or name); never uploaded.
    pub ignored: u64,
    /// Bytes uploaded by this run.
    pub bytes_uploaded: u64,
    /// The failed documents (path relative to the root) and why, at most
    /// [`FAILURES_KEPT`] of them.
    pub failures: Vec<(PathBuf, String)>,
}

/// The most failures an [`ImportReport`] lists one by one; the count covers all of them.
pub const FAILURES_KEPT: usize = 100;

/// Walks `options.root`, uploads every document not uploaded before through `client`
/// (which must carry a collector identity), and returns the counts. Fails as a whole only if
/// the tree cannot be walked or the state file cannot be read or written; a document that
/// fails is counted in the report.
pub async fn import(
    client: Arc<Client>,
    key: &PseudonymKey,
    options: &ImportOptions,
) -> Result<ImportReport> {
    let mut report = ImportReport::default();
    let mut state = State::open(&options.state)?;
    let mut documents = Vec::new();
    for relative in walk(&options.root)? {
        match Document::parse(&relative) {
            Ok(document) => documents.push(document),
            Err(reason) => {
                tracing::warn!(%reason, "ignored");
                report.ignored += 1;
            }
        }
    }
    report.found = documents.len() as u64;
    let progress = progress_bar(options.progress, report.found);
    let jobs = options.jobs.max(1);
    let mut pending = documents.into_iter();
    let mut running = JoinSet::new();
    loop {
        while running.len() < jobs {
            let Some(document) = pending.next() else {
                break;
            };
            let path = options.root.join(&document.relative);
            let task = match document.record_key(&options.prefix, key) {
                Ok(record) => {
                    let known = state.get(record.as_str()).cloned();
                    Task {
                        client: Arc::clone(&client),
                        relative: document.relative,
                        path,
                        record,
                        known,
                    }
                }
                Err(error) => {
                    fail(&mut report, document.relative, &error);
                    progress.inc(1);
                    continue;
                }
            };
            running.spawn(task.run());
        }
        let Some(joined) = running.join_next().await else {
            break;
        };
        let (relative, record, outcome) = match joined {
            Ok(done) => done,
            Err(e) => {
                // A panicking upload task is a bug; count it and go on with the others.
                report.failed += 1;
                tracing::error!(error = %e, "an upload task failed");
                progress.inc(1);
                continue;
            }
        };
        match outcome {
            Outcome::Unchanged => report.skipped += 1,
            Outcome::Touched(entry) => {
                report.skipped += 1;
                state.record(record.as_str(), entry)?;
            }
            Outcome::Uploaded {
                entry,
                under_replicated,
            } => {
                report.uploaded += 1;
                report.bytes_uploaded += entry.size;
                report.under_replicated += u64::from(under_replicated);
                state.record(record.as_str(), entry)?;
            }
            Outcome::Failed(error) => fail(&mut report, relative, &error),
        }
        progress.inc(1);
        progress.set_message(format!(
            "uploaded {} skipped {} failed {}",
            report.uploaded, report.skipped, report.failed
        ));
    }
    progress.finish_and_clear();
    state.compact()?;
    Ok(report)
}

fn fail(report: &mut ImportReport, relative: PathBuf, error: &Error) {
    tracing::warn!(path = %relative.display(), %error, "document failed");
    report.failed += 1;
    if report.failures.len() < FAILURES_KEPT {
        report.failures.push((relative, error.to_string()));
    }
}

fn progress_bar(enabled: bool, total: u64) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    // indicatif draws nothing when standard error is not a terminal, so logs stay clean.
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(
        "{elapsed_precise} [{wide_bar}] {pos}/{len} documents ({per_sec}, eta {eta}) {msg}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// One document's work, run on its own task.
struct Task {
    client: Arc<Client>,
    relative: PathBuf,
    path: PathBuf,
    record: RecordKey,
    known: Option<Entry>,
}

enum Outcome {
    /// Same size and modification time as last uploaded: not even read.
    Unchanged,
    /// Read and found identical to what was uploaded; its new size/time go to the state.
    Touched(Entry),
    /// Stored in the cluster.
    Uploaded {
        entry: Entry,
        under_replicated: bool,
    },
    /// Not read or not stored.
    Failed(Error),
}

impl Task {
    async fn run(self) -> (PathBuf, RecordKey, Outcome) {
        let outcome = self.outcome().await.unwrap_or_else(Outcome::Failed);
        (self.relative, self.record, outcome)
    }

    async fn outcome(&self) -> Result<Outcome> {
        let io = |action| {
            let path = self.path.clone();
            move |source| Error::Io {
                action,
                path,
                source,
            }
        };
        let metadata = tokio::fs::metadata(&self.path).await.map_err(io("stat"))?;
        let size = metadata.len();
        let mtime_ns = metadata
            .modified()
            .ok()
            .and_then(|time| time.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |since| since.as_nanos());
        if let Some(known) = &self.known {
            if known.size == size && known.mtime_ns == mtime_ns {
                return Ok(Outcome::Unchanged);
            }
        }
        if size > RECORD_MAX_BYTES {
            return Err(Error::RecordTooLarge {
                len: size,
                max: RECORD_MAX_BYTES,
            });
        }
        let content = tokio::fs::read(&self.path).await.map_err(io("read"))?;
        let hash = *blake3::hash(&content).as_bytes();
        let mut entry = Entry {
            size: content.len() as u64,
            mtime_ns,
            blake3: hash,
            version: String::new(),
        };
        if let Some(known) = &self.known {
            if known.blake3 == hash {
                entry.version = known.version.clone();
                return Ok(Outcome::Touched(entry));
            }
        }
        let receipt = self.client.put(&self.record, &content).await?;
        entry.version = receipt.version.to_string();
        Ok(Outcome::Uploaded {
            entry,
            under_replicated: receipt.under_replicated(),
        })
    }
}

/// Every regular file under `root`, as paths relative to it, in a stable (sorted) order.
/// Symbolic links are not followed (a link loop cannot trap the walk, and a link out of the
/// tree cannot pull foreign files in); hidden entries (`.name`) are skipped.
fn walk(root: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        let dir = root.join(&relative);
        let entries = std::fs::read_dir(&dir).map_err(|source| Error::Io {
            action: "read directory",
            path: dir.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| Error::Io {
                action: "read directory",
                path: dir.clone(),
                source,
            })?;
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let file_type = entry.file_type().map_err(|source| Error::Io {
                action: "stat",
                path: entry.path(),
                source,
            })?;
            let child = relative.join(entry.file_name());
            if file_type.is_dir() {
                pending.push(child);
            } else if file_type.is_file() {
                files.push(child);
            }
        }
    }
    files.sort();
    Ok(files)
}
