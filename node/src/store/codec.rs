//! The byte layout of one stored value, shared by every backend, and the put decision.
//!
//! ```text
//! offset  size  field
//! 0       1     store value format (STORE_VALUE_FORMAT)
//! 1       8     version clock, microseconds, big-endian
//! 9       8     version writer id, big-endian
//! 17      1     flags: bit 0 = tombstone, other bits must be 0
//! 18      8     record length, big-endian
//! 26      32    BLAKE3 of the envelope bytes below
//! 58      ..    ShareEnvelope::encode (starts with the envelope format byte)
//! ```
//!
//! The fixed head repeats facts the envelope also holds; reads check that both agree, so a
//! damaged head cannot make a put keep the wrong version unnoticed for long.

use std::cmp::Ordering;

use bunsan_protocol::envelope::ShareEnvelope;
use bunsan_protocol::message::{HeldShare, InventoryEntry, ListEntry, PutOutcome};
use bunsan_protocol::repair::SessionId;
use bunsan_protocol::{RecordKey, Version, WriterId};

use crate::error::{Error, Result};

/// The stored value format this build writes and reads. A new layout gets a new number and a
/// migration, never a silent reinterpretation.
///
/// Format 2 holds envelope format 2 (signed header, commitments, nonce). Format 1 was never
/// released, so there is no migration from it: a store of format 1 refuses to open.
pub(crate) const STORE_VALUE_FORMAT: u8 = 2;

const HEAD_BYTES: usize = 1 + 8 + 8 + 1 + 8 + 32;
const TOMBSTONE_FLAG: u8 = 1;

/// The facts a put and a listing need, read from the fixed head of a stored value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Head {
    pub(crate) version: Version,
    pub(crate) tombstone: bool,
    pub(crate) record_len: u64,
}

impl Head {
    pub(crate) fn of(envelope: &ShareEnvelope) -> Self {
        Self {
            version: envelope.header.version,
            tombstone: envelope.header.tombstone,
            record_len: envelope.header.record_len,
        }
    }
}

/// Encodes a validated envelope as a stored value.
pub(crate) fn encode(envelope: &ShareEnvelope) -> Result<Vec<u8>> {
    envelope.validate()?;
    let body = envelope.encode()?;
    let head = Head::of(envelope);
    let mut out = Vec::with_capacity(HEAD_BYTES + body.len());
    out.push(STORE_VALUE_FORMAT);
    out.extend_from_slice(&head.version.clock_micros.to_be_bytes());
    out.extend_from_slice(&head.version.writer.0.to_be_bytes());
    out.push(if head.tombstone { TOMBSTONE_FLAG } else { 0 });
    out.extend_from_slice(&head.record_len.to_be_bytes());
    out.extend_from_slice(blake3::hash(&body).as_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

fn corrupt(key: &[u8], reason: impl Into<String>) -> Error {
    Error::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: reason.into(),
    }
}

fn be_u64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_be_bytes(word)
}

/// Reads the fixed head of the value stored under `key`, without touching the payload.
pub(crate) fn head(key: &[u8], value: &[u8]) -> Result<Head> {
    if value.len() < HEAD_BYTES {
        return Err(corrupt(
            key,
            format!(
                "{} bytes, shorter than the {HEAD_BYTES}-byte head",
                value.len()
            ),
        ));
    }
    if value[0] != STORE_VALUE_FORMAT {
        return Err(corrupt(
            key,
            format!(
                "store value format {} (this build reads {STORE_VALUE_FORMAT})",
                value[0]
            ),
        ));
    }
    let flags = value[17];
    if flags & !TOMBSTONE_FLAG != 0 {
        return Err(corrupt(key, format!("unknown flags {flags:#04x}")));
    }
    Ok(Head {
        version: Version {
            clock_micros: be_u64(value, 1),
            writer: WriterId(be_u64(value, 9)),
        },
        tombstone: flags & TOMBSTONE_FLAG != 0,
        record_len: be_u64(value, 18),
    })
}

/// Decodes and checks a stored value: head, checksum, envelope, and that the envelope agrees
/// with the head and the key it is stored under.
pub(crate) fn decode(key: &[u8], value: &[u8]) -> Result<ShareEnvelope> {
    let head = head(key, value)?;
    let (checksum, body) = value[HEAD_BYTES - 32..].split_at(32);
    if blake3::hash(body).as_bytes() != checksum {
        return Err(corrupt(key, "checksum mismatch"));
    }
    let envelope = ShareEnvelope::decode(body).map_err(|e| corrupt(key, e.to_string()))?;
    if envelope.header.key.as_bytes() != key {
        return Err(corrupt(
            key,
            format!("envelope is for key {:?}", envelope.header.key.as_str()),
        ));
    }
    if Head::of(&envelope) != head {
        return Err(corrupt(key, "head disagrees with the envelope"));
    }
    Ok(envelope)
}

/// A listing row from a stored key and value.
pub(crate) fn list_entry(key: &[u8], value: &[u8]) -> Result<ListEntry> {
    let head = head(key, value)?;
    let key = RecordKey::from_bytes(key).map_err(|e| corrupt(key, e.to_string()))?;
    Ok(ListEntry {
        key,
        version: head.version,
        tombstone: head.tombstone,
        record_len: head.record_len,
    })
}

/// A put decision rule: [`decide`] or [`decide_over_damage`].
pub(crate) type DecideFn = fn(&RecordKey, Option<&[u8]>, &Head, u32, &[u8]) -> Result<Decision>;

/// What a put does, given what is stored now.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Write the new value; it replaces `replaced` (for the counters). `keep_replaced`: the
    /// replaced value is an older version under a newer data version, to be kept (module
    /// `retained`) until the new one is known complete.
    Write {
        replaced: Option<Head>,
        keep_replaced: bool,
    },
    /// Write nothing and answer this.
    Keep(PutOutcome),
}

/// Decides a put of `new_value` (head `new`, sharing epoch `new_epoch`) over `current` under
/// `key`. A damaged current value refuses the put: without its version the store cannot know
/// whether the put is newer, and guessing could resurrect a deleted record.
///
/// Two envelopes of one version are ordered by their epoch (a refresh re-deals the same
/// version); the epoch is not in the fixed head, so that rare case decodes the stored value.
pub(crate) fn decide(
    key: &RecordKey,
    current: Option<&[u8]>,
    new: &Head,
    new_epoch: u32,
    new_value: &[u8],
) -> Result<Decision> {
    let Some(current) = current else {
        return Ok(Decision::Write {
            replaced: None,
            keep_replaced: false,
        });
    };
    let stored = head(key.as_bytes(), current)?;
    Ok(match stored.version.cmp(&new.version) {
        Ordering::Less => Decision::Write {
            replaced: Some(stored),
            keep_replaced: !new.tombstone,
        },
        Ordering::Equal if current == new_value => Decision::Keep(PutOutcome::AlreadyStored),
        Ordering::Equal => {
            // Also reports damage as damage, not as a competing writer.
            let stored_epoch = decode(key.as_bytes(), current)?.epoch();
            match stored_epoch.cmp(&new_epoch) {
                // A refresh re-deals the same version: the old epoch is not kept.
                Ordering::Less => Decision::Write {
                    replaced: Some(stored),
                    keep_replaced: false,
                },
                Ordering::Greater => Decision::Keep(PutOutcome::Superseded {
                    current: stored.version,
                }),
                Ordering::Equal => {
                    return Err(Error::Conflict {
                        key: key.clone(),
                        version: new.version,
                    })
                }
            }
        }
        Ordering::Greater => Decision::Keep(PutOutcome::Superseded {
            current: stored.version,
        }),
    })
}

/// Like [`decide`], but a stored value that fails its checks is replaced instead of refusing
/// the put: what repair does once the cluster's inventories showed which version belongs here.
pub(crate) fn decide_over_damage(
    key: &RecordKey,
    current: Option<&[u8]>,
    new: &Head,
    new_epoch: u32,
    new_value: &[u8],
) -> Result<Decision> {
    match current.map(|value| decode(key.as_bytes(), value)) {
        Some(Err(Error::Corrupt { .. })) => Ok(Decision::Write {
            // Counted at open only if its head was readable.
            replaced: current.and_then(|value| head(key.as_bytes(), value).ok()),
            keep_replaced: false,
        }),
        _ => decide(key, current, new, new_epoch, new_value),
    }
}

/// An inventory row from a stored key and value, reading and checking the whole value. `None`
/// for a stored key that is not a valid record key (it cannot be named, so it cannot be
/// repaired; the warning is the operator's cue).
pub(crate) fn inventory_entry(key: &[u8], value: &[u8]) -> Option<InventoryEntry> {
    let record_key = match RecordKey::from_bytes(key) {
        Ok(record_key) => record_key,
        Err(e) => {
            tracing::warn!(error = %e, "stored value under an invalid key left out of the inventory");
            return None;
        }
    };
    let state = match decode(key, value).and_then(|envelope| {
        // A share with a nonce must match its commitment (bitrot that kept a valid checksum,
        // a value rewritten by hand). One without (regenerated at a node under a new key) waits
        // for a refresh to be committed anew and is not counted as damage.
        if envelope.nonce.is_some() {
            envelope.check_commitment()?;
        }
        let header = &envelope.header;
        Ok(HeldShare::Held {
            version: header.version,
            epoch: envelope.epoch(),
            tombstone: header.tombstone,
            record_len: header.record_len,
            header_digest: envelope.dealing_digest()?,
            tombstone_proof: header
                .tombstone
                .then(|| Box::new((envelope.header.clone(), envelope.signature.clone()))),
        })
    }) {
        Ok(state) => state,
        Err(e) => HeldShare::Corrupt {
            reason: e.to_string(),
        },
    };
    Some(InventoryEntry {
        key: record_key,
        state,
        kept: Vec::new(),
    })
}

/// The stored form of a staged (refreshed, not yet committed) envelope: the refresh id, then
/// the value as [`encode`] writes it, so staged shares get the same checksum.
pub(crate) fn encode_staged(refresh_id: SessionId, envelope: &ShareEnvelope) -> Result<Vec<u8>> {
    let mut out = refresh_id.0.to_vec();
    out.extend_from_slice(&encode(envelope)?);
    Ok(out)
}

/// Reads a staged value written by [`encode_staged`].
pub(crate) fn decode_staged(key: &[u8], value: &[u8]) -> Result<(SessionId, ShareEnvelope)> {
    if value.len() < 16 {
        return Err(corrupt(key, "staged value shorter than its refresh id"));
    }
    let (id, rest) = value.split_at(16);
    let mut refresh_id = [0u8; 16];
    refresh_id.copy_from_slice(id);
    Ok((SessionId(refresh_id), decode(key, rest)?))
}

#[cfg(test)]
mod tests {
    use bunsan_protocol::ShareIndex;

    use super::*;

    fn envelope(clock: u64, payload: Vec<u8>) -> ShareEnvelope {
        crate::store::conformance::sample_share(
            RecordKey::new("a/b").expect("key"),
            Version {
                clock_micros: clock,
                writer: WriterId(3),
            },
            ShareIndex::new(1).expect("index"),
            &payload,
        )
    }

    #[test]
    fn round_trips_and_reads_the_head_alone() {
        let env = envelope(7, vec![1, 2, 3]);
        let value = encode(&env).expect("encode");
        assert_eq!(decode(b"a/b", &value).expect("decode"), env);
        assert_eq!(head(b"a/b", &value).expect("head"), Head::of(&env));
        assert_eq!(list_entry(b"a/b", &value).expect("entry").record_len, 3);
    }

    #[test]
    fn every_damage_is_a_typed_corrupt_error() {
        let value = encode(&envelope(7, vec![9; 40])).expect("encode");
        let mut flipped = value.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        let mut head_lies = value.clone();
        head_lies[8] ^= 1;
        let mut bad_format = value.clone();
        bad_format[0] = 9;
        for bad in [
            &value[..10],
            &flipped[..],
            &head_lies[..],
            &bad_format[..],
            &[][..],
        ] {
            assert!(
                matches!(decode(b"a/b", bad), Err(Error::Corrupt { .. })),
                "{bad:?}"
            );
        }
        assert!(matches!(
            decode(b"other", &value),
            Err(Error::Corrupt { .. })
        ));
    }

    #[test]
    fn decisions_follow_the_version_order() {
        let key = RecordKey::new("a/b").expect("key");
        let v5 = encode(&envelope(5, vec![1])).expect("encode");
        let v6 = envelope(6, vec![2]);
        let v6_value = encode(&v6).expect("encode");
        let h6 = Head::of(&v6);
        assert!(matches!(
            decide(&key, Some(&v5), &h6, 0, &v6_value),
            Ok(Decision::Write {
                replaced: Some(_),
                keep_replaced: true
            })
        ));
        assert_eq!(
            decide(&key, Some(&v6_value), &h6, 0, &v6_value).expect("same"),
            Decision::Keep(PutOutcome::AlreadyStored)
        );
        let other6 = encode(&envelope(6, vec![3])).expect("encode");
        assert!(matches!(
            decide(&key, Some(&other6), &h6, 0, &v6_value),
            Err(Error::Conflict { .. })
        ));
        let h5 = head(b"a/b", &v5).expect("head");
        assert!(matches!(
            decide(&key, Some(&v6_value), &h5, 0, &v5),
            Ok(Decision::Keep(PutOutcome::Superseded { .. }))
        ));
    }

    #[test]
    fn a_refresh_of_the_same_version_orders_by_epoch() {
        let key = RecordKey::new("a/b").expect("key");
        let epoch0 = envelope(6, vec![2]);
        let epoch1 = crate::store::conformance::with_epoch(envelope(6, vec![7]), 1);
        let (v0, v1) = (encode(&epoch0).expect("e0"), encode(&epoch1).expect("e1"));
        let head = Head::of(&epoch0);
        assert!(matches!(
            decide(&key, Some(&v0), &head, 1, &v1),
            Ok(Decision::Write {
                keep_replaced: false,
                ..
            })
        ));
        assert!(matches!(
            decide(&key, Some(&v1), &head, 0, &v0),
            Ok(Decision::Keep(PutOutcome::Superseded { .. }))
        ));
        // Damage refuses a put, except a repair's.
        let mut damaged = v0.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        assert!(decide(&key, Some(&damaged), &head, 1, &v1).is_err());
        assert!(matches!(
            decide_over_damage(&key, Some(&damaged), &head, 1, &v1),
            Ok(Decision::Write {
                replaced: Some(_),
                keep_replaced: false
            })
        ));
        assert!(matches!(
            decide_over_damage(&key, Some(b"x"), &head, 1, &v1),
            Ok(Decision::Write { replaced: None, .. })
        ));
        // The inventory reports damage per entry.
        let entry = inventory_entry(b"a/b", &damaged).expect("named");
        assert!(matches!(entry.state, HeldShare::Corrupt { .. }));
        let entry = inventory_entry(b"a/b", &v1).expect("named");
        assert!(matches!(entry.state, HeldShare::Held { epoch: 1, .. }));
        assert!(inventory_entry(b"bad\nkey", &v1).is_none());
        let id = SessionId([9; 16]);
        let staged = encode_staged(id, &epoch1).expect("staged");
        assert_eq!(
            decode_staged(b"a/b", &staged).expect("decode"),
            (id, epoch1)
        );
        assert!(decode_staged(b"a/b", &staged[..10]).is_err());
    }
}
