//! `bunsan-cluster status`: one row per node, as a table or as JSON.
//!
//! ```text
//! NODE    ADDRESS         STATE  VERSION  RECORDS  TOMBSTONES  BYTES  AUDIT HEAD  LAG
//! node-1  127.0.0.1:7101  up     0.1.0        120           3  61440           -    0
//! node-2  127.0.0.1:7102  down   -              -           -      -           -    -  timed out
//! ```
//!
//! The numbers come from each node's `Status` answer (admin identity), gathered by
//! [`ops::status`]. Two columns need saying what they are:
//!
//! - **LAG** is how many record versions (live records plus tombstones) the node holds fewer
//!   than the most complete node that answered. It compares counts, not key sets, so two nodes
//!   missing *different* records can both show 0; it is the cheap early warning, and the
//!   repair tool (with the repair issue) does the exact comparison.
//! - **AUDIT HEAD** is the sequence number of the node's newest audit entry. Nodes do not
//!   report one yet (the audit log is being added), so it shows `-` (`null` in JSON) rather
//!   than a made-up number.

use std::net::SocketAddr;
use std::path::Path;

use serde::Serialize;

use crate::error::Result;
use crate::layout::ClusterLayout;
use crate::ops::{self, NodeReport};

/// The status of every node of a cluster, in manifest order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterStatus {
    /// The cluster's name from its manifest.
    pub cluster: String,
    /// k: shares needed to rebuild a record.
    pub threshold: u8,
    /// W: acknowledgements a write needs.
    pub write_quorum: u8,
    /// One row per node.
    pub nodes: Vec<NodeRow>,
}

/// One node's row; every field but `id`, `address` and `up` is `None` for a node that did
/// not answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeRow {
    /// The node id.
    pub id: String,
    /// The address it was asked at.
    pub address: SocketAddr,
    /// Whether it answered.
    pub up: bool,
    /// Why it did not answer.
    pub error: Option<String>,
    /// Its software version (`bunsan-node 0.1.0`).
    pub software: Option<String>,
    /// Live records it holds a share of.
    pub records: Option<u64>,
    /// Tombstones it keeps.
    pub tombstones: Option<u64>,
    /// Share payload bytes of its live records.
    pub bytes: Option<u64>,
    /// Seconds since it started.
    pub uptime_secs: Option<u64>,
    /// Sequence number of its newest audit entry (`None` for an empty log or a node that did
    /// not answer).
    pub audit_head: Option<u64>,
    /// Record versions it holds fewer than the most complete node (see the module docs).
    pub lag: Option<u64>,
}

impl ClusterStatus {
    /// True when every node answered.
    pub fn all_up(&self) -> bool {
        self.nodes.iter().all(|node| node.up)
    }

    /// The status as pretty-printed JSON (the `--json` output).
    pub fn to_json(&self) -> String {
        // Serialising plain strings, integers and options cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The status as an aligned text table, a line per node; down nodes end with the reason.
    pub fn render_table(&self) -> String {
        const HEADER: [&str; 9] = [
            "NODE",
            "ADDRESS",
            "STATE",
            "VERSION",
            "RECORDS",
            "TOMBSTONES",
            "BYTES",
            "AUDIT HEAD",
            "LAG",
        ];
        /// Columns 0..LEFT hold text and align left; the rest are counts and align right.
        const LEFT: usize = 4;
        let dash = || "-".to_owned();
        let count = |value: Option<u64>| value.map_or_else(dash, |v| v.to_string());
        let mut rows: Vec<[String; 9]> = vec![HEADER.map(str::to_owned)];
        for node in &self.nodes {
            let version = node.software.as_deref().map_or_else(dash, |software| {
                // "bunsan-node 0.1.0" → "0.1.0": the column says what it is.
                software
                    .strip_prefix("bunsan-node ")
                    .unwrap_or(software)
                    .to_owned()
            });
            rows.push([
                node.id.clone(),
                node.address.to_string(),
                if node.up { "up" } else { "down" }.to_owned(),
                version,
                count(node.records),
                count(node.tombstones),
                count(node.bytes),
                count(node.audit_head),
                count(node.lag),
            ]);
        }
        let widths: Vec<usize> = (0..HEADER.len())
            .map(|column| rows.iter().map(|row| row[column].len()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for (line, row) in rows.iter().enumerate() {
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(column, (cell, &width))| {
                    if column < LEFT {
                        format!("{cell:<width$}")
                    } else {
                        format!("{cell:>width$}")
                    }
                })
                .collect();
            out.push_str(cells.join("  ").trim_end());
            let error = line
                .checked_sub(1)
                .and_then(|node| self.nodes[node].error.as_deref());
            if let Some(error) = error {
                out.push_str("  ");
                out.push_str(error);
            }
            out.push('\n');
        }
        out
    }
}

/// Asks every node of the cluster at `dir` for its status (admin identity, all at once) and
/// computes each node's lag. A node that does not answer is a row with `up: false`, not an
/// error. Must be called inside a tokio runtime.
pub async fn collect(dir: &Path) -> Result<ClusterStatus> {
    let manifest = ClusterLayout::new(dir).read_manifest()?;
    let reports = ops::status(dir).await?;
    Ok(ClusterStatus {
        cluster: manifest.name.clone(),
        threshold: manifest.threshold,
        write_quorum: manifest.write_quorum,
        nodes: rows(&reports),
    })
}

/// Rows from `status` answers, with the lag of each node that answered.
pub fn rows(reports: &[NodeReport]) -> Vec<NodeRow> {
    let versions = |report: &NodeReport| {
        report
            .status
            .as_ref()
            .ok()
            .map(|s| s.records.saturating_add(s.tombstones))
    };
    let most = reports.iter().filter_map(versions).max().unwrap_or(0);
    reports
        .iter()
        .map(|report| match &report.status {
            Ok(status) => NodeRow {
                id: report.id.clone(),
                address: report.address,
                up: true,
                error: None,
                software: Some(status.software.clone()),
                records: Some(status.records),
                tombstones: Some(status.tombstones),
                bytes: Some(status.bytes),
                uptime_secs: Some(status.uptime_secs),
                audit_head: status.audit_entries.checked_sub(1),
                lag: versions(report).map(|held| most - held),
            },
            Err(error) => NodeRow {
                id: report.id.clone(),
                address: report.address,
                up: false,
                error: Some(error.clone()),
                software: None,
                records: None,
                tombstones: None,
                bytes: None,
                uptime_secs: None,
                audit_head: None,
                lag: None,
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use bunsan_protocol::message::NodeStatus;
    use bunsan_protocol::ShareIndex;

    use super::*;

    fn report(id: &str, port: u16, records: Option<u64>) -> NodeReport {
        NodeReport {
            id: id.to_owned(),
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            status: match records {
                Some(records) => Ok(NodeStatus {
                    node_id: id.to_owned(),
                    index: ShareIndex::new(1).expect("index"),
                    software: "bunsan-node 0.1.0".to_owned(),
                    records,
                    tombstones: 2,
                    bytes: records * 100,
                    uptime_secs: 5,
                    audit_entries: 0,
                }),
                None => Err("no answer within 3s".to_owned()),
            },
        }
    }

    fn status() -> ClusterStatus {
        ClusterStatus {
            cluster: "test".to_owned(),
            threshold: 2,
            write_quorum: 3,
            nodes: rows(&[
                report("node-1", 7101, Some(120)),
                report("node-2", 7102, Some(117)),
                report("node-3", 7103, None),
            ]),
        }
    }

    #[test]
    fn lag_counts_versions_behind_the_most_complete_node() {
        let status = status();
        let lags: Vec<Option<u64>> = status.nodes.iter().map(|n| n.lag).collect();
        assert_eq!(lags, vec![Some(0), Some(3), None]);
        assert!(!status.all_up());
        assert!(status.nodes.iter().all(|n| n.audit_head.is_none()));
    }

    #[test]
    fn the_audit_head_is_the_newest_entry() {
        let mut answered = report("node-1", 7101, Some(1));
        if let Ok(node) = &mut answered.status {
            node.audit_entries = 42;
        }
        let row = &rows(&[answered, report("node-2", 7102, Some(1))])[..];
        assert_eq!(row[0].audit_head, Some(41));
        assert_eq!(row[1].audit_head, None, "an empty log has no head");
    }

    #[test]
    fn table_aligns_shows_placeholders_and_explains_down_nodes() {
        let table = status().render_table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines[0].starts_with("NODE") && lines[0].ends_with("AUDIT HEAD  LAG"));
        assert!(lines[1].contains("  up  ") && lines[1].contains("0.1.0"));
        assert!(lines[1].ends_with("-    0"), "{table}");
        assert!(lines[2].ends_with("-    3"), "{table}");
        assert!(lines[3].contains("down") && lines[3].ends_with("no answer within 3s"));
        // Counts align right: every row's LAG column ends at the same place as its header.
        let lag_end = lines[0].len();
        assert_eq!(lines[1].len(), lag_end);
        assert_eq!(lines[2].len(), lag_end);
    }

    #[test]
    fn json_names_every_field_and_uses_null_for_unknowns() {
        let json: serde_json::Value =
            serde_json::from_str(&status().to_json()).expect("valid json");
        assert_eq!(json["cluster"], "test");
        let nodes = json["nodes"].as_array().expect("nodes");
        assert_eq!(nodes.len(), 3);
        assert_eq!(nodes[0]["address"], "127.0.0.1:7101");
        assert_eq!(nodes[0]["records"], 120);
        assert_eq!(nodes[1]["lag"], 3);
        assert!(nodes[0]["audit_head"].is_null());
        assert_eq!(nodes[2]["up"], false);
        assert!(nodes[2]["records"].is_null());
        assert_eq!(nodes[2]["error"], "no answer within 3s");
    }
}
