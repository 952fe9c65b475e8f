//! The client crate's one error type.

use std::path::PathBuf;

use bunsan_protocol::message::{ErrorCode, RemoteError};
use bunsan_protocol::{RecordKey, Version};
use thiserror::Error;

use crate::read::BadShare;

/// Why one node could not serve its part of an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFailure {
    /// The node id.
    pub node: String,
    /// What went wrong there.
    pub reason: String,
    /// The node's typed refusal when it answered with an error (`Forbidden` for a role that
    /// may not do this); `None` when the node could not be reached or answered oddly.
    pub code: Option<ErrorCode>,
}

impl NodeFailure {
    /// A node that answered `error`.
    pub fn refused(node: String, error: &RemoteError) -> Self {
        Self {
            node,
            reason: error.to_string(),
            code: Some(error.code),
        }
    }
}

impl std::fmt::Display for NodeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.code {
            // The reason already starts with the code: "node-1 refused: Forbidden: ...".
            Some(_) => write!(f, "{} refused: {}", self.node, self.reason),
            None => write!(f, "{}: {}", self.node, self.reason),
        }
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

fn bad_list(bad: &[BadShare]) -> String {
    if bad.is_empty() {
        return "none".to_owned();
    }
    bad.iter()
        .map(BadShare::to_string)
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
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    WriteFile {
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
    /// The client's put batcher stopped (the runtime is shutting down) before this put was
    /// dealt: nothing of it was sent.
    #[error("the client's put batcher stopped before this put was sent")]
    Closed,
    /// This identity's key cannot sign record headers (not a PKCS#8 ECDSA P-256 key).
    #[error("this identity cannot sign: {reason}")]
    CannotSign {
        /// Why its key is unusable.
        reason: String,
    },
    /// The newest version's verified shares do not rebuild a record that passes its signed
    /// end-to-end check, even after robust decoding: more shares are bad than can be
    /// corrected. Nothing is returned rather than a possibly wrong record.
    #[error("record {key} version {version} cannot be rebuilt with a passing integrity check: {source} (bad shares: {})", bad_list(.bad_shares))]
    Integrity {
        /// The record.
        key: RecordKey,
        /// The version that failed.
        version: Version,
        /// The nodes whose shares failed a check.
        bad_shares: Vec<BadShare>,
        /// Why the rebuild failed.
        source: bunsan_protocol::Error,
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
    // The SS-MIX2 collector (`crate::ssmix2`).
    /// A local file or directory operation of a collector failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was attempted ("read", "create", "rename", ...).
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The pseudonym key file is missing, malformed or readable by others.
    #[error("pseudonym key {path}: {reason}")]
    PseudonymKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A file in an SS-MIX2 tree does not follow the standardized storage layout or naming.
    #[error("{path} is not an SS-MIX2 standardized storage document: {reason}")]
    NotSsmix2 {
        /// The file, relative to the storage root.
        path: PathBuf,
        /// Which rule it breaks.
        reason: String,
    },
    /// The collector's state file is damaged or of an unknown format.
    #[error("state file {path} line {line}: {reason}")]
    StateFile {
        /// The state file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// What is wrong with the line.
        reason: String,
    },
}

impl Error {
    /// The per-node failures behind a quorum error, or the one node of a single-node call.
    pub fn node_failures(&self) -> Vec<NodeFailure> {
        match self {
            Error::WriteQuorumNotMet { failures, .. } | Error::NotEnoughShares { failures, .. } => {
                failures.clone()
            }
            Error::Node(failure) => vec![failure.clone()],
            Error::Remote { node, error } => vec![NodeFailure::refused(node.clone(), error)],
            _ => Vec::new(),
        }
    }

    /// Whether the cluster refused this identity the operation outright: a `Forbidden` answer,
    /// or a quorum error in which every node that failed answered `Forbidden`.
    pub fn is_forbidden(&self) -> bool {
        let failures = self.node_failures();
        !failures.is_empty()
            && failures
                .iter()
                .all(|failure| failure.code == Some(ErrorCode::Forbidden))
    }
}

/// Shorthand for client results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
