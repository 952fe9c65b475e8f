//! The cluster's certificate authority and the leaf certificates it issues.
//!
//! Each cluster has its own self-signed CA (ECDSA P-256, CN `Bunsan <name> CA`, path length 0:
//! it signs leaves only). Every leaf certificate says who its holder is in two places that
//! [`PeerIdentity::from_certificate`](bunsan_protocol::role::PeerIdentity::from_certificate)
//! reads back:
//!
//! - the subject common name is the identity's name (`node-3`, `reader`, `clinic-7-collector`);
//! - a URI subject alternative name `urn:bunsan:role:<role>` carries its role.
//!
//! Node certificates also carry the node id as a DNS name, because clients verify a node by its
//! id rather than by its address, and both serverAuth and clientAuth extended key usages (nodes
//! call each other). Every other role gets clientAuth only, so a client certificate cannot
//! impersonate a node.
//!
//! Private keys are PKCS#8 PEM written with mode 0600 into directories created with mode 0700.
//! This module is Unix-only, like the rest of the crate.

use std::path::Path;

use bunsan_protocol::role::Role;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};
use zeroize::Zeroizing;

use crate::error::{io_err, Error, Result};
use crate::layout::{create_private_dir, write_new_file, PRIVATE_FILE_MODE, PUBLIC_FILE_MODE};

/// How long the cluster CA is valid: ten years, longer than any leaf it signs.
pub const CA_VALIDITY_DAYS: i64 = 3650;

/// How long a leaf certificate is valid: about two years, so that a lost key expires on its own
/// while a running cluster is not forced into frequent rotation.
pub const LEAF_VALIDITY_DAYS: i64 = 730;

/// Certificates start this long before they are issued, so a peer whose clock is slightly
/// behind does not reject a certificate issued a moment ago.
const BACKDATE_MINUTES: i64 = 10;

/// The longest identity name: generous for names like `clinic-0042-collector`, short enough to
/// stay readable in audit logs.
pub const IDENTITY_NAME_MAX_BYTES: usize = 64;

/// A cluster CA: its certificate and the key that signs leaves.
pub struct ClusterCa {
    issuer: Issuer<'static, KeyPair>,
    certificate_pem: String,
}

impl std::fmt::Debug for ClusterCa {
    // The signing key must never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa").finish_non_exhaustive()
    }
}

impl ClusterCa {
    /// Generates a new CA for the cluster called `cluster_name`, valid from now for
    /// [`CA_VALIDITY_DAYS`].
    pub fn generate(cluster_name: &str) -> Result<Self> {
        let what = || "cluster CA".to_owned();
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|source| {
            Error::Certificate {
                what: what(),
                source,
            }
        })?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("Bunsan {cluster_name} CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::minutes(BACKDATE_MINUTES);
        params.not_after = now + Duration::days(CA_VALIDITY_DAYS);
        let certificate = params
            .self_signed(&key)
            .map_err(|source| Error::Certificate {
                what: what(),
                source,
            })?;
        Ok(Self {
            certificate_pem: certificate.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads a CA written by [`ClusterCa::write`]: `ca.pem` and `ca-key.pem` in `ca_dir`.
    pub fn load(ca_dir: &Path) -> Result<Self> {
        let cert_path = ca_dir.join(crate::layout::CA_CERT_FILE);
        let key_path = ca_dir.join(crate::layout::CA_KEY_FILE);
        let certificate_pem =
            std::fs::read_to_string(&cert_path).map_err(io_err("read", &cert_path))?;
        let key_pem =
            Zeroizing::new(std::fs::read_to_string(&key_path).map_err(io_err("read", &key_path))?);
        let what = || format!("CA issuer from {}", ca_dir.display());
        let key = KeyPair::from_pem(&key_pem).map_err(|source| Error::Certificate {
            what: what(),
            source,
        })?;
        let issuer = Issuer::from_ca_cert_pem(&certificate_pem, key).map_err(|source| {
            Error::Certificate {
                what: what(),
                source,
            }
        })?;
        Ok(Self {
            issuer,
            certificate_pem,
        })
    }

    /// The CA certificate, PEM.
    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    /// Writes `ca.pem` (mode 0644) and `ca-key.pem` (mode 0600) into `ca_dir`, creating it with
    /// mode 0700. Refuses to replace existing files.
    pub fn write(&self, ca_dir: &Path) -> Result<()> {
        create_private_dir(ca_dir)?;
        write_new_file(
            &ca_dir.join(crate::layout::CA_CERT_FILE),
            self.certificate_pem.as_bytes(),
            PUBLIC_FILE_MODE,
        )?;
        let key_pem = Zeroizing::new(self.issuer.key().serialize_pem());
        write_new_file(
            &ca_dir.join(crate::layout::CA_KEY_FILE),
            key_pem.as_bytes(),
            PRIVATE_FILE_MODE,
        )
    }

    /// Issues a leaf certificate with a fresh ECDSA P-256 key for `name` in `role`, valid for
    /// [`LEAF_VALIDITY_DAYS`].
    ///
    /// The name must pass [`check_identity_name`]; for [`Role::Node`] it is also the DNS name
    /// clients verify the node by.
    pub fn issue(&self, role: Role, name: &str) -> Result<IssuedIdentity> {
        self.issue_with_validity(role, name, Validity::days_from_now(LEAF_VALIDITY_DAYS))
    }

    /// [`ClusterCa::issue`] with an explicit validity period: short-lived identities for
    /// visitors, or (in tests) a certificate that has already expired.
    pub fn issue_with_validity(
        &self,
        role: Role,
        name: &str,
        validity: Validity,
    ) -> Result<IssuedIdentity> {
        check_identity_name(role, name)?;
        let what = || format!("certificate for {role} {name}");
        let cert_err = |source| Error::Certificate {
            what: what(),
            source,
        };
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(cert_err)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let role_uri = SanType::URI(role.uri().try_into().map_err(cert_err)?);
        if role == Role::Node {
            params.subject_alt_names = vec![
                SanType::DnsName(name.try_into().map_err(cert_err)?),
                role_uri,
            ];
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
        } else {
            params.subject_alt_names = vec![role_uri];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        // The serial number is left to rcgen, which derives it from the (fresh, random) public
        // key: unique per certificate without another source of randomness.
        let certificate = params.signed_by(&key, &self.issuer).map_err(cert_err)?;
        Ok(IssuedIdentity {
            role,
            name: name.to_owned(),
            certificate_pem: certificate.pem(),
            certificate_der: certificate.der().to_vec(),
            key_pem: Zeroizing::new(key.serialize_pem()),
        })
    }

    /// The CA as an rcgen issuer, for signing CRLs.
    pub(crate) fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }
}

/// When a certificate is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// The first moment it is valid.
    pub not_before: OffsetDateTime,
    /// The last moment it is valid.
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From a few minutes ago (clock skew between peers) until `days` days from now.
    pub fn days_from_now(days: i64) -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            not_before: now - Duration::minutes(BACKDATE_MINUTES),
            not_after: now + Duration::days(days),
        }
    }
}

/// A freshly issued leaf: certificate and private key, not yet on disk.
pub struct IssuedIdentity {
    role: Role,
    name: String,
    certificate_pem: String,
    certificate_der: Vec<u8>,
    key_pem: Zeroizing<String>,
}

impl std::fmt::Debug for IssuedIdentity {
    // The private key must never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedIdentity")
            .field("role", &self.role)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl IssuedIdentity {
    /// The role written into the certificate.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The common name written into the certificate.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The certificate, PEM.
    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    /// The certificate, DER.
    pub fn certificate_der(&self) -> &[u8] {
        &self.certificate_der
    }

    /// Writes `cert.pem`, `key.pem` (mode 0600) and a copy of the CA's `ca.pem` into `dir`,
    /// creating it with mode 0700: the layout `bunsan_client::Identity::load` reads. Refuses to
    /// replace existing files.
    pub fn write(&self, dir: &Path, ca: &ClusterCa) -> Result<()> {
        use crate::layout::{CERT_FILE, IDENTITY_CA_FILE, KEY_FILE};
        create_private_dir(dir)?;
        write_new_file(
            &dir.join(CERT_FILE),
            self.certificate_pem.as_bytes(),
            PUBLIC_FILE_MODE,
        )?;
        write_new_file(
            &dir.join(KEY_FILE),
            self.key_pem.as_bytes(),
            PRIVATE_FILE_MODE,
        )?;
        write_new_file(
            &dir.join(IDENTITY_CA_FILE),
            ca.certificate_pem().as_bytes(),
            PUBLIC_FILE_MODE,
        )
    }
}

/// Checks that `name` can serve as a certificate common name and as a directory name:
/// 1..=64 bytes of ASCII letters, digits, `-`, `_` and `.`, not starting with `.` or `-`.
/// A node's name must moreover be a lowercase host-name label, since it is the TLS server name.
pub fn check_identity_name(role: Role, name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name.len() > IDENTITY_NAME_MAX_BYTES {
        Some("longer than 64 bytes")
    } else if name.starts_with('.') || name.starts_with('-') {
        Some("starts with '.' or '-'")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        Some("only ASCII letters, digits, '-', '_' and '.' are allowed")
    } else if role == Role::Node
        && (name.len() > 63
            || name.ends_with('-')
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'))
    {
        Some("a node name must be a host-name label: 1-63 of a-z, 0-9 and '-'")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidIdentityName {
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bunsan_protocol::role::PeerIdentity;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::client::WebPkiServerVerifier;
    use rustls::server::danger::ClientCertVerifier;
    use rustls::server::WebPkiClientVerifier;
    use rustls::RootCertStore;
    use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

    use super::*;

    struct Verifiers {
        client: Arc<dyn ClientCertVerifier>,
        server: Arc<WebPkiServerVerifier>,
    }

    fn verifiers(ca: &ClusterCa) -> Verifiers {
        use rustls_pki_types::pem::PemObject;
        let provider = bunsan_client::tls::crypto_provider();
        let ca_der =
            CertificateDer::from_pem_slice(ca.certificate_pem().as_bytes()).expect("CA PEM parses");
        let mut roots = RootCertStore::empty();
        roots.add(ca_der).expect("CA is a usable trust anchor");
        let roots = Arc::new(roots);
        Verifiers {
            client: WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .expect("client verifier"),
            server: WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .expect("server verifier"),
        }
    }

    #[test]
    fn every_issued_certificate_names_its_role_and_holder_and_chains_to_the_ca() {
        let ca = ClusterCa::generate("test").expect("CA");
        let verify = verifiers(&ca);
        let now = UnixTime::now();
        for role in Role::ALL {
            let name = match role {
                Role::Node => "node-7".to_owned(),
                other => format!("clinic-1-{other}"),
            };
            let issued = ca.issue(role, &name).expect("issue");
            let peer = PeerIdentity::from_certificate(issued.certificate_der()).expect("peer");
            assert_eq!((peer.role, peer.name.as_str()), (role, name.as_str()));

            let der = CertificateDer::from(issued.certificate_der().to_vec());
            verify
                .client
                .verify_client_cert(&der, &[], now)
                .unwrap_or_else(|e| panic!("{role} cert is not a valid client cert: {e}"));
            let server_name = ServerName::try_from("node-7").expect("name");
            let as_server = verify
                .server
                .verify_server_cert(&der, &[], &server_name, &[], now);
            // Only a node certificate may serve as node-7.
            assert_eq!(
                as_server.is_ok(),
                role == Role::Node,
                "{role}: {as_server:?}"
            );
        }
    }

    #[test]
    fn a_node_certificate_is_only_valid_for_its_own_id() {
        let ca = ClusterCa::generate("test").expect("CA");
        let issued = ca.issue(Role::Node, "node-1").expect("issue");
        let der = CertificateDer::from(issued.certificate_der().to_vec());
        let other = ServerName::try_from("node-2").expect("name");
        assert!(verifiers(&ca)
            .server
            .verify_server_cert(&der, &[], &other, &[], UnixTime::now())
            .is_err());
    }

    #[test]
    fn a_certificate_from_another_ca_is_refused() {
        let ours = ClusterCa::generate("ours").expect("CA");
        let theirs = ClusterCa::generate("theirs").expect("CA");
        let issued = theirs.issue(Role::Reader, "reader").expect("issue");
        let der = CertificateDer::from(issued.certificate_der().to_vec());
        assert!(verifiers(&ours)
            .client
            .verify_client_cert(&der, &[], UnixTime::now())
            .is_err());
    }

    #[test]
    fn a_loaded_ca_issues_certificates_that_chain_to_the_written_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = ClusterCa::generate("test").expect("CA");
        ca.write(&dir.path().join("ca")).expect("write");
        let loaded = ClusterCa::load(&dir.path().join("ca")).expect("load");
        assert_eq!(loaded.certificate_pem(), ca.certificate_pem());
        let issued = loaded.issue(Role::Auditor, "auditor").expect("issue");
        let der = CertificateDer::from(issued.certificate_der().to_vec());
        verifiers(&ca)
            .client
            .verify_client_cert(&der, &[], UnixTime::now())
            .expect("a cert from the reloaded CA chains to the original");
    }

    #[test]
    fn identity_names_are_checked() {
        assert!(check_identity_name(Role::Reader, "clinic-7.reader_2").is_ok());
        assert!(check_identity_name(Role::Node, "node-12").is_ok());
        for bad in [
            "",
            "../etc",
            "a/b",
            ".hidden",
            "-x",
            "caf\u{e9}",
            &"x".repeat(65),
        ] {
            assert!(check_identity_name(Role::Reader, bad).is_err(), "{bad:?}");
        }
        for bad in ["Node-1", "node_1", "node-", "node.1"] {
            assert!(check_identity_name(Role::Node, bad).is_err(), "{bad:?}");
        }
    }
}
