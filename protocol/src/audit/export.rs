//! The text formats of a fetched audit directory (what `bunsan audit fetch` writes and
//! `bunsan audit verify` reads), so that an auditor can also read them with a text editor.
//!
//! ```text
//! DIR/ca.pem                                  the cluster CA certificate
//! DIR/cluster.toml                            the manifest (k, the node ids)
//! DIR/nodes/NODE/certificate.pem              the node certificate its checkpoints verify with
//! DIR/nodes/NODE/entries                      one line per entry: "SEQ CHAIN-HEX BASE64-ENTRY"
//! DIR/nodes/NODE/checkpoints/SIZE.note        signed checkpoints with their cosignatures
//! DIR/nodes/NODE/checkpoints/SIZE-HASH.note   a different checkpoint of the same size (a fork)
//! DIR/nodes/NODE/proofs/FROM-TO.proof         consistency proofs between fetched checkpoints
//! DIR/nodes/NODE/witnessed/LOG/SIZE.note      checkpoints of LOG that NODE cosigned
//! ```
//!
//! The sequence number and chain value on each entry line are labels for people and for
//! pinpointing: the verifier trusts neither, it recomputes both and checks them against the
//! signed checkpoints.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;

use crate::audit::AuditRecord;
use crate::error::{Error, Result};
use crate::merkle::Hash;

/// One line of an `entries` file, parsed as far as it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedEntry {
    /// The 1-based line number in the file.
    pub line: usize,
    /// The sequence number label, if readable.
    pub seq: Option<u64>,
    /// The chain value label, if readable.
    pub chain: Option<Hash>,
    /// The entry bytes, or why the line could not be read.
    pub entry: std::result::Result<Vec<u8>, String>,
}

/// One entry line (with its newline).
pub fn entry_line(seq: u64, record: &AuditRecord) -> String {
    format!(
        "{seq} {} {}\n",
        hex::encode(record.chain),
        BASE64.encode(&record.entry)
    )
}

/// Parses an `entries` file; a bad line becomes an entry with an error, never a failure of
/// the whole file, so the verifier can name exactly where the damage is.
pub fn parse_entries(text: &str) -> Vec<ExportedEntry> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.is_empty())
        .map(|(number, line)| {
            let mut fields = line.split(' ');
            let seq = fields.next().and_then(|s| s.parse().ok());
            let chain = fields
                .next()
                .and_then(|h| hex::decode(h).ok())
                .and_then(|bytes| bytes.try_into().ok());
            let entry = match (fields.next(), fields.next()) {
                (Some(encoded), None) => BASE64
                    .decode(encoded)
                    .map_err(|e| format!("the entry is not base64: {e}")),
                _ => Err("a line must be 'SEQ CHAIN BASE64'".to_owned()),
            };
            ExportedEntry {
                line: number + 1,
                seq,
                chain,
                entry,
            }
        })
        .collect()
}

/// A consistency proof file: a header line `consistency FROM TO`, then one base64 hash a line.
pub fn proof_text(from: u64, to: u64, hashes: &[Hash]) -> String {
    let mut out = format!("consistency {from} {to}\n");
    for hash in hashes {
        out.push_str(&BASE64.encode(hash));
        out.push('\n');
    }
    out
}

/// A parsed consistency proof file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedProof {
    /// The older tree size.
    pub from: u64,
    /// The newer tree size.
    pub to: u64,
    /// The proof's hashes.
    pub hashes: Vec<Hash>,
}

/// Parses a consistency proof file.
pub fn parse_proof(text: &str) -> Result<ExportedProof> {
    let bad = |reason: &str| Error::Decode {
        what: "consistency proof file",
        reason: reason.to_owned(),
    };
    let mut lines = text.lines();
    let header = lines.next().ok_or_else(|| bad("empty"))?;
    let mut fields = header.split(' ');
    let (Some("consistency"), Some(from), Some(to), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(bad("the first line must be 'consistency FROM TO'"));
    };
    let from = from.parse().map_err(|_| bad("FROM is not a number"))?;
    let to = to.parse().map_err(|_| bad("TO is not a number"))?;
    let hashes = lines
        .map(|line| {
            BASE64
                .decode(line)
                .ok()
                .and_then(|bytes| bytes.try_into().ok())
                .ok_or_else(|| bad("a line is not a base64 hash"))
        })
        .collect::<Result<Vec<Hash>>>()?;
    Ok(ExportedProof { from, to, hashes })
}

/// The file name of the checkpoint of `size` (zero-padded so names sort by size).
pub fn checkpoint_file_name(size: u64) -> String {
    format!("{size:020}.note")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::CHAIN_GENESIS;

    #[test]
    fn entry_lines_and_proofs_round_trip() {
        let record = AuditRecord::new(&crate::audit::tests::entry(4), &CHAIN_GENESIS).expect("r");
        let text = entry_line(4, &record) + "garbage\n" + "5 00 AAAA\n";
        let parsed = parse_entries(&text);
        assert_eq!(parsed.len(), 3);
        assert_eq!(parsed[0].seq, Some(4));
        assert_eq!(parsed[0].chain, Some(record.chain));
        assert_eq!(parsed[0].entry.as_deref(), Ok(record.entry.as_slice()));
        assert!(parsed[1].entry.is_err());
        assert_eq!(parsed[2].line, 3);
        assert_eq!(parsed[2].chain, None);
        let proof = proof_text(3, 9, &[[1; 32], [2; 32]]);
        assert_eq!(
            parse_proof(&proof),
            Ok(ExportedProof {
                from: 3,
                to: 9,
                hashes: vec![[1; 32], [2; 32]]
            })
        );
        assert!(parse_proof("consistency 3\n").is_err());
        assert!(parse_proof(&(proof + "zz\n")).is_err());
        assert!(checkpoint_file_name(12) < checkpoint_file_name(100));
    }
}
