//! Comparing the nodes' inventories: which node lacks which share, holds an old one, or holds
//! a damaged one, and which nodes can help regenerate it.
//!
//! Each node reports, per key, the (version, epoch) it holds, whether it is a tombstone, and a
//! digest of the header (equal on every node holding the same dealing), or that the stored
//! value is corrupt. Per key the highest (version, epoch) any node holds is what every node
//! should hold; [`plan`] turns the differences into [`Finding`]s. Gathering talks to the nodes;
//! planning is a pure function, tested without any.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bunsan_client::Client;
use bunsan_protocol::envelope::RecordHeader;
use bunsan_protocol::integrity::WriterSignature;
use bunsan_protocol::manifest::Manifest;
use bunsan_protocol::message::{HeldShare, Request, Response, INVENTORY_LIMIT_MAX};
use bunsan_protocol::{RecordKey, RequestId, ShareIndex, Version};

/// One node's inventory, or why it could not be had.
#[derive(Debug, Clone)]
pub struct NodeInventory {
    /// The node id.
    pub id: String,
    /// Its share index.
    pub index: ShareIndex,
    /// What it holds per key, or the error that stopped the listing (the node is then treated
    /// as unreachable: neither a target nor a helper).
    pub entries: Result<BTreeMap<RecordKey, HeldShare>, String>,
    /// Per key, the older versions the node keeps under its newest until a commit.
    pub kept: BTreeMap<RecordKey, Vec<Version>>,
}

impl NodeInventory {
    /// How many live records (not tombstones, not corrupt) the node holds.
    pub fn live_records(&self) -> usize {
        self.entries.as_ref().map_or(0, |entries| {
            entries
                .values()
                .filter(|held| {
                    matches!(
                        held,
                        HeldShare::Held {
                            tombstone: false,
                            ..
                        }
                    )
                })
                .count()
        })
    }
}

/// Asks every node for its whole checked inventory, all nodes at once, page by page.
pub async fn gather(client: &Arc<Client>, manifest: &Manifest) -> Vec<NodeInventory> {
    let mut tasks = tokio::task::JoinSet::new();
    for (position, node) in manifest.nodes.iter().enumerate() {
        let (client, id) = (Arc::clone(client), node.id.clone());
        tasks.spawn(async move { (position, node_inventory(&client, &id).await) });
    }
    let mut inventories: Vec<NodeInventory> = manifest
        .nodes
        .iter()
        .map(|node| NodeInventory {
            id: node.id.clone(),
            index: node.index,
            entries: Err("no answer".to_owned()),
            kept: BTreeMap::new(),
        })
        .collect();
    while let Some(joined) = tasks.join_next().await {
        if let Ok((position, answer)) = joined {
            match answer {
                Ok((entries, kept)) => {
                    inventories[position].entries = Ok(entries);
                    inventories[position].kept = kept;
                }
                Err(reason) => inventories[position].entries = Err(reason),
            }
        }
    }
    inventories
}

/// One node's entries and kept versions.
type Answer = (
    BTreeMap<RecordKey, HeldShare>,
    BTreeMap<RecordKey, Vec<Version>>,
);

async fn node_inventory(client: &Client, id: &str) -> Result<Answer, String> {
    let mut entries = BTreeMap::new();
    let mut kept = BTreeMap::new();
    let mut start_after = None;
    loop {
        let request = Request::Inventory {
            request_id: RequestId::random(&mut rand::rng()),
            start_after: start_after.take(),
            limit: INVENTORY_LIMIT_MAX,
        };
        match client.call(id, &request).await.map_err(|e| e.to_string())? {
            Response::Inventory {
                entries: page,
                next,
            } => {
                for entry in page {
                    if !entry.kept.is_empty() {
                        let versions = entry.kept.iter().map(|k| k.version).collect();
                        kept.insert(entry.key.clone(), versions);
                    }
                    entries.insert(entry.key, entry.state);
                }
                match next {
                    Some(next) => start_after = Some(next),
                    None => return Ok((entries, kept)),
                }
            }
            Response::Error(error) => return Err(error.to_string()),
            _ => return Err("unexpected answer to an inventory request".to_owned()),
        }
    }
}

/// What one node should get for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The record.
    pub key: RecordKey,
    /// The node to repair: its id and share index.
    pub target: (String, ShareIndex),
    /// What is wrong with what it holds.
    pub problem: Problem,
    /// What it should hold.
    pub want: Want,
}

/// What is wrong with a node's copy of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// It holds nothing for the key.
    Missing,
    /// It holds an older (version, epoch).
    Stale {
        /// What it holds.
        version: Version,
        /// Of which epoch.
        epoch: u32,
    },
    /// Its stored value fails its checks.
    Corrupt {
        /// Which check.
        reason: String,
    },
    /// It holds the right (version, epoch) but another dealing (header digest): a forged or
    /// inconsistent write. Reported, not repaired automatically.
    Inconsistent,
}

/// What a node should hold for a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Want {
    /// A share of this data generation, regenerated from the `holders` (nodes holding exactly
    /// it, with the majority header digest).
    Data {
        /// The version.
        version: Version,
        /// The epoch.
        epoch: u32,
        /// Nodes that can help, ascending.
        holders: Vec<ShareIndex>,
    },
    /// This tombstone: it carries no secret, so it is simply sent again.
    Tombstone {
        /// The tombstone's version.
        version: Version,
        /// Its signed header, from a node holding it.
        proof: Box<(RecordHeader, WriterSignature)>,
    },
}

impl Finding {
    /// A stable identity for the resume journal: target, key and generation.
    pub fn job_id(&self) -> String {
        let (version, epoch, kind) = match &self.want {
            Want::Data { version, epoch, .. } => (version, *epoch, "data"),
            Want::Tombstone { version, .. } => (version, 0, "tombstone"),
        };
        format!(
            "{}\t{}\t{version}\t{epoch}\t{kind}",
            self.target.0, self.key
        )
    }
}

/// The findings of one comparison, and what could not be compared.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Every share to regenerate or re-send, in key order.
    pub findings: Vec<Finding>,
    /// Nodes whose inventory could not be had, with the reason.
    pub unreachable: Vec<(String, String)>,
    /// Keys seen, in all.
    pub keys: usize,
    /// Keys no reachable node holds a readable copy of, with the reason.
    pub unrecoverable: Vec<(RecordKey, String)>,
    /// Keys whose newest version is on fewer than k nodes (a write that failed partway) while
    /// an older version, kept under it, is on k or more: readers use that one, and nothing is
    /// repaired until the key is written or deleted again. With why.
    pub incomplete: Vec<(RecordKey, String)>,
}

/// Compares the reachable nodes' inventories key by key, for a cluster of threshold `k`.
pub fn plan(inventories: &[NodeInventory], k: usize) -> Plan {
    let mut out = Plan::default();
    let reachable: Vec<(&NodeInventory, &BTreeMap<RecordKey, HeldShare>)> = inventories
        .iter()
        .filter_map(|node| match &node.entries {
            Ok(entries) => Some((node, entries)),
            Err(reason) => {
                out.unreachable.push((node.id.clone(), reason.clone()));
                None
            }
        })
        .collect();
    let keys: BTreeSet<&RecordKey> = reachable
        .iter()
        .flat_map(|(_, entries)| entries.keys())
        .collect();
    out.keys = keys.len();
    for key in keys {
        // The highest (version, epoch) any reachable node holds, and whether it is a
        // tombstone. A tombstone and data never share a version (each write has its own).
        let best = reachable
            .iter()
            .filter_map(|(_, entries)| match entries.get(key) {
                Some(HeldShare::Held {
                    version,
                    epoch,
                    tombstone,
                    ..
                }) => Some((*version, *epoch, *tombstone)),
                _ => None,
            })
            .max();
        let Some((version, epoch, tombstone)) = best else {
            out.unrecoverable
                .push((key.clone(), "every reachable copy is damaged".to_owned()));
            continue;
        };
        // The majority digest among the nodes at the best generation is "the" dealing.
        let mut digests: BTreeMap<[u8; 32], Vec<ShareIndex>> = BTreeMap::new();
        for (node, entries) in &reachable {
            if let Some(HeldShare::Held {
                version: v,
                epoch: e,
                header_digest,
                ..
            }) = entries.get(key)
            {
                if (*v, *e) == (version, epoch) {
                    digests.entry(*header_digest).or_default().push(node.index);
                }
            }
        }
        let (majority, holders) = digests
            .iter()
            .max_by_key(|(_, holders)| holders.len())
            .map(|(digest, holders)| (*digest, holders.clone()))
            .unwrap_or_default();
        let proof = reachable
            .iter()
            .find_map(|(_, entries)| match entries.get(key) {
                Some(HeldShare::Held {
                    version: v,
                    tombstone_proof: Some(proof),
                    ..
                }) if *v == version => Some(proof.clone()),
                _ => None,
            });
        // Heads and kept versions together: is an older version complete where the newest
        // is not? Then the newest is a write that failed partway, not lost shares.
        if !tombstone && holders.len() < k {
            let mut counts: BTreeMap<Version, usize> = BTreeMap::new();
            for (node, entries) in &reachable {
                if let Some(HeldShare::Held { version: v, .. }) = entries.get(key) {
                    *counts.entry(*v).or_default() += 1;
                }
                for v in node.kept.get(key).into_iter().flatten() {
                    *counts.entry(*v).or_default() += 1;
                }
            }
            if let Some((complete, _)) = counts.iter().rev().find(|(_, &n)| n >= k) {
                out.incomplete.push((
                    key.clone(),
                    format!(
                        "newest version {version} is on {} of the k = {k} nodes it needs (a \
                         write that failed partway); version {complete}, kept under it, reads",
                        holders.len()
                    ),
                ));
                continue;
            }
        }
        let want = if tombstone {
            let Some(proof) = proof else {
                out.unrecoverable.push((
                    key.clone(),
                    "no node gave the tombstone's signed header".to_owned(),
                ));
                continue;
            };
            Want::Tombstone { version, proof }
        } else {
            Want::Data {
                version,
                epoch,
                holders,
            }
        };
        for (node, entries) in &reachable {
            let problem = match entries.get(key) {
                None => Some(Problem::Missing),
                Some(HeldShare::Corrupt { reason }) => Some(Problem::Corrupt {
                    reason: reason.clone(),
                }),
                Some(HeldShare::Held {
                    version: v,
                    epoch: e,
                    header_digest,
                    ..
                }) => {
                    if (*v, *e) < (version, epoch) {
                        Some(Problem::Stale {
                            version: *v,
                            epoch: *e,
                        })
                    } else if *header_digest != majority {
                        Some(Problem::Inconsistent)
                    } else {
                        None
                    }
                }
            };
            if let Some(problem) = problem {
                out.findings.push(Finding {
                    key: key.clone(),
                    target: (node.id.clone(), node.index),
                    problem,
                    want: want.clone(),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bunsan_protocol::WriterId;

    fn v(clock: u64) -> Version {
        Version {
            clock_micros: clock,
            writer: WriterId(1),
        }
    }

    fn held(clock: u64, epoch: u32, tombstone: bool, digest: u8) -> HeldShare {
        HeldShare::Held {
            version: v(clock),
            epoch,
            tombstone,
            record_len: 3,
            header_digest: [digest; 32],
            tombstone_proof: tombstone.then(|| Box::new(proof(clock))),
        }
    }

    fn proof(clock: u64) -> (RecordHeader, WriterSignature) {
        let header = RecordHeader {
            key: RecordKey::new("t").expect("key"),
            version: v(clock),
            scheme: bunsan_protocol::Scheme::new(2, 5).expect("scheme"),
            record_len: 0,
            tombstone: true,
            commitments: Vec::new(),
            record_check: None,
            sealed_nonces: Vec::new(),
        };
        let signature = WriterSignature {
            certificate: vec![0x30],
            signature: vec![1],
        };
        (header, signature)
    }

    fn node(i: u8, entries: &[(&str, HeldShare)]) -> NodeInventory {
        NodeInventory {
            id: format!("node-{i}"),
            index: ShareIndex::new(i).expect("index"),
            entries: Ok(entries
                .iter()
                .map(|(k, h)| (RecordKey::new(*k).expect("key"), h.clone()))
                .collect()),
            kept: BTreeMap::new(),
        }
    }

    fn x(i: u8) -> ShareIndex {
        ShareIndex::new(i).expect("index")
    }

    #[test]
    fn finds_missing_stale_corrupt_and_inconsistent_shares() {
        let corrupt = HeldShare::Corrupt {
            reason: "checksum mismatch".to_owned(),
        };
        let inventories = vec![
            node(
                1,
                &[("a", held(5, 0, false, 1)), ("t", held(9, 0, true, 7))],
            ),
            node(
                2,
                &[("a", held(5, 0, false, 1)), ("t", held(3, 0, false, 2))],
            ),
            node(3, &[("a", held(4, 0, false, 3))]),
            node(4, &[("a", corrupt.clone()), ("t", held(9, 0, true, 7))]),
            node(5, &[("a", held(5, 0, false, 9))]),
            NodeInventory {
                id: "node-6".to_owned(),
                index: x(6),
                entries: Err("timed out".to_owned()),
                kept: BTreeMap::new(),
            },
        ];
        let plan = plan(&inventories, 2);
        assert_eq!(plan.keys, 2);
        assert_eq!(
            plan.unreachable,
            [("node-6".to_owned(), "timed out".to_owned())]
        );
        let summary: Vec<(&str, &str, &Problem)> = plan
            .findings
            .iter()
            .map(|f| (f.key.as_str(), f.target.0.as_str(), &f.problem))
            .collect();
        assert_eq!(
            summary,
            [
                (
                    "a",
                    "node-3",
                    &Problem::Stale {
                        version: v(4),
                        epoch: 0
                    }
                ),
                (
                    "a",
                    "node-4",
                    &Problem::Corrupt {
                        reason: "checksum mismatch".to_owned()
                    }
                ),
                ("a", "node-5", &Problem::Inconsistent),
                (
                    "t",
                    "node-2",
                    &Problem::Stale {
                        version: v(3),
                        epoch: 0
                    }
                ),
                ("t", "node-3", &Problem::Missing),
                ("t", "node-5", &Problem::Missing),
            ]
        );
        assert_eq!(
            plan.findings[0].want,
            Want::Data {
                version: v(5),
                epoch: 0,
                holders: vec![x(1), x(2)]
            }
        );
        assert_eq!(
            plan.findings[3].want,
            Want::Tombstone {
                version: v(9),
                proof: Box::new(proof(9))
            }
        );
    }

    #[test]
    fn a_failed_newest_write_over_a_complete_kept_version_is_left_to_readers() {
        // k = 3. Version 5 was acknowledged everywhere; 7 and 8 failed partway (2 + 1 nodes),
        // each node keeping 5 under them. Key "lost": version 5 on two nodes, nothing kept:
        // shares were lost, which stays a finding.
        let mut inventories = vec![
            node(
                1,
                &[("r", held(7, 0, false, 1)), ("lost", held(5, 0, false, 4))],
            ),
            node(
                2,
                &[("r", held(7, 0, false, 1)), ("lost", held(5, 0, false, 4))],
            ),
            node(3, &[("r", held(8, 0, false, 2))]),
            node(4, &[("r", held(5, 0, false, 3))]),
        ];
        for inventory in &mut inventories[..3] {
            inventory
                .kept
                .insert(RecordKey::new("r").expect("key"), vec![v(5)]);
        }
        let plan = plan(&inventories, 3);
        assert_eq!(plan.incomplete.len(), 1);
        assert_eq!(plan.incomplete[0].0.as_str(), "r");
        assert!(
            plan.incomplete[0].1.contains("failed partway"),
            "{:?}",
            plan.incomplete
        );
        let keys: Vec<&str> = plan.findings.iter().map(|f| f.key.as_str()).collect();
        assert_eq!(keys, ["lost", "lost"]);
        // Without the kept versions, "r" would be planned (and fail) as a repair of version 8.
        for inventory in &mut inventories {
            inventory.kept.clear();
        }
        let blind = super::plan(&inventories, 3);
        assert!(blind.incomplete.is_empty());
        assert!(blind.findings.iter().any(|f| f.key.as_str() == "r"));
    }

    #[test]
    fn a_later_epoch_makes_earlier_ones_stale() {
        let inventories = vec![
            node(1, &[("r", held(5, 1, false, 1))]),
            node(2, &[("r", held(5, 1, false, 1))]),
            node(3, &[("r", held(5, 0, false, 2))]),
        ];
        let plan = plan(&inventories, 2);
        assert_eq!(plan.findings.len(), 1);
        assert_eq!(
            plan.findings[0].problem,
            Problem::Stale {
                version: v(5),
                epoch: 0
            }
        );
        assert!(plan.findings[0].job_id().starts_with("node-3\tr\t"));
        assert_eq!(inventories[0].live_records(), 1);
    }
}
