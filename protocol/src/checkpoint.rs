//! Signed checkpoints of a node's audit log (c2sp.org/tlog-checkpoint) and cosignatures by
//! the other nodes (in the manner of c2sp.org/tlog-cosignature).
//!
//! ```text
//! bunsan/audit/node-1                          origin: one log per node
//! 42                                           tree size (entries 0..41)
//! 3q2+7w...=                                   RFC 6962 SHA-256 root, base64
//! chain 9xQ...=                                extension: BLAKE3 chain head after entry 41
//! time 1767225600000000                        extension: signing time, µs since the epoch
//!
//! — bunsan/audit/node-1 <key id ‖ ECDSA sig>   the log's own signature (type 0x02)
//! — bunsan/witness/node-2 <key id ‖ time ‖ ECDSA sig>   cosignature by node-2
//! ```
//!
//! The log's signature is a signed-note ECDSA signature (type 0x02, key id = SHA-256 of the
//! SPKI): any verifier that supports that type and is given the node's key can check it.
//! A cosignature signs exactly the tlog-cosignature/v1 message (`cosignature/v1`, `time T`,
//! then the checkpoint text) and carries the same `u64 timestamp ‖ signature` payload, but with
//! ECDSA P-256 instead of Ed25519 (our node keys are P-256), so its key id uses type byte 0xff
//! followed by [`COSIGNATURE_ALGORITHM`]. A cosignature states: "as of time T, this is the
//! largest checkpoint of this log I have seen, and it is consistent with every earlier one I
//! cosigned".

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

use crate::error::{Error, Result};
use crate::merkle::Hash;
use crate::node_key::{NodeKey, NodeSigner};
use crate::note::{self, NoteSignature, SignedNote, SIGNATURE_TYPE_OTHER};

/// The identifier after the 0xff type byte in cosigner key ids.
pub const COSIGNATURE_ALGORITHM: &str = "bunsan/ecdsa-p256-cosignature/v1";

/// The origin (and log key name) of a node's audit log.
pub fn log_origin(node_id: &str) -> String {
    format!("bunsan/audit/{node_id}")
}

/// The key name a node cosigns under.
pub fn cosigner_name(node_id: &str) -> String {
    format!("bunsan/witness/{node_id}")
}

/// The node id of a log origin, if it is a Bunsan one.
pub fn node_of_origin(origin: &str) -> Option<&str> {
    origin.strip_prefix("bunsan/audit/")
}

/// The node id of a cosigner key name, if it is a Bunsan one.
pub fn node_of_cosigner(key_name: &str) -> Option<&str> {
    key_name.strip_prefix("bunsan/witness/")
}

/// A checkpoint: the log's origin, tree size and root, plus Bunsan's extension lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Which log (see [`log_origin`]).
    pub origin: String,
    /// How many entries the tree holds.
    pub size: u64,
    /// The RFC 6962 root over those entries.
    pub root: Hash,
    /// The BLAKE3 chain value after the last entry (all zero for an empty log).
    pub chain: Hash,
    /// When the log signed it, µs since the Unix epoch.
    pub time_micros: u64,
}

impl Checkpoint {
    /// The note text (what signatures cover), ending in a newline.
    pub fn text(&self) -> String {
        format!(
            "{}\n{}\n{}\nchain {}\ntime {}\n",
            self.origin,
            self.size,
            BASE64.encode(self.root),
            BASE64.encode(self.chain),
            self.time_micros
        )
    }

    /// Parses a checkpoint note text. The three C2SP lines are required; so are Bunsan's
    /// `chain` and `time` extension lines, in that order, and nothing else.
    pub fn parse_text(text: &str) -> Result<Self> {
        let bad = |reason: &str| Error::MalformedNote {
            what: "checkpoint",
            reason: reason.to_owned(),
        };
        let body = text
            .strip_suffix('\n')
            .ok_or_else(|| bad("does not end in a newline"))?;
        let lines: Vec<&str> = body.split('\n').collect();
        let [origin, size, root, chain, time] = lines.as_slice() else {
            return Err(bad("expected origin, size, root, chain and time lines"));
        };
        note::check_key_name(origin)?;
        let size = parse_decimal(size).ok_or_else(|| bad("the size is not a decimal number"))?;
        let root = decode_hash(root).ok_or_else(|| bad("the root is not a base64 hash"))?;
        let chain = chain
            .strip_prefix("chain ")
            .and_then(decode_hash)
            .ok_or_else(|| bad("no 'chain <base64 hash>' line"))?;
        let time_micros = time
            .strip_prefix("time ")
            .and_then(parse_decimal)
            .ok_or_else(|| bad("no 'time <microseconds>' line"))?;
        Ok(Self {
            origin: (*origin).to_owned(),
            size,
            root,
            chain,
            time_micros,
        })
    }

    /// Signs the checkpoint with the log's key and returns the signed note text.
    pub fn sign(&self, signer: &NodeSigner) -> Result<String> {
        let text = self.text();
        let signature = signer.sign(text.as_bytes())?;
        let note = SignedNote {
            text,
            signatures: vec![NoteSignature {
                key_name: self.origin.clone(),
                key_id: note::ecdsa_key_id(signer.public().spki_der()),
                signature,
            }],
        };
        Ok(note.to_text())
    }
}

fn parse_decimal(text: &str) -> Option<u64> {
    // No sign, no leading zeros (except "0"): one number, one spelling.
    if text.is_empty() || (text.len() > 1 && text.starts_with('0')) {
        return None;
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn decode_hash(text: &str) -> Option<Hash> {
    BASE64.decode(text).ok()?.try_into().ok()
}

/// A checkpoint whose log signature verified, with the note it came in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCheckpoint {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// The whole note, all signature lines included (cosignatures are checked separately).
    pub note: SignedNote,
}

/// Parses a signed checkpoint and checks that `log_key`'s node signed it for its own log.
pub fn verify_checkpoint(note_text: &str, log_key: &NodeKey) -> Result<VerifiedCheckpoint> {
    let note = SignedNote::parse(note_text)?;
    let checkpoint = Checkpoint::parse_text(&note.text)?;
    let origin = log_origin(log_key.node_id());
    if checkpoint.origin != origin {
        return Err(Error::MalformedNote {
            what: "checkpoint",
            reason: format!("origin {:?} is not {origin:?}", checkpoint.origin),
        });
    }
    let key_id = note::ecdsa_key_id(log_key.spki_der());
    let signatures: Vec<&NoteSignature> = note.signatures_by(&origin, key_id).collect();
    if signatures.is_empty() {
        return Err(Error::SignatureInvalid {
            key_name: origin,
            reason: "no signature line with the log's key name and key id",
        });
    }
    // signed-note: a signature from a known key that fails rejects the whole note.
    if !signatures
        .iter()
        .all(|s| log_key.verify(note.text.as_bytes(), &s.signature))
    {
        return Err(Error::SignatureInvalid {
            key_name: origin,
            reason: "the log's signature does not verify",
        });
    }
    Ok(VerifiedCheckpoint { checkpoint, note })
}

/// The key id of `cosigner`'s cosignatures.
pub fn cosigner_key_id(cosigner: &NodeKey) -> u32 {
    let mut signature_type = vec![SIGNATURE_TYPE_OTHER];
    signature_type.extend_from_slice(COSIGNATURE_ALGORITHM.as_bytes());
    note::key_id(
        &cosigner_name(cosigner.node_id()),
        &signature_type,
        cosigner.spki_der(),
    )
}

/// The tlog-cosignature/v1 signed message for a checkpoint text at `timestamp_secs`.
fn cosigned_message(text: &str, timestamp_secs: u64) -> String {
    format!("cosignature/v1\ntime {timestamp_secs}\n{text}")
}

/// Cosigns a checkpoint text at `timestamp_secs` (POSIX seconds) and returns the signature line
/// to add to its note. The caller must have checked consistency first: that check is what a
/// cosignature asserts.
pub fn cosign(text: &str, signer: &NodeSigner, timestamp_secs: u64) -> Result<NoteSignature> {
    if timestamp_secs > i64::MAX as u64 {
        return Err(Error::SigningKey {
            reason: "a cosignature timestamp must not exceed 2^63 - 1".to_owned(),
        });
    }
    let signature = signer.sign(cosigned_message(text, timestamp_secs).as_bytes())?;
    let mut payload = timestamp_secs.to_be_bytes().to_vec();
    payload.extend_from_slice(&signature);
    Ok(NoteSignature {
        key_name: cosigner_name(signer.public().node_id()),
        key_id: cosigner_key_id(signer.public()),
        signature: payload,
    })
}

/// Checks `cosigner`'s cosignature on `note`, if it carries one: `Ok(None)` when there is
/// none, `Ok(Some(timestamp))` when it verifies, an error when one is present and does not.
pub fn verify_cosignature(note: &SignedNote, cosigner: &NodeKey) -> Result<Option<u64>> {
    let name = cosigner_name(cosigner.node_id());
    let mut newest = None;
    for line in note.signatures_by(&name, cosigner_key_id(cosigner)) {
        let invalid = |reason| Error::SignatureInvalid {
            key_name: name.clone(),
            reason,
        };
        let Some((timestamp, signature)) = line.signature.split_first_chunk::<8>() else {
            return Err(invalid("the cosignature is shorter than its timestamp"));
        };
        let timestamp = u64::from_be_bytes(*timestamp);
        if timestamp > i64::MAX as u64 {
            return Err(invalid("the cosignature timestamp exceeds 2^63 - 1"));
        }
        if !cosigner.verify(
            cosigned_message(&note.text, timestamp).as_bytes(),
            signature,
        ) {
            return Err(invalid("the cosignature does not verify"));
        }
        newest = newest.max(Some(timestamp));
    }
    Ok(newest)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::node_key::test_pki::TestCa;

    fn checkpoint(size: u64) -> Checkpoint {
        Checkpoint {
            origin: log_origin("node-1"),
            size,
            root: [size as u8; 32],
            chain: [3; 32],
            time_micros: 1_767_225_600_000_000,
        }
    }

    #[test]
    fn text_round_trips_and_matches_the_c2sp_layout() {
        let cp = checkpoint(42);
        let text = cp.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "bunsan/audit/node-1");
        assert_eq!(lines[1], "42");
        assert_eq!(lines[2], BASE64.encode([42u8; 32]));
        assert_eq!(Checkpoint::parse_text(&text).expect("parse"), cp);
        for bad in [
            text.replace("\n42\n", "\n042\n"),
            text.replace("\n42\n", "\n-1\n"),
            text.replace("chain ", "chains "),
            text.trim_end().to_owned(),
            format!("{text}extra\n"),
        ] {
            assert!(Checkpoint::parse_text(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_signed_checkpoint_verifies_only_with_its_own_log_key() {
        let ca = TestCa::new("ca");
        let (signer, cert) = ca.signer("node-1");
        let (other, _) = ca.signer("node-2");
        let key = NodeKey::from_certificate(&ca.der, &cert, Some("node-1")).expect("key");
        let note = checkpoint(5).sign(&signer).expect("sign");
        let verified = verify_checkpoint(&note, &key).expect("verifies");
        assert_eq!(verified.checkpoint, checkpoint(5));
        assert!(
            verify_checkpoint(&note, other.public()).is_err(),
            "wrong key"
        );
        let forged = note.replacen("\n5\n", "\n6\n", 1);
        assert!(matches!(
            verify_checkpoint(&forged, &key),
            Err(Error::SignatureInvalid { .. })
        ));
        // node-2 signing a checkpoint that claims to be node-1's log is refused too.
        let mut claim = checkpoint(5);
        claim.origin = log_origin("node-2");
        let theirs = claim.sign(&other).expect("sign");
        assert!(verify_checkpoint(&theirs, &key).is_err());
    }

    #[test]
    fn cosignatures_verify_and_bind_time_and_text() {
        let ca = TestCa::new("ca");
        let (log, _) = ca.signer("node-1");
        let (witness, _) = ca.signer("node-2");
        let (stranger, _) = ca.signer("node-3");
        let mut note = SignedNote::parse(&checkpoint(9).sign(&log).expect("sign")).expect("note");
        assert_eq!(verify_cosignature(&note, witness.public()), Ok(None));
        note.add_signature(cosign(&note.text, &witness, 1_767_225_600).expect("cosign"));
        let reparsed = SignedNote::parse(&note.to_text()).expect("reparse");
        assert_eq!(
            verify_cosignature(&reparsed, witness.public()),
            Ok(Some(1_767_225_600))
        );
        assert_eq!(verify_cosignature(&reparsed, stranger.public()), Ok(None));
        // The log's own signature still verifies with cosignatures present.
        assert!(verify_checkpoint(&reparsed.to_text(), log.public()).is_ok());
        let mut moved = reparsed.clone();
        let line = moved.signatures.last_mut().expect("line");
        line.signature[7] ^= 1; // another timestamp
        assert!(verify_cosignature(&moved, witness.public()).is_err());
        let mut other_text = reparsed;
        other_text.text = checkpoint(10).text();
        assert!(verify_cosignature(&other_text, witness.public()).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        #[test]
        fn any_edit_of_a_signed_checkpoint_is_refused(at in any::<usize>(), byte in 0x20u8..0x7f) {
            let ca = TestCa::new("ca");
            let (log, _) = ca.signer("node-1");
            let note = checkpoint(77).sign(&log).expect("sign");
            let mut bytes = note.clone().into_bytes();
            let at = at % bytes.len();
            prop_assume!(bytes[at].is_ascii() && bytes[at] != b'\n' && bytes[at] != byte);
            bytes[at] = byte;
            if let Ok(edited) = String::from_utf8(bytes) {
                prop_assert!(verify_checkpoint(&edited, log.public()).is_err());
            }
        }

        #[test]
        fn garbage_never_panics(text in "\\PC{0,300}") {
            let _ = SignedNote::parse(&text);
            let _ = Checkpoint::parse_text(&text);
        }
    }
}
