//! An SS-MIX2 collector: uploads the documents of an SS-MIX2 standardized storage tree as
//! Bunsan records, with the patient id in every record key replaced by a keyed pseudonym.
//!
//! SS-MIX2 (JAMI; MHLW standard HS026, ISO/TS 24289) is how Japanese hospitals and clinics
//! store what their hospital information system sends out: HL7 v2.5 messages, one file per
//! document, in a fixed directory tree. Our reading of the standardized storage layout (the
//! part this collector relies on; docs/OPERATIONS.md "SS-MIX2 collector" says more):
//!
//! ```text
//! ROOT/123/456/1234567890/20240115/OMP-01/1234567890_20240115_OMP-01_0000123_20240115093012345_01_1
//!      │   │   │          │        │      └ file: PID_DATE_TYPE_ORDER_TIMESTAMP_DEPT_CONDITION
//!      │   │   │          │        └ data type: 3 letters, '-', 2 digits (ADT-00, OMP-01, OUL-01 ...)
//!      │   │   │          └ date of care, YYYYMMDD, or "-" for data without one (ADT-00, PPR-01)
//!      │   │   └ patient id
//!      │   └ characters 4-6 of the patient id   (hash directories that keep any one
//!      └ characters 1-3 of the patient id        directory small)
//! ```
//!
//! In the file name, ORDER is the order number ("-" if none), TIMESTAMP the 17-digit time the
//! file was written (YYYYMMDDHHMMSSfff), DEPT the department code ("-" if none) and CONDITION
//! `1` for a valid document or `0` for one that was cancelled; a change is a new file.
//!
//! A document becomes the record
//!
//! ```text
//! PREFIX/PSEUDONYM/DATE/TYPE/DATE_TYPE_ORDER_TIMESTAMP_DEPT_CONDITION
//! ```
//!
//! where `PSEUDONYM` = the first 16 bytes, in hex, of `blake3::keyed_hash(K, patient id)` and
//! K is a 32-byte key held by the collectors (never by nodes, readers or admins). The record
//! *content* is the file, byte for byte: the HL7 message still names the patient (PID-3, PID-5),
//! but it is secret-shared like every record, so no node ever sees it; a reader who rebuilds it
//! does. Keys are visible to nodes and admins, so they carry the pseudonym, never the id.
//!
//! - [`import`](mod@import): walking the tree, deciding what to skip, uploading.
//! - [`state`]: the collector's local record of what it already uploaded.
//! - [`synthetic`]: a generator of fake SS-MIX2 trees for tests and demos.

pub mod import;
pub mod state;
pub mod synthetic;

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use bunsan_protocol::RecordKey;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

pub use import::{import, ImportOptions, ImportReport};

/// Bytes of the keyed BLAKE3 hash kept as the pseudonym: 128 bits make a collision between
/// two patients negligible (about 2^-64 even for 2^32 patients) and keep keys short.
pub const PSEUDONYM_BYTES: usize = 16;

/// The secret key that turns patient ids into pseudonyms. Collectors of one facility (or of a
/// network that wants the same patient to get the same pseudonym) share it; nodes never have
/// it. Zeroed when dropped.
pub struct PseudonymKey {
    key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for PseudonymKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PseudonymKey(..)")
    }
}

impl PseudonymKey {
    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self {
            key: Zeroizing::new(bytes),
        }
    }

    /// Reads a key file: 64 hexadecimal digits (one line). Refuses a file that the group or
    /// others may read, as ssh does with private keys: a leaked key lets anyone who sees the
    /// record keys test guesses of patient ids.
    pub fn load(path: &Path) -> Result<Self> {
        let bad = |reason: String| Error::PseudonymKey {
            path: path.to_owned(),
            reason,
        };
        let metadata = std::fs::metadata(path).map_err(|e| bad(format!("cannot read: {e}")))?;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(bad(format!(
                "mode {mode:o} lets others read it; run chmod 600 on it"
            )));
        }
        let text = Zeroizing::new(
            std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read: {e}")))?,
        );
        let mut key = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(text.trim(), key.as_mut_slice())
            .map_err(|_| bad("expected exactly 64 hexadecimal digits".to_owned()))?;
        Ok(Self { key })
    }

    /// Generates a new random key and writes it to `path` (mode 0600). Refuses to replace an
    /// existing file: losing a key means new pseudonyms for every patient.
    pub fn generate(path: &Path) -> Result<Self> {
        let mut key = Zeroizing::new([0u8; 32]);
        rand::Rng::fill(&mut rand::rng(), key.as_mut_slice());
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|source| Error::Io {
                action: "create",
                path: path.to_owned(),
                source,
            })?;
        let text = Zeroizing::new(format!("{}\n", hex::encode(key.as_slice())));
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|source| Error::Io {
                action: "write",
                path: path.to_owned(),
                source,
            })?;
        Ok(Self { key })
    }

    /// The pseudonym of `patient_id`: hex of the first [`PSEUDONYM_BYTES`] bytes of
    /// `blake3::keyed_hash(key, patient_id)`.
    pub fn pseudonym(&self, patient_id: &str) -> String {
        let hash = blake3::keyed_hash(&self.key, patient_id.as_bytes());
        hex::encode(&hash.as_bytes()[..PSEUDONYM_BYTES])
    }
}

/// One document of an SS-MIX2 standardized storage, parsed from its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// The path relative to the storage root.
    pub relative: PathBuf,
    /// The patient id (the third directory level and the file name's first field).
    pub patient_id: String,
    /// The date of care, `YYYYMMDD`, or `-`.
    pub date: String,
    /// The data type, e.g. `OMP-01`.
    pub data_type: String,
    /// The file name without the patient id: `DATE_TYPE_ORDER_TIMESTAMP_DEPT_CONDITION`.
    pub name_without_patient: String,
}

impl Document {
    /// Parses a path relative to the storage root, checking every rule the key relies on:
    /// six levels, hash directories that match the id, a date or `-`, a data type, and a file
    /// name whose fields repeat the directories.
    pub fn parse(relative: &Path) -> Result<Self> {
        let fail = |reason: String| Error::NotSsmix2 {
            path: relative.to_owned(),
            reason,
        };
        let parts = relative
            .components()
            .map(|component| match component {
                Component::Normal(part) => part
                    .to_str()
                    .ok_or_else(|| fail("a path element is not UTF-8".to_owned())),
                _ => Err(fail("not a plain relative path".to_owned())),
            })
            .collect::<Result<Vec<&str>>>()?;
        let [first, second, patient_id, date, data_type, file_name] = parts[..] else {
            return Err(fail(format!(
                "expected 6 levels (hash/hash/patient/date/type/file), found {}",
                parts.len()
            )));
        };
        if patient_id.is_empty()
            || !patient_id
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'_' && b != b'/')
        {
            return Err(fail(format!(
                "patient id {patient_id:?} is not printable ASCII without '_'"
            )));
        }
        // IDs shorter than six characters: we have not seen how sites name their hash
        // directories, so we do not check them (docs/OPERATIONS.md).
        if patient_id.len() >= 6 && (first != &patient_id[..3] || second != &patient_id[3..6]) {
            return Err(fail(format!(
                "hash directories {first}/{second} do not match patient id {patient_id}"
            )));
        }
        if !is_date_of_care(date) {
            return Err(fail(format!("{date:?} is neither YYYYMMDD nor '-'")));
        }
        if !is_data_type(data_type) {
            return Err(fail(format!(
                "{data_type:?} is not a data type like OMP-01"
            )));
        }
        let fields: Vec<&str> = file_name.split('_').collect();
        let [f_patient, f_date, f_type, order, timestamp, department, condition] = fields[..]
        else {
            return Err(fail(format!(
                "file name has {} '_'-separated fields, expected 7",
                fields.len()
            )));
        };
        if (f_patient, f_date, f_type) != (patient_id, date, data_type) {
            return Err(fail(
                "file name's patient, date or type differs from its directories".to_owned(),
            ));
        }
        if order.is_empty() || department.is_empty() {
            return Err(fail("empty order number or department field".to_owned()));
        }
        if timestamp.len() != 17 || !timestamp.bytes().all(|b| b.is_ascii_digit()) {
            return Err(fail(format!("timestamp {timestamp:?} is not 17 digits")));
        }
        if condition != "0" && condition != "1" {
            return Err(fail(format!(
                "condition flag {condition:?} is neither 0 nor 1"
            )));
        }
        Ok(Self {
            relative: relative.to_owned(),
            patient_id: patient_id.to_owned(),
            date: date.to_owned(),
            data_type: data_type.to_owned(),
            name_without_patient: file_name[patient_id.len() + 1..].to_owned(),
        })
    }

    /// The record key: `PREFIX/PSEUDONYM/DATE/TYPE/DATE_TYPE_ORDER_TIMESTAMP_DEPT_CONDITION`.
    pub fn record_key(&self, prefix: &str, key: &PseudonymKey) -> Result<RecordKey> {
        let prefix = prefix.trim_end_matches('/');
        let pseudonym = key.pseudonym(&self.patient_id);
        let text = if prefix.is_empty() {
            format!(
                "{pseudonym}/{}/{}/{}",
                self.date, self.data_type, self.name_without_patient
            )
        } else {
            format!(
                "{prefix}/{pseudonym}/{}/{}/{}",
                self.date, self.data_type, self.name_without_patient
            )
        };
        Ok(RecordKey::new(text)?)
    }
}

/// `YYYYMMDD` with a plausible month and day, or `-`.
fn is_date_of_care(date: &str) -> bool {
    if date == "-" {
        return true;
    }
    let digits = date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit());
    digits && {
        let month = &date[4..6];
        let day = &date[6..8];
        ("01"..="12").contains(&month) && ("01"..="31").contains(&day)
    }
}

/// Three capital letters, `-`, two digits: `ADT-00`, `OMP-01`, `OUL-01`, ...
fn is_data_type(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == 6
        && bytes[..3].iter().all(u8::is_ascii_uppercase)
        && bytes[3] == b'-'
        && bytes[4..].iter().all(u8::is_ascii_digit)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str =
        "123/456/1234567890/20240115/OMP-01/1234567890_20240115_OMP-01_0000123_20240115093012345_01_1";

    fn key() -> PseudonymKey {
        PseudonymKey::from_bytes([7; 32])
    }

    #[test]
    fn a_standard_path_becomes_a_pseudonymous_key() {
        let document = Document::parse(Path::new(GOOD)).expect("parse");
        assert_eq!(document.patient_id, "1234567890");
        assert_eq!(document.date, "20240115");
        assert_eq!(document.data_type, "OMP-01");
        let record = document.record_key("clinic-7/", &key()).expect("key");
        let pseudonym = key().pseudonym("1234567890");
        assert_eq!(pseudonym.len(), 2 * PSEUDONYM_BYTES);
        assert_eq!(
            record.as_str(),
            format!("clinic-7/{pseudonym}/20240115/OMP-01/20240115_OMP-01_0000123_20240115093012345_01_1")
        );
        assert!(
            !record.as_str().contains("1234567890"),
            "no patient id in the key"
        );
        // Undated data (patient demographics) keeps '-' as its date.
        let undated = "123/456/1234567890/-/ADT-00/1234567890_-_ADT-00_-_20240101000000000_-_1";
        let undated = Document::parse(Path::new(undated)).expect("parse");
        assert!(undated
            .record_key("", &key())
            .expect("key")
            .as_str()
            .ends_with("/-/ADT-00/-_ADT-00_-_20240101000000000_-_1"));
    }

    #[test]
    fn pseudonyms_depend_on_the_key_and_the_id() {
        let other = PseudonymKey::from_bytes([8; 32]);
        assert_eq!(key().pseudonym("42"), key().pseudonym("42"));
        assert_ne!(key().pseudonym("42"), key().pseudonym("43"));
        assert_ne!(key().pseudonym("42"), other.pseudonym("42"));
        let expected = blake3::keyed_hash(&[7; 32], b"42");
        assert_eq!(
            key().pseudonym("42"),
            hex::encode(&expected.as_bytes()[..16])
        );
    }

    #[test]
    fn paths_off_the_layout_are_refused_with_the_rule() {
        let cases = [
            ("123/456/1234567890/20240115/OMP-01", "6 levels"),
            (&GOOD.replace("123/456/", "999/456/"), "hash directories"),
            (&GOOD.replace("/20240115/", "/20241315/"), "YYYYMMDD"),
            (&GOOD.replace("/OMP-01/", "/omp-01/"), "data type"),
            (&GOOD.replace("_01_1", "_01_1.hl7"), "condition flag"),
            (&GOOD.replace("_0000123_", "_"), "7"),
            (
                &GOOD.replace("1234567890_20240115", "1234567891_20240115"),
                "differs",
            ),
            (
                &GOOD.replace("20240115093012345", "2024011509301234"),
                "17 digits",
            ),
            ("../456/1234567890/20240115/OMP-01/x", "plain relative"),
        ];
        for (path, needle) in cases {
            let err = Document::parse(Path::new(path)).expect_err(path);
            assert!(err.to_string().contains(needle), "{path}: {err}");
        }
        // Short ids are accepted with whatever hash directories the site uses.
        let short = "000/000/42/20240115/OML-11/42_20240115_OML-11_-_20240115093012345_-_0";
        assert!(Document::parse(Path::new(short)).is_ok());
    }

    #[test]
    fn key_files_round_trip_and_must_be_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pseudonym.key");
        let generated = PseudonymKey::generate(&path).expect("generate");
        let loaded = PseudonymKey::load(&path).expect("load");
        assert_eq!(generated.pseudonym("1"), loaded.pseudonym("1"));
        assert!(PseudonymKey::generate(&path).is_err(), "never replaced");

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = PseudonymKey::load(&path).expect_err("world-readable");
        assert!(err.to_string().contains("chmod 600"), "{err}");

        let bad = dir.path().join("bad.key");
        std::fs::write(&bad, "abcd\n").expect("write");
        std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert!(matches!(
            PseudonymKey::load(&bad),
            Err(Error::PseudonymKey { .. })
        ));
    }
}
