//! The client crate's one error type.

use std::path::PathBuf;

use bunsan_protocol::message::RemoteError;
use bunsan_protocol::{RecordKey, Version};
use thiserror::Error;

/// Why one node could not serve its part of an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFailure {
    /// The node id.
    pub node: String,
    /// What went wrong there.
    pub reason: String,
}

impl std::fmt::Display for NodeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.node, self.reason)
    }
}

fn list(failures: &[NodeFailure]) -> String {
    if failures.is_empty() {
        return "none".to_owned();
    }
    failures
        .iter()
        .map(NodeFailure::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Everything that can go wrong talking to a cluster.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// A protocol-level check failed (bad key, bad shares, bad frame, ...).
    #[error(transparent)]
    Protocol(#[from] bunsan_protocol::Error),
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// An identity directory holds something that is not a usable certificate or key.
    #[error("bad identity file {path}: {reason}")]
    BadIdentity {
        /// The offending file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// TLS configuration failed.
    #[error("tls: {0}")]
    Tls(#[from] rustls::Error),
    /// The local QUIC endpoint could not be created.
    #[error("cannot open a QUIC endpoint: {0}")]
    Endpoint(std::io::Error),
    /// The node id is not in the manifest.
    #[error("unknown node {node}")]
    UnknownNode {
        /// The id asked for.
        node: String,
    },
    /// One node failed a single-node call.
    #[error("node {}: {}", .0.node, .0.reason)]
    Node(NodeFailure),
    /// A node answered with an error.
    #[error("node {node} refused: {error}")]
    Remote {
        /// The node.
        node: String,
        /// Its answer.
        error: RemoteError,
    },
    /// Fewer than W nodes acknowledged a write.
    #[error("write not durable: {acked} of {needed} required nodes acknowledged (failed: {})", list(.failures))]
    WriteQuorumNotMet {
        /// Nodes that acknowledged.
        acked: usize,
        /// W, the write quorum.
        needed: usize,
        /// The nodes that did not, and why.
        failures: Vec<NodeFailure>,
    },
    /// A newer version of the record already exists on the nodes; this write lost.
    #[error("record {key} has a newer version {current} than this write")]
    Superseded {
        /// The record.
        key: RecordKey,
        /// The version the nodes hold.
        current: Version,
    },
    /// Not enough shares of one version could be gathered to rebuild the record.
    #[error("record {key}: found {found} matching shares but {needed} are needed (failed: {})", list(.failures))]
    NotEnoughShares {
        /// The record.
        key: RecordKey,
        /// Shares of the best version found.
        found: usize,
        /// k.
        needed: usize,
        /// Nodes that failed or did not answer in time.
        failures: Vec<NodeFailure>,
    },
    /// No node holds the record.
    #[error("record {key} not found")]
    NotFound {
        /// The record.
        key: RecordKey,
    },
    /// The record was deleted.
    #[error("record {key} was deleted (version {version})")]
    Deleted {
        /// The record.
        key: RecordKey,
        /// The tombstone's version.
        version: Version,
    },
    /// The record is larger than one envelope may hold.
    #[error("record of {len} bytes exceeds the maximum of {max} bytes")]
    RecordTooLarge {
        /// Its length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A chunked record's manifest could not be decoded: corrupt or forged.
    #[error("record {key}: its chunk manifest is invalid: {source}")]
    ManifestCorrupt {
        /// The record.
        key: RecordKey,
        /// What the decoder refused.
        source: bunsan_protocol::Error,
    },
    /// A chunk of a chunked record could not be read (missing, deleted, too few shares).
    #[error("record {key}: chunk {chunk} cannot be read: {source}")]
    ChunkUnavailable {
        /// The record.
        key: RecordKey,
        /// The chunk's position in the record (0-based).
        chunk: u32,
        /// Why the chunk's own get failed.
        source: Box<Error>,
    },
    /// A chunk does not match what the manifest says of it: corrupt, forged or replaced.
    #[error("record {key}: chunk {chunk} does not match the manifest ({what})")]
    ChunkMismatch {
        /// The record.
        key: RecordKey,
        /// The chunk's position in the record (0-based).
        chunk: u32,
        /// What differs: "version", "length" or "digest".
        what: &'static str,
    },
    /// The chunks all matched the manifest but the whole record does not match its digest
    /// (a writer that built an inconsistent manifest).
    #[error("record {key}: the rebuilt record does not match its digest")]
    RecordDigestMismatch {
        /// The record.
        key: RecordKey,
    },
    /// Reading a record's source or writing it to its sink failed.
    #[error("cannot {action} the record stream: {source}")]
    Stream {
        /// "read" or "write".
        action: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A node answered with a response of the wrong kind.
    #[error("node {node} answered {got} to a {request} request")]
    UnexpectedResponse {
        /// The node.
        node: String,
        /// The request's action.
        request: &'static str,
        /// What came back.
        got: String,
    },
}

/// Shorthand for client results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
