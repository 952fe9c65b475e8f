//! `bunsan-cluster repair`: find the shares nodes lack, hold in an old version, or hold
//! damaged, and regenerate them without any party holding k shares.
//!
//! ```text
//!  inventories (every node, checked) ──plan──▶ findings ──▶ for each, bounded concurrency:
//!    data:      Repair{plan} to k helpers ──▶ masked contributions ──▶ target sums, checks, stores
//!               (unconfirmed: a second, different helper set; the target stores once both agree)
//!    tombstone: re-sent as a delete of the same version (no secret in it)
//! ```
//!
//! The admin running this never sees share bytes: it sends plans and reads outcomes. The plan
//! (the findings) is kept in `DIR/run/repair-state.json` and every finished job is appended to
//! `DIR/run/repair.journal`, so an interrupted run resumes without a second full scrub of every
//! node; both are removed when a run completes.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bunsan_client::{Client, ClientOptions, Identity};
use bunsan_protocol::envelope::{RecordHeader, ShareEnvelope};
use bunsan_protocol::integrity::WriterSignature;
use bunsan_protocol::manifest::Manifest;
use bunsan_protocol::message::{PutOutcome, RepairOutcome, Request, Response};
use bunsan_protocol::repair::{RepairPlan, SessionId};
use bunsan_protocol::role::Role;
use bunsan_protocol::{RequestId, ShareIndex};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use crate::error::{io_err, Error, Result};
use crate::inventory::{self, Finding, Plan, Problem, Want};
use crate::layout::{create_private_dir, ClusterLayout};

/// The admin client's deadline for one call: a helper's answer includes its call to the
/// target (up to 20 s) and the target's wait for the other helpers (up to 10 s).
pub const ADMIN_CALL_TIMEOUT: Duration = Duration::from_secs(40);

/// A saved plan older than this is not resumed: too much may have changed since.
const STATE_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// How `repair` runs.
#[derive(Debug, Clone)]
pub struct RepairOptions {
    /// Jobs in flight at once. Each job is k + 1 nodes' work on one share.
    pub concurrency: usize,
    /// Ignore a saved plan and scrub every node again.
    pub fresh: bool,
    /// Only repair this node (by id).
    pub only: Option<String>,
    /// Draw a progress bar (on a terminal).
    pub progress: bool,
}

impl Default for RepairOptions {
    fn default() -> Self {
        Self {
            concurrency: 4,
            fresh: false,
            only: None,
            progress: false,
        }
    }
}

/// What one job did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobOutcome {
    /// The share was regenerated and stored (or the target already held it).
    Repaired,
    /// The tombstone was stored again.
    Resent,
    /// Nothing to do any more (the target holds a newer version), with why.
    Skipped(String),
    /// The job failed, with why.
    Failed(String),
}

/// What a whole run did.
#[derive(Debug, Clone, Default)]
pub struct RepairSummary {
    /// Keys seen across the nodes.
    pub keys: usize,
    /// Jobs planned (one per node and key to fix).
    pub planned: usize,
    /// Shares regenerated.
    pub repaired: usize,
    /// Tombstones re-sent.
    pub resent: usize,
    /// Jobs with nothing left to do, or done by an earlier, interrupted run.
    pub skipped: usize,
    /// Failed jobs: node, key, reason.
    pub failed: Vec<(String, String, String)>,
    /// Nodes that could not be inventoried (not repaired, not used as helpers).
    pub unreachable: Vec<(String, String)>,
    /// Keys no node holds a readable copy of.
    pub unrecoverable: Vec<(String, String)>,
    /// Keys left to readers: the newest version is a write that failed partway and an older
    /// kept version is complete (not a failure; writing or deleting the key settles it).
    pub incomplete: Vec<(String, String)>,
    /// Whether the plan came from an interrupted earlier run.
    pub resumed: bool,
    /// How long the run took.
    pub duration: Duration,
}

impl RepairSummary {
    /// True when every planned job succeeded or had nothing to do, and nothing was beyond
    /// repair.
    pub fn is_clean(&self) -> bool {
        self.failed.is_empty() && self.unrecoverable.is_empty()
    }
}

#[derive(Serialize, Deserialize)]
struct SavedPlan {
    created_unix: u64,
    plan: Vec<SavedFinding>,
    keys: usize,
}

/// A finding as saved in the state file.
#[derive(Serialize, Deserialize)]
struct SavedFinding {
    key: bunsan_protocol::RecordKey,
    target: (String, ShareIndex),
    inconsistent: bool,
    want: SavedWant,
}

#[derive(Serialize, Deserialize)]
enum SavedWant {
    Data {
        version: bunsan_protocol::Version,
        epoch: u32,
        holders: Vec<ShareIndex>,
    },
    Tombstone {
        version: bunsan_protocol::Version,
        proof: Box<(RecordHeader, WriterSignature)>,
    },
}

/// Repairs the cluster at `dir` with its admin identity. Must run inside a tokio runtime.
pub async fn repair(dir: &Path, options: &RepairOptions) -> Result<RepairSummary> {
    let layout = ClusterLayout::new(dir);
    let manifest = layout.read_manifest()?;
    let identity = Identity::load(&layout.client_dir(Role::Admin.as_str()))?;
    let client = Arc::new(Client::new(
        manifest.clone(),
        identity,
        ClientOptions {
            timeout: ADMIN_CALL_TIMEOUT,
            ..ClientOptions::default()
        },
    )?);
    repair_with(&client, &manifest, &layout.run_dir(), options).await
}

/// [`repair`] with a ready admin client, keeping its state in `run_dir`.
pub async fn repair_with(
    client: &Arc<Client>,
    manifest: &Manifest,
    run_dir: &Path,
    options: &RepairOptions,
) -> Result<RepairSummary> {
    let started = Instant::now();
    let state_path = run_dir.join("repair-state.json");
    let journal_path = run_dir.join("repair.journal");
    let mut summary = RepairSummary::default();
    let saved = if options.fresh {
        None
    } else {
        load_state(&state_path, &journal_path)
    };
    let (findings, done) = match saved {
        Some((findings, keys, done)) => {
            summary.resumed = true;
            summary.keys = keys;
            (findings, done)
        }
        None => {
            let inventories = inventory::gather(client, manifest).await;
            let Plan {
                findings,
                unreachable,
                keys,
                unrecoverable,
                incomplete,
            } = inventory::plan(&inventories, manifest.scheme.threshold().as_usize());
            for (key, why) in &incomplete {
                tracing::info!(%key, "{why}");
            }
            summary.incomplete = incomplete
                .into_iter()
                .map(|(key, reason)| (key.to_string(), reason))
                .collect();
            summary.keys = keys;
            summary.unreachable = unreachable;
            summary.unrecoverable = unrecoverable
                .into_iter()
                .map(|(key, reason)| (key.to_string(), reason))
                .collect();
            create_private_dir(run_dir)?;
            save_state(&state_path, &findings, keys)?;
            let _ = std::fs::remove_file(&journal_path);
            (findings, HashSet::new())
        }
    };
    let findings: Vec<Finding> = findings
        .into_iter()
        .filter(|f| options.only.as_ref().is_none_or(|only| &f.target.0 == only))
        .collect();
    summary.planned = findings.len();
    let progress = progress_bar(options.progress, findings.len() as u64);
    let mut journal = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&journal_path)
        .map_err(io_err("open", &journal_path))?;
    let mut tasks = JoinSet::new();
    let mut queue = findings.into_iter();
    loop {
        while tasks.len() < options.concurrency.max(1) {
            let Some(finding) = queue.next() else { break };
            if done.contains(&finding.job_id()) {
                summary.skipped += 1;
                progress.inc(1);
                continue;
            }
            let (client, manifest) = (Arc::clone(client), manifest.clone());
            tasks.spawn(async move {
                let outcome = run_job(&client, &manifest, &finding).await;
                (finding, outcome)
            });
        }
        let Some(joined) = tasks.join_next().await else {
            break;
        };
        let (finding, outcome) = joined.map_err(|e| Error::Task {
            reason: e.to_string(),
        })?;
        let status = match &outcome {
            JobOutcome::Repaired => {
                summary.repaired += 1;
                "repaired"
            }
            JobOutcome::Resent => {
                summary.resent += 1;
                "resent"
            }
            JobOutcome::Skipped(_) => {
                summary.skipped += 1;
                "skipped"
            }
            JobOutcome::Failed(reason) => {
                summary.failed.push((
                    finding.target.0.clone(),
                    finding.key.to_string(),
                    reason.clone(),
                ));
                "failed"
            }
        };
        writeln!(journal, "{status}\t{}", finding.job_id())
            .map_err(io_err("write", &journal_path))?;
        progress.set_message(format!("{} {}", finding.target.0, finding.key));
        progress.inc(1);
    }
    progress.finish_and_clear();
    // A complete run needs no resuming; its failures are in the summary, and the next run
    // scrubs afresh.
    let _ = std::fs::remove_file(&state_path);
    let _ = std::fs::remove_file(&journal_path);
    summary.duration = started.elapsed();
    Ok(summary)
}

/// Runs one finding: a repair (with a confirming second helper set if the target asks for
/// one), or a tombstone re-send.
pub async fn run_job(client: &Arc<Client>, manifest: &Manifest, finding: &Finding) -> JobOutcome {
    if finding.problem == Problem::Inconsistent {
        return JobOutcome::Failed(
            "holds another dealing of the same version (a forged or inconsistent write): \
             inspect it; repair does not overwrite it"
                .to_owned(),
        );
    }
    match &finding.want {
        Want::Tombstone { proof, .. } => {
            let (header, signature) = proof.as_ref();
            let tombstone =
                match ShareEnvelope::tombstone(header.clone(), signature.clone(), finding.target.1)
                {
                    Ok(tombstone) => tombstone,
                    Err(e) => return JobOutcome::Failed(e.to_string()),
                };
            let request = Request::Delete {
                request_id: RequestId::random(&mut rand::rng()),
                tombstone,
            };
            match client.call(&finding.target.0, &request).await {
                Ok(Response::Stored(
                    PutOutcome::Stored
                    | PutOutcome::StoredKeepingOlder { .. }
                    | PutOutcome::AlreadyStored,
                )) => JobOutcome::Resent,
                Ok(Response::Stored(PutOutcome::Superseded { current })) => {
                    JobOutcome::Skipped(format!("the node holds a newer version {current}"))
                }
                Ok(Response::Error(error)) => JobOutcome::Failed(error.to_string()),
                Ok(_) => JobOutcome::Failed("unexpected answer to a delete".to_owned()),
                Err(e) => JobOutcome::Failed(e.to_string()),
            }
        }
        Want::Data {
            version,
            epoch,
            holders,
        } => {
            let k = manifest.scheme.threshold().as_usize();
            let target = finding.target.1;
            let holders: Vec<ShareIndex> =
                holders.iter().copied().filter(|&x| x != target).collect();
            let Some(first) = helper_set(&holders, k, finding.key.as_str(), None) else {
                // Either shares were lost, or the newest version is a write that failed partway
                // (its nodes then keep the version before it, which reads fall back to). The
                // inventory shows heads only, so this cannot tell which: fail loudly.
                return JobOutcome::Failed(format!(
                    "only {} nodes hold version {version} epoch {epoch}; a repair needs {k} \
                     (if a write of this key failed partway, reads use the version kept under it)",
                    holders.len()
                ));
            };
            let attempt = |helpers: Vec<ShareIndex>| async move {
                let plan = RepairPlan::new(
                    SessionId::random(&mut rand::rng()),
                    finding.key.clone(),
                    *version,
                    *epoch,
                    target,
                    helpers,
                )
                .map_err(|e| e.to_string())?;
                run_plan(client, manifest, plan).await
            };
            match attempt(first.clone()).await {
                Ok(RepairOutcome::Stored(outcome)) => stored(outcome),
                Ok(RepairOutcome::Unconfirmed) => {
                    let Some(second) = helper_set(&holders, k, finding.key.as_str(), Some(&first))
                    else {
                        return JobOutcome::Failed(format!(
                            "the target cannot check the share and there is no second helper \
                             set to confirm it ({} holders, k = {k})",
                            holders.len()
                        ));
                    };
                    match attempt(second).await {
                        Ok(RepairOutcome::Stored(outcome)) => stored(outcome),
                        Ok(RepairOutcome::Unconfirmed) => JobOutcome::Failed(
                            "the target could not confirm the share with two helper sets"
                                .to_owned(),
                        ),
                        Err(reason) => JobOutcome::Failed(reason),
                    }
                }
                Err(reason) => JobOutcome::Failed(reason),
            }
        }
    }
}

fn stored(outcome: PutOutcome) -> JobOutcome {
    match outcome {
        PutOutcome::Stored | PutOutcome::StoredKeepingOlder { .. } | PutOutcome::AlreadyStored => {
            JobOutcome::Repaired
        }
        PutOutcome::Superseded { current } => {
            JobOutcome::Skipped(format!("the target holds a newer version {current}"))
        }
    }
}

/// k helpers from `holders`, starting at a position derived from the key so that the work of
/// many repairs spreads over the nodes. With `other`, a set that differs from it in at least
/// one member (None if `holders` has only k members).
fn helper_set(
    holders: &[ShareIndex],
    k: usize,
    key: &str,
    other: Option<&[ShareIndex]>,
) -> Option<Vec<ShareIndex>> {
    if holders.len() < k {
        return None;
    }
    let start = blake3::hash(key.as_bytes()).as_bytes()[0] as usize % holders.len();
    let mut set: Vec<ShareIndex> = (0..k)
        .map(|i| holders[(start + i) % holders.len()])
        .collect();
    if let Some(other) = other {
        let outsider = holders.iter().find(|x| !other.contains(x))?;
        // Swap one member of the first set for a holder outside it.
        set = other.to_vec();
        set[0] = *outsider;
    }
    set.sort();
    Some(set)
}

/// Sends `plan` to each of its helpers at once; every helper reports the target's answer.
async fn run_plan(
    client: &Arc<Client>,
    manifest: &Manifest,
    plan: RepairPlan,
) -> std::result::Result<RepairOutcome, String> {
    let request_id = RequestId::random(&mut rand::rng());
    let mut calls = JoinSet::new();
    for &helper in plan.helpers() {
        let Some(node) = manifest.nodes.iter().find(|n| n.index == helper) else {
            return Err(format!("the manifest has no node at index {helper}"));
        };
        let request = Request::Repair {
            request_id,
            plan: plan.clone(),
        };
        let (id, client) = (node.id.clone(), Arc::clone(client));
        calls.spawn(async move { (id.clone(), client.call(&id, &request).await) });
    }
    let mut outcome = None;
    let mut errors = Vec::new();
    while let Some(joined) = calls.join_next().await {
        match joined {
            Ok((_, Ok(Response::Repaired(answer)))) => outcome = Some(answer),
            Ok((id, Ok(Response::Error(error)))) => errors.push(format!("{id}: {error}")),
            Ok((id, Ok(_))) => errors.push(format!("{id}: unexpected answer to a repair")),
            Ok((id, Err(e))) => errors.push(format!("{id}: {e}")),
            Err(e) => errors.push(format!("a helper call failed: {e}")),
        }
    }
    match (outcome, errors.is_empty()) {
        (Some(outcome), true) => Ok(outcome),
        (_, false) => Err(errors.join("; ")),
        (None, true) => Err("no helper answered".to_owned()),
    }
}

/// A progress bar with an ETA on stderr, or a hidden one.
pub(crate) fn progress_bar(visible: bool, len: u64) -> indicatif::ProgressBar {
    if !visible {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} ETA {eta} {msg}",
    ) {
        bar.set_style(style);
    }
    bar
}

fn save_state(path: &Path, findings: &[Finding], keys: usize) -> Result<()> {
    let saved = SavedPlan {
        created_unix: unix_now(),
        keys,
        plan: findings
            .iter()
            .map(|f| SavedFinding {
                key: f.key.clone(),
                target: f.target.clone(),
                inconsistent: f.problem == Problem::Inconsistent,
                want: match &f.want {
                    Want::Data {
                        version,
                        epoch,
                        holders,
                    } => SavedWant::Data {
                        version: *version,
                        epoch: *epoch,
                        holders: holders.clone(),
                    },
                    Want::Tombstone { version, proof } => SavedWant::Tombstone {
                        version: *version,
                        proof: proof.clone(),
                    },
                },
            })
            .collect(),
    };
    let text = serde_json::to_vec(&saved).map_err(|e| Error::State {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let temporary = PathBuf::from(format!("{}.tmp", path.display()));
    std::fs::write(&temporary, text).map_err(io_err("write", &temporary))?;
    std::fs::rename(&temporary, path).map_err(io_err("rename", path))
}

/// The saved plan and the jobs already done, if there is a recent enough saved plan.
fn load_state(
    state_path: &Path,
    journal_path: &Path,
) -> Option<(Vec<Finding>, usize, HashSet<String>)> {
    let bytes = std::fs::read(state_path).ok()?;
    let saved: SavedPlan = serde_json::from_slice(&bytes).ok()?;
    if unix_now().saturating_sub(saved.created_unix) > STATE_MAX_AGE.as_secs() {
        return None;
    }
    let findings = saved
        .plan
        .into_iter()
        .map(|f| Finding {
            key: f.key,
            target: f.target,
            // The saved plan keeps only what running a job needs.
            problem: if f.inconsistent {
                Problem::Inconsistent
            } else {
                Problem::Missing
            },
            want: match f.want {
                SavedWant::Data {
                    version,
                    epoch,
                    holders,
                } => Want::Data {
                    version,
                    epoch,
                    holders,
                },
                SavedWant::Tombstone { version, proof } => Want::Tombstone { version, proof },
            },
        })
        .collect();
    let done = std::fs::read_to_string(journal_path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .filter(|(status, _)| *status != "failed")
        .map(|(_, job)| job.to_owned())
        .collect();
    Some((findings, saved.keys, done))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn x(i: u8) -> ShareIndex {
        ShareIndex::new(i).expect("index")
    }

    #[test]
    fn helper_sets_have_k_members_and_a_second_set_differs() {
        let holders = [x(1), x(2), x(4), x(5)];
        let first = helper_set(&holders, 3, "some/key", None).expect("first");
        assert_eq!(first.len(), 3);
        assert!(first.iter().all(|h| holders.contains(h)));
        let second = helper_set(&holders, 3, "some/key", Some(&first)).expect("second");
        assert_eq!(second.len(), 3);
        assert_ne!(first, second);
        assert!(helper_set(&holders[..3], 3, "k", Some(&holders[..3])).is_none());
        assert!(helper_set(&holders[..2], 3, "k", None).is_none());
    }
}
