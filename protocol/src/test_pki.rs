//! A throw-away cluster CA for unit tests: issues role certificates and keys with rcgen.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    SanType, PKCS_ECDSA_P256_SHA256,
};

use crate::integrity::{Signer, Trust};
use crate::role::Role;
use crate::seal::{NodeKey, RecipientKey};

/// A CA and the DER of its certificate.
pub(crate) struct TestPki {
    issuer: Issuer<'static, KeyPair>,
    ca_der: Vec<u8>,
}

/// A leaf certificate and its PKCS#8 key.
pub(crate) struct Leaf {
    pub(crate) cert: Vec<u8>,
    pub(crate) key: Vec<u8>,
}

impl TestPki {
    pub(crate) fn new() -> Self {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("CA key");
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "unit test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        let ca = params.self_signed(&key).expect("CA certificate");
        Self {
            ca_der: ca.der().to_vec(),
            issuer: Issuer::new(params, key),
        }
    }

    pub(crate) fn trust(&self) -> Trust {
        Trust::new(&self.ca_der).expect("trust")
    }

    pub(crate) fn leaf(&self, role: Role, name: &str) -> Leaf {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("leaf key");
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::ExplicitNoCa;
        params.subject_alt_names = vec![SanType::URI(role.uri().try_into().expect("uri"))];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        if role == Role::Node {
            params
                .subject_alt_names
                .push(SanType::DnsName(name.try_into().expect("dns")));
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        let cert = params.signed_by(&key, &self.issuer).expect("leaf");
        Leaf {
            cert: cert.der().to_vec(),
            key: key.serialize_der(),
        }
    }

    pub(crate) fn signer(&self, role: Role) -> Signer {
        let leaf = self.leaf(role, role.as_str());
        Signer::from_pkcs8(&leaf.key, leaf.cert).expect("signer")
    }

    /// n node keys and the recipient keys read from their certificates.
    pub(crate) fn nodes(&self, n: u8) -> (Vec<NodeKey>, Vec<Option<RecipientKey>>) {
        (1..=n)
            .map(|i| {
                let leaf = self.leaf(Role::Node, &format!("node-{i}"));
                let recipient = RecipientKey::from_certificate(&leaf.cert).expect("recipient");
                (
                    NodeKey::from_der(&leaf.key).expect("node key"),
                    Some(recipient),
                )
            })
            .unzip()
    }
}
