//! Transport security shared by every Bunsan endpoint: clients, nodes, and node-to-node calls.
//!
//! The policy lives in one place so no endpoint can drift from it:
//! - rustls with the aws-lc-rs provider only (enabling a second provider makes rustls panic at
//!   start when it cannot pick a default);
//! - TLS 1.3 only, and X25519MLKEM768 as the only key exchange: shares are
//!   information-theoretically safe at rest, so the transport is the one place where a recorded
//!   stream of k shares could be opened later by a quantum computer;
//! - ALPN `bunsan/1`;
//! - mutual TLS: both sides present a certificate from the cluster CA. Clients verify the node's
//!   certificate for the node id (`node-3`), not for an IP address, so a node keeps its identity
//!   when it moves.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bunsan_protocol::integrity::{Signer, Trust};
use bunsan_protocol::message::ALPN;
use bunsan_protocol::role::{PeerIdentity, Role};
use bunsan_protocol::seal::NodeKey;
use bunsan_protocol::WriterId;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

use crate::error::{Error, Result};

/// The aws-lc-rs provider restricted to TLS 1.3 suites and the X25519MLKEM768 hybrid group.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.kx_groups = vec![rustls::crypto::aws_lc_rs::kx_group::X25519MLKEM768];
    provider
        .cipher_suites
        .retain(|suite| suite.version() == &rustls::version::TLS13);
    Arc::new(provider)
}

/// A certificate, its private key, and the cluster CA it chains to, loaded from one directory
/// (`cert.pem`, `key.pem`, `ca.pem`).
pub struct Identity {
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    ca: CertificateDer<'static>,
    peer: PeerIdentity,
}

impl std::fmt::Debug for Identity {
    // The private key must never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Loads `cert.pem`, `key.pem` and `ca.pem` from `dir`.
    pub fn load(dir: &Path) -> Result<Self> {
        Self::from_files(
            &dir.join("cert.pem"),
            &dir.join("key.pem"),
            &dir.join("ca.pem"),
        )
    }

    /// Loads an identity from three PEM files: certificate chain (leaf first), PKCS#8 private
    /// key, cluster CA certificate.
    pub fn from_files(cert: &Path, key: &Path, ca: &Path) -> Result<Self> {
        let read = |path: &Path| -> Result<(PathBuf, Vec<u8>)> {
            let bytes = std::fs::read(path).map_err(|source| Error::ReadFile {
                path: path.to_owned(),
                source,
            })?;
            Ok((path.to_owned(), bytes))
        };
        let (cert_path, cert_pem) = read(cert)?;
        let (key_path, key_pem) = read(key)?;
        let (ca_path, ca_pem) = read(ca)?;
        let certs = parse_certs(&cert_path, &cert_pem)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| Error::BadIdentity {
            path: key_path,
            reason: format!("no private key: {e}"),
        })?;
        let ca = parse_certs(&ca_path, &ca_pem)?
            .into_iter()
            .next()
            .ok_or_else(|| Error::BadIdentity {
                path: ca_path.clone(),
                reason: "no certificate".to_owned(),
            })?;
        let peer = PeerIdentity::from_certificate(&certs[0])?;
        Ok(Self {
            certs,
            key,
            ca,
            peer,
        })
    }

    /// Role, name and fingerprint read from the certificate.
    pub fn peer(&self) -> &PeerIdentity {
        &self.peer
    }

    /// The certificate's role.
    pub fn role(&self) -> Role {
        self.peer.role
    }

    /// A fresh writer id for one session of this identity (see [`WriterId`]).
    pub fn session_writer_id(&self) -> WriterId {
        WriterId::for_session(&self.certs[0], &mut rand::rng())
    }

    /// The leaf certificate (DER).
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.certs[0]
    }

    /// The cluster CA certificate (DER).
    pub fn ca(&self) -> &CertificateDer<'static> {
        &self.ca
    }

    /// The key that signs record headers under this identity's certificate (collectors sign
    /// records, admins tombstones). Fails for a key that is not PKCS#8 ECDSA P-256.
    pub fn signer(&self) -> Result<Signer> {
        Ok(Signer::from_pkcs8(
            self.key.secret_der(),
            self.certs[0].to_vec(),
        )?)
    }

    /// The key that opens the commitment nonces sealed to this identity (a node's).
    pub fn node_key(&self) -> Result<NodeKey> {
        Ok(NodeKey::from_der(self.key.secret_der())?)
    }

    /// The cluster CA as trust anchor for writer certificates in envelopes.
    pub fn trust(&self) -> Result<Trust> {
        Ok(Trust::new(&self.ca)?)
    }

    fn roots(&self) -> Result<Arc<RootCertStore>> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.clone())?;
        Ok(Arc::new(roots))
    }
}

fn parse_certs(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::BadIdentity {
            path: path.to_owned(),
            reason: format!("bad PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(Error::BadIdentity {
            path: path.to_owned(),
            reason: "no certificate".to_owned(),
        });
    }
    Ok(certs)
}

/// The QUIC client configuration for `identity`: verifies nodes against the cluster CA and
/// presents the identity's certificate.
pub fn client_config(identity: &Identity) -> Result<quinn::ClientConfig> {
    let mut tls = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(identity.roots()?)
        .with_client_auth_cert(identity.certs.clone(), identity.key.clone_key())?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(tls))
        .map_err(|e| Error::Tls(rustls::Error::General(e.to_string())))?;
    Ok(quinn::ClientConfig::new(Arc::new(quic)))
}

/// The rustls server configuration for a node: requires a client certificate from the cluster
/// CA (and not on `crls`), presents the node's certificate, speaks only `bunsan/1`.
pub fn server_tls_config(
    identity: &Identity,
    crls: Vec<CertificateRevocationListDer<'static>>,
) -> Result<rustls::ServerConfig> {
    server_tls_config_with_verifier(identity, client_cert_verifier(identity, crls)?)
}

/// The verifier a node applies to client certificates: the chain must lead to the cluster CA
/// and, when `crls` is not empty, the certificate must not be revoked by them.
///
/// With CRLs, two rules fail closed: a certificate no CRL speaks for is refused (rustls'
/// default), and so is every certificate once the CRL's `nextUpdate` has passed
/// (`enforce_revocation_expiration`): a node that no longer receives CRLs must not keep
/// trusting identities that may have been revoked since.
pub fn client_cert_verifier(
    identity: &Identity,
    crls: Vec<CertificateRevocationListDer<'static>>,
) -> Result<Arc<dyn ClientCertVerifier>> {
    WebPkiClientVerifier::builder_with_provider(identity.roots()?, crypto_provider())
        .with_crls(crls)
        .enforce_revocation_expiration()
        .build()
        .map_err(|e| Error::Tls(rustls::Error::General(e.to_string())))
}

/// [`server_tls_config`] with a verifier built beforehand by [`client_cert_verifier`], so a
/// node can keep the verifier to re-check live connections after a CRL reload.
///
/// Session resumption is off: a resumed TLS 1.3 session skips client certificate
/// verification, so a revoked client holding a ticket would get back in. Clients keep one
/// long-lived connection per node, so the extra full handshakes cost little.
pub fn server_tls_config_with_verifier(
    identity: &Identity,
    verifier: Arc<dyn ClientCertVerifier>,
) -> Result<rustls::ServerConfig> {
    let mut tls = rustls::ServerConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.certs.clone(), identity.key.clone_key())?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    tls.send_tls13_tickets = 0;
    Ok(tls)
}

/// Wraps a rustls server configuration for quinn.
pub fn quic_server_config(tls: rustls::ServerConfig) -> Result<quinn::ServerConfig> {
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(Arc::new(tls))
        .map_err(|e| Error::Tls(rustls::Error::General(e.to_string())))?;
    Ok(quinn::ServerConfig::with_crypto(Arc::new(quic)))
}
