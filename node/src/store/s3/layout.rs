//! The object names and plaintext frames of the S3 share store (layout in the parent
//! module's doc).

use bunsan_protocol::{RecordKey, Version, WriterId};

use crate::error::{Error, Result};
use crate::objstore::Listed;
use crate::store::codec::{self, Head};

/// The plaintext layout inside a sealed share or staged object.
const OBJECT_FORMAT: u8 = 1;

/// One share object, as its name describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Versioned {
    pub(super) name: String,
    pub(super) hk: String,
    pub(super) slot: (Version, u32),
    pub(super) head: Head,
    pub(super) size: u64,
}

/// The name of the object holding `slot` of the key hashed to `hk`.
pub(super) fn version_name(hk: &str, (version, epoch): (Version, u32), head: &Head) -> String {
    format!(
        "shares/{hk}/{:016x}{:016x}{epoch:08x}-{}{:016x}",
        version.clock_micros,
        version.writer.0,
        if head.tombstone { 't' } else { 'd' },
        head.record_len
    )
}

/// Reads a listed share object's name; `None` (with a warning) for a name this store does
/// not write, which is then ignored rather than trusted or deleted.
pub(super) fn parse(listed: Listed) -> Option<Versioned> {
    let parsed = (|| {
        let rest = listed.name.strip_prefix("shares/")?;
        let (hk, leaf) = rest.split_once('/')?;
        let hex = |range: std::ops::Range<usize>| {
            let digits = leaf.get(range)?;
            digits
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
                .then(|| u64::from_str_radix(digits, 16).ok())?
        };
        if hk.len() != 64 || leaf.len() != 58 || &leaf[40..41] != "-" {
            return None;
        }
        let tombstone = match &leaf[41..42] {
            "t" => true,
            "d" => false,
            _ => return None,
        };
        let version = Version {
            clock_micros: hex(0..16)?,
            writer: WriterId(hex(16..32)?),
        };
        let epoch = u32::try_from(hex(32..40)?).ok()?;
        let head = Head {
            version,
            tombstone,
            record_len: hex(42..58)?,
        };
        Some((hk.to_owned(), (version, epoch), head))
    })();
    match parsed {
        Some((hk, slot, head)) => Some(Versioned {
            hk,
            slot,
            head,
            size: listed.size,
            name: listed.name,
        }),
        None => {
            tracing::warn!(name = %listed.name, "an object name this store does not write, ignored");
            None
        }
    }
}

/// The plaintext of a share or staged object: format, key length, key, value.
pub(super) fn frame(key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(3 + key.len() + value.len());
    out.push(OBJECT_FORMAT);
    // Record keys are far shorter than 64 KiB (RECORD_KEY_MAX_BYTES).
    out.extend_from_slice(&(key.len() as u16).to_be_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    out
}

/// Splits an opened object body into its key and value, and checks that the value's head
/// (when readable; codec reports it otherwise) agrees with the object's name.
pub(super) fn unframe<'a>(top: &Versioned, body: &'a [u8]) -> Result<(&'a [u8], &'a [u8])> {
    let (key, value) = split_frame(&top.name, body)?;
    if let Ok(head) = codec::head(key, value) {
        if head != top.head {
            return Err(corrupt(&top.name, "object name disagrees with its value"));
        }
    }
    Ok((key, value))
}

pub(super) fn split_frame<'a>(name: &str, body: &'a [u8]) -> Result<(&'a [u8], &'a [u8])> {
    match body {
        [OBJECT_FORMAT, hi, lo, rest @ ..] => {
            let len = usize::from(u16::from_be_bytes([*hi, *lo]));
            rest.get(..len)
                .map(|key| (key, &rest[len..]))
                .ok_or_else(|| corrupt(name, "object shorter than its key"))
        }
        [format, ..] => Err(corrupt(
            name,
            &format!("object format {format} (this build reads {OBJECT_FORMAT})"),
        )),
        [] => Err(corrupt(name, "empty object")),
    }
}

pub(super) fn staged_value<'a>(name: &str, key: &RecordKey, body: &'a [u8]) -> Result<&'a [u8]> {
    match split_frame(name, body)? {
        (stored, value) if stored == key.as_bytes() => Ok(value),
        _ => Err(corrupt(name, "staged object holds another record key")),
    }
}

pub(super) fn corrupt(name: &str, reason: &str) -> Error {
    Error::Corrupt {
        key: name.to_owned(),
        reason: reason.to_owned(),
    }
}
