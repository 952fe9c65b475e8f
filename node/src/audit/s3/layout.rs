//! The names and body formats of the S3 audit store (layout in the parent module's doc): pure
//! functions, so every decoder can be fuzzed and property-tested without an object store.

use bunsan_protocol::audit::AuditRecord;

use super::super::log::BATCH_MAX;
use crate::error::{Error, Result};

pub(super) const ENTRIES: &str = "audit/entries/";
pub(super) const COMMITS: &str = "audit/commits/";
pub(super) const CHECKPOINTS: &str = "audit/checkpoints/";
pub(super) const WITNESSED: &str = "audit/witnessed/";
pub(super) const HEAD: &str = "audit/head";

/// The format byte in front of every sealed body this module writes.
pub(super) const BODY_FORMAT: u8 = 1;

pub(super) fn entry_name(seq: u64, tag: u64) -> String {
    format!("{ENTRIES}{seq:020}-{tag:016x}")
}

pub(super) fn commit_name(seq: u64, tag: u64) -> String {
    format!("{COMMITS}{seq:020}-{tag:016x}")
}

pub(super) fn checkpoint_name(size: u64) -> String {
    format!("{CHECKPOINTS}{size:020}")
}

/// The listing offset before every name in `folder` starting at `from`: every name of start
/// `from - 1` is `<digits>-<hex>`, and `g` sorts after any hex digit.
pub(super) fn position_offset(folder: &str, from: u64) -> Option<String> {
    from.checked_sub(1)
        .map(|before| format!("{folder}{before:020}-g"))
}

/// The start and tag of a listed `<folder><20 digits>-<16 hex>` name; anything else is damage.
pub(super) fn start_and_tag(name: &str, folder: &str) -> Result<(u64, u64)> {
    name.strip_prefix(folder)
        .and_then(|rest| rest.split_once('-'))
        .filter(|(_, tag)| {
            tag.len() == 16 && tag.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        })
        .and_then(|(digits, tag)| {
            Some((twenty_digits(digits)?, u64::from_str_radix(tag, 16).ok()?))
        })
        .ok_or_else(|| unexpected(name))
}

/// Every decoder of the S3 audit store on untrusted bytes: `name` parsed as a batch or commit
/// name, `body` as a batch starting there, as the head hint and as a checkpoint number. For the
/// fuzz targets and the never-panic tests; the result only says whether anything decoded.
pub(crate) fn check_object(name: &str, body: &[u8]) -> bool {
    let start = start_and_tag(name, ENTRIES)
        .or_else(|_| start_and_tag(name, COMMITS))
        .map(|(start, _)| start)
        .unwrap_or(0);
    let batch = decode_batch(start, body).is_ok();
    let head = decode_head(body).is_some();
    let checkpoint = seq_in(name, CHECKPOINTS).is_ok();
    batch || head || checkpoint
}

/// The start of a listed `audit/entries/<20 digits>-<16 hex>` name; anything else is damage.
pub(super) fn entry_seq(name: &str) -> Result<u64> {
    start_and_tag(name, ENTRIES).map(|(start, _)| start)
}

/// The number in a listed `folder/<20 digits>` name; anything else in the folder is damage.
pub(super) fn seq_in(name: &str, folder: &str) -> Result<u64> {
    name.strip_prefix(folder)
        .and_then(twenty_digits)
        .ok_or_else(|| unexpected(name))
}

pub(super) fn twenty_digits(digits: &str) -> Option<u64> {
    if digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse().ok()
    } else {
        None
    }
}

pub(super) fn unexpected(name: &str) -> Error {
    Error::AuditCorrupt {
        seq: u64::MAX,
        reason: format!("unexpected object {name} in the audit log"),
    }
}

/// `format ‖ count u32 ‖ (chain 32 ‖ entry length u32 ‖ entry)*`.
pub(super) fn encode_batch(records: &[AuditRecord]) -> Vec<u8> {
    let size = records.iter().map(|r| 36 + r.entry.len()).sum::<usize>();
    let mut body = Vec::with_capacity(5 + size);
    body.push(BODY_FORMAT);
    // At most BATCH_MAX records and each entry is bounded, so the casts cannot truncate.
    body.extend_from_slice(&(records.len() as u32).to_be_bytes());
    for record in records {
        body.extend_from_slice(&record.chain);
        body.extend_from_slice(&(record.entry.len() as u32).to_be_bytes());
        body.extend_from_slice(&record.entry);
    }
    body
}

pub(super) fn decode_batch(start: u64, body: &[u8]) -> Result<Vec<AuditRecord>> {
    let damaged = |seq: u64, reason: &str| Error::AuditCorrupt {
        seq,
        reason: reason.to_owned(),
    };
    let Some((&BODY_FORMAT, rest)) = body.split_first() else {
        return Err(damaged(start, "unknown batch format"));
    };
    let Some((count, mut rest)) = rest.split_first_chunk::<4>() else {
        return Err(damaged(start, "batch shorter than its count"));
    };
    let count = u32::from_be_bytes(*count) as usize;
    if count == 0 || count > BATCH_MAX {
        return Err(damaged(start, "batch count out of range"));
    }
    let mut records = Vec::with_capacity(count);
    for seq in (start..).take(count) {
        let Some((chain, after)) = rest.split_first_chunk::<32>() else {
            return Err(damaged(seq, "batch truncated before a chain value"));
        };
        let Some((length, after)) = after.split_first_chunk::<4>() else {
            return Err(damaged(seq, "batch truncated before an entry length"));
        };
        let length = u32::from_be_bytes(*length) as usize;
        if after.len() < length {
            return Err(damaged(seq, "batch truncated inside an entry"));
        }
        let (entry, after) = after.split_at(length);
        records.push(AuditRecord {
            entry: entry.to_vec(),
            chain: *chain,
        });
        rest = after;
    }
    if !rest.is_empty() {
        return Err(damaged(start, "trailing bytes after the batch"));
    }
    Ok(records)
}

/// `format ‖ start u64 ‖ end u64 ‖ writer tag u64`: names the batch `start-tag`.
pub(super) fn encode_head(start: u64, end: u64, tag: u64) -> Vec<u8> {
    let mut body = vec![BODY_FORMAT];
    body.extend_from_slice(&start.to_be_bytes());
    body.extend_from_slice(&end.to_be_bytes());
    body.extend_from_slice(&tag.to_be_bytes());
    body
}

pub(super) fn decode_head(body: &[u8]) -> Option<(u64, u64, u64)> {
    let (&BODY_FORMAT, rest) = body.split_first()? else {
        return None;
    };
    let (start, rest) = rest.split_first_chunk::<8>()?;
    let (end, tag) = rest.split_first_chunk::<8>()?;
    let tag: &[u8; 8] = tag.try_into().ok()?;
    let (start, end, tag) = (
        u64::from_be_bytes(*start),
        u64::from_be_bytes(*end),
        u64::from_be_bytes(*tag),
    );
    (start < end).then_some((start, end, tag))
}

/// A body that does not open (or a failed GET) while reading entry `seq`, as the audit error.
pub(super) fn corrupt(seq: u64, error: Error) -> Error {
    match error {
        Error::Corrupt { key, reason } => Error::AuditCorrupt {
            seq,
            reason: format!("{key}: {reason}"),
        },
        other => other,
    }
}

pub(super) fn vanished(seq: u64) -> Error {
    Error::AuditCorrupt {
        seq,
        reason: "a listed audit object is gone: the log was truncated behind the node".to_owned(),
    }
}
