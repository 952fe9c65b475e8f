//! The node crate's one error type.
//!
//! Variants say what failed and with which value, so an operator reading a log line or the
//! daemon's exit message knows what to fix without reading code. Errors that a remote peer
//! caused never reach this type: the server turns them into a
//! [`RemoteError`](bunsan_protocol::message::RemoteError) answer and keeps serving.

use std::net::SocketAddr;
use std::path::PathBuf;

use bunsan_protocol::role::Role;
use bunsan_protocol::{RecordKey, ShareIndex, Version};
use thiserror::Error;

/// Everything that can go wrong inside a node: configuration, storage, transport setup.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration file could not be read or holds an invalid value.
    #[error("invalid node configuration {path}: {reason}")]
    Config {
        /// The configuration file (or `<built in code>` for a constructed configuration).
        path: PathBuf,
        /// What is wrong, naming the key.
        reason: String,
    },
    /// A put carried the version the store already holds, but with different bytes: two
    /// writers claimed the same version, or a share was altered. Nothing was written.
    #[error("record {key} version {version} is already stored with different bytes")]
    Conflict {
        /// The record.
        key: RecordKey,
        /// The version both envelopes claim.
        version: Version,
    },
    /// Stored bytes failed a check (format, checksum, decoding, header mismatch). The value is
    /// neither released nor overwritten: repair has to look at it.
    #[error("stored value for {key:?} is corrupt: {reason}")]
    Corrupt {
        /// The record key, lossily decoded if the stored key itself is damaged.
        key: String,
        /// Which check failed.
        reason: String,
    },
    /// The data directory was created for another share index (node-2 pointed at node-1's
    /// disk). Serving it would release the wrong shares under this node's name.
    #[error(
        "the data directory holds shares of index {found}, but this node holds index {expected}"
    )]
    WrongIndex {
        /// The index in this node's configuration.
        expected: ShareIndex,
        /// The index recorded in the data directory.
        found: u8,
    },
    /// The data directory was written by a store format this build does not understand.
    #[error("store {path} has format {found}; this build understands format {supported}")]
    StoreFormat {
        /// The store directory.
        path: PathBuf,
        /// The format recorded there.
        found: u8,
        /// The format this build writes and reads.
        supported: u8,
    },
    /// The directory holds data but no (or incomplete) store metadata, so it is not a Bunsan
    /// store this build created; refusing is safer than adopting it.
    #[error("{path} is not a bunsan share store: {reason}")]
    NotAStore {
        /// The store directory.
        path: PathBuf,
        /// What is missing.
        reason: String,
    },
    /// A file or directory operation failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was attempted ("read", "create directory", ...).
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The sled storage engine failed (I/O error, lock held by another process, corruption
    /// detected by sled itself).
    #[error("storage engine: {0}")]
    Sled(#[from] sled::Error),
    /// A request to the site's S3-compatible object store failed (network, credentials,
    /// bucket, throttling). Nothing is acknowledged that this error interrupted.
    #[error("object store: cannot {operation} {name}: {reason}")]
    ObjectStore {
        /// What was attempted ("create", "get", "list", ...).
        operation: &'static str,
        /// The object name (a keyed hash, never a record key) or listing prefix.
        name: String,
        /// The object store's answer.
        reason: String,
    },
    /// A blocking storage task panicked or was cancelled.
    #[error("storage task failed: {reason}")]
    StorageTask {
        /// The join error.
        reason: String,
    },
    /// The node's identity or TLS configuration could not be loaded.
    #[error("transport security: {0}")]
    Tls(#[from] bunsan_client::Error),
    /// The node's certificate does not carry the node role, so peers would refuse it.
    #[error("certificate {path} has role {role}; a node needs a certificate with role node")]
    NotANodeCertificate {
        /// The certificate file.
        path: PathBuf,
        /// The role it carries.
        role: Role,
    },
    /// The certificate revocation list cannot be used: not PEM, not a CRL, or not signed by the
    /// cluster CA. At start the node refuses to run; on a reload the previous CRL stays.
    #[error("unusable certificate revocation list {path}: {reason}")]
    InvalidCrl {
        /// The CRL file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The UDP socket for the QUIC endpoint could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The configured listen address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// An export found no share to write: the node holds nothing, or only a tombstone, for
    /// the key.
    #[error("nothing to export for {key}: {reason}")]
    NothingToExport {
        /// The record asked for.
        key: RecordKey,
        /// Why there is no share.
        reason: String,
    },
    /// The audit log cannot be written (or read back): every request is refused until the
    /// node restarts, because no share may leave the node without a durable audit entry.
    #[error("audit log unavailable: {reason}")]
    AuditUnavailable {
        /// What failed.
        reason: String,
    },
    /// An append to the audit store did not start at the store's end: another writer, or a
    /// store that lost or gained entries behind the node's back. Nothing was written.
    #[error("audit append at entry {seq} conflicts: the store holds {len} entries")]
    AuditConflict {
        /// Where the append was to start.
        seq: u64,
        /// How many entries the store holds.
        len: u64,
    },
    /// A stored audit value is damaged (format byte, length, entry bytes).
    #[error("audit entry {seq} is corrupt in the store: {reason}")]
    AuditCorrupt {
        /// The entry's sequence number.
        seq: u64,
        /// What is wrong.
        reason: String,
    },
    /// A protocol-level check failed (an envelope that does not validate, an encoding error).
    #[error(transparent)]
    Protocol(#[from] bunsan_protocol::Error),
}

/// Shorthand for node results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
