//! What offline verification can find wrong with a node's log ([`Problem`]), pinned to a
//! sequence number when possible ([`Finding`]); the messages `bunsan audit verify` prints.

use std::fmt;

/// What is wrong with a node's log.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// The node certificate is missing or does not chain to the CA.
    Certificate {
        /// Why.
        reason: String,
    },
    /// An entry line cannot be read at all.
    Unreadable {
        /// The line number in the entries file.
        line: usize,
        /// Why.
        reason: String,
    },
    /// An entry's bytes do not decode as an audit entry.
    Undecodable {
        /// Why.
        reason: String,
    },
    /// The entry is absent: the log jumps over it.
    Missing {
        /// The next sequence number present.
        next: u64,
    },
    /// The entry is present but elsewhere: another entry stands in its place.
    OutOfOrder {
        /// The sequence number found in its place.
        found: u64,
    },
    /// The entry names another node.
    WrongNode {
        /// The node it names.
        found: String,
    },
    /// The entry's time is before the previous entry's.
    TimeReversed,
    /// The entry's bytes do not match the chain value the node recorded with it.
    Altered,
    /// A checkpoint file cannot be parsed or its signature does not verify.
    CheckpointInvalid {
        /// The file.
        file: String,
        /// Why.
        reason: String,
    },
    /// A signed checkpoint's root or chain head does not match the entries.
    CheckpointMismatch {
        /// The checkpoint's tree size.
        size: u64,
        /// The largest earlier checkpoint that did match (the damage is at or after it).
        since: u64,
    },
    /// A signed checkpoint is larger than the log: entries at the end are gone.
    Truncated {
        /// The signed size.
        size: u64,
        /// The entries present.
        entries: u64,
    },
    /// Two different checkpoints of the same size are both signed by the node.
    Fork {
        /// The size.
        size: u64,
    },
    /// The node's own consistency proof between two of its checkpoints does not verify.
    Inconsistent {
        /// The older size.
        from: u64,
        /// The newer size.
        to: u64,
        /// Why.
        reason: String,
    },
    /// A cosignature on one of the node's checkpoints does not verify.
    Cosignature {
        /// The checkpoint's size.
        size: u64,
        /// The cosigning node.
        cosigner: String,
        /// Why.
        reason: String,
    },
    /// Another node cosigned a checkpoint of this log that the entries contradict.
    Rewritten {
        /// The cosigning node.
        witness: String,
        /// The cosigned size.
        size: u64,
    },
    /// Another node cosigned a checkpoint larger than this log now is.
    WitnessedTruncated {
        /// The cosigning node.
        witness: String,
        /// The cosigned size.
        size: u64,
        /// The entries present.
        entries: u64,
    },
    /// A checkpoint this node says it cosigned does not verify.
    WitnessedInvalid {
        /// The file.
        file: String,
        /// Why.
        reason: String,
    },
    /// The log has entries but no signed checkpoint: nothing vouches for them.
    NoCheckpoint,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Certificate { reason } => write!(f, "node certificate not trusted: {reason}"),
            Problem::Unreadable { line, reason } => {
                write!(f, "entry line {line} cannot be read: {reason}")
            }
            Problem::Undecodable { reason } => {
                write!(f, "entry cannot be decoded (edited?): {reason}")
            }
            Problem::Missing { next } => {
                write!(f, "entry missing (deleted?): the log jumps to entry {next}")
            }
            Problem::OutOfOrder { found } => write!(
                f,
                "entries out of order (swapped?): entry {found} stands in this entry's place"
            ),
            Problem::WrongNode { found } => write!(f, "entry belongs to the log of {found}"),
            Problem::TimeReversed => write!(f, "entry is dated before the previous entry"),
            Problem::Altered => write!(
                f,
                "entry altered: its bytes do not match the chain value recorded with it"
            ),
            Problem::CheckpointInvalid { file, reason } => {
                write!(f, "checkpoint {file} is invalid: {reason}")
            }
            Problem::CheckpointMismatch { size, since } => write!(
                f,
                "entries {since}..{size} do not match the signed checkpoint of size {size} \
                 (altered, deleted or replaced entries)"
            ),
            Problem::Truncated { size, entries } => write!(
                f,
                "log truncated: a checkpoint of size {size} is signed but only {entries} entries \
                 are present"
            ),
            Problem::Fork { size } => write!(
                f,
                "fork: the node signed two different checkpoints of size {size}"
            ),
            Problem::Inconsistent { from, to, reason } => write!(
                f,
                "fork: the log at size {to} does not extend the log at size {from} ({reason})"
            ),
            Problem::Cosignature {
                size,
                cosigner,
                reason,
            } => write!(
                f,
                "cosignature by {cosigner} on checkpoint {size} is invalid: {reason}"
            ),
            Problem::Rewritten { witness, size } => write!(
                f,
                "log rewritten (fork): {witness} cosigned a checkpoint of size {size} that these \
                 entries contradict"
            ),
            Problem::WitnessedTruncated {
                witness,
                size,
                entries,
            } => write!(
                f,
                "log truncated: {witness} cosigned size {size} but only {entries} entries are \
                 present"
            ),
            Problem::WitnessedInvalid { file, reason } => {
                write!(f, "cosigned checkpoint {file} is invalid: {reason}")
            }
            Problem::NoCheckpoint => write!(f, "no signed checkpoint vouches for the entries"),
        }
    }
}

/// One problem, pinned to a sequence number when that is possible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The first bad sequence number this problem shows, if it shows one.
    pub seq: Option<u64>,
    /// What is wrong.
    pub problem: Problem,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.seq {
            Some(seq) => write!(f, "at seq {seq}: {}", self.problem),
            None => write!(f, "{}", self.problem),
        }
    }
}
