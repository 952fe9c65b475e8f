//! Node signing keys: the key in a node's certificate, checked against the cluster CA, and the
//! node's own private key for signing checkpoints and cosignatures.
//!
//! An auditor holds only the CA certificate. Every node certificate it is shown (in a fetched
//! audit directory, or in a peer's answer) is checked here: issued by that CA (issuer name and
//! signature), role `node`, common name the node id, an ECDSA P-256 key. Validity periods and
//! revocation are not checked: a checkpoint signed years ago must stay verifiable after the
//! certificate expired (see docs/AUDIT.md, "What verification does not cover").

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair, UnparsedPublicKey, VerificationAlgorithm};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::error::{Error, Result};
use crate::role::{PeerIdentity, Role};

const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";
const OID_ECDSA_SHA256: &str = "1.2.840.10045.4.3.2";
const OID_ECDSA_SHA384: &str = "1.2.840.10045.4.3.3";
const OID_ED25519: &str = "1.3.101.112";

/// The public signing key of one node, from a certificate that chains to the cluster CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeKey {
    node_id: String,
    spki_der: Vec<u8>,
    point: Vec<u8>,
}

impl NodeKey {
    /// Checks `cert_der` against the CA certificate `ca_der` and returns its key: issued by the
    /// CA (name and signature), role `node`, common name `node_id` when given, ECDSA P-256.
    pub fn from_certificate(ca_der: &[u8], cert_der: &[u8], node_id: Option<&str>) -> Result<Self> {
        let untrusted = |reason: String| Error::CertificateNotTrusted { reason };
        let (_, ca) = X509Certificate::from_der(ca_der)
            .map_err(|e| untrusted(format!("the CA certificate is not X.509 DER: {e}")))?;
        let (rest, cert) = X509Certificate::from_der(cert_der)
            .map_err(|e| untrusted(format!("not X.509 DER: {e}")))?;
        if !rest.is_empty() {
            return Err(untrusted("bytes after the certificate".to_owned()));
        }
        if cert.issuer().as_raw() != ca.subject().as_raw() {
            return Err(untrusted(format!(
                "issued by {:?}, not by the cluster CA {:?}",
                cert.issuer().to_string(),
                ca.subject().to_string()
            )));
        }
        let ca_key = ca.public_key();
        let ca_curve = ca_key
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .map(|oid| oid.to_id_string());
        let algorithm: &dyn VerificationAlgorithm = match (
            cert.signature_algorithm.algorithm.to_id_string().as_str(),
            ca_curve.as_deref(),
        ) {
            (OID_ECDSA_SHA256, Some(OID_P256)) => &signature::ECDSA_P256_SHA256_ASN1,
            (OID_ECDSA_SHA384, Some(OID_P256)) => &signature::ECDSA_P256_SHA384_ASN1,
            (OID_ECDSA_SHA256, Some(OID_P384)) => &signature::ECDSA_P384_SHA256_ASN1,
            (OID_ECDSA_SHA384, Some(OID_P384)) => &signature::ECDSA_P384_SHA384_ASN1,
            (OID_ED25519, _) => &signature::ED25519,
            (other, _) => {
                return Err(untrusted(format!(
                    "unsupported certificate signature algorithm {other}"
                )))
            }
        };
        UnparsedPublicKey::new(algorithm, &ca_key.subject_public_key.data)
            .verify(cert.tbs_certificate.as_ref(), &cert.signature_value.data)
            .map_err(|_| untrusted("the CA's signature on it does not verify".to_owned()))?;
        let peer = PeerIdentity::from_certificate(cert_der)?;
        if peer.role != Role::Node {
            return Err(untrusted(format!(
                "{} has role {}, not node",
                peer.name, peer.role
            )));
        }
        if let Some(expected) = node_id {
            if peer.name != expected {
                return Err(untrusted(format!(
                    "it is the certificate of {}, not of {expected}",
                    peer.name
                )));
            }
        }
        let key = cert.public_key();
        let curve = key
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .map(|oid| oid.to_id_string());
        if key.algorithm.algorithm.to_id_string() != OID_EC_PUBLIC_KEY
            || curve.as_deref() != Some(OID_P256)
        {
            return Err(untrusted(format!(
                "{} does not hold an ECDSA P-256 key",
                peer.name
            )));
        }
        Ok(Self {
            node_id: peer.name,
            spki_der: key.raw.to_vec(),
            point: key.subject_public_key.data.to_vec(),
        })
    }

    /// The node id the certificate names.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The DER SubjectPublicKeyInfo (what note key ids are derived from).
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// Checks an ASN.1 DER ECDSA P-256 / SHA-256 signature over `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_ASN1, &self.point)
            .verify(message, signature)
            .is_ok()
    }
}

/// A node's private signing key (from its PKCS#8 `key.pem`) bound to its certificate.
pub struct NodeSigner {
    key: EcdsaKeyPair,
    public: NodeKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for NodeSigner {
    // The private key must never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeSigner")
            .field("node", &self.public.node_id)
            .finish_non_exhaustive()
    }
}

impl NodeSigner {
    /// Loads the PKCS#8 DER private key of the node whose certificate `cert_der` chains to
    /// `ca_der`; refuses a key that does not match the certificate, so a node cannot sign
    /// checkpoints nobody can verify.
    pub fn new(ca_der: &[u8], cert_der: &[u8], pkcs8_der: &[u8]) -> Result<Self> {
        let public = NodeKey::from_certificate(ca_der, cert_der, None)?;
        let key = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8_der)
            .map_err(|e| Error::SigningKey {
            reason: format!("not a PKCS#8 ECDSA P-256 key: {e}"),
        })?;
        if key.public_key().as_ref() != public.point.as_slice() {
            return Err(Error::SigningKey {
                reason: format!(
                    "the private key does not belong to the certificate of {}",
                    public.node_id
                ),
            });
        }
        Ok(Self {
            key,
            public,
            rng: SystemRandom::new(),
        })
    }

    /// The matching public key.
    pub fn public(&self) -> &NodeKey {
        &self.public
    }

    /// An ASN.1 DER ECDSA P-256 / SHA-256 signature over `message`.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        self.key
            .sign(&self.rng, message)
            .map(|signature| signature.as_ref().to_vec())
            .map_err(|_| Error::SigningKey {
                reason: "ECDSA signing failed".to_owned(),
            })
    }
}

#[cfg(test)]
pub(crate) mod test_pki {
    //! A throw-away CA and node keys for checkpoint tests (rcgen is a dev-dependency).

    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};

    use super::*;

    /// A CA certificate (DER) and its issuer.
    pub(crate) struct TestCa {
        pub(crate) der: Vec<u8>,
        issuer: Issuer<'static, KeyPair>,
    }

    impl TestCa {
        pub(crate) fn new(name: &str) -> Self {
            let key = KeyPair::generate().expect("CA key");
            let mut params = CertificateParams::default();
            params.distinguished_name.push(DnType::CommonName, name);
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            let cert = params.self_signed(&key).expect("CA");
            Self {
                der: cert.der().to_vec(),
                issuer: Issuer::new(params, key),
            }
        }

        /// A certificate for `name` with `role` and its PKCS#8 key.
        pub(crate) fn issue(&self, name: &str, role: Role) -> (Vec<u8>, Vec<u8>) {
            let key = KeyPair::generate().expect("key");
            let mut params = CertificateParams::default();
            params.distinguished_name.push(DnType::CommonName, name);
            params
                .subject_alt_names
                .push(SanType::URI(role.uri().try_into().expect("uri")));
            let cert = params.signed_by(&key, &self.issuer).expect("cert");
            (cert.der().to_vec(), key.serialize_der())
        }

        pub(crate) fn signer(&self, node_id: &str) -> (NodeSigner, Vec<u8>) {
            let (cert, key) = self.issue(node_id, Role::Node);
            (
                NodeSigner::new(&self.der, &cert, &key).expect("signer"),
                cert,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_pki::TestCa;
    use super::*;

    #[test]
    fn node_certificates_are_checked_against_the_ca() {
        let ca = TestCa::new("ca");
        let (cert, key) = ca.issue("node-1", Role::Node);
        let node = NodeKey::from_certificate(&ca.der, &cert, Some("node-1")).expect("trusted");
        assert_eq!(node.node_id(), "node-1");
        assert!(NodeKey::from_certificate(&ca.der, &cert, Some("node-2")).is_err());
        let (reader, _) = ca.issue("reader", Role::Reader);
        assert!(NodeKey::from_certificate(&ca.der, &reader, None).is_err());
        let other = TestCa::new("other");
        assert!(NodeKey::from_certificate(&other.der, &cert, None).is_err());
        // Same issuer name, other key: the signature check catches it.
        let impostor = TestCa::new("ca");
        let (forged, _) = impostor.issue("node-1", Role::Node);
        assert!(NodeKey::from_certificate(&ca.der, &forged, None).is_err());

        let signer = NodeSigner::new(&ca.der, &cert, &key).expect("signer");
        let signature = signer.sign(b"message").expect("sign");
        assert!(node.verify(b"message", &signature));
        assert!(!node.verify(b"massage", &signature));
        let (_, wrong_key) = ca.issue("node-1", Role::Node);
        assert!(NodeSigner::new(&ca.der, &cert, &wrong_key).is_err());
    }
}
