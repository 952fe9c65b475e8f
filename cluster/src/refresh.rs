//! `bunsan-cluster refresh`: re-randomise every record's shares, record by record, as an
//! atomic epoch change, so that shares taken before the refresh are useless with shares taken
//! after it.
//!
//! ```text
//!  per record (version v, epoch e, participants P = every node, all holding it):
//!    stage:  RefreshStage{plan} to every p ∈ P ── nodes deal sharings of zero to each other,
//!            sum, keep y'_p = y_p + δ(x_p) staged as epoch e + 1 with a fresh nonce'_p sealed
//!            to themselves, and answer c'_p and the sealed nonce'_p     (all Staged, or abort)
//!    seal:   the admin signs (header, writer signature, e + 1, c'_1..c'_n, sealed nonces)
//!    commit: RefreshCommit{seal} to every p ∈ P ── each checks the seal and its own slot; the
//!            staged share becomes current (retried; idempotent)
//! ```
//!
//! Readers never combine two epochs (shares are grouped by version and epoch), and until the
//! commit every node serves epoch e, so a record stays readable throughout. A failed stage
//! is aborted everywhere and changes nothing. A node that missed the refresh (down, or not
//! holding the record) keeps epoch e and shows as stale to `repair`, which regenerates its
//! share of epoch e + 1. The coordinator sees no share, no deal, no sum.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bunsan_client::{Client, ClientOptions, Identity};
use bunsan_protocol::integrity::{RefreshFields, Signer};
use bunsan_protocol::manifest::Manifest;
use bunsan_protocol::message::{HeldShare, PutOutcome, Request, Response};
use bunsan_protocol::refresh::{RefreshPlan, RefreshSeal};
use bunsan_protocol::repair::SessionId;
use bunsan_protocol::role::Role;
use bunsan_protocol::{RecordKey, RequestId, ShareIndex, Version};
use tokio::task::JoinSet;

use crate::error::{Error, Result};
use crate::inventory::{self, NodeInventory};
use crate::layout::ClusterLayout;
use crate::repair::{progress_bar, ADMIN_CALL_TIMEOUT};

/// How often a commit is tried at a node before the record is reported as half committed.
const COMMIT_ATTEMPTS: u32 = 3;

/// How `refresh` runs.
#[derive(Debug, Clone)]
pub struct RefreshOptions {
    /// Records refreshed at once.
    pub concurrency: usize,
    /// Only keys starting with this.
    pub prefix: String,
    /// Draw a progress bar (on a terminal).
    pub progress: bool,
}

impl Default for RefreshOptions {
    fn default() -> Self {
        Self {
            concurrency: 4,
            prefix: String::new(),
            progress: false,
        }
    }
}

/// What a refresh run did.
#[derive(Debug, Clone, Default)]
pub struct RefreshSummary {
    /// Live records considered.
    pub records: usize,
    /// Records now at a new epoch on every participant.
    pub refreshed: usize,
    /// Failed records: key, reason. A failed stage changed nothing.
    pub failed: Vec<(String, String)>,
    /// Nodes that could not be inventoried; they keep the old epoch until repaired.
    pub unreachable: Vec<(String, String)>,
    /// How long the run took.
    pub duration: Duration,
}

/// One record to refresh.
#[derive(Debug, Clone)]
struct Job {
    key: RecordKey,
    version: Version,
    epoch: u32,
    participants: Vec<ShareIndex>,
}

/// Refreshes every live record of the cluster at `dir` with its admin identity.
pub async fn refresh(dir: &std::path::Path, options: &RefreshOptions) -> Result<RefreshSummary> {
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
    let signer = Arc::new(
        Identity::load(&layout.client_dir(Role::Admin.as_str()))?
            .signer()
            .map_err(Error::Client)?,
    );
    refresh_with(&client, &signer, &manifest, options).await
}

/// [`refresh`] with a ready admin client and the admin's signer (which signs the seals).
pub async fn refresh_with(
    client: &Arc<Client>,
    signer: &Arc<Signer>,
    manifest: &Manifest,
    options: &RefreshOptions,
) -> Result<RefreshSummary> {
    let started = Instant::now();
    let inventories = inventory::gather(client, manifest).await;
    let mut summary = RefreshSummary {
        unreachable: inventories
            .iter()
            .filter_map(|node| {
                node.entries
                    .as_ref()
                    .err()
                    .map(|reason| (node.id.clone(), reason.clone()))
            })
            .collect(),
        ..RefreshSummary::default()
    };
    let jobs = jobs(&inventories, &options.prefix);
    summary.records = jobs.len();
    // A seal commits to every share, so every node takes part.
    let minimum = usize::from(manifest.scheme.shares());
    let progress = progress_bar(options.progress, jobs.len() as u64);
    let mut tasks = JoinSet::new();
    let mut queue = jobs.into_iter();
    loop {
        while tasks.len() < options.concurrency.max(1) {
            let Some(job) = queue.next() else { break };
            let (client, manifest, signer) =
                (Arc::clone(client), manifest.clone(), Arc::clone(signer));
            tasks.spawn(async move {
                let outcome = if job.participants.len() < minimum {
                    Err(format!(
                        "only {} of {minimum} nodes hold it; a refresh needs every node: \
                         repair first",
                        job.participants.len()
                    ))
                } else {
                    refresh_record(&client, &signer, &manifest, &job).await
                };
                (job.key, outcome)
            });
        }
        let Some(joined) = tasks.join_next().await else {
            break;
        };
        let (key, outcome) = joined.map_err(|e| Error::Task {
            reason: e.to_string(),
        })?;
        match outcome {
            Ok(()) => summary.refreshed += 1,
            Err(reason) => summary.failed.push((key.to_string(), reason)),
        }
        progress.set_message(key.to_string());
        progress.inc(1);
    }
    progress.finish_and_clear();
    summary.duration = started.elapsed();
    Ok(summary)
}

/// One job per live record: its highest generation and the nodes holding exactly it (with the
/// majority header). A record whose highest version is a tombstone is deleted: no job.
fn jobs(inventories: &[NodeInventory], prefix: &str) -> Vec<Job> {
    type Holder = ((Version, u32), bool, [u8; 32], ShareIndex);
    let mut keys: BTreeMap<RecordKey, Vec<Holder>> = BTreeMap::new();
    for node in inventories {
        let Ok(entries) = &node.entries else { continue };
        for (key, held) in entries {
            if let (
                true,
                HeldShare::Held {
                    version,
                    epoch,
                    tombstone,
                    header_digest,
                    ..
                },
            ) = (key.as_str().starts_with(prefix), held)
            {
                keys.entry(key.clone()).or_default().push((
                    (*version, *epoch),
                    *tombstone,
                    *header_digest,
                    node.index,
                ));
            }
        }
    }
    let mut jobs = Vec::new();
    for (key, holders) in keys {
        let Some(&(best, tombstone, ..)) = holders.iter().max_by_key(|holder| holder.0) else {
            continue;
        };
        if tombstone {
            continue;
        }
        let mut by_digest: BTreeMap<[u8; 32], Vec<ShareIndex>> = BTreeMap::new();
        for (generation, _, digest, index) in &holders {
            if *generation == best {
                by_digest.entry(*digest).or_default().push(*index);
            }
        }
        if let Some(participants) = by_digest.into_values().max_by_key(Vec::len) {
            jobs.push(Job {
                key,
                version: best.0,
                epoch: best.1,
                participants,
            });
        }
    }
    jobs
}

/// Stages one record on every participant, then commits it everywhere.
async fn refresh_record(
    client: &Arc<Client>,
    signer: &Signer,
    manifest: &Manifest,
    job: &Job,
) -> std::result::Result<(), String> {
    let plan = RefreshPlan::new(
        SessionId::random(&mut rand::rng()),
        job.key.clone(),
        job.version,
        job.epoch,
        job.participants.clone(),
    )
    .map_err(|e| e.to_string())?;
    let request_id = RequestId::random(&mut rand::rng());
    let stage = Request::RefreshStage {
        request_id,
        plan: plan.clone(),
    };
    let staged = fan_out(client, manifest, plan.participants(), &stage).await;
    let mut failures = Vec::new();
    let mut commitments = Vec::new();
    let mut sealed_nonces = Vec::new();
    let mut dealing = None;
    for (id, answer) in staged {
        match answer {
            Ok(Response::Staged {
                epoch,
                commitment,
                sealed_nonce,
                header,
                signature,
            }) if epoch == plan.next_epoch() => {
                commitments.push(commitment);
                sealed_nonces.push(Some(sealed_nonce));
                // Every participant must hold the same writer-signed dealing.
                match &dealing {
                    None => dealing = Some((header, signature)),
                    Some(first) if *first == (header, signature) => {}
                    Some(_) => failures.push(format!("{id}: holds another dealing")),
                }
            }
            Ok(Response::Error(error)) => failures.push(format!("{id}: {error}")),
            Ok(_) => failures.push(format!("{id}: unexpected answer to a stage")),
            Err(e) => failures.push(format!("{id}: {e}")),
        }
    }
    let seal = match (&dealing, failures.is_empty()) {
        (Some((header, writer)), true) => {
            let signed_micros = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64);
            let fields = RefreshFields {
                epoch: plan.next_epoch(),
                signed_micros,
                commitments: &commitments,
                sealed_nonces: &sealed_nonces,
            };
            match signer.sign_refresh(header, writer, &fields) {
                Ok(signature) => Some(RefreshSeal {
                    epoch: plan.next_epoch(),
                    signed_micros,
                    commitments: commitments.clone(),
                    sealed_nonces: sealed_nonces.clone(),
                    signature,
                }),
                Err(e) => {
                    failures.push(format!("cannot sign the seal: {e}"));
                    None
                }
            }
        }
        _ => None,
    };
    let Some(seal) = seal else {
        let abort = Request::RefreshAbort {
            request_id,
            refresh_id: plan.refresh_id,
            key: plan.key.clone(),
        };
        // Best effort: a node that keeps a staged share never serves it, and the next stage of
        // the record replaces it.
        let _ = fan_out(client, manifest, plan.participants(), &abort).await;
        return Err(format!(
            "stage failed, nothing changed: {}",
            failures.join("; ")
        ));
    };
    let commit = Request::RefreshCommit {
        request_id,
        refresh_id: plan.refresh_id,
        key: plan.key.clone(),
        seal,
    };
    let mut pending: Vec<ShareIndex> = plan.participants().to_vec();
    let mut last_errors = Vec::new();
    for attempt in 0..COMMIT_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
        }
        let answers = fan_out(client, manifest, &pending, &commit).await;
        last_errors.clear();
        let mut still = Vec::new();
        for ((id, answer), index) in answers.into_iter().zip(pending.iter().copied()) {
            match answer {
                Ok(Response::Stored(
                    PutOutcome::Stored
                    | PutOutcome::StoredKeepingOlder { .. }
                    | PutOutcome::AlreadyStored
                    | PutOutcome::Superseded { .. },
                )) => {}
                Ok(Response::Error(error)) => {
                    last_errors.push(format!("{id}: {error}"));
                    still.push(index);
                }
                Ok(_) => {
                    last_errors.push(format!("{id}: unexpected answer to a commit"));
                    still.push(index);
                }
                Err(e) => {
                    last_errors.push(format!("{id}: {e}"));
                    still.push(index);
                }
            }
        }
        pending = still;
        if pending.is_empty() {
            return Ok(());
        }
    }
    Err(format!(
        "committed on {} of {} nodes (the rest keep the share staged; run repair): {}",
        plan.participants().len() - pending.len(),
        plan.participants().len(),
        last_errors.join("; ")
    ))
}

/// Sends `request` to every node in `indices` at once; answers in the order of `indices`.
async fn fan_out(
    client: &Arc<Client>,
    manifest: &Manifest,
    indices: &[ShareIndex],
    request: &Request,
) -> Vec<(String, std::result::Result<Response, String>)> {
    let mut calls = JoinSet::new();
    for (position, index) in indices.iter().enumerate() {
        let id = manifest
            .nodes
            .iter()
            .find(|node| node.index == *index)
            .map_or_else(|| format!("index {index}"), |node| node.id.clone());
        let (client, request) = (Arc::clone(client), request.clone());
        calls.spawn(async move {
            let answer = client.call(&id, &request).await.map_err(|e| e.to_string());
            (position, id, answer)
        });
    }
    let mut answers: Vec<Option<(String, std::result::Result<Response, String>)>> =
        (0..indices.len()).map(|_| None).collect();
    while let Some(joined) = calls.join_next().await {
        if let Ok((position, id, answer)) = joined {
            answers[position] = Some((id, answer));
        }
    }
    answers
        .into_iter()
        .map(|answer| answer.unwrap_or_else(|| (String::new(), Err("task failed".to_owned()))))
        .collect()
}
