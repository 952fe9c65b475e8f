//! Offline verification of fetched audit logs, with nothing but the cluster CA certificate.
//!
//! For each node: its certificate chains to the CA; its entries decode, are numbered 0, 1, 2…
//! without gaps or reordering, belong to it, and match the chain values it recorded; every
//! signed checkpoint verifies with its key, and its root and chain head match the entries;
//! same-size checkpoints agree; consistency proofs between checkpoints verify; cosignatures by
//! other nodes verify. Across nodes: every checkpoint a node cosigned for another matches that
//! other node's entries, so a log rewritten and re-signed from scratch is still caught.
//!
//! The result names, per node, the first bad sequence number (when the damage can be pinned to
//! one) and what is wrong; everything else found is listed after it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::audit::export::{ExportedEntry, ExportedProof};
pub use crate::audit::finding::{Finding, Problem};
use crate::audit::{chain_next, AuditEntry, CHAIN_GENESIS};
use crate::checkpoint::{self, node_of_cosigner, node_of_origin, Checkpoint};
use crate::merkle::{self, MerkleTree};
use crate::node_key::NodeKey;

/// Everything fetched about one node's log.
#[derive(Debug, Clone, Default)]
pub struct NodeExport {
    /// The node id.
    pub node_id: String,
    /// The node certificate (DER), if one was fetched.
    pub certificate: Option<Vec<u8>>,
    /// The entry lines, in file order.
    pub entries: Vec<ExportedEntry>,
    /// Signed checkpoint notes: (file name, note text).
    pub checkpoints: Vec<(String, String)>,
    /// Consistency proofs the node served: (file name, parsed proof or why not).
    pub proofs: Vec<(String, Result<ExportedProof, String>)>,
    /// Checkpoints of other nodes' logs this node cosigned: (file name, note text).
    pub witnessed: Vec<(String, String)>,
}

/// The verdict on one node's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeVerdict {
    /// The node.
    pub node_id: String,
    /// Entries that passed every check.
    pub entries: u64,
    /// The largest checkpoint size that matched the entries.
    pub verified_size: u64,
    /// Checkpoints whose signature, root and chain head verified.
    pub checkpoints: usize,
    /// Valid cosignatures on those checkpoints.
    pub cosignatures: usize,
    /// The nodes whose cosignatures verified.
    pub cosigners: BTreeSet<String>,
    /// Everything wrong, the first bad sequence number first.
    pub findings: Vec<Finding>,
}

impl NodeVerdict {
    /// True when nothing is wrong.
    pub fn is_ok(&self) -> bool {
        self.findings.is_empty()
    }

    /// The first problem: the lowest sequence number, else the first found.
    pub fn first(&self) -> Option<&Finding> {
        self.findings.first()
    }
}

/// Verifies every node's export against the CA certificate `ca_der`; one verdict per node, in
/// the order given.
pub fn verify_logs(ca_der: &[u8], exports: &[NodeExport]) -> Vec<NodeVerdict> {
    let mut keys = BTreeMap::new();
    let mut key_errors = HashMap::new();
    for export in exports {
        let key = match &export.certificate {
            Some(der) => NodeKey::from_certificate(ca_der, der, Some(&export.node_id))
                .map_err(|e| e.to_string()),
            None => Err("no certificate was fetched".to_owned()),
        };
        match key {
            Ok(key) => {
                keys.insert(export.node_id.clone(), key);
            }
            Err(reason) => {
                key_errors.insert(export.node_id.clone(), reason);
            }
        }
    }
    let mut logs: Vec<(NodeVerdict, MerkleTree, bool)> = exports
        .iter()
        .map(|export| {
            let mut log = check_log(export, keys.get(&export.node_id), &keys);
            if let Some(reason) = key_errors.remove(&export.node_id) {
                log.0.findings.push(Finding {
                    seq: None,
                    problem: Problem::Certificate { reason },
                });
            }
            log
        })
        .collect();
    cross_check_witnesses(exports, &keys, &mut logs);
    logs.into_iter()
        .map(|(mut verdict, _, _)| {
            // Pinned findings first, lowest sequence number first; the sort is stable.
            verdict.findings.sort_by_key(|f| f.seq.unwrap_or(u64::MAX));
            verdict
        })
        .collect()
}

/// Checks one node's own data; returns its verdict so far, its verified tree, and whether its
/// entries were structurally whole (no unreadable, missing or misplaced entry).
fn check_log(
    export: &NodeExport,
    key: Option<&NodeKey>,
    keys: &BTreeMap<String, NodeKey>,
) -> (NodeVerdict, MerkleTree, bool) {
    let mut findings = Vec::new();
    let (tree, chains, whole) = check_entries(export, &mut findings);
    let prefix = tree.size();
    let mut verdict = NodeVerdict {
        node_id: export.node_id.clone(),
        entries: prefix,
        verified_size: 0,
        checkpoints: 0,
        cosignatures: 0,
        cosigners: BTreeSet::new(),
        findings: Vec::new(),
    };
    let Some(key) = key else {
        verdict.findings = findings;
        return (verdict, tree, whole);
    };
    let mut signed: BTreeMap<u64, Vec<(String, checkpoint::VerifiedCheckpoint)>> = BTreeMap::new();
    for (file, note) in &export.checkpoints {
        match checkpoint::verify_checkpoint(note, key) {
            Ok(verified) => signed
                .entry(verified.checkpoint.size)
                .or_default()
                .push((file.clone(), verified)),
            Err(e) => findings.push(Finding {
                seq: None,
                problem: Problem::CheckpointInvalid {
                    file: file.clone(),
                    reason: e.to_string(),
                },
            }),
        }
    }
    if signed.is_empty() && prefix > 0 {
        findings.push(Finding {
            seq: None,
            problem: Problem::NoCheckpoint,
        });
    }
    let mut last_good = 0;
    let mut truncation_reported = false;
    for (&size, versions) in &signed {
        let first = &versions[0].1.checkpoint;
        if versions
            .iter()
            .any(|(_, v)| !same_tree(&v.checkpoint, first))
        {
            findings.push(Finding {
                seq: None,
                problem: Problem::Fork { size },
            });
        }
        for (_, verified) in versions {
            count_cosignatures(&verified.note, size, keys, &mut verdict, &mut findings);
        }
        if size <= prefix {
            let chain = if size == 0 {
                CHAIN_GENESIS
            } else {
                chains[size as usize - 1]
            };
            let root = tree.root(size).unwrap_or_else(|_| merkle::empty_root());
            if versions
                .iter()
                .all(|(_, v)| v.checkpoint.root == root && v.checkpoint.chain == chain)
            {
                last_good = size;
                verdict.checkpoints += versions.len();
            } else {
                findings.push(Finding {
                    seq: Some(last_good),
                    problem: Problem::CheckpointMismatch {
                        size,
                        since: last_good,
                    },
                });
            }
        } else if whole && !truncation_reported {
            truncation_reported = true;
            findings.push(Finding {
                seq: Some(prefix),
                problem: Problem::Truncated {
                    size,
                    entries: prefix,
                },
            });
        }
    }
    for (file, proof) in &export.proofs {
        let proof = match proof {
            Ok(proof) => proof,
            Err(reason) => {
                findings.push(Finding {
                    seq: None,
                    problem: Problem::CheckpointInvalid {
                        file: file.clone(),
                        reason: reason.clone(),
                    },
                });
                continue;
            }
        };
        let (Some(old), Some(new)) = (signed.get(&proof.from), signed.get(&proof.to)) else {
            continue; // Nothing signed to hold the proof against.
        };
        let (old, new) = (&old[0].1.checkpoint, &new[0].1.checkpoint);
        if let Err(e) =
            merkle::verify_consistency(old.size, new.size, &old.root, &new.root, &proof.hashes)
        {
            findings.push(Finding {
                seq: None,
                problem: Problem::Inconsistent {
                    from: proof.from,
                    to: proof.to,
                    reason: e.to_string(),
                },
            });
        }
    }
    verdict.verified_size = last_good;
    verdict.findings = findings;
    (verdict, tree, whole)
}

fn same_tree(a: &Checkpoint, b: &Checkpoint) -> bool {
    a.size == b.size && a.root == b.root && a.chain == b.chain
}

fn count_cosignatures(
    note: &crate::note::SignedNote,
    size: u64,
    keys: &BTreeMap<String, NodeKey>,
    verdict: &mut NodeVerdict,
    findings: &mut Vec<Finding>,
) {
    let cosigners: BTreeSet<&str> = note
        .signatures
        .iter()
        .filter_map(|s| node_of_cosigner(&s.key_name))
        .collect();
    for cosigner in cosigners {
        // Signatures by keys nobody vouches for are ignored, as signed-note requires.
        let Some(key) = keys.get(cosigner) else {
            continue;
        };
        match checkpoint::verify_cosignature(note, key) {
            Ok(Some(_)) => {
                verdict.cosignatures += 1;
                verdict.cosigners.insert(cosigner.to_owned());
            }
            Ok(None) => {}
            Err(e) => findings.push(Finding {
                seq: None,
                problem: Problem::Cosignature {
                    size,
                    cosigner: cosigner.to_owned(),
                    reason: e.to_string(),
                },
            }),
        }
    }
}

/// Walks the entries in file order up to the first structural problem; returns the tree and
/// chain values of the good prefix and whether the file was structurally whole.
fn check_entries(
    export: &NodeExport,
    findings: &mut Vec<Finding>,
) -> (MerkleTree, Vec<merkle::Hash>, bool) {
    let decoded: Vec<Option<AuditEntry>> = export
        .entries
        .iter()
        .map(|e| {
            e.entry
                .as_ref()
                .ok()
                .and_then(|b| AuditEntry::decode(b).ok())
        })
        .collect();
    let present: HashMap<u64, usize> = decoded
        .iter()
        .enumerate()
        .filter_map(|(position, entry)| entry.as_ref().map(|e| (e.seq, position)))
        .collect();
    let mut tree = MerkleTree::new();
    let mut chains = Vec::new();
    let mut previous = CHAIN_GENESIS;
    let mut previous_time = 0;
    for (position, line) in export.entries.iter().enumerate() {
        let expected = position as u64;
        let mut fail = |problem| {
            findings.push(Finding {
                seq: Some(expected),
                problem,
            })
        };
        let bytes = match &line.entry {
            Ok(bytes) => bytes,
            Err(reason) => {
                fail(Problem::Unreadable {
                    line: line.line,
                    reason: reason.clone(),
                });
                return (tree, chains, false);
            }
        };
        let entry = match AuditEntry::decode(bytes) {
            Ok(entry) => entry,
            Err(e) => {
                fail(Problem::Undecodable {
                    reason: e.to_string(),
                });
                return (tree, chains, false);
            }
        };
        if entry.seq != expected {
            fail(match present.get(&expected) {
                Some(_) => Problem::OutOfOrder { found: entry.seq },
                None if entry.seq > expected => Problem::Missing { next: entry.seq },
                None => Problem::OutOfOrder { found: entry.seq },
            });
            return (tree, chains, false);
        }
        if entry.node_id != export.node_id {
            fail(Problem::WrongNode {
                found: entry.node_id,
            });
            return (tree, chains, false);
        }
        let chain = chain_next(&previous, bytes);
        if line.chain.is_some_and(|recorded| recorded != chain) {
            fail(Problem::Altered);
            return (tree, chains, false);
        }
        if entry.time_micros < previous_time {
            fail(Problem::TimeReversed);
            return (tree, chains, false);
        }
        tree.push(merkle::leaf_hash(bytes));
        chains.push(chain);
        previous = chain;
        previous_time = entry.time_micros;
    }
    (tree, chains, true)
}

/// Holds every checkpoint a node cosigned against the log it is about.
fn cross_check_witnesses(
    exports: &[NodeExport],
    keys: &BTreeMap<String, NodeKey>,
    logs: &mut [(NodeVerdict, MerkleTree, bool)],
) {
    let position: HashMap<&str, usize> = exports
        .iter()
        .enumerate()
        .map(|(i, e)| (e.node_id.as_str(), i))
        .collect();
    for (witness_at, export) in exports.iter().enumerate() {
        let witness = export.node_id.as_str();
        for (file, note) in &export.witnessed {
            let invalid = |reason: String| Finding {
                seq: None,
                problem: Problem::WitnessedInvalid {
                    file: file.clone(),
                    reason,
                },
            };
            let checked = crate::note::SignedNote::parse(note)
                .and_then(|n| Checkpoint::parse_text(&n.text))
                .map_err(|e| e.to_string())
                .and_then(|cp| {
                    let log = node_of_origin(&cp.origin)
                        .ok_or_else(|| format!("{} is not a Bunsan log", cp.origin))?;
                    // An untrusted log certificate is that log's finding, not the witness's.
                    let Some(log_key) = keys.get(log) else {
                        return Ok(None);
                    };
                    let witness_key = keys
                        .get(witness)
                        .ok_or_else(|| format!("no trusted certificate of {witness}"))?;
                    let verified =
                        checkpoint::verify_checkpoint(note, log_key).map_err(|e| e.to_string())?;
                    match checkpoint::verify_cosignature(&verified.note, witness_key) {
                        Ok(Some(_)) => Ok(Some((log.to_owned(), verified.checkpoint))),
                        Ok(None) => Err(format!("it carries no cosignature by {witness}")),
                        Err(e) => Err(e.to_string()),
                    }
                });
            let (log, cp) = match checked {
                Ok(Some(found)) => found,
                Ok(None) => continue,
                Err(reason) => {
                    logs[witness_at].0.findings.push(invalid(reason));
                    continue;
                }
            };
            let Some(&log_at) = position.get(log.as_str()) else {
                continue; // The auditor did not fetch that log.
            };
            let (verdict, tree, whole) = &mut logs[log_at];
            let prefix = tree.size();
            if cp.size <= prefix {
                if tree.root(cp.size).ok() != Some(cp.root) {
                    verdict.findings.push(Finding {
                        seq: None,
                        problem: Problem::Rewritten {
                            witness: witness.to_owned(),
                            size: cp.size,
                        },
                    });
                }
            } else if *whole {
                verdict.findings.push(Finding {
                    seq: Some(prefix),
                    problem: Problem::WitnessedTruncated {
                        witness: witness.to_owned(),
                        size: cp.size,
                        entries: prefix,
                    },
                });
            }
        }
    }
}

#[cfg(test)]
#[path = "verify_tests.rs"]
mod tests;
