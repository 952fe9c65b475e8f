//! The one error type of the protocol crate.
//!
//! Every variant names what was wrong and with which value, so that a node can log it and a
//! client can show it without guessing. Errors caused by remote input are always returned,
//! never panicked on.

use thiserror::Error;

/// Everything that can go wrong in pure protocol code: bad parameters, bad shares, bad bytes.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A threshold below 2 offers no secrecy (one share would be the record itself).
    #[error("threshold {threshold} is below the minimum of 2")]
    ThresholdTooLow {
        /// The rejected threshold.
        threshold: u8,
    },
    /// The threshold cannot exceed the number of shares dealt.
    #[error("threshold {threshold} exceeds the share count {shares}")]
    ThresholdAboveShares {
        /// The requested threshold k.
        threshold: u8,
        /// The requested share count n.
        shares: usize,
    },
    /// GF(256) has 255 non-zero points, so at most 255 shares can exist.
    #[error("share count {shares} exceeds the maximum of 255")]
    TooManyShares {
        /// The requested share count.
        shares: usize,
    },
    /// x = 0 is where the secret lives; a share must never sit there.
    #[error("share index 0 is not allowed (the secret lives at x = 0)")]
    ZeroShareIndex,
    /// Two shares with the same x carry no more information than one and would corrupt Lagrange
    /// interpolation.
    #[error("share index {index} appears more than once")]
    DuplicateShareIndex {
        /// The repeated x-coordinate.
        index: u8,
    },
    /// All shares of one record have the record's length; a different length means a share of
    /// something else or a truncated share.
    #[error("share {index} has {len} bytes but the first share has {expected}")]
    ShareLengthMismatch {
        /// The x-coordinate of the odd share.
        index: u8,
        /// Its length in bytes.
        len: usize,
        /// The length of the first share.
        expected: usize,
    },
    /// Fewer than k shares reveal nothing, so they cannot be combined.
    #[error("found {found} shares but {needed} are needed")]
    NotEnoughShares {
        /// Shares supplied.
        found: usize,
        /// Threshold k.
        needed: usize,
    },
    /// A share in the `sharks` byte layout must hold at least its x byte.
    #[error("share bytes are empty: a share is one x byte followed by the y bytes")]
    EmptyShareBytes,
    /// Record keys are limited in length and alphabet so they are safe in logs, paths and URLs.
    #[error("invalid record key {key:?}: {reason}")]
    InvalidRecordKey {
        /// The rejected key (lossily decoded if not UTF-8).
        key: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A frame announced a body larger than the frame limit.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    FrameTooLarge {
        /// The announced length.
        len: u64,
        /// The limit in force.
        max: u64,
    },
    /// A frame ended before its announced length.
    #[error("frame truncated: expected {expected} bytes, got {got}")]
    FrameTruncated {
        /// Bytes announced (including the length prefix).
        expected: u64,
        /// Bytes present.
        got: u64,
    },
    /// Bytes followed a complete frame body where none were expected.
    #[error("{extra} trailing bytes after the frame body")]
    TrailingBytes {
        /// How many bytes were left over.
        extra: usize,
    },
    /// The bytes were not a valid encoding of the expected message or record.
    #[error("cannot decode {what}: {reason}")]
    Decode {
        /// What was being decoded (e.g. "request", "share envelope").
        what: &'static str,
        /// The decoder's explanation.
        reason: String,
    },
    /// A value could not be encoded (only possible for values that break a protocol limit).
    #[error("cannot encode {what}: {reason}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The encoder's explanation.
        reason: String,
    },
    /// A persisted or wire format carried a version this software does not understand.
    #[error("unsupported {what} format version {found} (this build understands {supported})")]
    UnsupportedFormat {
        /// Which format ("share envelope", "stored share", ...).
        what: &'static str,
        /// The version found.
        found: u8,
        /// The version this build writes and reads.
        supported: u8,
    },
    /// An envelope's fields contradict each other (payload length, index beyond n, ...).
    #[error("inconsistent share envelope: {reason}")]
    InvalidEnvelope {
        /// What is inconsistent.
        reason: String,
    },
    /// The cluster manifest could not be parsed or contradicts itself.
    #[error("invalid cluster manifest: {reason}")]
    InvalidManifest {
        /// What is wrong with it.
        reason: String,
    },
    /// A certificate could not be parsed or carries no valid Bunsan role.
    #[error("invalid certificate: {reason}")]
    InvalidCertificate {
        /// What is wrong with it.
        reason: String,
    },
    /// A role name that is not one of collector, reader, auditor, admin, node.
    #[error("unknown role {role:?} (expected collector, reader, auditor, admin or node)")]
    UnknownRole {
        /// The rejected role name.
        role: String,
    },
    /// A purpose string that is empty or too long.
    #[error("invalid purpose: {reason}")]
    InvalidPurpose {
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A repair or refresh plan contradicts itself (too few helpers, a repeated helper, the
    /// target among the helpers, too few participants).
    #[error("invalid repair or refresh plan: {reason}")]
    InvalidPlan {
        /// What is wrong with it.
        reason: String,
    },
    /// A piece of a repair or refresh came from a party that should not send it, came twice,
    /// or has the wrong shape; it was not used.
    #[error("contribution refused: share {from} {reason}")]
    Contribution {
        /// The sender's share index.
        from: u8,
        /// Why it was refused.
        reason: &'static str,
    },
    /// The ECDH agreement behind a pair of repair masks failed (bad key or point).
    #[error("key agreement failed: {reason}")]
    KeyAgreement {
        /// What failed.
        reason: &'static str,
    },
    /// The writer's signature over a record header does not verify, or the header claims a
    /// writer id that is not the signing certificate's: the header was altered or forged.
    #[error("bad header signature: {reason}")]
    BadSignature {
        /// What did not verify.
        reason: String,
    },
    /// The writer certificate does not chain to the cluster CA for client use at the time it
    /// was checked (foreign CA, expired, malformed).
    #[error("untrusted writer certificate: {reason}")]
    UntrustedWriter {
        /// Why path validation failed.
        reason: String,
    },
    /// The writer certificate is valid but its role may not sign this kind of header: data
    /// needs a collector, a tombstone an admin.
    #[error("a {role} certificate may not sign a {} header", if *.tombstone { "tombstone" } else { "record" })]
    WriterRoleNotAllowed {
        /// The signing certificate's role.
        role: crate::role::Role,
        /// Whether the header is a tombstone.
        tombstone: bool,
    },
    /// Share `index` does not match its signed commitment c_j = BLAKE3(nonce_j ‖ x_j ‖ y_j):
    /// the share, its nonce or both were altered (bitrot, a lying node, a forged share).
    #[error("share {index} does not match its commitment")]
    BadCommitment {
        /// The share's x-coordinate.
        index: u8,
    },
    /// A sealed nonce could not be made or opened: wrong recipient key, altered ciphertext,
    /// or a recipient certificate without a P-256 key.
    #[error("sealed nonce for share {index}: {reason}")]
    Seal {
        /// The share (node) index the seal is for.
        index: u8,
        /// What failed.
        reason: String,
    },
    /// A private key could not be used (not PKCS#8, not ECDSA P-256).
    #[error("unusable private key: {reason}")]
    InvalidKey {
        /// What is wrong with it.
        reason: String,
    },
    /// The rebuilt record does not match the signed end-to-end check BLAKE3(salt ‖ record):
    /// some combined share was wrong although its commitment passed (e.g. a writer that dealt
    /// inconsistent shares). Nothing is returned.
    #[error("the rebuilt record fails its end-to-end check")]
    RecordCheckFailed,
    /// Robust decoding found more inconsistent shares than it can correct: with m shares of a
    /// k-of-n record, at most ⌊(m − k)/2⌋ bad shares can be located.
    #[error("too many inconsistent shares: {shares} shares with threshold {threshold} correct at most {correctable}")]
    TooManyBadShares {
        /// Shares decoded.
        shares: usize,
        /// Threshold k.
        threshold: usize,
        /// ⌊(shares − k)/2⌋.
        correctable: usize,
    },
    /// A Merkle inclusion or consistency proof does not verify, or cannot be made for the
    /// sizes asked.
    #[error("invalid {proof}: {reason}")]
    ProofInvalid {
        /// Which proof ("inclusion proof", "consistency proof", "root").
        proof: &'static str,
        /// What failed.
        reason: &'static str,
    },
    /// Text that is not a well-formed C2SP signed note or checkpoint.
    #[error("malformed {what}: {reason}")]
    MalformedNote {
        /// What was parsed ("signed note", "checkpoint", "cosignature").
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A note carries no valid signature by the key it must be signed with.
    #[error("no valid signature by {key_name}: {reason}")]
    SignatureInvalid {
        /// The expected signer's key name.
        key_name: String,
        /// Why: missing, wrong key id, or the signature does not verify.
        reason: &'static str,
    },
    /// A certificate does not chain to the cluster CA, or is not the identity it must be.
    #[error("certificate not trusted: {reason}")]
    CertificateNotTrusted {
        /// What failed (issuer, signature, role, name, key type).
        reason: String,
    },
    /// A private key could not be loaded, does not match its certificate, or failed to sign.
    #[error("signing key: {reason}")]
    SigningKey {
        /// What went wrong.
        reason: String,
    },
}

/// Shorthand for results of protocol functions.
pub type Result<T, E = Error> = std::result::Result<T, E>;
