//! Which CRL files a node accepts, and what the verifier built from them refuses.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SanType, SerialNumber,
};
use time::{Duration as Span, OffsetDateTime};

use super::*;

/// A CA that signs leaves and CRLs, named like a Bunsan cluster CA.
struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl TestCa {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let pem = params.self_signed(&key).expect("CA").pem();
        Self {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    /// A leaf for `name` in `role`: (certificate DER, certificate PEM, key PEM, serial).
    fn leaf(&self, role: Role, name: &str, serial: u64) -> (Vec<u8>, String, String) {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.serial_number = Some(SerialNumber::from(serial));
        params.subject_alt_names = vec![
            SanType::DnsName(name.try_into().expect("dns")),
            SanType::URI(role.uri().try_into().expect("uri")),
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.issuer).expect("leaf");
        (cert.der().to_vec(), cert.pem(), key.serialize_pem())
    }

    /// A CRL revoking `serials`, issued `age` ago and valid for `validity` from then.
    fn crl(&self, serials: &[u64], age: Span, validity: Span) -> String {
        let this_update = OffsetDateTime::now_utc() - age;
        CertificateRevocationListParams {
            this_update,
            next_update: this_update + validity,
            crl_number: SerialNumber::from(7u64),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|&serial| RevokedCertParams {
                    serial_number: SerialNumber::from(serial),
                    revocation_time: this_update,
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&self.issuer)
        .expect("CRL")
        .pem()
        .expect("PEM")
    }

    fn fresh_crl(&self, serials: &[u64]) -> String {
        self.crl(serials, Span::minutes(1), Span::days(30))
    }
}

/// node-1's identity from `ca`, with serial 1, written to `dir`.
fn node_identity(ca: &TestCa, dir: &Path) -> Identity {
    let (_, cert, key) = ca.leaf(Role::Node, "node-1", 1);
    std::fs::write(dir.join("cert.pem"), cert).expect("write");
    std::fs::write(dir.join("key.pem"), key).expect("write");
    std::fs::write(dir.join("ca.pem"), &ca.pem).expect("write");
    Identity::load(dir).expect("identity")
}

fn load_text(identity: &Identity, dir: &Path, text: &str) -> Result<LoadedCrl> {
    let path = dir.join("crl.pem");
    std::fs::write(&path, text).expect("write");
    load(identity, &path, UnixTime::now())
}

fn verify(loaded: &LoadedCrl, der: &[u8]) -> std::result::Result<(), rustls::Error> {
    let der = CertificateDer::from(der.to_vec());
    loaded
        .verifier
        .verify_client_cert(&der, &[], UnixTime::now())
        .map(drop)
}

#[test]
fn a_fresh_crl_refuses_exactly_the_revoked_certificates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("Bunsan test CA");
    let identity = node_identity(&ca, dir.path());
    let (revoked, _, _) = ca.leaf(Role::Reader, "reader", 20);
    let (kept, _, _) = ca.leaf(Role::Reader, "reader-2", 21);
    let loaded = load_text(&identity, dir.path(), &ca.fresh_crl(&[20])).expect("valid");
    assert!(!loaded.status.expired);
    assert_eq!(loaded.status.revoked, 1);
    assert_eq!(loaded.status.number.as_deref(), Some("7"));
    assert!(loaded.status.next_update.is_some());
    assert_eq!(
        verify(&loaded, &revoked),
        Err(rustls::Error::InvalidCertificate(CertificateError::Revoked))
    );
    assert!(verify(&loaded, &kept).is_ok());
}

#[test]
fn an_expired_crl_is_accepted_as_valid_but_refuses_everyone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("Bunsan test CA");
    let identity = node_identity(&ca, dir.path());
    let (reader, _, _) = ca.leaf(Role::Reader, "reader", 20);
    let expired = ca.crl(&[], Span::days(2), Span::days(1));
    let loaded = load_text(&identity, dir.path(), &expired).expect("valid, but expired");
    assert!(loaded.status.expired);
    assert!(matches!(
        verify(&loaded, &reader),
        Err(rustls::Error::InvalidCertificate(
            CertificateError::ExpiredRevocationList
                | CertificateError::ExpiredRevocationListContext { .. }
        ))
    ));
    assert_eq!(
        close_reason(&rustls::Error::InvalidCertificate(
            CertificateError::ExpiredRevocationList
        )),
        "the node's crl expired: refusing every client"
    );
}

#[test]
fn a_crl_revoking_this_node_is_still_a_valid_crl() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("Bunsan test CA");
    let identity = node_identity(&ca, dir.path());
    let loaded = load_text(&identity, dir.path(), &ca.fresh_crl(&[1])).expect("valid");
    assert_eq!(loaded.status.revoked, 1);
}

#[test]
fn crls_not_signed_by_the_cluster_ca_are_invalid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("Bunsan test CA");
    let identity = node_identity(&ca, dir.path());
    // Same issuer name, other key: a forged or mixed-up CRL whose signature does not verify.
    let impostor = TestCa::new("Bunsan test CA");
    // Another cluster's CA: a CRL that says nothing about our certificates.
    let other = TestCa::new("Bunsan other CA");
    for crl in [impostor.fresh_crl(&[]), other.fresh_crl(&[])] {
        let err = load_text(&identity, dir.path(), &crl)
            .err()
            .expect("refused");
        assert!(matches!(err, Error::InvalidCrl { .. }), "{err}");
    }
}

#[test]
fn files_without_a_crl_are_invalid_and_a_missing_file_is_an_io_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = TestCa::new("Bunsan test CA");
    let identity = node_identity(&ca, dir.path());
    let garbage = "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n";
    for text in ["", "not a crl at all", garbage, &ca.pem] {
        let err = load_text(&identity, dir.path(), text)
            .err()
            .expect("refused");
        assert!(matches!(err, Error::InvalidCrl { .. }), "{text:?}: {err}");
    }
    let missing = load(&identity, &dir.path().join("absent.pem"), UnixTime::now());
    assert!(matches!(missing, Err(Error::Io { .. })));
}
