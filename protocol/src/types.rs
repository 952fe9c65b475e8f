//! Newtypes that cannot hold a bad value ("parse, don't validate").
//!
//! Code past a constructor here can rely on the invariant it states: a [`Threshold`] is at least
//! 2, a [`ShareIndex`] is never 0, a [`RecordKey`] is short printable UTF-8, and so on. The serde
//! implementations go through the same constructors, so bytes from the network or the disk
//! cannot smuggle in a value the constructor would refuse.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{Error, Result};

/// The number k of shares needed to rebuild a record: 2 ≤ k ≤ 255.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Threshold(u8);

impl Threshold {
    /// Accepts 2..=255: a threshold of 1 would make every share a copy of the record.
    pub fn new(k: u8) -> Result<Self> {
        if k < 2 {
            return Err(Error::ThresholdTooLow { threshold: k });
        }
        Ok(Self(k))
    }

    /// The threshold as a number.
    pub fn get(self) -> u8 {
        self.0
    }

    /// The threshold as a count, for indexing and comparisons with lengths.
    pub fn as_usize(self) -> usize {
        usize::from(self.0)
    }
}

impl<'de> Deserialize<'de> for Threshold {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Threshold::new(u8::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The x-coordinate of a share, 1..=255; node i of a cluster holds the share at x = i.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ShareIndex(u8);

impl ShareIndex {
    /// Rejects 0, the point where the secret itself lives.
    pub fn new(x: u8) -> Result<Self> {
        if x == 0 {
            return Err(Error::ZeroShareIndex);
        }
        Ok(Self(x))
    }

    /// The x-coordinate.
    pub fn get(self) -> u8 {
        self.0
    }
}

impl<'de> Deserialize<'de> for ShareIndex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        ShareIndex::new(u8::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for ShareIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A checked (k, n) pair: 2 ≤ k ≤ n ≤ 255.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Scheme {
    threshold: Threshold,
    shares: u8,
}

impl Scheme {
    /// Builds a k-of-n scheme, rejecting k > n and n > 255 with typed errors.
    pub fn new(threshold: u8, shares: usize) -> Result<Self> {
        let threshold = Threshold::new(threshold)?;
        if shares > 255 {
            return Err(Error::TooManyShares { shares });
        }
        if usize::from(threshold.get()) > shares {
            return Err(Error::ThresholdAboveShares {
                threshold: threshold.get(),
                shares,
            });
        }
        Ok(Self {
            threshold,
            shares: shares as u8,
        })
    }

    /// k, the shares needed to rebuild.
    pub fn threshold(self) -> Threshold {
        self.threshold
    }

    /// n, the shares dealt (one per node).
    pub fn shares(self) -> u8 {
        self.shares
    }
}

impl<'de> Deserialize<'de> for Scheme {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            threshold: u8,
            shares: u8,
        }
        let raw = Raw::deserialize(d)?;
        Scheme::new(raw.threshold, usize::from(raw.shares)).map_err(serde::de::Error::custom)
    }
}

/// The longest record key, in bytes. Long enough for hierarchical keys such as
/// `clinic-0042/patient-pseudonym/2026-11-25/discharge-summary.hl7`, short enough to keep
/// inventories and audit entries small.
pub const RECORD_KEY_MAX_BYTES: usize = 512;

/// Keys starting with this belong to Bunsan itself (the chunks of large records, see
/// [`crate::chunk`]). [`RecordKey::new`] refuses them, so no user key can ever name, and so
/// overwrite, an internal record; decoding accepts them, because nodes store them like any key.
pub const RESERVED_KEY_PREFIX: &str = "~bunsan/";

/// A record's name: 1..=512 bytes of UTF-8 without control characters.
///
/// Keys appear in audit logs, listings and terminal output, so control characters (which could
/// forge log lines or terminal escapes) are refused. Keys in the [`RESERVED_KEY_PREFIX`]
/// namespace can only be made by Bunsan itself ([`RecordKey::internal`]) or decoded.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct RecordKey(String);

impl RecordKey {
    /// Validates and wraps a user's key; keys in the reserved namespace are refused.
    pub fn new(key: impl Into<String>) -> Result<Self> {
        let key = key.into();
        if key.starts_with(RESERVED_KEY_PREFIX) {
            return Err(Error::InvalidRecordKey {
                key,
                reason: "starts with the reserved prefix ~bunsan/",
            });
        }
        Self::internal(key)
    }

    /// Validates and wraps a key that may lie in the reserved namespace: for keys Bunsan
    /// derives itself and for keys read back from the wire or the disk.
    pub fn internal(key: impl Into<String>) -> Result<Self> {
        let key = key.into();
        let reason = if key.is_empty() {
            Some("empty")
        } else if key.len() > RECORD_KEY_MAX_BYTES {
            Some("longer than 512 bytes")
        } else if key.chars().any(char::is_control) {
            Some("contains a control character")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(Error::InvalidRecordKey { key, reason }),
            None => Ok(Self(key)),
        }
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key's bytes, as used for ordering and storage.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// Whether the key lies in the reserved namespace (an internal record such as a chunk).
    pub fn is_internal(&self) -> bool {
        self.0.starts_with(RESERVED_KEY_PREFIX)
    }

    /// Parses stored key bytes, rejecting anything [`RecordKey::internal`] would.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        match std::str::from_utf8(bytes) {
            Ok(s) => Self::internal(s),
            Err(_) => Err(Error::InvalidRecordKey {
                key: String::from_utf8_lossy(bytes).into_owned(),
                reason: "not UTF-8",
            }),
        }
    }
}

impl<'de> Deserialize<'de> for RecordKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        RecordKey::internal(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who wrote a version: the first 4 bytes of BLAKE3 over the writer's certificate (DER),
/// then 4 random bytes drawn once per client session.
///
/// The certificate half ties a version to its writer in logs; the session half keeps two
/// processes that share one certificate (a collector service with several workers) from ever
/// producing the same version for different bytes, which nodes would refuse as a conflict.
/// Two writers that read the same clock are still ordered, so versions are a total order
/// without coordination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WriterId(pub u64);

impl WriterId {
    /// The writer id of one session of the holder of `cert_der`.
    pub fn for_session<R: rand::Rng + ?Sized>(cert_der: &[u8], rng: &mut R) -> Self {
        let session: u32 = rng.random();
        Self((u64::from(Self::certificate_hash(cert_der)) << 32) | u64::from(session))
    }

    /// The writer id of `cert_der` with a zero session half: what a signer that is not a
    /// client session (a tool, a test) writes under.
    pub fn from_certificate(cert_der: &[u8]) -> Self {
        Self(u64::from(Self::certificate_hash(cert_der)) << 32)
    }

    /// The half of the id derived from the certificate: equal for every session of one
    /// certificate.
    pub fn certificate_part(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// Whether this id was derived from `cert_der` (whatever its session half): how a
    /// verifier ties a signed version to the certificate that signed it.
    pub fn matches_certificate(self, cert_der: &[u8]) -> bool {
        self.certificate_part() == Self::certificate_hash(cert_der)
    }

    fn certificate_hash(cert_der: &[u8]) -> u32 {
        let digest = blake3::hash(cert_der);
        let mut cert_part = [0u8; 4];
        cert_part.copy_from_slice(&digest.as_bytes()[..4]);
        u32::from_be_bytes(cert_part)
    }
}

/// A record version: (hybrid logical clock in microseconds, writer), ordered lexicographically.
///
/// A node accepts a put only if its version is higher than the one it holds (or equal with the
/// same bytes: an idempotent retry). Tombstones carry versions too, so a late put of an older
/// version cannot resurrect a deleted record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version {
    /// Hybrid logical clock reading, microseconds since the Unix epoch (see [`crate::hlc`]).
    pub clock_micros: u64,
    /// The writer that produced this version; breaks ties between equal clock readings.
    pub writer: WriterId,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:016x}", self.clock_micros, self.writer.0)
    }
}

/// The longest purpose text a reader may state.
pub const PURPOSE_MAX_BYTES: usize = 256;

/// Why a reader rebuilds a record: a short code (treatment, emergency, research, drill, ...) and
/// free text. Recorded in every node's audit log.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Purpose {
    code: String,
    text: String,
}

impl Purpose {
    /// Validates a purpose: a non-empty text of at most 256 bytes and a code of at most 64
    /// lowercase ASCII letters, digits or '-' (empty code means "unspecified").
    pub fn new(code: impl Into<String>, text: impl Into<String>) -> Result<Self> {
        let (code, text) = (code.into(), text.into());
        if text.trim().is_empty() {
            return Err(Error::InvalidPurpose {
                reason: "the purpose text is empty",
            });
        }
        if text.len() > PURPOSE_MAX_BYTES {
            return Err(Error::InvalidPurpose {
                reason: "the purpose text is longer than 256 bytes",
            });
        }
        if text.chars().any(char::is_control) {
            return Err(Error::InvalidPurpose {
                reason: "the purpose text contains a control character",
            });
        }
        if code.len() > 64
            || !code
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(Error::InvalidPurpose {
                reason: "the purpose code must be at most 64 of a-z, 0-9 and '-'",
            });
        }
        Ok(Self { code, text })
    }

    /// The purpose code ("" when unspecified).
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The free-text purpose.
    pub fn text(&self) -> &str {
        &self.text
    }
}

impl<'de> Deserialize<'de> for Purpose {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            code: String,
            text: String,
        }
        let raw = Raw::deserialize(d)?;
        Purpose::new(raw.code, raw.text).map_err(serde::de::Error::custom)
    }
}

/// Identifies one client operation; the same id is sent to every node, so an auditor can join
/// the share releases of one reconstruction across all nodes' logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RequestId(pub [u8; 16]);

impl RequestId {
    /// A fresh random request id.
    pub fn random<R: rand::Rng + ?Sized>(rng: &mut R) -> Self {
        let mut id = [0u8; 16];
        rng.fill(&mut id);
        Self(id)
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_rejects_below_two() {
        assert_eq!(
            Threshold::new(1),
            Err(Error::ThresholdTooLow { threshold: 1 })
        );
        assert_eq!(Threshold::new(2).map(Threshold::get), Ok(2));
    }

    #[test]
    fn scheme_rejects_bad_shapes() {
        assert!(matches!(
            Scheme::new(4, 3),
            Err(Error::ThresholdAboveShares {
                threshold: 4,
                shares: 3
            })
        ));
        assert!(matches!(
            Scheme::new(3, 256),
            Err(Error::TooManyShares { shares: 256 })
        ));
        assert!(Scheme::new(255, 255).is_ok());
    }

    #[test]
    fn record_keys_are_checked_on_decode_too() {
        assert!(RecordKey::new("a/b/c.hl7").is_ok());
        assert!(RecordKey::new("").is_err());
        assert!(RecordKey::new("a\nb").is_err());
        assert!(RecordKey::new("x".repeat(513)).is_err());
        let bad = postcard::to_allocvec(&"bad\u{1b}[31m").expect("encode");
        assert!(postcard::from_bytes::<RecordKey>(&bad).is_err());
        let internal = "~bunsan/chunk/x";
        assert!(RecordKey::new(internal).is_err());
        let made = RecordKey::internal(internal).expect("internal key");
        assert!(made.is_internal() && !RecordKey::new("a").expect("key").is_internal());
        let wire = postcard::to_allocvec(&made).expect("encode");
        assert_eq!(postcard::from_bytes::<RecordKey>(&wire), Ok(made));
        let zero = postcard::to_allocvec(&0u8).expect("encode");
        assert!(postcard::from_bytes::<ShareIndex>(&zero).is_err());
    }

    #[test]
    fn sessions_of_one_certificate_share_the_certificate_half_only() {
        let mut rng = rand::rng();
        let a = WriterId::for_session(b"certificate", &mut rng);
        let b = WriterId::for_session(b"certificate", &mut rng);
        let other = WriterId::for_session(b"another certificate", &mut rng);
        assert_eq!(a.certificate_part(), b.certificate_part());
        assert_ne!(a.certificate_part(), other.certificate_part());
        // 2^-32 odds of a false failure: the session halves differ.
        assert_ne!(a, b);
    }

    #[test]
    fn versions_order_by_clock_then_writer() {
        let a = Version {
            clock_micros: 5,
            writer: WriterId(9),
        };
        let b = Version {
            clock_micros: 6,
            writer: WriterId(1),
        };
        let c = Version {
            clock_micros: 6,
            writer: WriterId(2),
        };
        assert!(a < b && b < c);
    }

    #[test]
    fn purposes_are_validated() {
        assert!(Purpose::new("treatment", "follow-up visit").is_ok());
        assert!(Purpose::new("", "x").is_ok());
        assert!(Purpose::new("Treatment", "x").is_err());
        assert!(Purpose::new("drill", " ").is_err());
    }
}
