//! The reader's side of a get: verify every share that arrives, group verified shares by
//! generation (version and sharing epoch: shares of two epochs of a refreshed version never
//! combine), decide what to answer, and rebuild the record with its end-to-end check.
//!
//! Every envelope is checked before it counts: its header signature against the cluster CA
//! and, after a refresh, the refresher's seal (once per generation: later envelopes of the
//! generation must carry the identical signed header and seal),
//! then its share against its commitment with its nonce. A share that fails is a [`BadShare`]
//! naming the node (and a `tracing` warning), never combined. Rebuilding uses k verified
//! shares; if the result fails the signed end-to-end check, more shares are gathered and
//! [`dealing::reassemble`] locates the inconsistent ones. A record that cannot be rebuilt with
//! a passing check is an error, never returned.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use bunsan_protocol::dealing::{self, Reassembled};
use bunsan_protocol::envelope::{RecordHeader, ShareEnvelope};
use bunsan_protocol::integrity::{version_time, Trust, WriterSignature};
use bunsan_protocol::message::{ListEntry, RetainedVersion};
use bunsan_protocol::refresh::RefreshSeal;
use bunsan_protocol::shamir::Share;
use bunsan_protocol::{RecordKey, ShareIndex, Version};
use rustls_pki_types::UnixTime;

use crate::error::NodeFailure;

/// A node that answered with a share that failed a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadShare {
    /// The node id.
    pub node: String,
    /// The share index it claimed.
    pub index: ShareIndex,
    /// The version it claimed.
    pub version: Version,
    /// The sharing epoch it claimed.
    pub epoch: u32,
    /// Which check failed.
    pub reason: BadShareReason,
}

/// Which check a [`BadShare`] failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BadShareReason {
    /// The header's signature or writer certificate does not verify (forged or altered
    /// header, foreign CA, wrong role).
    BadSignature(String),
    /// The header differs from the verified header other nodes sent for the same version.
    HeaderMismatch,
    /// The share does not match its signed commitment (altered share or nonce, bitrot).
    BadCommitment,
    /// The share matches its commitment but does not lie on the record's polynomial: the
    /// writer dealt it inconsistently (found by robust decoding and the end-to-end check).
    Inconsistent,
    /// The envelope is not for the record asked for, or not for the node's index.
    WrongShare(String),
}

impl fmt::Display for BadShareReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadShareReason::BadSignature(why) => write!(f, "bad header signature: {why}"),
            BadShareReason::HeaderMismatch => {
                f.write_str("header differs from the verified header of its version")
            }
            BadShareReason::BadCommitment => f.write_str("share does not match its commitment"),
            BadShareReason::Inconsistent => {
                f.write_str("share is inconsistent with the other shares of its record")
            }
            BadShareReason::WrongShare(why) => write!(f, "wrong share: {why}"),
        }
    }
}

impl fmt::Display for BadShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (share {}, version {}): {}",
            self.node, self.index, self.version, self.reason
        )
    }
}

impl BadShare {
    /// The same event as a node failure, for errors that list failed nodes.
    pub fn to_failure(&self) -> NodeFailure {
        NodeFailure {
            node: self.node.clone(),
            reason: format!("bad share: {}", self.reason),
            code: None,
        }
    }
}

/// A version and its sharing epoch: what shares must agree on to combine.
pub(crate) type Generation = (Version, u32);

/// The verified shares of one generation, in arrival order.
#[derive(Default)]
pub(crate) struct Group {
    nodes: Vec<String>,
    shares: Vec<Share>,
    /// How many shares the last failed rebuild used: retry only with more.
    tried: usize,
}

/// What a get has collected so far.
pub(crate) struct Gather<'a> {
    key: &'a RecordKey,
    trust: &'a Trust,
    /// Headers (and refresh seals) whose signatures verified, per generation.
    verified: HashMap<Generation, Verified>,
    versions: BTreeMap<Generation, Group>,
    tombstone: Option<Version>,
    tombstones_heard: usize,
    /// What probed nodes said they hold (node id, version, a tombstone's included), until
    /// their share arrives: unsigned hints that hold back an older answer, never answers
    /// themselves.
    hints: Vec<(String, Version)>,
    /// Older versions nodes keep under their newest (node positions), and which were asked for.
    kept: BTreeMap<Version, Kept>,
    pub(crate) not_found: usize,
    pub(crate) failures: Vec<NodeFailure>,
    pub(crate) bad: Vec<BadShare>,
}

/// The nodes that said they keep one older version.
#[derive(Default)]
struct Kept {
    tombstone: bool,
    positions: Vec<usize>,
    asked: bool,
}

/// What to answer.
pub(crate) enum Decision {
    Combine(Generation),
    Deleted(Version),
}

impl Decision {
    fn version(&self) -> Version {
        match self {
            Decision::Combine((version, _)) | Decision::Deleted(version) => *version,
        }
    }
}

/// What one generation's first verified envelope established.
type Verified = (RecordHeader, WriterSignature, Option<Box<RefreshSeal>>);

impl<'a> Gather<'a> {
    pub(crate) fn new(key: &'a RecordKey, trust: &'a Trust) -> Self {
        Self {
            key,
            trust,
            verified: HashMap::new(),
            versions: BTreeMap::new(),
            tombstone: None,
            tombstones_heard: 0,
            hints: Vec::new(),
            kept: BTreeMap::new(),
            not_found: 0,
            failures: Vec::new(),
            bad: Vec::new(),
        }
    }

    /// The record asked for.
    pub(crate) fn key(&self) -> &RecordKey {
        self.key
    }

    /// Notes the older versions the node at `position` keeps (what it says; each is checked
    /// like any envelope once fetched).
    pub(crate) fn keeps(&mut self, position: usize, older: &[RetainedVersion]) {
        for retained in older {
            let kept = self.kept.entry(retained.version).or_default();
            kept.tombstone |= retained.tombstone;
            if !kept.positions.contains(&position) {
                kept.positions.push(position);
            }
        }
    }

    /// A kept version worth asking for: one that could answer (a tombstone, or a data version
    /// whose keepers and verified shares reach k) and is newer than `than`.
    fn worth_asking(&self, k: usize, than: Option<Version>) -> Option<Version> {
        self.kept
            .iter()
            .rev()
            .filter(|(version, kept)| !kept.asked && than.is_none_or(|than| **version > than))
            .find(|(version, kept)| {
                let verified = self
                    .versions
                    .iter()
                    .filter(|((v, _), _)| v == *version)
                    .map(|(_, group)| group.shares.len())
                    .max()
                    .unwrap_or(0);
                kept.tombstone || kept.positions.len() + verified >= k
            })
            .map(|(version, _)| *version)
    }

    /// The newest kept version worth asking for, and who keeps it; marked as asked.
    pub(crate) fn next_kept(&mut self, k: usize) -> Option<(Version, Vec<usize>)> {
        let version = self.worth_asking(k, None)?;
        let kept = self.kept.get_mut(&version)?;
        kept.asked = true;
        Some((version, kept.positions.clone()))
    }

    /// Notes what a probed `node` says it holds. Only the version counts: a hint newer than
    /// every verified share holds the answer back until that node's share is fetched.
    pub(crate) fn hint(&mut self, node: String, entry: &ListEntry) {
        if entry.key != *self.key {
            self.failures.push(NodeFailure {
                node,
                reason: format!("answered a probe for {} with {}", self.key, entry.key),
                code: None,
            });
            return;
        }
        self.hints.retain(|(n, _)| *n != node);
        self.hints.push((node, entry.version));
    }

    /// Whether `node` answered a probe with a version it holds (and has not sent its share).
    pub(crate) fn hinted(&self, node: &str) -> bool {
        self.hints.iter().any(|(n, _)| n == node)
    }

    /// Checks `envelope` from `node` (which holds share `expected`) and keeps its share if
    /// every check passes; otherwise records a [`BadShare`].
    pub(crate) fn add(&mut self, node: String, expected: ShareIndex, envelope: ShareEnvelope) {
        // The share replaces the node's hint: it is the same answer, now checked.
        self.hints.retain(|(n, _)| *n != node);
        let generation = envelope.generation();
        let version = generation.0;
        let index = envelope.index;
        let reason = if envelope.header.key != *self.key {
            Some(BadShareReason::WrongShare(format!(
                "a share of {}",
                envelope.header.key
            )))
        } else if index != expected {
            Some(BadShareReason::WrongShare(format!(
                "share {index} from the node holding share {expected}"
            )))
        } else {
            self.verify(&envelope).err()
        };
        if let Some(reason) = reason {
            self.reject(node, index, generation, reason);
            return;
        }
        if envelope.header.tombstone {
            self.tombstone = self.tombstone.max(Some(version));
            self.tombstones_heard += 1;
            return;
        }
        let group = self.versions.entry(generation).or_default();
        group.nodes.push(node);
        group.shares.push(Share::new(index, envelope.payload));
    }

    /// The header check (cached per generation) and the commitment check.
    fn verify(&mut self, envelope: &ShareEnvelope) -> Result<(), BadShareReason> {
        let generation = envelope.generation();
        let version = generation.0;
        match self.verified.get(&generation) {
            Some((header, signature, refresh)) => {
                if *header != envelope.header
                    || *signature != envelope.signature
                    || *refresh != envelope.refresh
                {
                    return Err(BadShareReason::HeaderMismatch);
                }
            }
            None => {
                // Readers verify the writer certificate at the version's time, so records
                // stay readable after their writer's certificate expired.
                self.trust
                    .verify_envelope(envelope, version_time(version))
                    .map_err(|e| BadShareReason::BadSignature(e.to_string()))?;
                if let Some(seal) = &envelope.refresh {
                    // The refresher's certificate, at the time it signed the seal.
                    let at = UnixTime::since_unix_epoch(std::time::Duration::from_micros(
                        seal.signed_micros,
                    ));
                    self.trust
                        .verify_refresh(&envelope.header, &envelope.signature, seal, at)
                        .map_err(|e| BadShareReason::BadSignature(e.to_string()))?;
                }
                self.verified.insert(
                    generation,
                    (
                        envelope.header.clone(),
                        envelope.signature.clone(),
                        envelope.refresh.clone(),
                    ),
                );
            }
        }
        envelope
            .check_commitment()
            .map_err(|_| BadShareReason::BadCommitment)
    }

    /// After a successful rebuild of `version`: checks the verified shares the rebuild did not
    /// need (those that arrived later included) against the polynomial of the first k good
    /// ones, so that a writer's inconsistent share is reported even when it was not needed.
    pub(crate) fn audit(&mut self, version: Generation) {
        let (Some((header, ..)), Some(group)) =
            (self.verified.get(&version), self.versions.get(&version))
        else {
            return;
        };
        let threshold = header.scheme.threshold();
        let good: Vec<Share> = group
            .shares
            .iter()
            .filter(|s| !self.is_flagged(version, s.index()))
            .cloned()
            .collect();
        if good.len() <= threshold.as_usize() {
            return;
        }
        match bunsan_protocol::robust::disagreeing(&good, threshold) {
            Ok(bad) => self.flag_inconsistent(version, &bad),
            Err(e) => {
                tracing::warn!(key = %self.key, version = %version.0, epoch = version.1, error = %e,
                "cannot check the shares a rebuild did not need")
            }
        }
    }

    /// The nodes whose verified shares of `version` were not found bad.
    pub(crate) fn sources(&self, version: Generation) -> Vec<String> {
        let Some(group) = self.versions.get(&version) else {
            return Vec::new();
        };
        group
            .nodes
            .iter()
            .zip(&group.shares)
            .filter(|(_, share)| !self.is_flagged(version, share.index()))
            .map(|(node, _)| node.clone())
            .collect()
    }

    fn is_flagged(&self, version: Generation, index: ShareIndex) -> bool {
        self.bad
            .iter()
            .any(|b| (b.version, b.epoch) == version && b.index == index)
    }

    fn flag_inconsistent(&mut self, version: Generation, indices: &[ShareIndex]) {
        let Some(group) = self.versions.get(&version) else {
            return;
        };
        let found: Vec<(String, ShareIndex)> = group
            .nodes
            .iter()
            .zip(&group.shares)
            .filter(|(_, share)| indices.contains(&share.index()))
            .map(|(node, share)| (node.clone(), share.index()))
            .collect();
        for (node, index) in found {
            if !self.is_flagged(version, index) {
                self.reject(node, index, version, BadShareReason::Inconsistent);
            }
        }
    }

    fn reject(
        &mut self,
        node: String,
        index: ShareIndex,
        (version, epoch): Generation,
        reason: BadShareReason,
    ) {
        tracing::warn!(%node, share = %index, %version, epoch, key = %self.key, %reason,
            "a node returned a bad share; it is not used");
        self.bad.push(BadShare {
            node,
            index,
            version,
            epoch,
            reason,
        });
    }

    /// Nodes whose answer counts toward the read quorum: verified shares, tombstones,
    /// not-found answers and probe answers (a bad share tells nothing about what the node
    /// holds).
    pub(crate) fn heard(&self) -> usize {
        self.not_found
            + self.hints.len()
            + self
                .versions
                .values()
                .map(|g| g.shares.len())
                .sum::<usize>()
            + self.tombstones_heard
    }

    /// Whether any verified share or tombstone arrived, or a probe named a version.
    pub(crate) fn found_any(&self) -> bool {
        !self.versions.is_empty() || self.tombstones_heard > 0 || !self.hints.is_empty()
    }

    /// The most verified shares of any one version.
    pub(crate) fn best_count(&self) -> usize {
        self.versions
            .values()
            .map(|g| g.shares.len())
            .max()
            .unwrap_or(0)
    }

    /// Failures and bad shares together, for errors that name every node that did not help.
    pub(crate) fn all_failures(&self) -> Vec<NodeFailure> {
        let mut all = self.failures.clone();
        all.extend(self.bad.iter().map(BadShare::to_failure));
        all
    }

    /// What to answer now. Before every node has answered (`last == false`) only the newest
    /// version seen may be answered, and not while a probed node reports a newer one; at the
    /// end, the newest version that has k shares. Either way a verified tombstone newer than
    /// the answer wins: a deleted record never comes back,
    /// and at the end a tombstone with no rebuildable version above it is the answer. At the
    /// end, an older version some nodes keep that could beat the answer defers it (`None`):
    /// ask for that version first. A version whose rebuild failed is offered again only once
    /// it has more shares.
    pub(crate) fn decide(&self, k: usize, last: bool) -> Option<Decision> {
        let ready = |(version, group): (&Generation, &Group)| {
            (group.shares.len() >= k && group.shares.len() > group.tried).then_some(*version)
        };
        let newest_hint = self.hints.iter().map(|(_, version)| *version).max();
        let candidate = if last {
            self.versions.iter().rev().find_map(ready)
        } else {
            self.versions.iter().next_back().and_then(ready)
        };
        let newest_data = self
            .versions
            .keys()
            .next_back()
            .map(|(version, _)| *version);
        let decision = match (self.tombstone, candidate) {
            (Some(tombstone), _) if newest_data.is_none_or(|data| tombstone > data) => {
                Some(Decision::Deleted(tombstone))
            }
            (Some(tombstone), Some((version, _))) if tombstone > version => {
                Some(Decision::Deleted(tombstone))
            }
            (_, Some(version)) => Some(Decision::Combine(version)),
            (Some(tombstone), None) if last => Some(Decision::Deleted(tombstone)),
            (_, None) => None,
        };
        // Before the end, a probed node reporting something newer than the answer (a version
        // or a tombstone) may hold an acknowledged write: its share must be seen first.
        if !last
            && decision
                .as_ref()
                .is_some_and(|d| newest_hint.is_some_and(|hint| hint > d.version()))
        {
            return None;
        }
        // Before the end the answer is the newest version any node holds, and every kept
        // version is older than its keeper's newest: nothing kept can beat it.
        if last
            && self
                .worth_asking(k, decision.as_ref().map(Decision::version))
                .is_some()
        {
            return None;
        }
        decision
    }

    /// Rebuilds `version` from its verified shares. Shares found inconsistent become bad
    /// shares; on failure the attempt is remembered so it is retried only with more shares.
    pub(crate) fn rebuild(
        &mut self,
        version: Generation,
    ) -> Result<Reassembled, bunsan_protocol::Error> {
        let (Some((header, ..)), Some(group)) =
            (self.verified.get(&version), self.versions.get_mut(&version))
        else {
            return Err(bunsan_protocol::Error::RecordCheckFailed);
        };
        match dealing::reassemble(header, &group.shares) {
            Ok(rebuilt) => {
                self.flag_inconsistent(version, &rebuilt.inconsistent);
                Ok(rebuilt)
            }
            Err(e) => {
                group.tried = group.shares.len();
                tracing::warn!(key = %self.key, version = %version.0, epoch = version.1, shares = group.shares.len(),
                    error = %e, "the record does not rebuild with a passing check yet");
                Err(e)
            }
        }
    }
}
