//! The audit requests ([`AuditQuery`], inside `Request::Audit`) and their answers
//! ([`AuditAnswer`], inside `Response::Audit`).
//!
//! Two audiences, two actions (see [`crate::role`]):
//! - the auditor ([`Action::AuditRead`]): entries, checkpoints, proofs, what this node cosigned,
//!   and an on-demand cosigning round;
//! - the other nodes ([`Action::Witness`]): the latest checkpoint with a consistency proof (hashes
//!   only, no entry reveals who read what), and handing back a cosignature.

use serde::{Deserialize, Serialize};

use crate::audit::AuditRecord;
use crate::merkle::Hash;
use crate::role::Action;

/// The most entries one [`AuditQuery::Entries`] answer carries (≤ 4 MiB at the entry size
/// limit, far below the frame limit); the auditor pages with `from`.
pub const AUDIT_ENTRIES_LIMIT_MAX: u32 = 1000;

/// The most checkpoints one [`AuditQuery::Checkpoints`] answer carries.
pub const AUDIT_CHECKPOINTS_LIMIT_MAX: u32 = 256;

/// A question about a node's audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuditQuery {
    /// Entries `from..`, at most `limit` (capped at [`AUDIT_ENTRIES_LIMIT_MAX`]); auditor.
    Entries {
        /// The first sequence number wanted.
        from: u64,
        /// How many at most.
        limit: u32,
    },
    /// Signed checkpoints of size ≥ `from_size`, oldest first, with their cosignatures;
    /// `sign_now` first signs one over every entry so far. Auditor.
    Checkpoints {
        /// The smallest tree size wanted.
        from_size: u64,
        /// How many at most (capped at [`AUDIT_CHECKPOINTS_LIMIT_MAX`]).
        limit: u32,
        /// Sign a checkpoint of the current log first.
        sign_now: bool,
    },
    /// The RFC 6962 consistency proof between two tree sizes; auditor.
    Consistency {
        /// The older size.
        from_size: u64,
        /// The newer size.
        to_size: u64,
    },
    /// The RFC 6962 inclusion proof of entry `seq` in the tree of `size`; auditor.
    Inclusion {
        /// The entry.
        seq: u64,
        /// The tree size.
        size: u64,
    },
    /// For every other node, the newest of its checkpoints this node cosigned; auditor.
    Witnessed,
    /// Run a cosigning round against every other node now; auditor.
    CosignNow,
    /// The latest checkpoint and a consistency proof from `from_size`; nodes (witnessing).
    WitnessCheckpoint {
        /// The size of the checkpoint the witness cosigned last (0 for none).
        from_size: u64,
    },
    /// A cosigned checkpoint of this node's log, to store with it; nodes (witnessing).
    Cosign {
        /// The checkpoint note carrying the caller's cosignature line.
        note: String,
        /// The caller's certificate (DER), to check the cosignature against the CA.
        #[serde(with = "serde_bytes")]
        certificate: Vec<u8>,
    },
}

impl AuditQuery {
    /// The authorisation action this query needs.
    pub fn action(&self) -> Action {
        match self {
            AuditQuery::WitnessCheckpoint { .. } | AuditQuery::Cosign { .. } => Action::Witness,
            _ => Action::AuditRead,
        }
    }

    /// A short name for logs and audit entries (`audit-entries`, `witness-cosign`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            AuditQuery::Entries { .. } => "audit-entries",
            AuditQuery::Checkpoints { .. } => "audit-checkpoints",
            AuditQuery::Consistency { .. } => "audit-consistency",
            AuditQuery::Inclusion { .. } => "audit-inclusion",
            AuditQuery::Witnessed => "audit-witnessed",
            AuditQuery::CosignNow => "audit-cosign-now",
            AuditQuery::WitnessCheckpoint { .. } => "witness-checkpoint",
            AuditQuery::Cosign { .. } => "witness-cosign",
        }
    }
}

/// A node's answer to an [`AuditQuery`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuditAnswer {
    /// Answer to [`AuditQuery::Entries`].
    Entries {
        /// Consecutive entries from the requested one.
        records: Vec<AuditRecord>,
        /// How many entries the log holds now.
        log_size: u64,
    },
    /// Answer to [`AuditQuery::Checkpoints`].
    Checkpoints {
        /// The node's certificate (DER): what the checkpoints are signed with.
        #[serde(with = "serde_bytes")]
        certificate: Vec<u8>,
        /// Signed checkpoint notes, oldest first.
        notes: Vec<String>,
    },
    /// Answer to [`AuditQuery::Consistency`] and [`AuditQuery::Inclusion`].
    Proof {
        /// The proof's hashes, bottom-up.
        hashes: Vec<Hash>,
    },
    /// Answer to [`AuditQuery::Witnessed`]: checkpoint notes of other logs, each carrying
    /// this node's cosignature.
    Witnessed {
        /// One note per cosigned log.
        notes: Vec<String>,
    },
    /// Answer to [`AuditQuery::CosignNow`].
    CosignRound {
        /// One line per other node: what was cosigned, or why not.
        reports: Vec<WitnessReport>,
    },
    /// Answer to [`AuditQuery::WitnessCheckpoint`].
    WitnessCheckpoint {
        /// The node's certificate (DER).
        #[serde(with = "serde_bytes")]
        certificate: Vec<u8>,
        /// The latest signed checkpoint note.
        note: String,
        /// The consistency proof from the requested size to this checkpoint.
        proof: Vec<Hash>,
    },
    /// Answer to [`AuditQuery::Cosign`]: the cosignature is stored with the checkpoint.
    CosignatureStored,
}

/// What one cosigning attempt against one log did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WitnessReport {
    /// The node whose log was witnessed.
    pub log: String,
    /// The size cosigned, if any.
    pub cosigned: Option<u64>,
    /// Why nothing was cosigned, if so (unreachable, bad signature, inconsistent: a fork).
    pub problem: Option<String>,
}
