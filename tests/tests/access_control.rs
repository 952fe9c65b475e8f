//! Access control, enforced by every node on its own: the role × operation matrix, the
//! identities that never get in (no certificate, another CA's, an expired or a revoked one),
//! and revocation on a running cluster without a restart (file change and SIGHUP), failing
//! closed when the CRL expires.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bunsan_client::{tls, Client, ClientOptions, Error, Identity};
use bunsan_cluster::init::{init, issue_with_validity, InitOptions};
use bunsan_cluster::local::{LocalCluster, LocalOptions};
use bunsan_cluster::{renew_crl, revoke, CrlWindow, RevocationReason, Validity};
use bunsan_protocol::frame::{self, FRAME_MAX_BYTES};
use bunsan_protocol::message::{ErrorCode, Request, Response};
use bunsan_protocol::role::Role;
use bunsan_protocol::RequestId;
use bunsan_tests::{client, client_from_dir, eventually, key, purpose, start_cluster};

const NODE: &str = env!("CARGO_BIN_EXE_bunsan-test-node");

/// How long nodes may take to apply a CRL change: they look at the file every second.
const RELOAD_LIMIT: Duration = Duration::from_secs(5);

/// Every operation a client can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Health,
    Put,
    Get,
    Delete,
    List,
    Status,
}

const OPS: [Op; 6] = [
    Op::Health,
    Op::Put,
    Op::Get,
    Op::Delete,
    Op::List,
    Op::Status,
];

/// What each role may do, as issue 4 states it. The auditor's one other right, reading audit
/// logs, arrives with the audit log: add those operations to `Op` and to this table then.
fn allowed(role: Role) -> &'static [Op] {
    match role {
        Role::Collector => &[Op::Health, Op::Put],
        Role::Reader => &[Op::Health, Op::Get],
        Role::Auditor => &[Op::Health],
        Role::Admin => &[Op::Health, Op::Delete, Op::List, Op::Status],
        Role::Node => &[Op::Health, Op::Status, Op::List],
    }
}

/// Runs `op` as `client`; `name` keeps the records of different identities apart.
async fn attempt(client: &Client, name: &str, op: Op) -> Result<(), Error> {
    match op {
        Op::Health => client.health("node-1").await.map(drop),
        Op::Put => client
            .put(&key(&format!("matrix/put-{name}")), b"record")
            .await
            .map(drop),
        Op::Get => client
            .get(&key("matrix/record"), &purpose())
            .await
            .map(drop),
        Op::Delete => client
            .delete(&key(&format!("matrix/delete-{name}")))
            .await
            .map(drop),
        Op::List => client.list("matrix/").await.map(drop),
        Op::Status => client.status("node-1").await.map(drop),
    }
}

/// A refusal with the typed error the client shows: `Remote { Forbidden }` from the one node
/// asked, or a quorum error in which every one of the `nodes` nodes answered `Forbidden`.
fn assert_forbidden(error: &Error, nodes: usize, context: &str) {
    match error {
        Error::Remote { error, .. } => {
            assert_eq!(error.code, ErrorCode::Forbidden, "{context}: {error}")
        }
        Error::WriteQuorumNotMet { failures, .. } | Error::NotEnoughShares { failures, .. } => {
            assert_eq!(
                failures.len(),
                nodes,
                "{context}: every node decides: {error}"
            );
            for failure in failures {
                assert_eq!(
                    failure.code,
                    Some(ErrorCode::Forbidden),
                    "{context}: {failure}"
                );
                assert!(
                    failure.to_string().contains(" refused: Forbidden: role "),
                    "{context}: {failure}"
                );
            }
        }
        other => panic!("{context}: expected a Forbidden refusal, got {other}"),
    }
    assert!(error.is_forbidden(), "{context}");
}

/// A refusal before any request is read: the TLS handshake failed at every node asked, for a
/// reason containing `needle`.
fn assert_refused_at_handshake(error: &Error, needle: &str, context: &str) {
    assert!(
        !error.is_forbidden(),
        "{context}: refused by role, not by TLS"
    );
    let failures = error.node_failures();
    assert!(!failures.is_empty(), "{context}: {error}");
    for failure in failures {
        assert!(
            failure.reason.to_lowercase().contains(needle),
            "{context}: expected {needle:?} in {failure}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_operation_matrix() {
    let cluster = start_cluster(NODE, 3, 2).await;
    let nodes = cluster.manifest().nodes.len();
    client(&cluster, "collector")
        .put(&key("matrix/record"), b"the record")
        .await
        .expect("a collector may put");

    let mut identities: Vec<(Role, &str, Client)> = Role::ALL
        .into_iter()
        .filter(|&role| role != Role::Node)
        .map(|role| (role, role.as_str(), client(&cluster, role.as_str())))
        .collect();
    // A node calling another node presents its own node certificate.
    let node_dir = cluster.dir().join("nodes/node-2");
    identities.push((Role::Node, "node-2", client_from_dir(&cluster, &node_dir)));
    for (role, name, client) in &identities {
        for op in OPS {
            let context = format!("{role} {op:?}");
            match attempt(client, name, op).await {
                Ok(()) => assert!(allowed(*role).contains(&op), "{context} was allowed"),
                Err(error) if allowed(*role).contains(&op) => panic!("{context}: {error}"),
                Err(error) => assert_forbidden(&error, nodes, &context),
            }
        }
    }

    // A reader must state a purpose: without one the node refuses to release its share.
    let no_purpose = Request::Get {
        request_id: RequestId([7; 16]),
        key: key("matrix/record"),
        purpose: None,
        version: None,
    };
    match client(&cluster, "reader").call("node-1", &no_purpose).await {
        Ok(Response::Error(error)) => assert_eq!(error.code, ErrorCode::BadRequest, "{error}"),
        other => panic!("a get without a purpose must be refused, got {other:?}"),
    }

    // What the CLI prints for a refusal names the node, the code and the reason (which nodes
    // were asked for shares, rather than probed, turns from get to get).
    let refusal = attempt(&identities[0].2, "collector", Op::Get)
        .await
        .expect_err("a collector may not get");
    assert!(
        refusal
            .to_string()
            .contains("refused: Forbidden: role collector may not get"),
        "{refusal}"
    );

    // Identities that never get in, whatever they ask: each operation fails at the handshake.
    let now = time::OffsetDateTime::now_utc();
    let past = Validity {
        not_before: now - time::Duration::days(10),
        not_after: now - time::Duration::days(1),
    };
    let expired_dir = issue_with_validity(cluster.dir(), Role::Reader, "expired-reader", past)
        .expect("issue an expired certificate");
    let revoked_dir = bunsan_cluster::issue(cluster.dir(), Role::Reader, "revoked-reader")
        .expect("issue a certificate to revoke");
    revoke(
        cluster.dir(),
        "revoked-reader",
        RevocationReason::KeyCompromise,
        CrlWindow::default(),
    )
    .expect("revoke");
    for index in 1..=3 {
        assert!(
            cluster.reload_node(index).expect("SIGHUP"),
            "node-{index} runs"
        );
    }
    let other = tempfile::tempdir().expect("tempdir");
    init(
        other.path(),
        &InitOptions {
            nodes: 3,
            threshold: 2,
            base_port: 0,
            ..InitOptions::default()
        },
    )
    .expect("another cluster");
    let foreign = other.path().join("clients/reader");
    // The foreign reader trusts our CA, so only our nodes' verdict on its certificate counts.
    let foreign_identity = Identity::from_files(
        &foreign.join("cert.pem"),
        &foreign.join("key.pem"),
        &cluster.dir().join("ca/ca.pem"),
    )
    .expect("identity");
    let foreign_client = Client::new(
        cluster.manifest().clone(),
        foreign_identity,
        ClientOptions {
            timeout: Duration::from_secs(5),
            ..ClientOptions::default()
        },
    )
    .expect("client");
    let revoked_client = client_from_dir(&cluster, &revoked_dir);
    let revoked = &revoked_client;
    eventually(
        "the revoked reader is refused",
        RELOAD_LIMIT,
        move || async move { revoked.health("node-3").await.err() },
    )
    .await;
    let outsiders = [
        (
            "expired",
            client_from_dir(&cluster, &expired_dir),
            "expired",
        ),
        ("another CA's", foreign_client, "unknownissuer"),
        ("revoked", revoked_client, "revoked"),
    ];
    for (what, client, needle) in &outsiders {
        for op in OPS {
            let context = format!("{what} reader {op:?}");
            match attempt(client, "outsider", op).await {
                Ok(()) => panic!("{context} was allowed"),
                Err(error) => assert_refused_at_handshake(&error, needle, &context),
            }
        }
    }
    let node = &cluster.manifest().nodes[0];
    let anonymous = raw_client(&cluster.dir().join("ca/ca.pem"), None);
    let refused = health_over(&anonymous, node.addresses[0], &node.id).await;
    assert!(
        refused.is_err(),
        "a client without a certificate was answered"
    );

    // Through all of it the nodes kept serving the legitimate identities.
    let back = client(&cluster, "reader")
        .get(&key("matrix/record"), &purpose())
        .await
        .expect("the reader still reads");
    assert_eq!(back.as_slice(), b"the record");
    cluster.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_takes_effect_on_a_running_cluster() {
    let cluster = start_cluster(NODE, 3, 2).await;
    let k = key("revocation/record");
    client(&cluster, "collector")
        .put(&k, b"before")
        .await
        .expect("put");
    let reader = client(&cluster, "reader");
    reader.get(&k, &purpose()).await.expect("the reader reads");
    let node = cluster.manifest().nodes[0].clone();
    let ca = cluster.dir().join("ca/ca.pem");
    let reader_dir = cluster.dir().join("clients/reader");
    let admin_dir = cluster.dir().join("clients/admin");
    let reader_live = connect(&raw_client(&ca, Some(&reader_dir)), &node).await;
    let admin_live = connect(&raw_client(&ca, Some(&admin_dir)), &node).await;
    ask_health(&reader_live)
        .await
        .expect("reader connection works");

    revoke(
        cluster.dir(),
        "reader",
        RevocationReason::KeyCompromise,
        CrlWindow::default(),
    )
    .expect("revoke the reader");

    // The node closes the reader's live connection, saying why, without a restart.
    let closed = tokio::time::timeout(RELOAD_LIMIT, reader_live.closed())
        .await
        .expect("the revoked reader's live connection is closed");
    match closed {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(close.error_code, quinn::VarInt::from_u32(2));
            assert_eq!(&close.reason[..], b"certificate revoked");
        }
        other => panic!("closed for the wrong reason: {other}"),
    }
    // New connections are refused by every node (each reloads on its own within a second);
    // the same SDK client, whose cached connections were closed, sees it too.
    let (reader_ref, key_ref) = (&reader, &k);
    let error = eventually(
        "every node refuses the reader",
        RELOAD_LIMIT,
        move || async move {
            let error = reader_ref.get(key_ref, &purpose()).await.err()?;
            (error.node_failures().len() == 3).then_some(error)
        },
    )
    .await;
    assert_refused_at_handshake(&error, "revoked", "revoked reader get");
    // Everyone else carries on, live connections included.
    ask_health(&admin_live)
        .await
        .expect("the admin's live connection was left open");
    client(&cluster, "collector")
        .put(&k, b"after")
        .await
        .expect("the collector still writes");
    client(&cluster, "admin")
        .status("node-2")
        .await
        .expect("the admin still sees status");

    // An unusable CRL is not applied: node-1 keeps the previous one and says so.
    std::fs::write(cluster.dir().join("nodes/node-1/crl.pem"), "not a CRL").expect("write");
    let log = &cluster.node_log(1);
    eventually(
        "node-1 reports the bad CRL",
        RELOAD_LIMIT,
        move || async move {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            text.contains("the previous crl stays in force")
                .then_some(())
        },
    )
    .await;
    client(&cluster, "admin")
        .health("node-1")
        .await
        .expect("node-1 still serves the admin");
    let still_revoked = client(&cluster, "reader")
        .health("node-1")
        .await
        .expect_err("the reader stays revoked on node-1");
    assert_refused_at_handshake(&still_revoked, "revoked", "reader after a bad CRL");

    // An expired CRL fails every node closed: live connections end, handshakes are refused.
    let now = time::OffsetDateTime::now_utc();
    let expired = CrlWindow {
        this_update: now - time::Duration::days(2),
        next_update: now - time::Duration::days(1),
    };
    renew_crl(cluster.dir(), expired).expect("publish an expired CRL");
    let closed = tokio::time::timeout(RELOAD_LIMIT, admin_live.closed())
        .await
        .expect("live connections are closed when the CRL expires");
    assert!(closed.to_string().contains("crl expired"), "{closed}");
    let admin = &client(&cluster, "admin");
    for node in &cluster.manifest().nodes {
        let id = node.id.as_str();
        // A connection made just before this node reloaded is closed by the reload instead
        // ("crl expired"); the state to reach is new handshakes refused.
        let error = eventually(
            "every node refuses the admin's handshake",
            RELOAD_LIMIT,
            move || async move {
                let error = admin.health(id).await.err()?;
                let failures = error.node_failures();
                let at_handshake = !failures.is_empty()
                    && failures.iter().all(|failure| {
                        failure
                            .reason
                            .to_lowercase()
                            .contains("revocation list expired")
                    });
                at_handshake.then_some(error)
            },
        )
        .await;
        assert_refused_at_handshake(&error, "revocation list expired", "expired CRL");
    }
    // A renewed CRL opens the nodes again, with the revocation still in it.
    renew_crl(cluster.dir(), CrlWindow::default()).expect("renew");
    for node in &cluster.manifest().nodes {
        let id = node.id.as_str();
        eventually(
            "every node serves the admin again",
            RELOAD_LIMIT,
            move || async move { admin.health(id).await.ok() },
        )
        .await;
    }
    assert!(client(&cluster, "reader")
        .get(&k, &purpose())
        .await
        .is_err());
    cluster.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_crl() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = InitOptions {
        nodes: 3,
        threshold: 2,
        base_port: 0,
        ..InitOptions::default()
    };
    init(dir.path(), &options).expect("init");
    // Polling off: only SIGHUP can make these nodes read their CRL again.
    for index in 1..=3 {
        let path = dir.path().join(format!("nodes/node-{index}/node.toml"));
        let text = std::fs::read_to_string(&path).expect("node.toml");
        // First, not last: node.toml ends with its tables ([metrics]), and a key after a
        // table header belongs to that table.
        std::fs::write(&path, format!("crl_poll_ms = 0\n{text}")).expect("write");
    }
    let local = LocalOptions {
        node_binary: Some(NODE.into()),
        ..LocalOptions::default()
    };
    let cluster = LocalCluster::start_with(dir.path(), local)
        .await
        .expect("start");
    let k = key("sighup/record");
    client(&cluster, "collector")
        .put(&k, b"x")
        .await
        .expect("put");
    revoke(
        dir.path(),
        "reader",
        RevocationReason::AffiliationChanged,
        CrlWindow::default(),
    )
    .expect("revoke");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    client(&cluster, "reader")
        .get(&k, &purpose())
        .await
        .expect("without polling or SIGHUP the old CRL is still in force");

    for index in 1..=3 {
        assert!(cluster.reload_node(index).expect("SIGHUP"));
    }
    let (reader, key_ref) = (&client(&cluster, "reader"), &k);
    let error = eventually(
        "SIGHUP applies the revocation",
        RELOAD_LIMIT,
        move || async move { reader.get(key_ref, &purpose()).await.err() },
    )
    .await;
    assert!(!error.is_forbidden(), "{error}");
    client(&cluster, "collector")
        .put(&k, b"y")
        .await
        .expect("others are unaffected");
    let log = std::fs::read_to_string(cluster.node_log(2)).expect("log");
    assert!(log.contains("SIGHUP received"), "{log}");
    cluster.stop().await.expect("clean stop");
}

/// A QUIC client endpoint with Bunsan's TLS policy, presenting the identity in `identity`
/// (trusting `ca`), or no certificate at all.
fn raw_client(ca: &Path, identity: Option<&Path>) -> quinn::Endpoint {
    let config = match identity {
        Some(dir) => {
            let identity = Identity::from_files(&dir.join("cert.pem"), &dir.join("key.pem"), ca)
                .expect("identity");
            tls::client_config(&identity).expect("client config")
        }
        None => {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(rustls_pki_types::pem::PemObject::from_pem_file(ca).expect("CA"))
                .expect("root");
            let mut config = rustls::ClientConfig::builder_with_provider(tls::crypto_provider())
                .with_protocol_versions(&[&rustls::version::TLS13])
                .expect("TLS 1.3")
                .with_root_certificates(roots)
                .with_no_client_auth();
            config.alpn_protocols = vec![bunsan_protocol::message::ALPN.to_vec()];
            let quic = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::new(config))
                .expect("QUIC config");
            quinn::ClientConfig::new(Arc::new(quic))
        }
    };
    let mut endpoint =
        quinn::Endpoint::client("127.0.0.1:0".parse().expect("address")).expect("bind");
    endpoint.set_default_client_config(config);
    endpoint
}

async fn connect(
    endpoint: &quinn::Endpoint,
    node: &bunsan_protocol::manifest::NodeEntry,
) -> quinn::Connection {
    endpoint
        .connect(node.addresses[0], &node.id)
        .expect("connect")
        .await
        .expect("handshake")
}

/// One health request on its own stream of `connection`.
async fn ask_health(connection: &quinn::Connection) -> Result<Response, String> {
    let request = frame::encode(&Request::Health, "request").map_err(|e| e.to_string())?;
    let exchange = async {
        let (mut send, mut recv) = connection.open_bi().await.map_err(|e| e.to_string())?;
        send.write_all(&request).await.map_err(|e| e.to_string())?;
        send.finish().map_err(|e| e.to_string())?;
        let bytes = recv.read_to_end(1 << 16).await.map_err(|e| e.to_string())?;
        frame::decode(&bytes, FRAME_MAX_BYTES, "response").map_err(|e| e.to_string())
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| "timed out".to_owned())?
}

/// A health request over a fresh connection from `endpoint`.
async fn health_over(
    endpoint: &quinn::Endpoint,
    address: std::net::SocketAddr,
    server_name: &str,
) -> Result<Response, String> {
    let connecting = endpoint
        .connect(address, server_name)
        .map_err(|e| e.to_string())?;
    let connection = tokio::time::timeout(Duration::from_secs(5), connecting)
        .await
        .map_err(|_| "handshake timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    ask_health(&connection).await
}
