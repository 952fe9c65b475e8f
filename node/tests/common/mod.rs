//! Test support: a throw-away cluster CA issuing node and client certificates (rcgen), node
//! configurations in temporary directories, and a raw quinn client speaking frames.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bunsan_client::tls::{client_config, crypto_provider, Identity};
use bunsan_node::{NodeConfig, StoreBackend};
use bunsan_protocol::frame::{self, FRAME_MAX_BYTES};
use bunsan_protocol::message::{Request, Response, ALPN};
use bunsan_protocol::role::Role;
use bunsan_protocol::ShareIndex;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    SanType,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Sends node logs to the test output, filtered by `RUST_LOG` (silent by default), so a failing
/// test can be rerun with `RUST_LOG=debug -- --nocapture`.
pub fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .with_ansi(false)
        .try_init();
}

/// A cluster CA in a temporary directory; every identity gets a subdirectory.
pub struct Pki {
    pub dir: tempfile::TempDir,
    issuer: Issuer<'static, KeyPair>,
    ca_pem: String,
}

impl Pki {
    pub fn new() -> Self {
        init_logs();
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "Bunsan test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        let ca = params.self_signed(&key).expect("CA certificate");
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
            ca_pem: ca.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// Issues a certificate for `name` (with `role` as URI SAN if given; nodes also get their
    /// id as DNS SAN and serverAuth) and writes `cert.pem`, `key.pem`, `ca.pem` into a new
    /// directory, which it returns.
    pub fn issue(&self, name: &str, role: Option<Role>) -> PathBuf {
        let key = KeyPair::generate().expect("leaf key");
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::ExplicitNoCa;
        if let Some(role) = role {
            params
                .subject_alt_names
                .push(SanType::URI(role.uri().try_into().expect("role URI")));
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        if role == Some(Role::Node) {
            params
                .subject_alt_names
                .push(SanType::DnsName(name.try_into().expect("dns name")));
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("leaf certificate");
        let dir = self.dir.path().join(name);
        std::fs::create_dir_all(&dir).expect("identity dir");
        std::fs::write(dir.join("cert.pem"), cert.pem()).expect("write cert");
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).expect("write key");
        std::fs::write(dir.join("ca.pem"), &self.ca_pem).expect("write ca");
        dir
    }

    /// A node directory with identity and a configuration on 127.0.0.1:0.
    pub fn node(&self, id: &str, index: u8, backend: StoreBackend) -> NodeConfig {
        let dir = self.issue(id, Some(Role::Node));
        let mut config = NodeConfig::in_dir(
            id,
            ShareIndex::new(index).expect("index"),
            "127.0.0.1:0".parse().expect("addr"),
            &dir,
        );
        config.store.backend = backend;
        config.limits.request_timeout_ms = 5_000;
        config
    }
}

/// A client endpoint and a connection to `node_id` at `addr` with the identity in `dir`.
pub async fn connect(dir: &Path, addr: SocketAddr, node_id: &str) -> quinn::Connection {
    let identity = Identity::load(dir).expect("identity");
    let config = client_config(&identity).expect("client config");
    connect_with(config, addr, node_id).await
}

/// Like [`connect`], for a certificate that `Identity` refuses (no role): builds the TLS
/// client configuration by hand with the same provider.
pub async fn connect_without_role_check(
    dir: &Path,
    addr: SocketAddr,
    node_id: &str,
) -> quinn::Connection {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("cert.pem"))
        .expect("cert")
        .collect::<Result<_, _>>()
        .expect("certs");
    let key = PrivateKeyDer::from_pem_file(dir.join("key.pem")).expect("key");
    let ca = CertificateDer::from_pem_file(dir.join("ca.pem")).expect("ca");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).expect("root");
    let mut tls = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .expect("client auth");
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(tls)).expect("quic");
    connect_with(quinn::ClientConfig::new(Arc::new(quic)), addr, node_id).await
}

async fn connect_with(
    config: quinn::ClientConfig,
    addr: SocketAddr,
    node_id: &str,
) -> quinn::Connection {
    let mut endpoint =
        quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
    endpoint.set_default_client_config(config);
    endpoint
        .connect(addr, node_id)
        .expect("connect")
        .await
        .expect("handshake")
}

/// Sends `bytes` as the whole request stream and decodes the one response frame.
pub async fn exchange_raw(
    connection: &quinn::Connection,
    bytes: &[u8],
) -> anyhow::Result<Response> {
    let (mut send, mut recv) = connection.open_bi().await?;
    send.write_all(bytes).await?;
    send.finish()?;
    let answer = recv.read_to_end(FRAME_MAX_BYTES as usize + 4).await?;
    Ok(frame::decode(&answer, FRAME_MAX_BYTES, "response")?)
}

/// Sends one request and returns the response.
pub async fn call(connection: &quinn::Connection, request: &Request) -> Response {
    let bytes = frame::encode(request, "request").expect("encode");
    exchange_raw(connection, &bytes).await.expect("exchange")
}
