//! The C2SP signed-note text format (c2sp.org/signed-note): a text, a blank line, and one
//! signature line per signer.
//!
//! ```text
//! bunsan/audit/node-1          ┐
//! 42                           │ note text (ends in a newline)
//! 3q2+7w...=                   ┘
//!                                blank line
//! — bunsan/audit/node-1 AAAAAa...  one line per signature: em dash, space, key name, space,
//! — bunsan/witness/node-2 BBBB...  base64(4-byte big-endian key id ‖ signature bytes)
//! ```
//!
//! This module only reads and writes the syntax; what a signature means and how it is checked
//! is in [`crate::checkpoint`]. Parsing is strict (UTF-8, no control characters but newline,
//! bounded size and signature count) and never panics.

use aws_lc_rs::digest;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

use crate::error::{Error, Result};

/// The most signature lines a note may carry. The spec asks verifiers to accept at least 16;
/// a checkpoint here carries the log's signature and one cosignature per other node.
pub const NOTE_SIGNATURES_MAX: usize = 256;

/// The largest note accepted, in bytes: a checkpoint with [`NOTE_SIGNATURES_MAX`] ECDSA
/// signatures is about 40 KiB.
pub const NOTE_MAX_BYTES: usize = 64 * 1024;

/// The signature type byte of ECDSA note signatures (signed-note §Signature types: "ECDSA
/// signatures as implemented by github.com/transparency-dev/witness").
pub const SIGNATURE_TYPE_ECDSA: u8 = 0x02;

/// The signature type byte for signature types the signed-note spec does not assign; it is
/// followed by a longer identifier when a key id is derived.
pub const SIGNATURE_TYPE_OTHER: u8 = 0xff;

/// One signature line of a note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    /// The signer's key name: non-empty, no spaces, no '+'.
    pub key_name: String,
    /// The key id: which key of that name signed (see [`key_id`]).
    pub key_id: u32,
    /// The signature bytes after the key id (their meaning depends on the key type).
    pub signature: Vec<u8>,
}

impl NoteSignature {
    /// The signature line, without its final newline.
    pub fn line(&self) -> String {
        let mut raw = self.key_id.to_be_bytes().to_vec();
        raw.extend_from_slice(&self.signature);
        format!("\u{2014} {} {}", self.key_name, BASE64.encode(raw))
    }
}

/// A parsed signed note: its text and its signatures, in the order they appear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedNote {
    /// The note text, including its final newline (this is what signatures cover).
    pub text: String,
    /// The signature lines.
    pub signatures: Vec<NoteSignature>,
}

impl SignedNote {
    /// Parses a signed note, refusing anything the spec does not allow.
    pub fn parse(note: &str) -> Result<Self> {
        let bad = |reason: &str| Error::MalformedNote {
            what: "signed note",
            reason: reason.to_owned(),
        };
        if note.len() > NOTE_MAX_BYTES {
            return Err(bad("longer than 64 KiB"));
        }
        if note.chars().any(|c| c.is_control() && c != '\n') {
            return Err(bad("contains a control character other than newline"));
        }
        let Some(blank) = note.rfind("\n\n") else {
            return Err(bad("no blank line before the signatures"));
        };
        let (text, signatures) = (&note[..=blank], &note[blank + 2..]);
        if !signatures.ends_with('\n') {
            return Err(bad("the last signature line does not end in a newline"));
        }
        let signatures = signatures[..signatures.len() - 1]
            .split('\n')
            .map(parse_signature_line)
            .collect::<Result<Vec<_>>>()?;
        if signatures.len() > NOTE_SIGNATURES_MAX {
            return Err(bad("too many signatures"));
        }
        Ok(Self {
            text: text.to_owned(),
            signatures,
        })
    }

    /// The note as text: the note text, a blank line, then every signature line.
    pub fn to_text(&self) -> String {
        let mut out = self.text.clone();
        out.push('\n');
        for signature in &self.signatures {
            out.push_str(&signature.line());
            out.push('\n');
        }
        out
    }

    /// Adds `signature`, replacing an earlier one with the same key name and id (a newer
    /// cosignature by the same cosigner supersedes the older one).
    pub fn add_signature(&mut self, signature: NoteSignature) {
        self.signatures
            .retain(|s| !(s.key_name == signature.key_name && s.key_id == signature.key_id));
        self.signatures.push(signature);
    }

    /// The signatures with this key name and id.
    pub fn signatures_by<'a>(
        &'a self,
        key_name: &'a str,
        key_id: u32,
    ) -> impl Iterator<Item = &'a NoteSignature> {
        self.signatures
            .iter()
            .filter(move |s| s.key_name == key_name && s.key_id == key_id)
    }
}

fn parse_signature_line(line: &str) -> Result<NoteSignature> {
    let bad = |reason: &str| Error::MalformedNote {
        what: "signature line",
        reason: reason.to_owned(),
    };
    let rest = line
        .strip_prefix("\u{2014} ")
        .ok_or_else(|| bad("does not start with an em dash and a space"))?;
    let (key_name, encoded) = rest
        .split_once(' ')
        .ok_or_else(|| bad("no space between key name and signature"))?;
    check_key_name(key_name)?;
    let raw = BASE64
        .decode(encoded)
        .map_err(|_| bad("the signature is not standard base64"))?;
    let Some((id, signature)) = raw.split_first_chunk::<4>() else {
        return Err(bad("the signature is shorter than its 4-byte key id"));
    };
    Ok(NoteSignature {
        key_name: key_name.to_owned(),
        key_id: u32::from_be_bytes(*id),
        signature: signature.to_vec(),
    })
}

/// Checks a key name (or checkpoint origin): non-empty, no Unicode space, no '+'.
pub fn check_key_name(name: &str) -> Result<()> {
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == '+') {
        return Err(Error::MalformedNote {
            what: "key name",
            reason: format!("{name:?} is empty or holds a space or '+'"),
        });
    }
    Ok(())
}

/// A key id as signed-note recommends: the first four bytes, big-endian, of
/// `SHA-256(key name ‖ 0x0A ‖ type ‖ public key)`.
pub fn key_id(key_name: &str, signature_type: &[u8], public_key: &[u8]) -> u32 {
    let mut context = digest::Context::new(&digest::SHA256);
    context.update(key_name.as_bytes());
    context.update(b"\n");
    context.update(signature_type);
    context.update(public_key);
    first_four(context.finish().as_ref())
}

/// The key id of an ECDSA note key (type 0x02): the first four bytes of SHA-256 over the DER
/// SubjectPublicKeyInfo, as the signed-note spec fixes for that type.
pub fn ecdsa_key_id(spki_der: &[u8]) -> u32 {
    first_four(digest::digest(&digest::SHA256, spki_der).as_ref())
}

fn first_four(digest: &[u8]) -> u32 {
    let mut id = [0u8; 4];
    id.copy_from_slice(&digest[..4]);
    u32::from_be_bytes(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "Ognuno sta solo sul cuor della terra\ntrafitto da un raggio di sole:\n\ned \u{e8} subito sera.\n\n\u{2014} quasimodo.example/salvatore NnugSzTjtVAewIS+Z/iJhUPeFDkO/5QQ2i5ddnGITLlC+EhfLW9oJKONrMouFSQU0xMcXxj99ihAQwaqP3ZekRwNtIc=\n";

    #[test]
    fn parses_the_spec_example_and_writes_it_back() {
        let note = SignedNote::parse(EXAMPLE).expect("parse");
        assert!(note.text.ends_with("subito sera.\n"));
        assert!(
            note.text.contains("\n\ned"),
            "empty lines inside the text are kept"
        );
        assert_eq!(note.signatures.len(), 1);
        assert_eq!(note.signatures[0].key_name, "quasimodo.example/salvatore");
        assert_eq!(note.signatures[0].signature.len(), 64);
        assert_eq!(note.to_text(), EXAMPLE);
    }

    #[test]
    fn refuses_malformed_notes() {
        for bad in [
            "no signatures\n",
            "text\n\n",
            "text\n\n\u{2014} name AAAAAAA=",
            "text\n\n- name AAAAAAA=\n",
            "text\n\n\u{2014} na+me AAAAAAA=\n",
            "text\n\n\u{2014} name AAA=\n",
            "text\n\n\u{2014} name not-base64!\n",
            "te\u{7}xt\n\n\u{2014} name AAAAAAA=\n",
        ] {
            assert!(SignedNote::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_newer_signature_of_the_same_key_replaces_the_older() {
        let mut note = SignedNote::parse(EXAMPLE).expect("parse");
        let mut newer = note.signatures[0].clone();
        newer.signature = vec![1, 2, 3];
        note.add_signature(newer.clone());
        assert_eq!(note.signatures, vec![newer]);
        let other = NoteSignature {
            key_name: "other".to_owned(),
            key_id: 7,
            signature: vec![9],
        };
        note.add_signature(other);
        assert_eq!(note.signatures.len(), 2);
        assert_eq!(SignedNote::parse(&note.to_text()).expect("reparse"), note);
    }
}
