//! Transport security: only certificates from the cluster CA get an answer, only the hybrid
//! post-quantum key exchange is spoken, and bad frames get an error without hurting the node.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bunsan_client::{tls, Client, ClientOptions, Identity};
use bunsan_cluster::init::{init, InitOptions};
use bunsan_protocol::frame::{self, FRAME_MAX_BYTES};
use bunsan_protocol::message::{ErrorCode, Request, Response, ALPN};
use bunsan_tests::{client, key, purpose, start_cluster};
use rustls::crypto::SupportedKxGroup;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

const NODE: &str = env!("CARGO_BIN_EXE_bunsan-test-node");

fn certs(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .expect("readable PEM")
        .collect::<Result<_, _>>()
        .expect("certificates")
}

fn key_of(path: &Path) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_file(path).expect("a private key")
}

/// A QUIC client config that trusts `ca`, presents `auth` (if any) and offers only `groups`.
fn raw_client_config(
    ca: &Path,
    auth: Option<(&Path, &Path)>,
    groups: Vec<&'static dyn SupportedKxGroup>,
) -> quinn::ClientConfig {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.kx_groups = groups;
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs(ca) {
        roots.add(cert).expect("a CA certificate");
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots);
    let mut config = match auth {
        Some((cert, key)) => builder
            .with_client_auth_cert(certs(cert), key_of(key))
            .expect("client auth"),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(config)).expect("QUIC");
    quinn::ClientConfig::new(Arc::new(quic))
}

/// Sends raw `bytes` on one stream of a fresh connection and returns the raw answer.
async fn exchange(
    config: quinn::ClientConfig,
    address: SocketAddr,
    server_name: &str,
    bytes: &[u8],
) -> Result<Vec<u8>, String> {
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().expect("address"))
        .map_err(|e| e.to_string())?;
    endpoint.set_default_client_config(config);
    let attempt = async {
        let connection = endpoint
            .connect(address, server_name)
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        let answer = send_on(&connection, bytes).await;
        connection.close(0u32.into(), b"done");
        answer
    };
    tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .map_err(|_| "timed out".to_owned())?
}

async fn send_on(connection: &quinn::Connection, bytes: &[u8]) -> Result<Vec<u8>, String> {
    let (mut send, mut recv) = connection.open_bi().await.map_err(|e| e.to_string())?;
    send.write_all(bytes).await.map_err(|e| e.to_string())?;
    send.finish().map_err(|e| e.to_string())?;
    recv.read_to_end(1 << 20).await.map_err(|e| e.to_string())
}

fn health_frame() -> Vec<u8> {
    frame::encode(&Request::Health, "request").expect("encode")
}

fn decode(bytes: &[u8]) -> Response {
    frame::decode(bytes, FRAME_MAX_BYTES, "response").expect("a well-formed response")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_from_another_ca_and_missing_certificates_are_refused() {
    let cluster = start_cluster(NODE, 3, 2).await;
    let node = &cluster.manifest().nodes[0];
    let ca = cluster.dir().join("ca/ca.pem");
    let reader = cluster.dir().join("clients/reader");

    // The genuine reader identity is answered.
    let good = raw_client_config(
        &ca,
        Some((&reader.join("cert.pem"), &reader.join("key.pem"))),
        vec![rustls::crypto::aws_lc_rs::kx_group::X25519MLKEM768],
    );
    let answer = exchange(good, node.addresses[0], &node.id, &health_frame())
        .await
        .expect("the genuine identity is answered");
    assert!(matches!(decode(&answer), Response::Health(_)));

    // A reader certificate from another cluster's CA (the client still trusts our CA).
    let other = tempfile::tempdir().expect("tempdir");
    init(
        other.path(),
        &InitOptions {
            base_port: 0,
            nodes: 3,
            threshold: 2,
            ..InitOptions::default()
        },
    )
    .expect("a second cluster");
    let foreign = other.path().join("clients/reader");
    let config = raw_client_config(
        &ca,
        Some((&foreign.join("cert.pem"), &foreign.join("key.pem"))),
        vec![rustls::crypto::aws_lc_rs::kx_group::X25519MLKEM768],
    );
    let refused = exchange(config, node.addresses[0], &node.id, &health_frame()).await;
    assert!(refused.is_err(), "a foreign CA's certificate was answered");

    // The same through the SDK: an identity whose certificate is foreign.
    let identity = Identity::from_files(&foreign.join("cert.pem"), &foreign.join("key.pem"), &ca)
        .expect("identity");
    let sdk = Client::new(
        cluster.manifest().clone(),
        identity,
        ClientOptions::default(),
    )
    .expect("client");
    assert!(sdk.health(&node.id).await.is_err());

    // No client certificate at all.
    let config = raw_client_config(
        &ca,
        None,
        vec![rustls::crypto::aws_lc_rs::kx_group::X25519MLKEM768],
    );
    let refused = exchange(config, node.addresses[0], &node.id, &health_frame()).await;
    assert!(
        refused.is_err(),
        "a client without a certificate was answered"
    );

    // The node still serves genuine clients.
    assert!(client(&cluster, "reader").health(&node.id).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_offering_only_classical_key_exchange_is_refused() {
    let cluster = start_cluster(NODE, 3, 2).await;
    let node = &cluster.manifest().nodes[0];
    let ca = cluster.dir().join("ca/ca.pem");
    let reader = cluster.dir().join("clients/reader");
    let identity = Some((reader.join("cert.pem"), reader.join("key.pem")));
    let auth = identity.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));
    for group in [
        rustls::crypto::aws_lc_rs::kx_group::X25519,
        rustls::crypto::aws_lc_rs::kx_group::SECP256R1,
        rustls::crypto::aws_lc_rs::kx_group::SECP384R1,
    ] {
        let config = raw_client_config(&ca, auth, vec![group]);
        let result = exchange(config, node.addresses[0], &node.id, &health_frame()).await;
        assert!(result.is_err(), "{:?} alone was accepted", group.name());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_offering_only_classical_key_exchange_is_refused_by_clients() {
    let cluster = start_cluster(NODE, 3, 2).await;
    // An impostor endpoint with node-1's genuine certificate but classical key exchange only.
    let node_dir = cluster.dir().join("nodes/node-1");
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.kx_groups = vec![rustls::crypto::aws_lc_rs::kx_group::X25519];
    let mut server = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_no_client_auth()
        .with_single_cert(
            certs(&node_dir.join("cert.pem")),
            key_of(&node_dir.join("key.pem")),
        )
        .expect("server config");
    server.alpn_protocols = vec![ALPN.to_vec()];
    let server = tls::quic_server_config(server).expect("QUIC server config");
    let impostor =
        quinn::Endpoint::server(server, "127.0.0.1:0".parse().expect("address")).expect("bind");
    let address = impostor.local_addr().expect("address");
    tokio::spawn(async move {
        while let Some(incoming) = impostor.accept().await {
            let _ = incoming.await;
        }
    });
    let mut manifest = cluster.manifest().clone();
    manifest.nodes[0].addresses = vec![address];
    let identity = Identity::load(&cluster.dir().join("clients/reader")).expect("identity");
    let sdk = Client::new(manifest, identity, ClientOptions::default()).expect("client");
    let error = sdk
        .health("node-1")
        .await
        .expect_err("a classical-only node must be refused");
    assert!(error.to_string().contains("node-1"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_get_errors_and_the_node_keeps_serving() {
    let cluster = start_cluster(NODE, 5, 3).await;
    let collector = client(&cluster, "collector");
    let k = key("frames/record");
    collector.put(&k, b"still here").await.expect("put");
    let node = &cluster.manifest().nodes[2];
    let ca = cluster.dir().join("ca/ca.pem");
    let reader = cluster.dir().join("clients/reader");
    let config = raw_client_config(
        &ca,
        Some((&reader.join("cert.pem"), &reader.join("key.pem"))),
        vec![rustls::crypto::aws_lc_rs::kx_group::X25519MLKEM768],
    );
    let mut endpoint =
        quinn::Endpoint::client("127.0.0.1:0".parse().expect("address")).expect("bind");
    endpoint.set_default_client_config(config);
    let connection = endpoint
        .connect(node.addresses[0], &node.id)
        .expect("connect")
        .await
        .expect("handshake");

    let expect_error = |answer: Result<Vec<u8>, String>, code: ErrorCode| match answer {
        Ok(bytes) => match decode(&bytes) {
            Response::Error(error) => assert_eq!(error.code, code, "{}", error.message),
            other => panic!("expected {code:?}, got {other:?}"),
        },
        Err(e) => panic!("expected an error response, the stream failed: {e}"),
    };
    // Garbage body.
    let mut garbage = 7u32.to_be_bytes().to_vec();
    garbage.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef, 0xff, 0xff, 0xff]);
    expect_error(send_on(&connection, &garbage).await, ErrorCode::BadRequest);
    // A frame announcing more than the limit.
    expect_error(
        send_on(&connection, &(FRAME_MAX_BYTES + 1).to_be_bytes()).await,
        ErrorCode::TooLarge,
    );
    expect_error(
        send_on(&connection, &u32::MAX.to_be_bytes()).await,
        ErrorCode::TooLarge,
    );
    // A frame cut short.
    let mut short = 100u32.to_be_bytes().to_vec();
    short.extend_from_slice(b"abc");
    expect_error(send_on(&connection, &short).await, ErrorCode::BadRequest);
    // Two bytes: not even a length prefix.
    expect_error(send_on(&connection, &[0, 1]).await, ErrorCode::BadRequest);
    // A well-formed frame around an inconsistent envelope.
    let body = postcard_put_with_wrong_length();
    let mut bad_envelope = (body.len() as u32).to_be_bytes().to_vec();
    bad_envelope.extend_from_slice(&body);
    expect_error(
        send_on(&connection, &bad_envelope).await,
        ErrorCode::BadRequest,
    );

    // The same connection still works, and so does every other client.
    let answer = send_on(&connection, &health_frame()).await.expect("health");
    assert!(matches!(decode(&answer), Response::Health(_)));
    let back = client(&cluster, "reader")
        .get(&k, &purpose())
        .await
        .expect("get");
    assert_eq!(back.as_slice(), b"still here");
}

/// A `Request::Put` body whose envelope claims a record length its payload does not have.
fn postcard_put_with_wrong_length() -> Vec<u8> {
    use bunsan_protocol::{RequestId, ShareIndex, Version, WriterId};
    let mut envelope = bunsan_node::store::conformance::sample_share(
        key("frames/forged"),
        Version {
            clock_micros: 1,
            writer: WriterId(1),
        },
        ShareIndex::new(3).expect("index"),
        &[1, 2, 3],
    );
    envelope.header.record_len = 1000;
    let request = Request::Put {
        request_id: RequestId([0; 16]),
        envelope,
    };
    let frame = frame::encode(&request, "request").expect("encode");
    frame[frame::PREFIX_BYTES..].to_vec()
}
