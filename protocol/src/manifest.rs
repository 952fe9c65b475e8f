//! The cluster manifest (`cluster.toml`): which nodes exist, where they listen, k and W.
//!
//! Every client and tool reads the same manifest. It is parsed from text here (no file I/O) and
//! checked as a whole: node indices are exactly 1..=n, ids are unique host-name labels (they are
//! the TLS server names), and the write quorum W is one that keeps acknowledged writes readable.
//!
//! ```toml
//! name = "bunsan-local"
//! threshold = 3
//! write_quorum = 5
//!
//! [[nodes]]
//! id = "node-1"
//! index = 1
//! site = "site-1"
//! addresses = ["127.0.0.1:7101"]
//! ```

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::types::{Scheme, ShareIndex};

/// One storage node as the manifest describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEntry {
    /// The node's id: a host-name label, also the DNS name in its certificate.
    pub id: String,
    /// The share index (x-coordinate) this node holds, 1..=n.
    pub index: ShareIndex,
    /// The site (data centre) the node runs in; losing a site loses its node.
    pub site: String,
    /// Where the node's processes listen (UDP, QUIC); tried in order.
    pub addresses: Vec<SocketAddr>,
}

/// A checked cluster manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Manifest {
    /// A name for humans and logs.
    pub name: String,
    /// k of n.
    #[serde(skip)]
    pub scheme: Scheme,
    /// k, as written in the file.
    pub threshold: u8,
    /// W: a put or delete succeeds once this many nodes acknowledged it durably.
    pub write_quorum: u8,
    /// The nodes, sorted by index.
    pub nodes: Vec<NodeEntry>,
}

#[derive(Deserialize)]
struct RawManifest {
    name: String,
    threshold: u8,
    write_quorum: Option<u8>,
    nodes: Vec<NodeEntry>,
}

impl Manifest {
    /// Builds and checks a manifest from its parts; `write_quorum` defaults to n.
    ///
    /// W must satisfy k + 1 ≤ W ≤ n (or W = n when k = n): a write acknowledged by only k nodes
    /// would be lost with the first node, and W > n can never be met.
    pub fn new(
        name: String,
        threshold: u8,
        write_quorum: Option<u8>,
        mut nodes: Vec<NodeEntry>,
    ) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidManifest { reason };
        let scheme = Scheme::new(threshold, nodes.len())?;
        let n = scheme.shares();
        nodes.sort_by_key(|node| node.index);
        for (position, node) in nodes.iter().enumerate() {
            let expected = position + 1;
            if usize::from(node.index.get()) != expected {
                return Err(invalid(format!(
                    "node indices must be exactly 1..={n}; found {} where {expected} was expected",
                    node.index
                )));
            }
            if !is_label(&node.id) {
                return Err(invalid(format!(
                    "node id {:?} must be 1-63 of a-z, 0-9 and '-' (it is the TLS server name)",
                    node.id
                )));
            }
            if node.addresses.is_empty() {
                return Err(invalid(format!("node {} has no address", node.id)));
            }
        }
        for (i, node) in nodes.iter().enumerate() {
            if nodes[..i].iter().any(|other| other.id == node.id) {
                return Err(invalid(format!("node id {} appears twice", node.id)));
            }
        }
        let write_quorum = write_quorum.unwrap_or(n);
        let lowest = if threshold == n { n } else { threshold + 1 };
        if write_quorum < lowest || write_quorum > n {
            return Err(invalid(format!(
                "write_quorum {write_quorum} must be between {lowest} and {n}"
            )));
        }
        Ok(Self {
            name,
            scheme,
            threshold,
            write_quorum,
            nodes,
        })
    }

    /// Parses and checks `cluster.toml` text.
    pub fn from_toml(text: &str) -> Result<Self> {
        let raw: RawManifest = toml::from_str(text).map_err(|e| Error::InvalidManifest {
            reason: e.to_string(),
        })?;
        Self::new(raw.name, raw.threshold, raw.write_quorum, raw.nodes)
    }

    /// Renders the manifest as `cluster.toml` text that [`Manifest::from_toml`] reads back.
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string(self).map_err(|e| Error::Encode {
            what: "cluster manifest",
            reason: e.to_string(),
        })
    }

    /// The node with this id, if any.
    pub fn node(&self, id: &str) -> Option<&NodeEntry> {
        self.nodes.iter().find(|node| node.id == id)
    }

    /// The number of reads a get must hear from so that it meets every acknowledged write:
    /// `max(k, n − W + 1)`.
    pub fn read_quorum(&self) -> usize {
        let n = usize::from(self.scheme.shares());
        let w = usize::from(self.write_quorum);
        self.scheme.threshold().as_usize().max(n - w + 1)
    }
}

/// A host-name label: what a node id must be so it can serve as a TLS server name.
fn is_label(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 63
        && !id.starts_with('-')
        && !id.ends_with('-')
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(nodes: usize, threshold: u8, quorum: Option<u8>) -> String {
        let mut s = format!("name = \"t\"\nthreshold = {threshold}\n");
        if let Some(w) = quorum {
            s += &format!("write_quorum = {w}\n");
        }
        for i in 1..=nodes {
            s += &format!(
                "[[nodes]]\nid = \"node-{i}\"\nindex = {i}\nsite = \"site-{i}\"\naddresses = [\"127.0.0.1:{}\"]\n",
                7000 + i
            );
        }
        s
    }

    #[test]
    fn parses_and_round_trips() {
        let m = Manifest::from_toml(&text(5, 3, None)).expect("manifest");
        assert_eq!(m.write_quorum, 5);
        assert_eq!(m.read_quorum(), 3);
        let again = Manifest::from_toml(&m.to_toml().expect("toml")).expect("again");
        assert_eq!(again, m);
    }

    #[test]
    fn read_quorum_meets_every_write_quorum() {
        let m = Manifest::from_toml(&text(5, 2, Some(3))).expect("manifest");
        assert_eq!(m.read_quorum(), 3);
    }

    #[test]
    fn rejects_bad_shapes() {
        assert!(Manifest::from_toml(&text(5, 3, Some(3))).is_err());
        assert!(Manifest::from_toml(&text(5, 3, Some(6))).is_err());
        assert!(Manifest::from_toml(&text(2, 3, None)).is_err());
        assert!(Manifest::from_toml(&text(3, 1, None)).is_err());
        let gap = text(3, 2, None).replace("index = 2", "index = 4");
        assert!(Manifest::from_toml(&gap).is_err());
        let dup = text(3, 2, None).replace("node-2", "node-1");
        assert!(Manifest::from_toml(&dup).is_err());
        let upper = text(3, 2, None).replace("node-2", "Node_2");
        assert!(Manifest::from_toml(&upper).is_err());
        assert!(Manifest::from_toml("not toml").is_err());
    }

    #[test]
    fn k_equals_n_needs_every_node() {
        assert!(Manifest::from_toml(&text(3, 3, None)).is_ok());
    }
}
