//! Older versions a node keeps under its highest one, until that one is known complete.
//!
//! **Why.** A put is acknowledged once W nodes stored it, but a later put (or delete) that
//! fails partway reaches only some nodes. If every node kept only its highest version, a few
//! failed writes could leave a key with no version on k nodes: the acknowledged write would
//! no longer read back. So a node that replaces a version with a newer data version keeps the
//! replaced one; readers that cannot rebuild the newest version ask for an older one by
//! version. Once the writer has its quorum it sends [`Request::Commit`]: the new version is
//! complete, and whatever the node keeps under it can go.
//!
//! **Rules**, the same for every backend (they only see heads and opaque items):
//! - a tombstone keeps nothing under it: a delete purges every older share at once;
//! - only versions below the head are kept, the newest [`RETAINED_MAX`] of them, and nothing
//!   below the highest kept tombstone;
//! - a commit of a version the node holds drops what is below it; of one it does not hold,
//!   nothing (a node that missed a write must not forget the versions it still has).
//!
//! Backends store the list however suits them, but apply [`normalize`] to what they read, so a
//! crash between writing the head and the list (in either order) never shows a wrong list.
//!
//! [`Request::Commit`]: bunsan_protocol::message::Request::Commit

use bunsan_protocol::message::RetainedVersion;
use bunsan_protocol::Version;

use super::codec::Head;
use crate::error::{Error, Result};

/// The most older versions kept per key. Each needs a later write whose commit never arrived
/// (the writer or this node failed in between); reaching the cap takes that many failures in a
/// row on one key, and then the oldest goes first, with a warning.
pub(crate) const RETAINED_MAX: usize = 8;

/// Kept stored values with their heads, oldest first.
pub(crate) type KeptValues = Vec<(Head, Vec<u8>)>;

/// The items to keep under `top`, from `items` sorted by version (and, for one version, by
/// sharing epoch) ascending: see the module doc. Of several items of one version the last
/// (highest epoch) is kept.
pub(crate) fn normalize<T>(items: Vec<(Head, T)>, top: Option<&Head>) -> Vec<(Head, T)> {
    let Some(top) = top else {
        return Vec::new();
    };
    if top.tombstone {
        return Vec::new();
    }
    let mut kept: Vec<(Head, T)> = Vec::with_capacity(items.len());
    for (head, item) in items {
        if head.version >= top.version {
            continue;
        }
        if head.tombstone {
            kept.clear();
        }
        if kept
            .last()
            .is_some_and(|(last, _)| last.version == head.version)
        {
            kept.pop();
        }
        kept.push((head, item));
    }
    if kept.len() > RETAINED_MAX {
        let dropped = kept.len() - RETAINED_MAX;
        tracing::warn!(dropped, kept = RETAINED_MAX, version = %top.version,
            "too many uncommitted versions of one key: the oldest are no longer kept");
        kept.drain(..dropped);
    }
    kept
}

/// Applies a commit of `version` to `items` (kept under `top`): if the node holds `version`,
/// drops the items below it. Returns how many were dropped.
pub(crate) fn commit<T>(items: &mut Vec<(Head, T)>, top: Option<&Head>, version: Version) -> u32 {
    if !holds(items, top, version) {
        return 0;
    }
    let before = items.len();
    items.retain(|(head, _)| head.version >= version);
    (before - items.len()) as u32
}

/// Whether a node whose head is `top`, keeping `items`, holds `version`: only then may a
/// commit of it drop anything.
pub(crate) fn holds<T>(items: &[(Head, T)], top: Option<&Head>, version: Version) -> bool {
    top.is_some_and(|top| top.version == version)
        || items.iter().any(|(head, _)| head.version == version)
}

/// What a reader is told about the kept versions.
pub(crate) fn listing<T>(items: &[(Head, T)]) -> Vec<RetainedVersion> {
    items
        .iter()
        .map(|(head, _)| RetainedVersion {
            version: head.version,
            tombstone: head.tombstone,
        })
        .collect()
}

/// The stored form of a list of kept values (codec values, oldest first): each as a
/// big-endian u32 length, then its bytes.
pub(crate) fn encode<V: AsRef<[u8]>>(values: &[V]) -> Vec<u8> {
    let total = values.iter().map(|v| 4 + v.as_ref().len()).sum();
    let mut out = Vec::with_capacity(total);
    for value in values {
        let value = value.as_ref();
        out.extend_from_slice(&(value.len() as u32).to_be_bytes());
        out.extend_from_slice(value);
    }
    out
}

/// Reads a list written by [`encode`]; a damaged list is [`Error::Corrupt`].
pub(crate) fn decode(key: &[u8], bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
    let mut values = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            return Err(corrupt(key, "kept-versions list ends inside a length"));
        };
        let len = u32::from_be_bytes(*len) as usize;
        if tail.len() < len {
            return Err(corrupt(key, "kept-versions list ends inside a value"));
        }
        let (value, tail) = tail.split_at(len);
        values.push(value.to_vec());
        rest = tail;
    }
    Ok(values)
}

/// The kept values of a stored list with their heads, in version order, normalised under
/// `top`. A value whose head does not read is left out with a warning: it cannot be placed,
/// and a kept version is a fallback, never the only copy of an acknowledged head.
pub(crate) fn read(key: &[u8], bytes: Option<&[u8]>, top: Option<&Head>) -> Result<KeptValues> {
    let Some(bytes) = bytes else {
        return Ok(Vec::new());
    };
    let mut items = Vec::new();
    for value in decode(key, bytes)? {
        match super::codec::head(key, &value) {
            Ok(head) => items.push((head, value)),
            Err(e) => tracing::warn!(error = %e, "a damaged kept version is left out"),
        }
    }
    items.sort_by_key(|(head, _)| head.version);
    Ok(normalize(items, top))
}

fn corrupt(key: &[u8], reason: &str) -> Error {
    Error::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use bunsan_protocol::WriterId;
    use proptest::prelude::*;

    use super::*;

    fn head(clock: u64, tombstone: bool) -> Head {
        Head {
            version: Version {
                clock_micros: clock,
                writer: WriterId(1),
            },
            tombstone,
            record_len: 1,
        }
    }

    fn clocks<T>(items: &[(Head, T)]) -> Vec<u64> {
        items.iter().map(|(h, _)| h.version.clock_micros).collect()
    }

    #[test]
    fn keeps_only_versions_below_the_head_and_above_the_last_tombstone() {
        let items = vec![
            (head(1, false), ()),
            (head(2, true), ()),
            (head(3, false), ()),
            (head(5, false), ()),
            (head(9, false), ()),
        ];
        assert_eq!(
            clocks(&normalize(items.clone(), Some(&head(6, false)))),
            [2, 3, 5]
        );
        assert!(normalize(items.clone(), Some(&head(6, true))).is_empty());
        assert!(normalize(items, None).is_empty());
    }

    #[test]
    fn keeps_the_newest_few_and_one_item_per_version() {
        let items: Vec<_> = (1..=20).map(|c| (head(c, false), c)).collect();
        let kept = normalize(items, Some(&head(30, false)));
        assert_eq!(clocks(&kept), (13..=20).collect::<Vec<_>>());
        let twice = vec![(head(4, false), 0), (head(4, false), 1)];
        assert_eq!(
            normalize(twice, Some(&head(5, false))),
            [(head(4, false), 1)]
        );
    }

    #[test]
    fn a_commit_drops_what_is_below_a_version_the_node_holds() {
        let items = vec![(head(1, false), ()), (head(3, false), ())];
        let top = head(5, false);
        let mut left = items.clone();
        assert_eq!(commit(&mut left, Some(&top), head(3, false).version), 1);
        assert_eq!(clocks(&left), [3]);
        let mut left = items.clone();
        assert_eq!(commit(&mut left, Some(&top), top.version), 2);
        assert!(left.is_empty());
        let mut left = items.clone();
        assert_eq!(commit(&mut left, Some(&top), head(4, false).version), 0);
        assert_eq!(left, items);
    }

    #[test]
    fn a_damaged_list_is_corrupt_not_a_panic() {
        let list = encode(&[vec![1, 2, 3], vec![]]);
        assert_eq!(
            decode(b"k", &list).expect("decode"),
            [vec![1, 2, 3], vec![]]
        );
        for cut in 1..list.len() {
            if cut == 7 {
                continue; // a whole first value and no second: a shorter valid list
            }
            assert!(
                matches!(decode(b"k", &list[..cut]), Err(Error::Corrupt { .. })),
                "{cut}"
            );
        }
    }

    proptest! {
        #[test]
        fn normalised_lists_are_sorted_bounded_and_below_the_head(
            raw in proptest::collection::vec((0u64..40, any::<bool>()), 0..30),
            top in 0u64..45,
        ) {
            let mut items: Vec<_> = raw.iter().map(|&(c, t)| (head(c, t), ())).collect();
            items.sort_by_key(|(h, _)| h.version);
            let kept = normalize(items, Some(&head(top, false)));
            prop_assert!(kept.len() <= RETAINED_MAX);
            prop_assert!(kept.windows(2).all(|w| w[0].0.version < w[1].0.version));
            prop_assert!(kept.iter().all(|(h, _)| h.version.clock_micros < top));
            prop_assert!(kept.iter().skip(1).all(|(h, _)| !h.tombstone));
            // Normalising again changes nothing.
            prop_assert_eq!(normalize(kept.clone(), Some(&head(top, false))), kept);
        }
    }
}
