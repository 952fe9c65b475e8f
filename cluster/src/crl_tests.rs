//! Revocation as a node's verifier sees it: what `init`, `revoke` and `renew` write.

use std::sync::Arc;

use bunsan_client::tls::client_cert_verifier;
use bunsan_client::Identity;
use bunsan_protocol::role::Role;
use rustls::server::danger::ClientCertVerifier;
use rustls::CertificateError;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};

use super::*;
use crate::init::{init, InitOptions};

fn cluster() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = InitOptions {
        nodes: 3,
        threshold: 2,
        base_port: 0,
        ..InitOptions::default()
    };
    init(dir.path(), &options).expect("init");
    dir
}

/// node-1's verifier with the CRL in `crl_path`, as the node would build it.
fn verifier(dir: &Path, crl_path: &Path) -> Arc<dyn ClientCertVerifier> {
    let node = Identity::load(&dir.join("nodes/node-1")).expect("node identity");
    let crl = CertificateRevocationListDer::from_pem_file(crl_path).expect("a PEM CRL");
    client_cert_verifier(&node, vec![crl]).expect("verifier")
}

fn check(
    verifier: &Arc<dyn ClientCertVerifier>,
    dir: &Path,
    name: &str,
) -> std::result::Result<(), rustls::Error> {
    let path = ["clients", "nodes"]
        .iter()
        .map(|kind| dir.join(kind).join(name).join("cert.pem"))
        .find(|path| path.is_file())
        .expect("a certificate");
    let der = CertificateDer::from_pem_file(path).expect("certificate");
    verifier
        .verify_client_cert(&der, &[], UnixTime::now())
        .map(drop)
}

const REVOKED: std::result::Result<(), rustls::Error> =
    Err(rustls::Error::InvalidCertificate(CertificateError::Revoked));

#[test]
fn init_publishes_an_empty_crl_to_every_node() {
    let dir = cluster();
    let layout = ClusterLayout::new(dir.path());
    let record = RevocationRecord::load(&layout).expect("record");
    assert_eq!((record.crl_number, record.revoked.len()), (1, 0));
    let ca_crl = std::fs::read(layout.crl_path()).expect("ca/crl.pem");
    for index in 1..=3 {
        let copy = std::fs::read(layout.node_dir(index).join(CRL_FILE)).expect("node copy");
        assert_eq!(copy, ca_crl);
    }
    let verifier = verifier(dir.path(), &layout.crl_path());
    for name in ["collector", "reader", "auditor", "admin", "node-2"] {
        assert!(check(&verifier, dir.path(), name).is_ok(), "{name}");
    }
}

#[test]
fn revocations_accumulate_under_growing_crl_numbers() {
    let dir = cluster();
    let layout = ClusterLayout::new(dir.path());
    let (entry, first) = revoke(
        dir.path(),
        "reader",
        RevocationReason::KeyCompromise,
        CrlWindow::default(),
    )
    .expect("revoke reader");
    assert_eq!(
        (entry.name.as_str(), entry.role.as_str()),
        ("reader", "reader")
    );
    assert_eq!(entry.reason, "key-compromise");
    assert_eq!((first.number, first.revoked), (2, 1));
    assert_eq!(first.written.len(), 4, "ca/crl.pem and three node copies");
    assert!(first.not_enforced.is_empty());

    let (_, second) = revoke(
        dir.path(),
        "node-2",
        RevocationReason::CessationOfOperation,
        CrlWindow::default(),
    )
    .expect("revoke node-2");
    assert_eq!((second.number, second.revoked), (3, 2));
    // Every node's copy refuses both, and nothing else.
    let verifier = verifier(dir.path(), &layout.node_dir(3).join(CRL_FILE));
    assert_eq!(check(&verifier, dir.path(), "reader"), REVOKED);
    assert_eq!(check(&verifier, dir.path(), "node-2"), REVOKED);
    for name in ["collector", "auditor", "admin", "node-1"] {
        assert!(check(&verifier, dir.path(), name).is_ok(), "{name}");
    }

    assert!(matches!(
        revoke(
            dir.path(),
            "reader",
            RevocationReason::Unspecified,
            CrlWindow::default()
        ),
        Err(Error::AlreadyRevoked { .. })
    ));
    assert!(matches!(
        revoke(
            dir.path(),
            "nobody",
            RevocationReason::Unspecified,
            CrlWindow::default()
        ),
        Err(Error::UnknownIdentity { .. })
    ));
    assert!(matches!(
        revoke(
            dir.path(),
            "../ca",
            RevocationReason::Unspecified,
            CrlWindow::default()
        ),
        Err(Error::InvalidIdentityName { .. })
    ));
    let record = RevocationRecord::load(&layout).expect("record");
    assert_eq!(record.crl_number, 3, "refusals sign nothing");
}

#[test]
fn renewal_keeps_revocations_and_extends_validity() {
    let dir = cluster();
    let layout = ClusterLayout::new(dir.path());
    revoke(
        dir.path(),
        "auditor",
        RevocationReason::Superseded,
        CrlWindow::days_from_now(1),
    )
    .expect("revoke");
    let renewed = renew(dir.path(), CrlWindow::days_from_now(60)).expect("renew");
    assert_eq!((renewed.number, renewed.revoked), (3, 1));
    let verifier = verifier(dir.path(), &layout.node_dir(1).join(CRL_FILE));
    assert_eq!(check(&verifier, dir.path(), "auditor"), REVOKED);
    assert!(check(&verifier, dir.path(), "reader").is_ok());
}

#[test]
fn a_crl_past_its_next_update_refuses_everyone() {
    let dir = cluster();
    let layout = ClusterLayout::new(dir.path());
    let now = OffsetDateTime::now_utc();
    let expired = CrlWindow {
        this_update: now - time::Duration::days(2),
        next_update: now - time::Duration::days(1),
    };
    renew(dir.path(), expired).expect("renew");
    let verifier = verifier(dir.path(), &layout.crl_path());
    for name in ["reader", "admin", "node-2"] {
        assert!(
            matches!(
                check(&verifier, dir.path(), name),
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::ExpiredRevocationList
                        | CertificateError::ExpiredRevocationListContext { .. }
                ))
            ),
            "{name}"
        );
    }
}

#[test]
fn issue_with_validity_can_issue_an_expired_certificate() {
    let dir = cluster();
    let now = OffsetDateTime::now_utc();
    let past = crate::pki::Validity {
        not_before: now - time::Duration::days(10),
        not_after: now - time::Duration::days(1),
    };
    crate::init::issue_with_validity(dir.path(), Role::Reader, "old-reader", past).expect("issue");
    let verifier = verifier(dir.path(), &ClusterLayout::new(dir.path()).crl_path());
    assert!(matches!(
        check(&verifier, dir.path(), "old-reader"),
        Err(rustls::Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. }
        ))
    ));
}

#[test]
fn record_fields_round_trip() {
    let at = OffsetDateTime::from_unix_timestamp(1_790_000_000).expect("time");
    assert_eq!(from_toml_datetime(&to_toml_datetime(at)), Some(at));
    assert_eq!(hex_bytes("00ff10"), Some(vec![0, 255, 16]));
    for bad in ["", "0", "zz", "0g"] {
        assert_eq!(hex_bytes(bad), None, "{bad:?}");
    }
    for reason in RevocationReason::ALL {
        assert_eq!(
            reason.as_str().parse::<RevocationReason>().ok(),
            Some(reason)
        );
    }
    assert!("stolen".parse::<RevocationReason>().is_err());
}
