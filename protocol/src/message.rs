//! Requests a client sends to one node, and the node's responses.
//!
//! Each request travels on its own QUIC bidirectional stream as one [`crate::frame`], and the
//! node answers with exactly one response frame. The ALPN string [`ALPN`] names the version of
//! this message set; a change that old peers cannot read gets a new ALPN.

use serde::{Deserialize, Serialize};

use crate::audit::wire::{AuditAnswer, AuditQuery};
use crate::batch::BatchProof;
use crate::envelope::{RecordHeader, ShareEnvelope};
use crate::integrity::{Digest, WriterSignature};
use crate::refresh::{RefreshPlan, RefreshSeal};
use crate::repair::{RepairPlan, SessionId};
use crate::seal::SealedNonce;
use crate::types::{Purpose, RecordKey, RequestId, ShareIndex, Version};

/// The ALPN protocol id of this message set.
pub const ALPN: &[u8] = b"bunsan/1";

/// The most entries one list response carries; clients page with `start_after`.
pub const LIST_LIMIT_MAX: u32 = 10_000;

/// The most (key, version) pairs one [`Request::Commit`] carries.
pub const COMMIT_BATCH_MAX: usize = 1024;

/// The most envelopes one [`Request::PutBatch`] carries. The frame limit
/// ([`crate::frame::FRAME_MAX_BYTES`]) bounds their bytes as well.
pub const PUT_BATCH_MAX: usize = 1024;

/// The most entries one inventory response carries. Smaller than a listing: a node reads and
/// checks every value it reports (a scrub), and the page must fit in one request timeout.
pub const INVENTORY_LIMIT_MAX: u32 = 1_000;

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
        /// `None`: the node's highest version (and which older versions it still keeps).
        /// `Some(v)`: exactly version `v`, which the node may keep under a newer one that is
        /// not yet known complete ([`Response::NotFound`] if it holds no such version).
        version: Option<Version>,
    },
    /// The writer's word that each (key, version) reached its write quorum: the node may drop
    /// the versions it kept under them (collector or admin). Changes nothing for a version the
    /// node does not hold. Never needed for correctness of reads, only to free old versions;
    /// writers batch them (at most [`COMMIT_BATCH_MAX`]).
    Commit {
        /// Names this batch.
        request_id: RequestId,
        /// The records and their versions acknowledged by a write quorum.
        commits: Vec<(RecordKey, Version)>,
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
    /// Page through the node's inventory, reading and checking every stored value, so damaged
    /// ones are reported instead of failing the page (admin; the input of `repair`).
    Inventory {
        /// The same on every node for one client operation.
        request_id: RequestId,
        /// Resume after this key (exclusive).
        start_after: Option<RecordKey>,
        /// At most this many entries (capped at [`INVENTORY_LIMIT_MAX`]).
        limit: u32,
    },
    /// Act as a helper of a repair: send this node's masked contribution to the plan's target
    /// and report the target's answer (admin). The admin never sees share bytes.
    Repair {
        /// The same at every helper of one repair.
        request_id: RequestId,
        /// Which share to regenerate, from which helpers.
        plan: RepairPlan,
    },
    /// One helper's masked contribution to a repair whose target is this node (node role,
    /// sent by the helper itself).
    Contribute {
        /// The helper's request id (the admin's, passed on).
        request_id: RequestId,
        /// The contribution.
        contribution: Contribution,
    },
    /// Stage a refresh of this node's share: deal a sharing of zero to the other participants,
    /// wait for theirs, and keep the new share (next epoch) beside the current one (admin).
    RefreshStage {
        /// The same at every participant of one refresh.
        request_id: RequestId,
        /// Which record version, which participants.
        plan: RefreshPlan,
    },
    /// One participant's δ_j(x) for this node, in a refresh (node role, sent by participant j).
    RefreshDeal {
        /// The participant's request id (the admin's, passed on).
        request_id: RequestId,
        /// The refresh it belongs to.
        plan: RefreshPlan,
        /// The dealing participant.
        from: ShareIndex,
        /// δ_from(x) at this node's x.
        #[serde(with = "serde_bytes")]
        delta: Vec<u8>,
    },
    /// Make the staged share of a refresh the node's current share, with the refresher's seal
    /// over every participant's new commitment (admin). Idempotent: a node that committed
    /// already (holds the seal's epoch or later) answers `AlreadyStored`.
    RefreshCommit {
        /// The same at every participant of one commit.
        request_id: RequestId,
        /// The refresh.
        refresh_id: SessionId,
        /// The record.
        key: RecordKey,
        /// The new commitments and sealed nonces, signed by the refresher.
        seal: RefreshSeal,
    },
    /// Drop the staged share of a refresh that did not complete (admin). Idempotent.
    RefreshAbort {
        /// The same at every participant.
        request_id: RequestId,
        /// The refresh.
        refresh_id: SessionId,
        /// The record.
        key: RecordKey,
    },
    /// A question about the node's audit log (auditor), or witnessing it (node).
    Audit {
        /// The same on every node for one client operation.
        request_id: RequestId,
        /// What is asked.
        query: AuditQuery,
    },
    /// Which version of a record this node holds, without its share (reader): what a get
    /// asks the nodes whose share it does not need, so that a newer version they hold is
    /// not missed. Releases nothing, so it is not an audited release.
    Head {
        /// The same on every node for one client operation.
        request_id: RequestId,
        /// Which record.
        key: RecordKey,
    },
    /// Store this node's shares of several records, each exactly as a [`Request::Put`] would
    /// (collector): answered by [`Response::StoredBatch`] with one outcome per envelope, in
    /// order, once all of them are durable. Writers batch small records written together
    /// (at most [`PUT_BATCH_MAX`]), typically signed as one batch (envelope format 3).
    PutBatch {
        /// The same on every node for one batch.
        request_id: RequestId,
        /// The shares; every index must be the node's index.
        envelopes: Vec<ShareEnvelope>,
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
            Request::Commit { .. } => "commit",
            Request::List { .. } => "list",
            Request::Status => "status",
            Request::Inventory { .. } => "inventory",
            Request::Repair { .. } => "repair",
            Request::Contribute { .. } => "contribute",
            Request::RefreshStage { .. } => "refresh-stage",
            Request::RefreshDeal { .. } => "refresh-deal",
            Request::RefreshCommit { .. } => "refresh-commit",
            Request::RefreshAbort { .. } => "refresh-abort",
            Request::Audit { query, .. } => query.name(),
            Request::Head { .. } => "head",
            Request::PutBatch { .. } => "put-batch",
        }
    }
}

/// One helper's masked piece of a repair, as the target receives it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contribution {
    /// The repair.
    pub plan: RepairPlan,
    /// The helper that computed it; must be the sending node.
    pub from: ShareIndex,
    /// The helper's header of the record version: every helper's must agree, and the target
    /// stores it with the regenerated share.
    pub header: RecordHeader,
    /// The writer's signature over `header`.
    pub signature: WriterSignature,
    /// The refresh seal in force, if the version was refreshed.
    pub refresh: Option<Box<RefreshSeal>>,
    /// The header's batch proof, if the writer signed it as part of a batch (format 3).
    pub batch: Option<BatchProof>,
    /// μ_from · y_from with the helper's pair masks XORed in: uniformly random on its own.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

impl std::fmt::Debug for Contribution {
    // Masked, but still share-derived material: logs get its length only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Contribution")
            .field("plan", &self.plan)
            .field("from", &self.from)
            .field("header", &self.header)
            .field("data_len", &self.data.len())
            .finish()
    }
}

/// A node's answer to one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Answer to [`Request::Health`].
    Health(NodeHealth),
    /// Answer to [`Request::Put`] and [`Request::Delete`]: durable before it is sent.
    Stored(PutOutcome),
    /// Answer to [`Request::Get`]: the node's envelope for the key's highest version (or the
    /// version asked for), which may be a tombstone.
    Share(ShareEnvelope),
    /// Answer to [`Request::Get`] without a version when the node also keeps older versions
    /// of the key: its newest is not yet known to be complete, so a reader that cannot rebuild
    /// the newest asks for one of these by version.
    ShareWithOlder {
        /// The envelope of the node's highest version.
        envelope: ShareEnvelope,
        /// The older versions the node keeps, oldest first.
        older: Vec<RetainedVersion>,
    },
    /// Answer to [`Request::Commit`]: how many older versions the node dropped.
    Committed {
        /// Older versions dropped, over the whole batch (0 when the node held nothing older, or
        /// not the versions).
        dropped: u32,
    },
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
    /// Answer to [`Request::Inventory`].
    Inventory {
        /// Entries in key order.
        entries: Vec<InventoryEntry>,
        /// Present when more entries follow: pass it as `start_after`.
        next: Option<RecordKey>,
    },
    /// Answer to [`Request::Repair`] and [`Request::Contribute`]: what the target did.
    Repaired(RepairOutcome),
    /// Answer to [`Request::RefreshStage`]: the new share is staged durably.
    Staged {
        /// The epoch staged.
        epoch: u32,
        /// c'_j of the node's new share.
        commitment: Digest,
        /// nonce'_j, sealed by the node to its own key.
        sealed_nonce: SealedNonce,
        /// The writer-signed header of the version (public): what the refresher's seal binds.
        header: Box<RecordHeader>,
        /// The writer's signature over it.
        signature: WriterSignature,
    },
    /// Answer to [`Request::RefreshDeal`]: the deal was added to the node's pending sum.
    DealAccepted,
    /// Answer to [`Request::RefreshAbort`]: nothing is staged for the refresh any more.
    Aborted,
    /// Answer to [`Request::Audit`].
    Audit(AuditAnswer),
    /// The request was refused or failed; nothing was changed unless the code says so.
    Error(RemoteError),
    /// Answer to [`Request::Head`]: the node's highest version of the key (a tombstone
    /// included), as a node-reported hint: it is not signed, and a reader fetches and checks
    /// the share before trusting it. A node holding nothing answers [`Response::NotFound`].
    Head(ListEntry),
    /// Answer to [`Request::PutBatch`]: the outcome of each envelope, in order, each durable
    /// before it is sent; a refused envelope does not stop the others.
    StoredBatch(Vec<Result<PutOutcome, RemoteError>>),
}

/// An older version a node keeps under its highest one (see [`Response::ShareWithOlder`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RetainedVersion {
    /// The version.
    pub version: Version,
    /// Whether it is a tombstone.
    pub tombstone: bool,
}

/// What a put or delete did on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PutOutcome {
    /// The envelope is now the node's highest version, durably.
    Stored,
    /// Stored as [`PutOutcome::Stored`], and the node keeps `retained` older versions of the
    /// key until a [`Request::Commit`] of this version (or a later one) says they are no
    /// longer needed: until then a failed later write cannot make an acknowledged one
    /// unreadable.
    StoredKeepingOlder {
        /// How many older versions the node keeps.
        retained: u32,
    },
    /// The node already held this exact envelope (an idempotent retry).
    AlreadyStored,
    /// The node holds a higher version; nothing was written.
    Superseded {
        /// The version the node holds.
        current: Version,
    },
}

/// What a repair's target did with the regenerated share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RepairOutcome {
    /// The share passed its check and went through the store's put-if-newer rules.
    Stored(PutOutcome),
    /// The target could not check the share against its commitment (it cannot open its sealed
    /// nonce, or the record has no commitments) and keeps only a fingerprint of it: run the
    /// repair again with a different helper set; the target stores the share once two sets
    /// agree.
    Unconfirmed,
}

/// One row of a node's checked inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryEntry {
    /// The record key.
    pub key: RecordKey,
    /// What the node holds for it.
    pub state: HeldShare,
    /// The older versions the node keeps under it until a commit (see
    /// [`Response::ShareWithOlder`]), oldest first.
    pub kept: Vec<RetainedVersion>,
}

/// What a node holds for one key, after reading and checking it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HeldShare {
    /// A readable envelope.
    Held {
        /// Its version.
        version: Version,
        /// Its sharing epoch.
        epoch: u32,
        /// Whether it is a tombstone.
        tombstone: bool,
        /// The record length.
        record_len: u64,
        /// [`ShareEnvelope::dealing_digest`]: equal on every node that holds the same dealing.
        header_digest: [u8; 32],
        /// For a tombstone: its signed header, which carries no secret, so that a node that
        /// lacks it can be sent it again.
        tombstone_proof: Option<Box<(RecordHeader, WriterSignature)>>,
    },
    /// The stored value failed a check; the node will not release it.
    Corrupt {
        /// Which check failed.
        reason: String,
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
    /// Entries in the node's audit log (the sequence number its next entry gets).
    pub audit_entries: u64,
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
