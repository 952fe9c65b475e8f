//! Synthetic SS-MIX2 standardized storage trees, for tests and demonstrations.
//!
//! Every patient, name and value is made up from a seed (the same seed gives the same tree,
//! byte for byte). The layout and file names follow the SS-MIX2 rules [`Document::parse`]
//! checks; the messages look like HL7 v2.5 (MSH, PID, then segments of the message type,
//! `\r`-separated) but are not validated against the JAHIS message specifications, and are
//! ASCII where real sites write ISO-2022-JP. They exist to be moved around, not interpreted.
//!
//! [`Document::parse`]: super::Document::parse

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntheticOptions {
    /// How many patients.
    pub patients: usize,
    /// Documents per patient, the first always a patient-information update (ADT-00).
    pub documents_per_patient: usize,
    /// The seed every choice derives from.
    pub seed: u64,
}

/// Data types the generator writes: (SS-MIX2 data type, HL7 message type, dated?).
const KINDS: [(&str, &str, bool); 5] = [
    ("ADT-12", "ADT^A04", true),
    ("OMP-01", "RDE^O11", true),
    ("OML-11", "OML^O33", true),
    ("OUL-01", "OUL^R22", true),
    ("PPR-01", "PPR^ZD1", false),
];

/// Writes a synthetic tree under `root` (created if missing) and returns the documents'
/// paths relative to it, sorted.
pub fn generate(root: &Path, options: &SyntheticOptions) -> Result<Vec<PathBuf>> {
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let mut ids = HashSet::new();
    let mut written = Vec::new();
    for patient in 0..options.patients {
        let id = loop {
            let id = format!("{:010}", rng.random_range(1_000_000_000u64..10_000_000_000));
            if ids.insert(id.clone()) {
                break id;
            }
        };
        for document in 0..options.documents_per_patient {
            let (data_type, message_type, dated) = if document == 0 {
                ("ADT-00", "ADT^A08", false)
            } else {
                KINDS[rng.random_range(0..KINDS.len())]
            };
            let day = format!(
                "2024{:02}{:02}",
                rng.random_range(1..=12u32),
                rng.random_range(1..=28u32)
            );
            let date = if dated { day.clone() } else { "-".to_owned() };
            let timestamp = format!(
                "{day}{:02}{:02}{:02}{:03}",
                rng.random_range(8..19u32),
                rng.random_range(0..60u32),
                rng.random_range(0..60u32),
                rng.random_range(0..1000u32)
            );
            // The document number keeps file names unique within a patient.
            let order = if document == 0 {
                "-".to_owned()
            } else {
                format!("{:07}", document)
            };
            let department = if rng.random_bool(0.2) {
                "-".to_owned()
            } else {
                format!("{:02}", rng.random_range(1..=30u32))
            };
            let condition = if rng.random_bool(0.05) { "0" } else { "1" };
            let name =
                format!("{id}_{date}_{data_type}_{order}_{timestamp}_{department}_{condition}");
            let relative: PathBuf = [&id[..3], &id[3..6], &id, &date, data_type, &name]
                .iter()
                .collect();
            let message = message(&mut rng, &id, patient, message_type, &timestamp);
            let path = root.join(&relative);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                    action: "create directory",
                    path: dir.to_owned(),
                    source,
                })?;
            }
            std::fs::write(&path, message).map_err(|source| Error::Io {
                action: "write",
                path: path.clone(),
                source,
            })?;
            written.push(relative);
        }
    }
    written.sort();
    Ok(written)
}

/// An HL7-v2.5-shaped message of a few hundred bytes to a few kilobytes.
fn message(
    rng: &mut ChaCha8Rng,
    id: &str,
    patient: usize,
    message_type: &str,
    timestamp: &str,
) -> Vec<u8> {
    let sex = if rng.random_bool(0.5) { "F" } else { "M" };
    let birth = format!(
        "19{:02}{:02}{:02}",
        rng.random_range(20..99u32),
        rng.random_range(1..=12u32),
        rng.random_range(1..=28u32)
    );
    let mut text = format!(
        "MSH|^~\\&|HIS|BUNSAN-SYNTH|SSMIX2|BUNSAN-SYNTH|{}||{message_type}|{:016X}|P|2.5||||||~ISO IR87||ISO 2022-1994\r\
         PID|0001||{id}^^^^PI||SYNTHETIC^PATIENT{patient}^^^^^L||{birth}|{sex}\r",
        &timestamp[..14],
        rng.random::<u64>()
    );
    for line in 1..=rng.random_range(1..40u32) {
        let value: u32 = rng.random_range(0..100_000);
        text.push_str(&format!(
            "OBX|{line}|NM|{:05}^SYNTHETIC-ITEM-{line}^99SYN||{}.{:02}|unit|||||F\r",
            value % 997,
            value / 100,
            value % 100
        ));
    }
    text.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::super::Document;
    use super::*;

    #[test]
    fn trees_are_valid_ss_mix2_and_reproducible() {
        let options = SyntheticOptions {
            patients: 4,
            documents_per_patient: 5,
            seed: 9,
        };
        let one = tempfile::tempdir().expect("tempdir");
        let two = tempfile::tempdir().expect("tempdir");
        let written = generate(one.path(), &options).expect("generate");
        assert_eq!(written, generate(two.path(), &options).expect("again"));
        assert_eq!(written.len(), 20);
        for relative in &written {
            Document::parse(relative).expect("every generated path is SS-MIX2");
            let a = std::fs::read(one.path().join(relative)).expect("read");
            let b = std::fs::read(two.path().join(relative)).expect("read");
            assert_eq!(a, b, "same seed, same bytes");
            assert!(a.starts_with(b"MSH|^~\\&|"));
        }
        let demographics = written
            .iter()
            .filter(|p| p.to_string_lossy().contains("/-/ADT-00/"))
            .count();
        assert_eq!(demographics, 4, "one ADT-00 per patient");
    }
}
