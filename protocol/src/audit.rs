//! Audit log entries: what a node records about every request, how an entry is encoded, and
//! the BLAKE3 hash chain over entries.
//!
//! ```text
//! entry_i  = AUDIT_ENTRY_FORMAT ‖ postcard(AuditEntry { seq: i, .. })   canonical bytes
//! chain_i  = BLAKE3(chain_{i−1} ‖ entry_i),   chain_{−1} = 0³²          cheap local check
//! leaf_i   = SHA-256(0x00 ‖ entry_i)                                    RFC 6962 Merkle leaf
//! ```
//!
//! The canonical bytes are what is hashed, stored, sent and exported: decoding re-checks every
//! field through the same constructors as in-memory values, and [`AuditEntry::decode`] refuses
//! bytes that do not re-encode identically, so one entry has exactly one encoding.
//!
//! Submodules: [`wire`] (the audit requests and answers), [`export`] (the files `bunsan audit
//! fetch` writes), [`verify`] (offline verification of fetched logs), [`report`] (who rebuilt
//! which record, when and why).

pub mod export;
pub mod finding;
pub mod report;
pub mod verify;
pub mod wire;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::merkle::{self, Hash};
use crate::message::ErrorCode;
use crate::role::{PeerIdentity, Role};
use crate::types::{Purpose, RecordKey, RequestId, Version};

/// The format byte in front of every encoded entry. Postcard bytes do not describe their own
/// layout, so a future layout gets a new byte and old logs stay readable.
pub const AUDIT_ENTRY_FORMAT: u8 = 1;

/// The largest encoded entry. Every variable field is bounded (key 512 B, purpose 320 B,
/// subject and reason [`AUDIT_TEXT_MAX_BYTES`] each), so real entries stay far below this.
pub const AUDIT_ENTRY_MAX_BYTES: usize = 4096;

/// The longest free text (certificate subject, remote address, refusal reason) kept in an
/// entry; longer text is cut at a character boundary. Bounds what a peer can make a node write.
pub const AUDIT_TEXT_MAX_BYTES: usize = 256;

/// The chain value before the first entry.
pub const CHAIN_GENESIS: Hash = [0; 32];

/// The action name of a connection refused before any request (a failed TLS handshake or a
/// certificate without a usable role).
pub const ACTION_CONNECT: &str = "connect";

/// The action name of a request that could not be read (too large, truncated, undecodable).
pub const ACTION_MALFORMED: &str = "malformed";

/// The action name of a share release request ([`crate::message::Request::Get`]).
pub const ACTION_GET: &str = "get";

/// The action name of a witness alarm: this node refused to cosign a peer's log.
pub const ACTION_WITNESS: &str = "witness";

/// One audited event on one node.
///
/// Field order and enum variant order are part of the persisted format: never reorder, only
/// append under a new [`AUDIT_ENTRY_FORMAT`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in this node's log, from 0, without gaps.
    pub seq: u64,
    /// When the node appended it, µs since the Unix epoch; never decreases along the log.
    pub time_micros: u64,
    /// The node whose log this is.
    pub node_id: String,
    /// Who asked.
    pub actor: Actor,
    /// What was asked: the request's [`crate::message::Request::action`] name, or one of
    /// [`ACTION_CONNECT`], [`ACTION_MALFORMED`], [`ACTION_WITNESS`].
    pub action: String,
    /// The record concerned, if any.
    pub key: Option<RecordKey>,
    /// The record version concerned (written, released or found), if any.
    pub version: Option<Version>,
    /// The reader's stated purpose (gets only).
    pub purpose: Option<Purpose>,
    /// The client's operation id, the same on every node for one operation.
    pub request_id: Option<RequestId>,
    /// What the node did.
    pub outcome: Outcome,
}

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Actor {
    /// A peer with a verified certificate from the cluster CA.
    Certificate {
        /// BLAKE3 of the certificate DER: names exactly one certificate.
        fingerprint: [u8; 32],
        /// The certificate's subject common name.
        subject: String,
        /// The certificate's role.
        role: Role,
    },
    /// A peer refused before it proved an identity (failed handshake, no usable role).
    Unauthenticated {
        /// The remote address as the node saw it.
        remote: String,
    },
    /// The node itself (witness alarms).
    Node,
}

impl Actor {
    /// The actor of an authenticated peer.
    pub fn of(peer: &PeerIdentity) -> Self {
        Actor::Certificate {
            fingerprint: peer.fingerprint,
            subject: bounded(&peer.name),
            role: peer.role,
        }
    }

    /// The subject name, the remote address, or "node".
    pub fn name(&self) -> &str {
        match self {
            Actor::Certificate { subject, .. } => subject,
            Actor::Unauthenticated { remote } => remote,
            Actor::Node => "node",
        }
    }
}

/// What a node did with a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// A share left the node (a get answered with share bytes).
    Released,
    /// A get found nothing to release (no record, or a tombstone).
    NotFound,
    /// A put or delete was written durably.
    Stored,
    /// A put or delete was already stored (idempotent retry).
    AlreadyStored,
    /// A put or delete lost to a newer stored version.
    Superseded,
    /// Any other request that was answered (health, list, status, audit reads, cosigning).
    Allowed,
    /// Refused because of the request or the requester (role, validation, size, conflict).
    Refused {
        /// The error code the peer received.
        code: ErrorCode,
        /// The explanation, cut to [`AUDIT_TEXT_MAX_BYTES`].
        reason: String,
    },
    /// The node could not serve it (storage failure, corruption, overload, witness alarm).
    Failed {
        /// The error code the peer received.
        code: ErrorCode,
        /// The explanation, cut to [`AUDIT_TEXT_MAX_BYTES`].
        reason: String,
    },
}

impl Outcome {
    /// A refusal or failure with `code`, the reason cut to size; the code decides which.
    pub fn error(code: ErrorCode, reason: &str) -> Self {
        let reason = bounded(reason);
        match code {
            ErrorCode::Unavailable | ErrorCode::Corrupt | ErrorCode::Busy => {
                Outcome::Failed { code, reason }
            }
            _ => Outcome::Refused { code, reason },
        }
    }

    /// A short label: `released`, `refused`, ...
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Released => "released",
            Outcome::NotFound => "not-found",
            Outcome::Stored => "stored",
            Outcome::AlreadyStored => "already-stored",
            Outcome::Superseded => "superseded",
            Outcome::Allowed => "allowed",
            Outcome::Refused { .. } => "refused",
            Outcome::Failed { .. } => "failed",
        }
    }
}

/// `text` cut to at most [`AUDIT_TEXT_MAX_BYTES`] at a character boundary.
pub fn bounded(text: &str) -> String {
    if text.len() <= AUDIT_TEXT_MAX_BYTES {
        return text.to_owned();
    }
    let mut end = AUDIT_TEXT_MAX_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

impl AuditEntry {
    /// The canonical bytes: [`AUDIT_ENTRY_FORMAT`] then postcard.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = vec![AUDIT_ENTRY_FORMAT];
        postcard::to_io(self, &mut out).map_err(|e| Error::Encode {
            what: "audit entry",
            reason: e.to_string(),
        })?;
        if out.len() > AUDIT_ENTRY_MAX_BYTES {
            return Err(Error::Encode {
                what: "audit entry",
                reason: format!("{} bytes exceed {AUDIT_ENTRY_MAX_BYTES}", out.len()),
            });
        }
        Ok(out)
    }

    /// Decodes canonical bytes, refusing an unknown format, oversized or trailing bytes, and
    /// any encoding other than the canonical one.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let decode_error = |reason: String| Error::Decode {
            what: "audit entry",
            reason,
        };
        if bytes.len() > AUDIT_ENTRY_MAX_BYTES {
            return Err(decode_error(format!(
                "{} bytes exceed {AUDIT_ENTRY_MAX_BYTES}",
                bytes.len()
            )));
        }
        let Some((&format, body)) = bytes.split_first() else {
            return Err(decode_error("empty".to_owned()));
        };
        if format != AUDIT_ENTRY_FORMAT {
            return Err(Error::UnsupportedFormat {
                what: "audit entry",
                found: format,
                supported: AUDIT_ENTRY_FORMAT,
            });
        }
        let (entry, rest): (AuditEntry, _) =
            postcard::take_from_bytes(body).map_err(|e| decode_error(e.to_string()))?;
        if !rest.is_empty() {
            return Err(Error::TrailingBytes { extra: rest.len() });
        }
        // Varints have more than one spelling; only the canonical one hashes as signed.
        if entry.encode()?.as_slice() != bytes {
            return Err(decode_error("not the canonical encoding".to_owned()));
        }
        Ok(entry)
    }
}

/// The chain value after an entry: `BLAKE3(previous ‖ entry bytes)`.
pub fn chain_next(previous: &Hash, entry_bytes: &[u8]) -> Hash {
    let mut hasher = blake3::Hasher::new();
    hasher.update(previous);
    hasher.update(entry_bytes);
    *hasher.finalize().as_bytes()
}

/// An encoded entry together with the chain value after it, as a node stores and serves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// The canonical entry bytes.
    #[serde(with = "serde_bytes")]
    pub entry: Vec<u8>,
    /// The chain value after this entry, as the node computed it when appending.
    pub chain: Hash,
}

impl AuditRecord {
    /// Encodes `entry` and chains it after `previous`.
    pub fn new(entry: &AuditEntry, previous: &Hash) -> Result<Self> {
        let entry = entry.encode()?;
        let chain = chain_next(previous, &entry);
        Ok(Self { entry, chain })
    }

    /// The RFC 6962 leaf hash of the entry.
    pub fn leaf_hash(&self) -> Hash {
        merkle::leaf_hash(&self.entry)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::types::WriterId;

    pub(crate) fn entry(seq: u64) -> AuditEntry {
        AuditEntry {
            seq,
            time_micros: 1_767_225_600_000_000 + seq,
            node_id: "node-1".to_owned(),
            actor: Actor::Certificate {
                fingerprint: [seq as u8; 32],
                subject: "reader".to_owned(),
                role: Role::Reader,
            },
            action: ACTION_GET.to_owned(),
            key: Some(RecordKey::new(format!("clinic/p{seq}")).expect("key")),
            version: Some(Version {
                clock_micros: 5,
                writer: WriterId(9),
            }),
            purpose: Some(Purpose::new("treatment", "follow-up").expect("purpose")),
            request_id: Some(RequestId([seq as u8; 16])),
            outcome: Outcome::Released,
        }
    }

    #[test]
    fn entries_round_trip_and_refuse_other_formats() {
        let e = entry(3);
        let bytes = e.encode().expect("encode");
        assert_eq!(bytes[0], AUDIT_ENTRY_FORMAT);
        assert_eq!(AuditEntry::decode(&bytes), Ok(e));
        let mut other = bytes.clone();
        other[0] = 2;
        assert!(matches!(
            AuditEntry::decode(&other),
            Err(Error::UnsupportedFormat { found: 2, .. })
        ));
        let mut longer = bytes;
        longer.push(0);
        assert!(AuditEntry::decode(&longer).is_err());
        assert!(AuditEntry::decode(&[]).is_err());
    }

    #[test]
    fn long_text_is_bounded_at_a_character_boundary() {
        let long = "é".repeat(AUDIT_TEXT_MAX_BYTES);
        let cut = bounded(&long);
        assert!(cut.len() <= AUDIT_TEXT_MAX_BYTES && cut.len() >= AUDIT_TEXT_MAX_BYTES - 1);
        let outcome = Outcome::error(ErrorCode::Forbidden, &long);
        assert!(
            matches!(outcome, Outcome::Refused { ref reason, .. } if reason.len() <= AUDIT_TEXT_MAX_BYTES)
        );
        assert!(matches!(
            Outcome::error(ErrorCode::Unavailable, "x"),
            Outcome::Failed { .. }
        ));
    }

    #[test]
    fn the_chain_depends_on_every_entry_and_their_order() {
        let records: Vec<Vec<u8>> = (0..4).map(|i| entry(i).encode().expect("encode")).collect();
        let chain = |order: &[usize]| {
            order
                .iter()
                .fold(CHAIN_GENESIS, |c, &i| chain_next(&c, &records[i]))
        };
        assert_ne!(chain(&[0, 1, 2, 3]), chain(&[0, 2, 1, 3]));
        assert_ne!(chain(&[0, 1, 2, 3]), chain(&[0, 1, 3]));
        assert_eq!(chain(&[0, 1, 2, 3]), chain(&[0, 1, 2, 3]));
    }

    proptest! {
        #[test]
        fn any_byte_edit_is_refused_or_changes_the_chain(at in any::<usize>(), flip in 1u8..=255) {
            let e = entry(7);
            let record = AuditRecord::new(&e, &CHAIN_GENESIS).expect("record");
            let mut bytes = record.entry.clone();
            let at = at % bytes.len();
            bytes[at] ^= flip;
            if let Ok(decoded) = AuditEntry::decode(&bytes) {
                prop_assert_ne!(decoded, e);
            }
            prop_assert_ne!(chain_next(&CHAIN_GENESIS, &bytes), record.chain);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = AuditEntry::decode(&bytes);
        }
    }
}
