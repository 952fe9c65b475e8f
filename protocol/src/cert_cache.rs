//! Writer certificates that already chained to the cluster CA, remembered by their digest.
//!
//! A node checks the writer certificate of every put, and a reader that of every record it
//! reads; a cluster has a handful of collector and admin certificates, so the same few
//! certificates are checked over and over. Profiling 1 KiB puts at concurrency 64 put the
//! chain check (an ECDSA verification of the certificate and two DER parses) at about 14% of
//! a node's CPU. [`Trust`](crate::integrity::Trust) therefore checks each certificate's chain
//! once and then only compares the time with the validity window it recorded.
//!
//! Why that gives the same answer as checking again: with the trust anchors fixed (one cache
//! per `Trust`, whose anchors never change) and no intermediates, the only input of webpki's
//! path validation that changes between calls is the time, and webpki compares it only with
//! the leaf's `notBefore`/`notAfter` (anchors have no validity period in webpki). So an entry
//! is used only while `notBefore <= at <= notAfter`, exactly the window in which webpki would
//! accept the certificate again; outside it the full check runs (and fails). Revocation is not
//! part of this check (DECISIONS D12), but a node clears the cache on every CRL reload anyway,
//! so that no later check can depend on an entry made before the CRL in force.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::role::PeerIdentity;

/// Certificates remembered at most. A cluster's writers (collectors, admins) are far fewer;
/// the bound keeps a flood of distinct valid certificates from growing memory without limit.
/// Each entry is a digest, two times and an identity: about 150 bytes.
pub(crate) const VERIFIED_MAX: usize = 1024;

/// What a successful chain check established about one certificate.
#[derive(Debug, Clone)]
pub(crate) struct Verified {
    /// The certificate's identity (role, common name, fingerprint).
    pub(crate) identity: PeerIdentity,
    /// `notBefore` in seconds since the Unix epoch.
    not_before_secs: u64,
    /// `notAfter` in seconds since the Unix epoch.
    not_after_secs: u64,
}

impl Verified {
    /// A certificate whose chain verified, valid from `not_before_secs` to `not_after_secs`.
    pub(crate) fn new(identity: PeerIdentity, not_before_secs: u64, not_after_secs: u64) -> Self {
        Self {
            identity,
            not_before_secs,
            not_after_secs,
        }
    }

    /// Whether webpki would accept the certificate's validity at `at_secs`.
    fn valid_at(&self, at_secs: u64) -> bool {
        self.not_before_secs <= at_secs && at_secs <= self.not_after_secs
    }
}

/// A bounded map from certificate fingerprint (BLAKE3 of the DER) to its verified facts;
/// when full, the entry inserted first is forgotten.
#[derive(Debug, Default)]
pub(crate) struct CertCache {
    inner: Mutex<Bounded<Verified>>,
}

/// A map that forgets its oldest entry beyond a bound: what both caches keep under their lock.
#[derive(Debug)]
struct Bounded<V> {
    entries: HashMap<[u8; 32], V>,
    /// Insertion order, oldest first, for eviction.
    order: VecDeque<[u8; 32]>,
}

impl<V> Default for Bounded<V> {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }
}

impl<V> Bounded<V> {
    /// Inserts (or replaces) `key`, then forgets the oldest entries beyond `max`.
    fn insert(&mut self, key: [u8; 32], value: V, max: usize) {
        if self.entries.insert(key, value).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > max {
            if let Some(oldest) = self.order.pop_front() {
                self.entries.remove(&oldest);
            }
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.order.clear();
    }
}

impl CertCache {
    /// The verified identity of the certificate with `fingerprint`, if its chain was checked
    /// and `at_secs` lies in its validity window.
    pub(crate) fn get(&self, fingerprint: &[u8; 32], at_secs: u64) -> Option<PeerIdentity> {
        self.lock()
            .entries
            .get(fingerprint)
            .filter(|verified| verified.valid_at(at_secs))
            .map(|verified| verified.identity.clone())
    }

    /// Remembers a certificate whose chain just verified.
    pub(crate) fn insert(&self, verified: Verified) {
        let fingerprint = verified.identity.fingerprint;
        self.lock().insert(fingerprint, verified, VERIFIED_MAX);
    }

    /// Forgets every certificate.
    pub(crate) fn clear(&self) {
        self.lock().clear();
    }

    /// How many certificates are remembered.
    pub(crate) fn len(&self) -> usize {
        self.lock().entries.len()
    }

    fn lock(&self) -> MutexGuard<'_, Bounded<Verified>> {
        // The map is consistent after every statement that changes it, so a panic elsewhere
        // while it was held leaves nothing half-done.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Signatures remembered at most: enough for several batches in flight from several writers.
/// Each entry is one 32-byte digest.
pub(crate) const SIGNATURES_MAX: usize = 4096;

/// Signature checks that passed, remembered by the digest of everything they depend on (the
/// certificate, the message and the signature), so a batch signature shared by many envelopes,
/// or the k envelopes of one record a reader checks, costs one ECDSA verification. An ECDSA
/// verification is a pure function of those three inputs, so the answer is the same as
/// checking again; failures are not remembered. When full, the oldest entry is forgotten.
#[derive(Debug, Default)]
pub(crate) struct SignatureCache {
    inner: Mutex<Bounded<()>>,
}

impl SignatureCache {
    /// The digest naming one check: each input length-prefixed, so no two different inputs
    /// share an encoding.
    pub(crate) fn digest(certificate: &[u8], message: &[u8], signature: &[u8]) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new_derive_key("bunsan verified signature v1");
        for part in [certificate, message, signature] {
            hasher.update(&(part.len() as u64).to_be_bytes());
            hasher.update(part);
        }
        *hasher.finalize().as_bytes()
    }

    /// Whether the check named by `digest` passed before.
    pub(crate) fn contains(&self, digest: &[u8; 32]) -> bool {
        self.lock().entries.contains_key(digest)
    }

    /// Remembers a check that passed.
    pub(crate) fn insert(&self, digest: [u8; 32]) {
        self.lock().insert(digest, (), SIGNATURES_MAX);
    }

    /// Forgets every check.
    pub(crate) fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> MutexGuard<'_, Bounded<()>> {
        // Consistent after every statement that changes it, as for `CertCache`.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
