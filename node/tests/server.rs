//! A node started in-process on 127.0.0.1:0, spoken to over real QUIC with mutual TLS.

mod common;

use bunsan_node::{Error, Node, StoreBackend};
use std::path::Path;

use bunsan_client::Identity;
use bunsan_protocol::dealing;
use bunsan_protocol::envelope::ShareEnvelope;
use bunsan_protocol::message::{ErrorCode, PutOutcome, Request, Response};
use bunsan_protocol::role::Role;
use bunsan_protocol::seal::RecipientKey;
use bunsan_protocol::{Purpose, RecordKey, RequestId, Scheme, ShareIndex, Version};
use common::{call, connect, connect_without_role_check, exchange_raw, Pki};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// The three envelopes of `record` (2-of-3), signed by the collector identity in
/// `collector_dir`, with node-1's nonce sealed to the certificate at `node_cert`.
fn deal(collector_dir: &Path, node_cert: &Path, record: &[u8]) -> Vec<ShareEnvelope> {
    deal_at(collector_dir, node_cert, record, now_micros())
}

/// The wall clock in µs: nodes refuse writes older than their tombstone retention.
fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_micros() as u64
}

/// [`deal`] with the version's clock set to `clock_micros`.
fn deal_at(
    collector_dir: &Path,
    node_cert: &Path,
    record: &[u8],
    clock_micros: u64,
) -> Vec<ShareEnvelope> {
    let signer = Identity::load(collector_dir)
        .expect("identity")
        .signer()
        .expect("signer");
    let node_cert = CertificateDer::from_pem_file(node_cert).expect("node certificate");
    let recipient = RecipientKey::from_certificate(&node_cert).expect("recipient");
    dealing::deal(
        record,
        &RecordKey::new("clinic-1/patient-7/note").expect("key"),
        Version {
            clock_micros,
            writer: signer.writer_id(),
        },
        Scheme::new(2, 3).expect("scheme"),
        &[Some(recipient), None, None],
        &signer,
        &mut rand::rng(),
    )
    .expect("deal")
}

fn get_request() -> Request {
    Request::Get {
        request_id: RequestId([7; 16]),
        key: RecordKey::new("clinic-1/patient-7/note").expect("key"),
        purpose: Some(Purpose::new("treatment", "ward round").expect("purpose")),
        version: None,
    }
}

fn code(response: &Response) -> Option<ErrorCode> {
    match response {
        Response::Error(e) => Some(e.code),
        _ => None,
    }
}

fn assert_healthy(response: &Response) {
    match response {
        Response::Health(h) => assert_eq!(h.node_id, "node-1"),
        other => panic!("expected health, got {other:?}"),
    }
}

#[tokio::test]
async fn health_survives_a_garbage_frame() {
    let pki = Pki::new();
    let node = Node::start(pki.node("node-1", 1, StoreBackend::Memory))
        .await
        .expect("start");
    let conn = connect(
        &pki.issue("ops", Some(Role::Auditor)),
        node.local_addr(),
        "node-1",
    )
    .await;
    assert_healthy(&call(&conn, &Request::Health).await);

    let garbage = [0, 0, 0, 5, 0xff, 0xfe, 0xfd, 0xfc, 0xfb];
    let answer = exchange_raw(&conn, &garbage).await.expect("answer");
    assert_eq!(code(&answer), Some(ErrorCode::BadRequest), "{answer:?}");

    // The connection, and the node, keep serving.
    assert_healthy(&call(&conn, &Request::Health).await);
    node.shutdown().await;
}

#[tokio::test]
async fn oversized_and_truncated_frames_are_answered() {
    let pki = Pki::new();
    let node = Node::start(pki.node("node-1", 1, StoreBackend::Memory))
        .await
        .expect("start");
    let conn = connect(
        &pki.issue("ops", Some(Role::Admin)),
        node.local_addr(),
        "node-1",
    )
    .await;
    let too_large = exchange_raw(&conn, &u32::MAX.to_be_bytes())
        .await
        .expect("answer");
    assert_eq!(code(&too_large), Some(ErrorCode::TooLarge), "{too_large:?}");
    let truncated = exchange_raw(&conn, &[0, 0, 0, 100, 1, 2, 3])
        .await
        .expect("answer");
    assert_eq!(
        code(&truncated),
        Some(ErrorCode::BadRequest),
        "{truncated:?}"
    );
    let empty = exchange_raw(&conn, &[0, 0]).await.expect("answer");
    assert_eq!(code(&empty), Some(ErrorCode::BadRequest), "{empty:?}");
    assert_healthy(&call(&conn, &Request::Health).await);
    node.shutdown().await;
}

#[tokio::test]
async fn roles_decide_what_a_peer_may_do() {
    let pki = Pki::new();
    let config = pki.node("node-1", 1, StoreBackend::Memory);
    let node = Node::start(config.clone()).await.expect("start");
    let addr = node.local_addr();
    let collector_dir = pki.issue("collector", Some(Role::Collector));
    let collector = connect(&collector_dir, addr, "node-1").await;
    let reader = connect(&pki.issue("reader", Some(Role::Reader)), addr, "node-1").await;
    let admin = connect(&pki.issue("admin", Some(Role::Admin)), addr, "node-1").await;
    let envelopes = deal(&collector_dir, &config.cert, b"share bytes");

    let put = Request::Put {
        request_id: RequestId([1; 16]),
        envelope: envelopes[0].clone(),
    };
    assert_eq!(
        call(&collector, &put).await,
        Response::Stored(PutOutcome::Stored)
    );
    assert_eq!(
        call(&collector, &put).await,
        Response::Stored(PutOutcome::AlreadyStored)
    );
    let misaddressed = Request::Put {
        request_id: RequestId([1; 16]),
        envelope: envelopes[1].clone(),
    };
    assert_eq!(
        code(&call(&collector, &misaddressed).await),
        Some(ErrorCode::WrongNode)
    );
    match call(&collector, &get_request()).await {
        Response::Error(e) => {
            assert_eq!(e.code, ErrorCode::Forbidden);
            assert!(
                e.message.contains("collector") && e.message.contains("get"),
                "{}",
                e.message
            );
        }
        other => panic!("a collector read a share: {other:?}"),
    }
    assert_eq!(
        call(&reader, &get_request()).await,
        Response::Share(envelopes[0].clone())
    );
    assert_eq!(
        code(&call(&reader, &Request::Status).await),
        Some(ErrorCode::Forbidden)
    );
    match call(&admin, &Request::Status).await {
        Response::Status(s) => assert_eq!((s.records, s.bytes), (1, 11)),
        other => panic!("{other:?}"),
    }
    node.shutdown().await;
}

#[tokio::test]
async fn a_certificate_without_a_role_is_refused() {
    let pki = Pki::new();
    let node = Node::start(pki.node("node-1", 1, StoreBackend::Memory))
        .await
        .expect("start");
    let conn =
        connect_without_role_check(&pki.issue("nobody", None), node.local_addr(), "node-1").await;
    let failure = exchange_raw(&conn, &[0, 0, 0, 1, 0])
        .await
        .expect_err("served without a role");
    let reason = conn.closed().await.to_string();
    assert!(
        reason.contains("role"),
        "close reason: {reason} (request error: {failure})"
    );
    node.shutdown().await;
}

#[tokio::test]
async fn acknowledged_shares_survive_a_restart_on_the_same_index_only() {
    let pki = Pki::new();
    let config = pki.node("node-1", 1, StoreBackend::Sled);
    let node = Node::start(config.clone()).await.expect("start");
    let collector_dir = pki.issue("collector", Some(Role::Collector));
    let collector = connect(&collector_dir, node.local_addr(), "node-1").await;
    let envelopes = deal(&collector_dir, &config.cert, &[9; 1000]);
    let put = Request::Put {
        request_id: RequestId([1; 16]),
        envelope: envelopes[0].clone(),
    };
    assert_eq!(
        call(&collector, &put).await,
        Response::Stored(PutOutcome::Stored)
    );
    drop(collector);
    node.shutdown().await;

    let mut other_index = config.clone();
    other_index.index = ShareIndex::new(2).expect("index");
    match Node::start(other_index).await {
        Err(Error::WrongIndex { found: 1, .. }) => {}
        other => panic!("node-2 served node-1's disk: {other:?}"),
    }

    let node = Node::start(config).await.expect("restart");
    let reader = connect(
        &pki.issue("reader", Some(Role::Reader)),
        node.local_addr(),
        "node-1",
    )
    .await;
    assert_eq!(
        call(&reader, &get_request()).await,
        Response::Share(envelopes[0].clone())
    );
    node.shutdown().await;
}

#[tokio::test]
async fn start_reports_a_wrong_certificate_and_a_busy_port() {
    let pki = Pki::new();
    let mut config = pki.node("node-1", 1, StoreBackend::Memory);
    let reader_dir = pki.issue("reader", Some(Role::Reader));
    let mut wrong_role = config.clone();
    wrong_role.cert = reader_dir.join("cert.pem");
    wrong_role.key = reader_dir.join("key.pem");
    match Node::start(wrong_role).await {
        Err(e @ Error::NotANodeCertificate { .. }) => assert!(e.to_string().contains("reader")),
        other => panic!("started with a reader certificate: {other:?}"),
    }
    let node = Node::start(config.clone()).await.expect("start");
    config.listen = node.local_addr();
    assert!(matches!(Node::start(config).await, Err(Error::Bind { .. })));
    node.shutdown().await;
}

#[tokio::test]
async fn a_stalled_request_times_out_and_a_full_node_refuses_connections() {
    let pki = Pki::new();
    let mut config = pki.node("node-1", 1, StoreBackend::Memory);
    config.limits.request_timeout_ms = 200;
    config.limits.max_connections = 1;
    let node = Node::start(config).await.expect("start");
    let ops = pki.issue("ops", Some(Role::Admin));
    let conn = connect(&ops, node.local_addr(), "node-1").await;

    // Half a frame, never finished: the node gives up after request_timeout_ms.
    let (mut send, mut recv) = conn.open_bi().await.expect("stream");
    send.write_all(&[0, 0, 0, 10, 1, 2]).await.expect("write");
    let started = std::time::Instant::now();
    let stalled = recv.read_to_end(1024).await;
    assert!(
        matches!(
            stalled,
            Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(_)))
        ),
        "{stalled:?}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
    assert_healthy(&call(&conn, &Request::Health).await);

    // The only connection slot is taken.
    let mut endpoint =
        quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
    let identity = bunsan_client::Identity::load(&ops).expect("identity");
    endpoint
        .set_default_client_config(bunsan_client::tls::client_config(&identity).expect("config"));
    let second = endpoint
        .connect(node.local_addr(), "node-1")
        .expect("connect")
        .await;
    assert!(second.is_err(), "a second connection was accepted");
    node.shutdown().await;
}

#[tokio::test]
async fn tombstones_are_compacted_after_their_retention_and_late_writes_refused() {
    let pki = Pki::new();
    let mut config = pki.node("node-1", 1, StoreBackend::Sled);
    config.store.tombstone_retention_secs = 1;
    config.store.compaction_interval_ms = 100;
    let node = Node::start(config.clone()).await.expect("start");
    let addr = node.local_addr();
    let collector_dir = pki.issue("collector", Some(Role::Collector));
    let admin_dir = pki.issue("admin", Some(Role::Admin));
    let collector = connect(&collector_dir, addr, "node-1").await;
    let admin = connect(&admin_dir, addr, "node-1").await;
    let reader = connect(&pki.issue("reader", Some(Role::Reader)), addr, "node-1").await;
    let envelopes = deal(&collector_dir, &config.cert, b"to be deleted");
    let put = |envelope: ShareEnvelope| Request::Put {
        request_id: RequestId([1; 16]),
        envelope,
    };
    assert_eq!(
        call(&collector, &put(envelopes[0].clone())).await,
        Response::Stored(PutOutcome::Stored)
    );
    let signer = Identity::load(&admin_dir)
        .expect("identity")
        .signer()
        .expect("signer");
    let version = Version {
        clock_micros: now_micros(),
        writer: signer.writer_id(),
    };
    let tombstones = dealing::tombstones(
        &RecordKey::new("clinic-1/patient-7/note").expect("key"),
        version,
        Scheme::new(2, 3).expect("scheme"),
        &signer,
    )
    .expect("tombstones");
    let delete = Request::Delete {
        request_id: RequestId([2; 16]),
        tombstone: tombstones[0].clone(),
    };
    assert_eq!(
        call(&admin, &delete).await,
        Response::Stored(PutOutcome::Stored)
    );
    assert_eq!(
        call(&reader, &get_request()).await,
        Response::Share(tombstones[0].clone())
    );
    // Within a few compaction passes after the retention, the tombstone is gone.
    let mut answer = Response::NotFound;
    for _ in 0..100 {
        answer = call(&reader, &get_request()).await;
        if answer == Response::NotFound {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(answer, Response::NotFound, "the tombstone was compacted");
    // A write older than the retention (the original put, replayed late) is refused, so it
    // cannot bring the record back.
    match call(&collector, &put(envelopes[0].clone())).await {
        Response::Error(e) => {
            assert_eq!(e.code, ErrorCode::BadRequest);
            assert!(e.message.contains("tombstone retention"), "{}", e.message);
        }
        other => panic!("a late write was stored: {other:?}"),
    }
    assert_eq!(call(&reader, &get_request()).await, Response::NotFound);
    // A fresh write is stored.
    let fresh = deal_at(&collector_dir, &config.cert, b"new", now_micros());
    assert_eq!(
        call(&collector, &put(fresh[0].clone())).await,
        Response::Stored(PutOutcome::Stored)
    );
    node.shutdown().await;
}

#[tokio::test]
async fn a_crl_reload_forgets_the_verified_writer_certificates() {
    let pki = Pki::new();
    let config = pki.node("node-1", 1, StoreBackend::Memory);
    let node = Node::start(config.clone()).await.expect("start");
    let collector_dir = pki.issue("collector", Some(Role::Collector));
    let collector = connect(&collector_dir, node.local_addr(), "node-1").await;
    let envelopes = deal(&collector_dir, &config.cert, b"share bytes");
    let put = Request::Put {
        request_id: RequestId([1; 16]),
        envelope: envelopes[0].clone(),
    };
    assert_eq!(
        call(&collector, &put).await,
        Response::Stored(PutOutcome::Stored)
    );
    assert_eq!(node.writer_certificates_remembered(), 1);
    // Whatever the reload finds, the next envelope's certificate is checked in full again.
    let _ = node.reload_crl();
    assert_eq!(node.writer_certificates_remembered(), 0);
    assert_eq!(
        call(&collector, &put).await,
        Response::Stored(PutOutcome::AlreadyStored)
    );
    assert_eq!(node.writer_certificates_remembered(), 1);
    node.shutdown().await;
}
