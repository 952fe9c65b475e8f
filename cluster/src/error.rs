//! The cluster crate's one error type.

use std::path::PathBuf;

use thiserror::Error;

/// Everything that can go wrong creating, running or inspecting a cluster directory.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// A protocol-level check failed (k/n shape, manifest, role name, record key, ...).
    #[error(transparent)]
    Protocol(#[from] bunsan_protocol::Error),
    /// The client SDK failed (identity files, TLS, a node's answer, a quorum not met, ...).
    #[error(transparent)]
    Client(#[from] bunsan_client::Error),
    /// A file or directory operation failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done ("write", "create directory", "read", ...).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// rcgen refused to build a key or certificate.
    #[error("cannot generate {what}: {source}")]
    Certificate {
        /// What was being generated ("cluster CA", "certificate for node-1", ...).
        what: String,
        /// rcgen's explanation.
        source: rcgen::Error,
    },
    /// `init` found a cluster (or the remains of one) where it was asked to create one.
    #[error("{found} already exists: refusing to overwrite an existing cluster (remove the directory or choose another)")]
    AlreadyInitialised {
        /// The file or directory that exists.
        found: PathBuf,
    },
    /// A directory has no `cluster.toml`, so it is not a cluster directory.
    #[error("{path} not found: not a cluster directory (create one with `bunsan-cluster init`)")]
    NotACluster {
        /// The missing manifest path.
        path: PathBuf,
    },
    /// A `node.toml` could not be parsed or rendered.
    #[error("invalid node config {path}: {reason}")]
    InvalidNodeConfig {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An identity name that cannot be a certificate common name and a directory name.
    #[error("invalid identity name {name:?}: {reason}")]
    InvalidIdentityName {
        /// The rejected name.
        name: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// Consecutive ports from the base port, or their metrics ports
    /// ([`METRICS_PORT_OFFSET`](crate::init::METRICS_PORT_OFFSET) above them), would run past
    /// 65535.
    #[error(
        "{nodes} nodes from base port {base_port} run past port 65535 (metrics ports are {} above)",
        crate::init::METRICS_PORT_OFFSET
    )]
    PortsOutOfRange {
        /// The first port asked for.
        base_port: u16,
        /// The number of nodes.
        nodes: usize,
    },
    /// No `bunsan-node` executable was found.
    #[error("cannot find the bunsan-node binary (looked in: {}); build it with `cargo build -p bunsan-node` or set BUNSAN_NODE_BIN", list_paths(.searched))]
    NodeBinaryNotFound {
        /// Every place that was looked at.
        searched: Vec<PathBuf>,
    },
    /// The manifest has no node with this index.
    #[error("the cluster has no node with index {index}")]
    UnknownNode {
        /// The index asked for.
        index: u8,
    },
    /// A node is already running (a live process named in its pid file, or a child of ours).
    #[error("{node} is already running as pid {pid}")]
    AlreadyRunning {
        /// The node id.
        node: String,
        /// Its process id.
        pid: u32,
    },
    /// A node process exited before it answered a health request.
    #[error("{node} exited ({status}) before it became healthy; last lines of {log}:\n{tail}")]
    NodeExited {
        /// The node id.
        node: String,
        /// How it exited.
        status: String,
        /// Its log file.
        log: PathBuf,
        /// The last lines of its log.
        tail: String,
    },
    /// A node process kept running but did not answer a health request in time.
    #[error("{node} did not become healthy within {waited_ms} ms (last error: {last_error}); last lines of {log}:\n{tail}")]
    NodeUnhealthy {
        /// The node id.
        node: String,
        /// How long we waited.
        waited_ms: u128,
        /// The last health request's failure.
        last_error: String,
        /// Its log file.
        log: PathBuf,
        /// The last lines of its log.
        tail: String,
    },
    /// A node answered the health request with another node's identity.
    #[error("{expected} answered as {found} (index {index}): is another cluster using its port?")]
    WrongNodeAnswered {
        /// The node we asked.
        expected: String,
        /// The id in the answer.
        found: String,
        /// The index in the answer.
        index: u8,
    },
    /// A pid file does not hold a process id.
    #[error("pid file {path} does not hold a process id: {content:?}")]
    InvalidPidFile {
        /// The file.
        path: PathBuf,
        /// What it holds (at most a short prefix).
        content: String,
    },
    /// Sending a signal to a node process failed.
    #[error("cannot send {signal} to pid {pid}: {source}")]
    Signal {
        /// The signal's name.
        signal: &'static str,
        /// The process.
        pid: u32,
        /// The OS error.
        source: nix::Error,
    },
    /// No identity of this name has a certificate in the cluster directory.
    #[error("no identity {name:?}: looked for {}", list_paths(.searched))]
    UnknownIdentity {
        /// The name asked for.
        name: String,
        /// The certificate paths looked at.
        searched: Vec<PathBuf>,
    },
    /// Both a client and a node of this name exist, so the name does not say which to revoke.
    #[error("{name:?} names more than one identity: {}", list_paths(.found))]
    AmbiguousIdentity {
        /// The name asked for.
        name: String,
        /// The certificates found.
        found: Vec<PathBuf>,
    },
    /// The certificate is already on the CRL.
    #[error("{name:?} (serial {serial}) is already revoked; `bunsan-cluster crl DIR --renew` publishes the CRL again")]
    AlreadyRevoked {
        /// The identity.
        name: String,
        /// Its certificate serial (hex).
        serial: String,
    },
    /// A revocation reason that is not one of the known names.
    #[error("unknown revocation reason {reason:?} (expected unspecified, key-compromise, affiliation-changed, superseded or cessation-of-operation)")]
    UnknownRevocationReason {
        /// The rejected text.
        reason: String,
    },
    /// `DIR/ca/revoked.toml` cannot be read back or written.
    #[error("invalid revocation record {path}: {reason}")]
    InvalidRevocationRecord {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A certificate file that cannot be parsed.
    #[error("invalid certificate file {path}: {reason}")]
    InvalidCertificateFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A record read back in the demo differs from what was written.
    #[error("record {key} came back different: wrote {written} bytes, read {read} bytes")]
    RecordMismatch {
        /// The record key.
        key: String,
        /// Bytes written.
        written: usize,
        /// Bytes read back.
        read: usize,
    },
    /// Plaintext of a record was found in a node's files.
    #[error("plaintext of {what} found in {path}")]
    PlaintextOnDisk {
        /// Which plaintext.
        what: String,
        /// The file it was found in.
        path: PathBuf,
    },
    /// A background task of repair, refresh or a drill panicked or was cancelled.
    #[error("a maintenance task failed: {reason}")]
    Task {
        /// The join error.
        reason: String,
    },
    /// A repair or refresh state file could not be written or read.
    #[error("state file {path}: {reason}")]
    State {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A drill or refresh step failed in a way that ends the run (not a per-record failure,
    /// which is reported).
    #[error("{step}: {reason}")]
    Step {
        /// The step ("stop node-2", "rebuild", ...).
        step: String,
        /// What went wrong.
        reason: String,
    },
}

fn list_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Shorthand for cluster results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Builds a closure that wraps an `io::Error` with what was done to which path.
pub(crate) fn io_err(
    action: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io {
        action,
        path,
        source,
    }
}
