//! Requests a client sends to one node, and the node's responses.
//!
//! Each request travels on its own QUIC bidirectional stream as one [`crate::frame`], and the
//! node answers with exactly one response frame. The ALPN string [`ALPN`] names the version of
//! this message set; a change that old peers cannot read gets a new ALPN.

use serde::{Deserialize, Serialize};

use crate::audit::wire::{AuditAnswer, AuditQuery};
use crate::envelope::ShareEnvelope;
use crate::types::{Purpose, RecordKey, RequestId, ShareIndex, Version};

/// The ALPN protocol id of this message set.
pub const ALPN: &[u8] = b"bunsan/1";

/// The most entries one list response carries; clients page with `start_after`.
pub const LIST_LIMIT_MAX: u32 = 10_000;

/// A request to one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Liveness and identity of the node; allowed for every role.
    Health,
    /// Store this node's share of a record version (collector).
    Put {
        /// The same on every node for one client operation.
        request_id: RequestId,
        /// The share; its index must be the node's index.
        envelope: ShareEnvelope,
    },
    /// Release this node's share of a record (reader, with a purpose).
    Get {
        /// The same on every node for one client operation.
        request_id: RequestId,
        /// Which record.
        key: RecordKey,
        /// Why the reader rebuilds it; required for share release.
        purpose: Option<Purpose>,
    },
    /// Replace the record with a tombstone and purge its share bytes (admin).
    Delete {
        /// The same on every node for one client operation.
        request_id: RequestId,
        /// A tombstone envelope ([`ShareEnvelope::tombstone`]) addressed to this node.
        tombstone: ShareEnvelope,
    },
    /// Page through the node's inventory in key order (admin).
    List {
        /// The same on every node for one client operation.
        request_id: RequestId,
        /// Only keys starting with this text.
        prefix: String,
        /// Resume after this key (exclusive).
        start_after: Option<RecordKey>,
        /// At most this many entries (capped at [`LIST_LIMIT_MAX`]).
        limit: u32,
        /// Include tombstones in the answer.
        include_tombstones: bool,
    },
    /// Counts and sizes held by the node (admin).
    Status,
    /// A question about the node's audit log (auditor), or witnessing it (node).
    Audit {
        /// The same on every node for one client operation.
        request_id: RequestId,
        /// What is asked.
        query: AuditQuery,
    },
}

impl Request {
    /// A short name for logs, metrics and audit entries.
    pub fn action(&self) -> &'static str {
        match self {
            Request::Health => "health",
            Request::Put { .. } => "put",
            Request::Get { .. } => "get",
            Request::Delete { .. } => "delete",
            Request::List { .. } => "list",
            Request::Status => "status",
            Request::Audit { query, .. } => query.name(),
        }
    }
}

/// A node's answer to one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Answer to [`Request::Health`].
    Health(NodeHealth),
    /// Answer to [`Request::Put`] and [`Request::Delete`]: durable before it is sent.
    Stored(PutOutcome),
    /// Answer to [`Request::Get`]: the node's envelope for the key's highest version, which may
    /// be a tombstone.
    Share(ShareEnvelope),
    /// Answer to [`Request::Get`] when the node holds nothing for the key.
    NotFound,
    /// Answer to [`Request::List`].
    Listing {
        /// Entries in key order.
        entries: Vec<ListEntry>,
        /// Present when more entries follow: pass it as `start_after`.
        next: Option<RecordKey>,
    },
    /// Answer to [`Request::Status`].
    Status(NodeStatus),
    /// Answer to [`Request::Audit`].
    Audit(AuditAnswer),
    /// The request was refused or failed; nothing was changed unless the code says so.
    Error(RemoteError),
}

/// What a put or delete did on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PutOutcome {
    /// The envelope is now the node's highest version, durably.
    Stored,
    /// The node already held this exact envelope (an idempotent retry).
    AlreadyStored,
    /// The node holds a higher version; nothing was written.
    Superseded {
        /// The version the node holds.
        current: Version,
    },
}

/// A node's identity and liveness.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeHealth {
    /// The node id from the manifest (`node-1`, ...).
    pub node_id: String,
    /// The share index this node holds.
    pub index: ShareIndex,
    /// The node software version.
    pub software: String,
}

/// One row of a node's inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListEntry {
    /// The record key.
    pub key: RecordKey,
    /// The highest version the node holds.
    pub version: Version,
    /// Whether that version is a tombstone.
    pub tombstone: bool,
    /// The record length in bytes (0 for tombstones).
    pub record_len: u64,
}

/// Counts and sizes held by one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node id from the manifest.
    pub node_id: String,
    /// The share index this node holds.
    pub index: ShareIndex,
    /// The node software version.
    pub software: String,
    /// Live records (not tombstones).
    pub records: u64,
    /// Tombstones kept to beat late writes.
    pub tombstones: u64,
    /// Share payload bytes stored.
    pub bytes: u64,
    /// Seconds since the node started.
    pub uptime_secs: u64,
}

/// Why a node refused or failed a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorCode {
    /// The request was malformed or inconsistent.
    BadRequest,
    /// The caller's role does not allow this action.
    Forbidden,
    /// A size limit was exceeded.
    TooLarge,
    /// The envelope is for a different share index than this node holds.
    WrongNode,
    /// The node holds the same version with different bytes.
    Conflict,
    /// The node is at its concurrency limit; retry later.
    Busy,
    /// The node could not complete the request (storage or audit failure); nothing was released.
    Unavailable,
    /// Stored data failed a check (corruption, or a share that no longer matches its
    /// commitment); the share was not released.
    Corrupt,
    /// The envelope's header signature, writer certificate (chain to the cluster CA, role,
    /// writer id) or version does not verify; nothing was written.
    BadSignature,
    /// The envelope's share does not match its signed commitment, or the nonce sealed to this
    /// node does not open to the envelope's nonce; nothing was written.
    BadCommitment,
}

/// A refusal or failure, with a human-readable explanation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteError {
    /// The machine-readable reason.
    pub code: ErrorCode,
    /// What went wrong, for the operator.
    pub message: String,
}

impl std::fmt::Display for RemoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}
