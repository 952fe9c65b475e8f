//! Revocation: the cluster's certificate revocation list (CRL), the record it is signed from,
//! and its distribution to every node directory.
//!
//! ```text
//! revoke DIR NAME ─▶ serial of DIR/{clients,nodes}/NAME/cert.pem
//!   └─▶ DIR/ca/revoked.toml   += entry, crl_number += 1       (written first: the truth)
//!       └─▶ sign a CRL listing every entry (CA key), this_update now, next_update now + 30 d
//!           └─▶ DIR/ca/crl.pem, DIR/nodes/node-I/crl.pem     (temp file + rename each)
//! crl DIR --renew ─▶ the same without a new entry: a fresh next_update, a higher number
//! ```
//!
//! Nodes enforce their `crl.pem` and reload it when it changes (see `bunsan_node::revocation`).
//! Every CRL carries every revocation ever made, so a node that missed one CRL is complete
//! again with the next. The CRL number only grows: `revoked.toml` is written before the CRL,
//! so a crash in between costs a number, never reuses one.
//!
//! A CRL expires (next_update): a node holding an expired CRL refuses every client, so a
//! cluster whose operator stops renewing fails closed rather than trusting identities that may
//! have been revoked since. Renew well before `CRL_VALIDITY_DAYS` run out.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use bunsan_protocol::role::PeerIdentity;
use rcgen::{
    CertificateRevocationListParams, KeyIdMethod, RevocationReason as RcgenReason,
    RevokedCertParams, SerialNumber,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use toml::value::Datetime;

use crate::error::{io_err, Error, Result};
use crate::layout::{write_atomic, ClusterLayout, CERT_FILE, CRL_FILE, PUBLIC_FILE_MODE};
use crate::pki::ClusterCa;

/// How long a CRL is valid by default: 30 days. Long enough that a monthly renewal (or one
/// missed week) never fails a cluster closed; short enough that a node cut off from its
/// operator stops trusting stale revocation data within a month.
pub const CRL_VALIDITY_DAYS: i64 = 30;

/// When a CRL was issued and when it expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrlWindow {
    /// The CRL's thisUpdate.
    pub this_update: OffsetDateTime,
    /// The CRL's nextUpdate: after it, nodes refuse every client.
    pub next_update: OffsetDateTime,
}

impl CrlWindow {
    /// From now until `days` days from now, in whole seconds (what a CRL can hold).
    pub fn days_from_now(days: i64) -> Self {
        let now = OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .unwrap_or_else(|_| OffsetDateTime::now_utc());
        Self {
            this_update: now,
            next_update: now + time::Duration::days(days),
        }
    }
}

impl Default for CrlWindow {
    /// [`CRL_VALIDITY_DAYS`] from now.
    fn default() -> Self {
        Self::days_from_now(CRL_VALIDITY_DAYS)
    }
}

/// Why a certificate was revoked (the RFC 5280 reason codes an operator needs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RevocationReason {
    /// No reason given.
    #[default]
    Unspecified,
    /// The private key was lost or may be known to someone else.
    KeyCompromise,
    /// The holder changed role or left the organisation.
    AffiliationChanged,
    /// A new certificate replaces this one.
    Superseded,
    /// The identity is no longer needed (a decommissioned node or clinic).
    CessationOfOperation,
}

impl RevocationReason {
    /// Every reason, in a stable order (for help texts).
    pub const ALL: [RevocationReason; 5] = [
        RevocationReason::Unspecified,
        RevocationReason::KeyCompromise,
        RevocationReason::AffiliationChanged,
        RevocationReason::Superseded,
        RevocationReason::CessationOfOperation,
    ];

    /// The name used on the command line and in `revoked.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            RevocationReason::Unspecified => "unspecified",
            RevocationReason::KeyCompromise => "key-compromise",
            RevocationReason::AffiliationChanged => "affiliation-changed",
            RevocationReason::Superseded => "superseded",
            RevocationReason::CessationOfOperation => "cessation-of-operation",
        }
    }

    fn code(self) -> RcgenReason {
        match self {
            RevocationReason::Unspecified => RcgenReason::Unspecified,
            RevocationReason::KeyCompromise => RcgenReason::KeyCompromise,
            RevocationReason::AffiliationChanged => RcgenReason::AffiliationChanged,
            RevocationReason::Superseded => RcgenReason::Superseded,
            RevocationReason::CessationOfOperation => RcgenReason::CessationOfOperation,
        }
    }
}

impl fmt::Display for RevocationReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RevocationReason {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|reason| reason.as_str() == s)
            .ok_or_else(|| Error::UnknownRevocationReason {
                reason: s.to_owned(),
            })
    }
}

/// One revoked certificate in `revoked.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedCertificate {
    /// The identity's name (the certificate's common name).
    pub name: String,
    /// Its role.
    pub role: String,
    /// The certificate serial number, lowercase hex without leading zero bytes.
    pub serial: String,
    /// BLAKE3 of the certificate DER, as nodes name actors (hex).
    pub fingerprint: String,
    /// When it was revoked (UTC).
    pub revoked_at: Datetime,
    /// Why (one of [`RevocationReason`]'s names).
    pub reason: String,
}

/// `DIR/ca/revoked.toml`: the last CRL number and every revoked certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevocationRecord {
    /// The number of the last CRL signed; the next one gets a higher one.
    pub crl_number: u64,
    /// Every certificate revoked so far, oldest first.
    #[serde(default)]
    pub revoked: Vec<RevokedCertificate>,
}

impl RevocationRecord {
    /// Reads the record of the cluster at `layout`; a cluster without one (created before
    /// revocation existed) has revoked nothing yet.
    pub fn load(layout: &ClusterLayout) -> Result<Self> {
        let path = layout.revoked_path();
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).map_err(|e| Error::InvalidRevocationRecord {
                path,
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(io_err("read", path)(e)),
        }
    }

    fn save(&self, layout: &ClusterLayout) -> Result<()> {
        let path = layout.revoked_path();
        let body = toml::to_string(self).map_err(|e| Error::InvalidRevocationRecord {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let text = format!(
            "# Certificates revoked in this cluster, written by `bunsan-cluster revoke`.\n\
             # Every CRL lists all of them; crl_number is the number of the last CRL signed.\n\
             {body}"
        );
        write_atomic(&path, text.as_bytes(), PUBLIC_FILE_MODE)
    }
}

/// A CRL that was signed and written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedCrl {
    /// Its CRL number.
    pub number: u64,
    /// How many certificates it revokes.
    pub revoked: usize,
    /// Its validity.
    pub window: CrlWindow,
    /// Every file it was written to: `DIR/ca/crl.pem`, then each node's copy.
    pub written: Vec<PathBuf>,
    /// Node directories whose `node.toml` has no `crl` key: they do not read the copy (until
    /// the key is added and the node restarted).
    pub not_enforced: Vec<PathBuf>,
}

/// Revokes the certificate of identity `name` (a client in `DIR/clients/NAME` or a node in
/// `DIR/nodes/NAME`) and publishes a new CRL to `DIR/ca` and every node directory. Returns
/// the entry added and the CRL written.
pub fn revoke(
    dir: &Path,
    name: &str,
    reason: RevocationReason,
    window: CrlWindow,
) -> Result<(RevokedCertificate, PublishedCrl)> {
    // Any role's naming rules will do: the name is only used to find a directory.
    crate::pki::check_identity_name(bunsan_protocol::role::Role::Reader, name)?;
    let layout = ClusterLayout::new(dir);
    layout.read_manifest()?;
    let cert_path = find_certificate(&layout, name)?;
    let der = read_certificate(&cert_path)?;
    let peer = PeerIdentity::from_certificate(&der)?;
    let serial = serial_hex(&cert_path, &der)?;
    let mut record = RevocationRecord::load(&layout)?;
    if record.revoked.iter().any(|entry| entry.serial == serial) {
        return Err(Error::AlreadyRevoked {
            name: name.to_owned(),
            serial,
        });
    }
    let entry = RevokedCertificate {
        name: peer.name.clone(),
        role: peer.role.as_str().to_owned(),
        serial,
        fingerprint: peer.fingerprint_hex(),
        revoked_at: to_toml_datetime(window.this_update),
        reason: reason.as_str().to_owned(),
    };
    record.revoked.push(entry.clone());
    let published = publish(&layout, &mut record, window)?;
    Ok((entry, published))
}

/// Signs a new CRL with the same revocations, a higher number and a fresh validity window,
/// and publishes it: what keeps nodes from failing closed when the last CRL expires.
pub fn renew(dir: &Path, window: CrlWindow) -> Result<PublishedCrl> {
    let layout = ClusterLayout::new(dir);
    layout.read_manifest()?;
    let mut record = RevocationRecord::load(&layout)?;
    publish(&layout, &mut record, window)
}

/// What the cluster's current CRL says: the record it was signed from, and the `nextUpdate`
/// of `DIR/ca/crl.pem` (after which nodes holding it refuse every client).
pub fn status(dir: &Path) -> Result<(RevocationRecord, OffsetDateTime)> {
    use x509_parser::prelude::FromDer;
    let layout = ClusterLayout::new(dir);
    layout.read_manifest()?;
    let record = RevocationRecord::load(&layout)?;
    let path = layout.crl_path();
    let pem = std::fs::read(&path).map_err(io_err("read", &path))?;
    let invalid = |reason: String| Error::InvalidCertificateFile {
        path: path.clone(),
        reason,
    };
    let (_, block) =
        x509_parser::pem::parse_x509_pem(&pem).map_err(|e| invalid(format!("not PEM: {e}")))?;
    let (_, crl) =
        x509_parser::revocation_list::CertificateRevocationList::from_der(&block.contents)
            .map_err(|e| invalid(format!("not a CRL: {e}")))?;
    let next_update = crl
        .next_update()
        .ok_or_else(|| invalid("the CRL has no nextUpdate".to_owned()))?;
    Ok((record, next_update.to_datetime()))
}

/// Writes the first, empty CRL of a new cluster (used by `init`, before its manifest exists).
pub(crate) fn publish_initial(
    layout: &ClusterLayout,
    ca: &ClusterCa,
    node_dirs: &[PathBuf],
) -> Result<()> {
    let mut record = RevocationRecord::default();
    sign_and_write(layout, ca, &mut record, CrlWindow::default(), node_dirs).map(drop)
}

/// Bumps the CRL number, saves the record, signs, and writes the CRL everywhere.
fn publish(
    layout: &ClusterLayout,
    record: &mut RevocationRecord,
    window: CrlWindow,
) -> Result<PublishedCrl> {
    let manifest = layout.read_manifest()?;
    let ca = ClusterCa::load(&layout.ca_dir())?;
    let node_dirs: Vec<PathBuf> = manifest
        .nodes
        .iter()
        .map(|node| layout.node_dir_named(&node.id))
        .collect();
    let mut published = sign_and_write(layout, &ca, record, window, &node_dirs)?;
    for (position, node) in manifest.nodes.iter().enumerate() {
        let enforced = layout
            .read_node_config(node.index.get())
            .is_ok_and(|config| config.crl.is_some());
        if !enforced {
            published.not_enforced.push(node_dirs[position].clone());
        }
    }
    Ok(published)
}

fn sign_and_write(
    layout: &ClusterLayout,
    ca: &ClusterCa,
    record: &mut RevocationRecord,
    window: CrlWindow,
    node_dirs: &[PathBuf],
) -> Result<PublishedCrl> {
    record.crl_number += 1;
    let revoked_certs = record
        .revoked
        .iter()
        .map(|entry| {
            let serial =
                hex_bytes(&entry.serial).ok_or_else(|| Error::InvalidRevocationRecord {
                    path: layout.revoked_path(),
                    reason: format!("serial {:?} of {} is not hex", entry.serial, entry.name),
                })?;
            let reason = entry.reason.parse::<RevocationReason>()?;
            Ok(RevokedCertParams {
                serial_number: SerialNumber::from_slice(&serial),
                revocation_time: from_toml_datetime(&entry.revoked_at).ok_or_else(|| {
                    Error::InvalidRevocationRecord {
                        path: layout.revoked_path(),
                        reason: format!("revoked_at of {} is not a UTC date-time", entry.name),
                    }
                })?,
                reason_code: Some(reason.code()),
                invalidity_date: None,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let params = CertificateRevocationListParams {
        this_update: window.this_update,
        next_update: window.next_update,
        crl_number: SerialNumber::from(record.crl_number),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: KeyIdMethod::Sha256,
    };
    let certificate_error = |source| Error::Certificate {
        what: format!("CRL number {}", record.crl_number),
        source,
    };
    let pem = params
        .signed_by(ca.issuer())
        .and_then(|crl| crl.pem())
        .map_err(certificate_error)?;
    // The record first: if anything below fails, the next CRL still gets a higher number.
    record.save(layout)?;
    let mut written = vec![layout.crl_path()];
    write_atomic(&layout.crl_path(), pem.as_bytes(), PUBLIC_FILE_MODE)?;
    for node_dir in node_dirs {
        let path = node_dir.join(CRL_FILE);
        write_atomic(&path, pem.as_bytes(), PUBLIC_FILE_MODE)?;
        written.push(path);
    }
    Ok(PublishedCrl {
        number: record.crl_number,
        revoked: record.revoked.len(),
        window,
        written,
        not_enforced: Vec::new(),
    })
}

/// The certificate file of identity `name`: a client's or a node's, never ambiguous.
fn find_certificate(layout: &ClusterLayout, name: &str) -> Result<PathBuf> {
    let candidates = [
        layout.client_dir(name).join(CERT_FILE),
        layout.node_dir_named(name).join(CERT_FILE),
    ];
    let found: Vec<PathBuf> = candidates.iter().filter(|p| p.is_file()).cloned().collect();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(Error::UnknownIdentity {
            name: name.to_owned(),
            searched: candidates.to_vec(),
        }),
        _ => Err(Error::AmbiguousIdentity {
            name: name.to_owned(),
            found,
        }),
    }
}

fn read_certificate(path: &Path) -> Result<Vec<u8>> {
    let pem = std::fs::read(path).map_err(io_err("read", path))?;
    let (_, block) =
        x509_parser::pem::parse_x509_pem(&pem).map_err(|e| Error::InvalidCertificateFile {
            path: path.to_owned(),
            reason: format!("not PEM: {e}"),
        })?;
    Ok(block.contents)
}

/// The serial of a DER certificate as lowercase hex, without the sign-padding zero bytes DER
/// adds, so it reads the same as in `openssl x509 -serial` (modulo case) and in the CRL.
fn serial_hex(path: &Path, der: &[u8]) -> Result<String> {
    use x509_parser::prelude::FromDer;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).map_err(|e| {
        Error::InvalidCertificateFile {
            path: path.to_owned(),
            reason: format!("not an X.509 certificate: {e}"),
        }
    })?;
    let raw = cert.raw_serial();
    let start = raw
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(raw.len().saturating_sub(1));
    Ok(raw[start..].iter().map(|b| format!("{b:02x}")).collect())
}

fn hex_bytes(text: &str) -> Option<Vec<u8>> {
    if text.is_empty() || !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn to_toml_datetime(at: OffsetDateTime) -> Datetime {
    let at = at.to_offset(time::UtcOffset::UTC);
    Datetime {
        date: Some(toml::value::Date {
            // Certificates and CRLs only carry years 1950..=9999 (RFC 5280).
            year: u16::try_from(at.year()).unwrap_or(9999),
            month: u8::from(at.month()),
            day: at.day(),
        }),
        time: Some(toml::value::Time {
            hour: at.hour(),
            minute: at.minute(),
            second: at.second(),
            nanosecond: 0,
        }),
        offset: Some(toml::value::Offset::Z),
    }
}

fn from_toml_datetime(at: &Datetime) -> Option<OffsetDateTime> {
    let (date, clock) = (at.date?, at.time?);
    if at.offset != Some(toml::value::Offset::Z) {
        return None;
    }
    let month = time::Month::try_from(date.month).ok()?;
    let date = time::Date::from_calendar_date(i32::from(date.year), month, date.day).ok()?;
    let clock = time::Time::from_hms(clock.hour, clock.minute, clock.second).ok()?;
    Some(time::PrimitiveDateTime::new(date, clock).assume_utc())
}

#[cfg(test)]
#[path = "crl_tests.rs"]
mod tests;
