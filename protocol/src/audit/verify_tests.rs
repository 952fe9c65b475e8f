//! Tests of [`super`]: a clean synthetic cluster of logs verifies; every kind of tampering is
//! found and pinned to the right sequence number.

use proptest::prelude::*;

use super::*;
use crate::audit::export::ExportedEntry;
use crate::audit::AuditRecord;
use crate::checkpoint::{cosign, log_origin};
use crate::node_key::test_pki::TestCa;
use crate::node_key::NodeSigner;
use crate::note::SignedNote;

struct Node {
    id: String,
    signer: NodeSigner,
    cert: Vec<u8>,
}

fn entries(node: &str, n: u64, variant: u8) -> Vec<AuditEntry> {
    (0..n)
        .map(|seq| {
            let mut e = crate::audit::tests::entry(seq);
            e.node_id = node.to_owned();
            e.request_id = Some(crate::RequestId([variant; 16]));
            e
        })
        .collect()
}

/// An export of `entries` signed by `node` at `sizes`, with proofs between them.
fn export(node: &Node, entries: &[AuditEntry], sizes: &[u64]) -> NodeExport {
    let mut tree = MerkleTree::new();
    let mut chains = Vec::new();
    let mut previous = CHAIN_GENESIS;
    let mut lines = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let record = AuditRecord::new(entry, &previous).expect("record");
        previous = record.chain;
        tree.push(record.leaf_hash());
        chains.push(record.chain);
        lines.push(ExportedEntry {
            line: i + 1,
            seq: Some(i as u64),
            chain: Some(record.chain),
            entry: Ok(record.entry),
        });
    }
    let checkpoints = sizes
        .iter()
        .map(|&size| {
            let cp = Checkpoint {
                origin: log_origin(&node.id),
                size,
                root: tree.root(size).expect("root"),
                chain: if size == 0 {
                    CHAIN_GENESIS
                } else {
                    chains[size as usize - 1]
                },
                time_micros: 1_000 + size,
            };
            (format!("{size}.note"), cp.sign(&node.signer).expect("sign"))
        })
        .collect();
    let proofs = sizes
        .windows(2)
        .map(|pair| {
            let proof = ExportedProof {
                from: pair[0],
                to: pair[1],
                hashes: tree.consistency_proof(pair[0], pair[1]).expect("proof"),
            };
            (format!("{}-{}.proof", pair[0], pair[1]), Ok(proof))
        })
        .collect();
    NodeExport {
        node_id: node.id.clone(),
        certificate: Some(node.cert.clone()),
        entries: lines,
        checkpoints,
        proofs,
        witnessed: Vec::new(),
    }
}

/// `witness` cosigns the last checkpoint of `log`: the cosignature goes onto the log's
/// checkpoint and into the witness's `witnessed` list.
fn cosign_last(witness: &Node, log: &mut NodeExport, witness_export: &mut NodeExport) {
    let (file, note) = log.checkpoints.last_mut().expect("a checkpoint");
    let mut parsed = SignedNote::parse(note).expect("note");
    parsed.add_signature(cosign(&parsed.text, &witness.signer, 1_767_225_600).expect("cosign"));
    *note = parsed.to_text();
    witness_export
        .witnessed
        .push((format!("{}/{file}", log.node_id), note.clone()));
}

struct Cluster {
    ca: TestCa,
    nodes: Vec<Node>,
    exports: Vec<NodeExport>,
}

const SIZES: [u64; 3] = [5, 12, 20];

fn cluster() -> Cluster {
    let ca = TestCa::new("test CA");
    let nodes: Vec<Node> = (1..=3)
        .map(|i| {
            let id = format!("node-{i}");
            let (signer, cert) = ca.signer(&id);
            Node { id, signer, cert }
        })
        .collect();
    let mut exports: Vec<NodeExport> = nodes
        .iter()
        .map(|node| export(node, &entries(&node.id, 20, 0), &SIZES))
        .collect();
    for (witness, node) in nodes.iter().enumerate() {
        for log in (0..3).filter(|&log| log != witness) {
            let mut log_export = std::mem::take(&mut exports[log]);
            let mut witness_export = std::mem::take(&mut exports[witness]);
            cosign_last(node, &mut log_export, &mut witness_export);
            exports[log] = log_export;
            exports[witness] = witness_export;
        }
    }
    Cluster { ca, nodes, exports }
}

fn first(cluster: &Cluster) -> Finding {
    let verdicts = verify_logs(&cluster.ca.der, &cluster.exports);
    for other in &verdicts[1..] {
        assert!(other.is_ok(), "{}: {:?}", other.node_id, other.findings);
    }
    verdicts[0].first().cloned().expect("node-1 must fail")
}

#[test]
fn a_clean_cluster_verifies_with_every_cosignature() {
    let cluster = cluster();
    for verdict in verify_logs(&cluster.ca.der, &cluster.exports) {
        assert!(
            verdict.is_ok(),
            "{}: {:?}",
            verdict.node_id,
            verdict.findings
        );
        assert_eq!(verdict.entries, 20);
        assert_eq!(verdict.verified_size, 20);
        assert_eq!(verdict.checkpoints, 3);
        assert_eq!(verdict.cosignatures, 2);
    }
}

#[test]
fn an_edited_byte_is_pinned_to_its_entry() {
    let mut cluster = cluster();
    if let Ok(bytes) = &mut cluster.exports[0].entries[7].entry {
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01; // inside the purpose text or request fields
    }
    let finding = first(&cluster);
    assert_eq!(finding.seq, Some(7));
    assert!(matches!(
        finding.problem,
        Problem::Altered | Problem::Undecodable { .. }
    ));
}

#[test]
fn a_deleted_entry_is_named_missing() {
    let mut cluster = cluster();
    cluster.exports[0].entries.remove(9);
    let finding = first(&cluster);
    assert_eq!(finding.seq, Some(9));
    assert_eq!(finding.problem, Problem::Missing { next: 10 });
}

#[test]
fn swapped_entries_are_named_out_of_order() {
    let mut cluster = cluster();
    cluster.exports[0].entries.swap(3, 4);
    let finding = first(&cluster);
    assert_eq!(finding.seq, Some(3));
    assert_eq!(finding.problem, Problem::OutOfOrder { found: 4 });
}

#[test]
fn a_truncated_tail_is_named() {
    let mut cluster = cluster();
    cluster.exports[0].entries.truncate(17);
    let finding = first(&cluster);
    assert_eq!(finding.seq, Some(17));
    assert!(matches!(
        finding.problem,
        Problem::Truncated {
            size: 20,
            entries: 17
        } | Problem::WitnessedTruncated { size: 20, .. }
    ));
}

#[test]
fn a_rewritten_and_resigned_log_is_caught_by_its_cosigners() {
    let mut cluster = cluster();
    // node-1 rewrites entry 3 and re-signs everything; its own data is self-consistent.
    let mut forged = entries("node-1", 20, 0);
    forged[3].purpose = Some(crate::Purpose::new("drill", "nothing to see").expect("purpose"));
    let witnessed_cosigs = cluster.exports[0].checkpoints.clone();
    cluster.exports[0] = export(&cluster.nodes[0], &forged, &SIZES);
    let verdicts = verify_logs(&cluster.ca.der, &cluster.exports);
    let problems: Vec<&Problem> = verdicts[0].findings.iter().map(|f| &f.problem).collect();
    assert!(
        problems
            .iter()
            .any(|p| matches!(p, Problem::Rewritten { size: 20, .. })),
        "{problems:?}"
    );
    // With the old (cosigned) checkpoints still in the directory, the fork shows directly.
    cluster.exports[0]
        .checkpoints
        .push(("old.note".to_owned(), witnessed_cosigs[2].1.clone()));
    let verdicts = verify_logs(&cluster.ca.der, &cluster.exports);
    assert!(verdicts[0]
        .findings
        .iter()
        .any(|f| f.problem == Problem::Fork { size: 20 }));
}

#[test]
fn an_inconsistent_proof_between_checkpoints_is_a_fork() {
    let mut cluster = cluster();
    // Entries 12..20 come from another history: the size-20 checkpoint and the proof from 12
    // belong to that history, the entries below 12 to the first one.
    let forked = export(&cluster.nodes[0], &entries("node-1", 20, 1), &SIZES);
    cluster.exports[0].checkpoints[2] = forked.checkpoints[2].clone();
    cluster.exports[0].proofs[1] = forked.proofs[1].clone();
    let verdicts = verify_logs(&cluster.ca.der, &cluster.exports);
    let problems: Vec<&Problem> = verdicts[0].findings.iter().map(|f| &f.problem).collect();
    assert!(
        problems.iter().any(|p| matches!(
            p,
            Problem::Inconsistent {
                from: 12,
                to: 20,
                ..
            }
        )),
        "{problems:?}"
    );
    assert!(problems.iter().any(|p| matches!(
        p,
        Problem::CheckpointMismatch {
            size: 20,
            since: 12
        }
    )));
}

#[test]
fn a_certificate_from_another_ca_fails_the_node() {
    let mut cluster = cluster();
    let stranger = TestCa::new("test CA");
    cluster.exports[0].certificate = Some(stranger.signer("node-1").1);
    let finding = first(&cluster);
    assert!(matches!(finding.problem, Problem::Certificate { .. }));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn any_tampering_of_entries_fails_verification(
        op in 0u8..4,
        at in 0usize..19,
        bit in 0u8..8,
    ) {
        let mut cluster = cluster();
        let entries = &mut cluster.exports[0].entries;
        match op {
            0 => {
                if let Ok(bytes) = &mut entries[at].entry {
                    let i = (at * 7 + 3) % bytes.len();
                    bytes[i] ^= 1 << bit;
                }
            }
            1 => { entries.remove(at); }
            2 => entries.swap(at, at + 1),
            _ => entries.truncate(at),
        }
        let verdicts = verify_logs(&cluster.ca.der, &cluster.exports);
        prop_assert!(!verdicts[0].is_ok());
        prop_assert!(verdicts[1].is_ok() && verdicts[2].is_ok());
        let first = verdicts[0].first().expect("a finding");
        prop_assert!(first.seq.is_some_and(|seq| seq <= at as u64 + 1), "{:?}", first);
    }
}
