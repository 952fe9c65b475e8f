//! The audit log end to end, on real nodes: every request (refusals included) is logged,
//! `bunsan audit verify` finds and names every kind of tampering, `report` attributes every
//! reconstruction and flags a partial release, cosigners catch a node that rewrites its log,
//! and a node whose audit store cannot be written releases nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bunsan_client::audit::{self as fetcher, AuditDir};
use bunsan_client::{Client, ClientOptions, Identity};
use bunsan_cluster::init::{init, issue, InitOptions};
use bunsan_cluster::local::{LocalCluster, LocalOptions};
use bunsan_node::audit::sled::SledAuditStore;
use bunsan_node::audit::{AuditStore, MemoryAuditStore};
use bunsan_node::{Node, NodeConfig};
use bunsan_protocol::audit::export::{entry_line, parse_entries};
use bunsan_protocol::audit::report::{self, Anomaly, ReportFilter};
use bunsan_protocol::audit::verify::{verify_logs, NodeVerdict};
use bunsan_protocol::audit::{chain_next, AuditEntry, AuditRecord, Outcome, CHAIN_GENESIS};
use bunsan_protocol::manifest::Manifest;
use bunsan_protocol::message::{ErrorCode, Request, Response};
use bunsan_protocol::role::Role;
use bunsan_protocol::{Purpose, RequestId};
use bunsan_tests::{client, key, pattern};

const NODE: &str = env!("CARGO_BIN_EXE_bunsan-test-node");

/// A 3-node, 2-of-3 cluster in `dir` whose nodes sign checkpoints every 200 ms and cosign
/// only on demand (so the tests decide when), plus two more readers.
async fn audited_cluster(dir: &Path) -> LocalCluster {
    let options = InitOptions {
        name: "audit-test".to_owned(),
        nodes: 3,
        threshold: 2,
        write_quorum: None,
        base_port: 0,
    };
    init(dir, &options).expect("init");
    for i in 1..=3 {
        let path = dir.join(format!("nodes/node-{i}/node.toml"));
        let mut text = std::fs::read_to_string(&path).expect("node.toml");
        text.push_str("\n[audit]\ncheckpoint_interval_ms = 200\ncosign_interval_ms = 3600000\n");
        std::fs::write(&path, text).expect("node.toml");
    }
    for name in ["reader-a", "reader-b"] {
        issue(dir, Role::Reader, name).expect("issue");
    }
    let options = LocalOptions {
        node_binary: Some(PathBuf::from(NODE)),
        ..LocalOptions::default()
    };
    LocalCluster::start_with(dir, options)
        .await
        .expect("cluster starts")
}

fn ca_of(cluster: &LocalCluster) -> Vec<u8> {
    Identity::load(&cluster.dir().join("clients/auditor"))
        .expect("auditor identity")
        .ca()
        .to_vec()
}

async fn fetch(cluster: &LocalCluster, dir: &Path) -> AuditDir {
    let auditor = client(cluster, "auditor");
    for node in fetcher::fetch(&auditor, &ca_of(cluster), dir, true)
        .await
        .expect("fetch")
    {
        assert_eq!(node.problem, None, "{}", node.node);
    }
    fetcher::load(dir, None).expect("load")
}

fn verdicts(dir: &Path) -> Vec<NodeVerdict> {
    let loaded = fetcher::load(dir, None).expect("load");
    verify_logs(&loaded.ca, &loaded.nodes)
}

fn purpose(code: &str, text: &str) -> Purpose {
    Purpose::new(code, text).expect("purpose")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_verifies_reports_every_reconstruction_and_names_every_tampering() {
    let root = tempfile::tempdir().expect("tempdir");
    let cluster = audited_cluster(&root.path().join("cluster")).await;
    let collector = client(&cluster, "collector");
    for (i, name) in ["audit/r1", "audit/r2", "audit/r3"].iter().enumerate() {
        collector
            .put(&key(name), &pattern(300, i as u64))
            .await
            .expect("put");
    }
    // The scripted scenario: who reads what, why.
    let script = [
        ("reader-a", "audit/r1", "treatment", "ward round"),
        ("reader-a", "audit/r2", "treatment", "discharge letter"),
        ("reader-b", "audit/r1", "research", "study 7, consented"),
        ("reader", "audit/r3", "emergency", "unconscious patient"),
    ];
    for (who, record, code, text) in script {
        client(&cluster, who)
            .get(&key(record), &purpose(code, text))
            .await
            .expect("get");
    }
    // A refusal: collectors never read.
    assert!(collector
        .get(&key("audit/r1"), &purpose("drill", "x"))
        .await
        .is_err());
    // The planted anomaly: one share fetched from one node, outside the client's fan-out.
    let planted = RequestId([0xab; 16]);
    let probe = Request::Get {
        request_id: planted,
        key: key("audit/r2"),
        purpose: Some(purpose("drill", "single node probe")),
        version: None,
    };
    let answer = client(&cluster, "reader-b")
        .call("node-1", &probe)
        .await
        .expect("call");
    assert!(matches!(answer, Response::Share(_)));

    // A refused handshake: a certificate from another cluster's CA.
    let stranger_dir = root.path().join("stranger");
    init(
        &stranger_dir,
        &InitOptions {
            name: "stranger".to_owned(),
            nodes: 2,
            threshold: 2,
            write_quorum: None,
            base_port: 0,
        },
    )
    .expect("init the stranger's cluster");
    let stranger = Identity::load(&stranger_dir.join("clients/reader")).expect("identity");
    let stranger = Client::new(
        cluster.manifest().clone(),
        stranger,
        ClientOptions {
            timeout: std::time::Duration::from_secs(3),
            ..ClientOptions::default()
        },
    )
    .expect("client");
    assert!(stranger.call("node-3", &Request::Health).await.is_err());

    let dir = root.path().join("audit");
    let loaded = fetch(&cluster, &dir).await;
    for verdict in verify_logs(&loaded.ca, &loaded.nodes) {
        assert!(
            verdict.is_ok(),
            "{}: {:?}",
            verdict.node_id,
            verdict.findings
        );
        assert!(verdict.checkpoints >= 1);
        assert_eq!(
            verdict.cosigners.len(),
            2,
            "{} is cosigned by both other nodes",
            verdict.node_id
        );
    }

    // The report attributes every scripted reconstruction, and nothing else.
    let report = report::build(
        2,
        &fetcher::entries_of(&loaded.nodes),
        &ReportFilter::default(),
    );
    let mut found: Vec<(String, String, String, String)> = report
        .reconstructions
        .iter()
        .map(|r| {
            (
                r.who.subject.clone(),
                r.key.clone(),
                r.purpose_code.clone(),
                r.purpose.clone(),
            )
        })
        .collect();
    let mut expected: Vec<(String, String, String, String)> = script
        .iter()
        .map(|(w, k, c, t)| (w.to_string(), k.to_string(), c.to_string(), t.to_string()))
        .collect();
    found.sort();
    expected.sort();
    assert_eq!(
        found, expected,
        "100% of the reconstructions, correctly attributed"
    );
    // A get asks k = 2 nodes for shares (and probes the third): two releases per reading.
    assert!(
        report.reconstructions.iter().all(|r| r.nodes.len() == 2),
        "{:?}",
        report.reconstructions
    );
    assert!(
        report.anomalies.iter().any(|a| matches!(a,
        Anomaly::PartialRelease { request_id, releases: 1, nodes, .. }
            if *request_id == planted.to_string() && nodes == &["node-1"])),
        "{:#?}",
        report.anomalies
    );
    assert!(report.anomalies.iter().any(|a| matches!(a,
        Anomaly::Missing { request_id, missing_on, .. }
            if *request_id == planted.to_string() && missing_on == &["node-2", "node-3"])));
    let refusals: Vec<_> = report
        .refused
        .iter()
        .filter(|e| e.who.subject == "collector" && e.action == "get")
        .collect();
    assert_eq!(refusals.len(), 3, "the refused get is logged on every node");
    assert!(refusals.iter().all(|e| e.detail.starts_with("Forbidden")));
    assert!(
        report.refused.iter().any(|e| e.node == "node-3"
            && e.action == "connect"
            && e.who.role == "unauthenticated"),
        "the refused handshake is logged: {:#?}",
        report.refused
    );
    let history = report::build(
        2,
        &fetcher::entries_of(&loaded.nodes),
        &ReportFilter {
            record: Some("audit/r1".to_owned()),
            ..ReportFilter::default()
        },
    );
    assert_eq!(history.reconstructions.len(), 2);
    assert!(
        history.history.len() >= 3 + 2 * 2 + 3,
        "a put and a refusal on each node, and two gets from k = 2 nodes each"
    );

    // Tampering with the fetched files: each kind is found and named, at the right entry.
    let cases: [(&str, &Tamper, &str); 4] = [
        (
            "byte edited",
            &|lines| edit_byte(lines, 5),
            "at seq 5: entry",
        ),
        (
            "entry deleted",
            &|lines| {
                lines.remove(5);
            },
            "at seq 5: entry missing",
        ),
        (
            "entries swapped",
            &|lines| lines.swap(5, 6),
            "at seq 5: entries out of order",
        ),
        (
            "tail truncated",
            &|lines| lines.truncate(lines.len() - 3),
            "log truncated",
        ),
    ];
    for (name, tamper, expected) in cases {
        let copy = root.path().join(name.replace(' ', "-"));
        copy_dir(&dir, &copy);
        let entries = copy.join("nodes/node-2/entries");
        let mut lines: Vec<String> = std::fs::read_to_string(&entries)
            .expect("entries")
            .lines()
            .map(str::to_owned)
            .collect();
        tamper(&mut lines);
        std::fs::write(&entries, lines.join("\n") + "\n").expect("write");
        let verdicts = verdicts(&copy);
        let node2 = verdicts
            .iter()
            .find(|v| v.node_id == "node-2")
            .expect("node-2");
        let first = node2.first().map(ToString::to_string).unwrap_or_default();
        assert!(first.contains(expected), "{name}: {first}");
        assert!(
            verdicts
                .iter()
                .filter(|v| v.node_id != "node-2")
                .all(NodeVerdict::is_ok),
            "{name}: only node-2 fails"
        );
    }
}

/// An edit of the lines of a fetched `entries` file.
type Tamper = dyn Fn(&mut Vec<String>);

/// Flips the last byte of the entry on line `at`, keeping its recorded chain value.
fn edit_byte(lines: &mut [String], at: usize) {
    let parsed = parse_entries(&lines[at]).remove(0);
    let mut entry = parsed.entry.expect("entry");
    let last = entry.len() - 1;
    entry[last] ^= 0x01;
    let record = AuditRecord {
        entry,
        chain: parsed.chain.expect("chain"),
    };
    lines[at] = entry_line(at as u64, &record).trim_end().to_owned();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir").flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_rewrites_its_log_is_caught_by_its_cosigners() {
    let root = tempfile::tempdir().expect("tempdir");
    let mut cluster = audited_cluster(&root.path().join("cluster")).await;
    let collector = client(&cluster, "collector");
    collector
        .put(&key("fork/r1"), b"record one")
        .await
        .expect("put");
    client(&cluster, "reader")
        .get(&key("fork/r1"), &purpose("treatment", "the read to hide"))
        .await
        .expect("get");
    let before = root.path().join("before");
    fetch(&cluster, &before).await;
    assert!(verdicts(&before).iter().all(NodeVerdict::is_ok));

    // node-1's operator rewrites history offline: the release becomes a "not found", the chain
    // is recomputed, the old checkpoints are deleted; the node then re-signs its new history.
    cluster.stop_node(1).await.expect("stop node-1");
    {
        let store = SledAuditStore::open(&cluster.node_data_dir(1).join("audit"), "node-1")
            .await
            .expect("open node-1's audit log");
        let records = store.read(0, 10_000).await.expect("read");
        let mut head = CHAIN_GENESIS;
        let mut rewritten = false;
        for (seq, record) in records.iter().enumerate() {
            let mut entry = AuditEntry::decode(&record.entry).expect("decode");
            if entry.outcome == Outcome::Released && !rewritten {
                entry.outcome = Outcome::NotFound;
                rewritten = true;
            }
            let bytes = entry.encode().expect("encode");
            head = chain_next(&head, &bytes);
            store
                .rewrite_raw(
                    seq as u64,
                    &AuditRecord {
                        entry: bytes,
                        chain: head,
                    },
                )
                .expect("rewrite");
        }
        assert!(rewritten, "node-1 had logged the release");
        store.remove_checkpoints().expect("remove checkpoints");
    }
    cluster.start_node(1).await.expect("restart node-1");
    client(&cluster, "reader")
        .get(&key("fork/r1"), &purpose("treatment", "later read"))
        .await
        .expect("get");

    // The witnesses refuse to cosign the new history and raise an alarm in their own logs.
    let auditor = client(&cluster, "auditor");
    let round = fetcher::cosign_now(&auditor, "node-2")
        .await
        .expect("round");
    let about_node1 = round.iter().find(|r| r.log == "node-1").expect("node-1");
    assert_eq!(about_node1.cosigned, None);
    assert!(
        about_node1
            .problem
            .as_deref()
            .is_some_and(|p| p.contains("fork")),
        "{about_node1:?}"
    );

    // A fresh fetch: node-1's own data is self-consistent, but the checkpoints its witnesses
    // cosigned contradict it.
    let fresh = root.path().join("fresh");
    let loaded = fetch(&cluster, &fresh).await;
    let verdicts_fresh = verify_logs(&loaded.ca, &loaded.nodes);
    let node1 = &verdicts_fresh[0];
    assert_eq!(node1.node_id, "node-1");
    let text: Vec<String> = node1.findings.iter().map(ToString::to_string).collect();
    assert!(
        text.iter().any(|t| t.contains("log rewritten (fork)")),
        "{text:?}"
    );
    assert!(verdicts_fresh[1..].iter().all(NodeVerdict::is_ok));
    let report = report::build(
        2,
        &fetcher::entries_of(&loaded.nodes),
        &ReportFilter::default(),
    );
    assert!(report
        .anomalies
        .iter()
        .any(|a| matches!(a, Anomaly::WitnessAlarm { node, .. } if node == "node-2")));

    // The auditor's earlier directory, fetched again incrementally, shows the fork too.
    fetch(&cluster, &before).await;
    let again = verdicts(&before);
    let text: Vec<String> = again[0].findings.iter().map(ToString::to_string).collect();
    assert!(!again[0].is_ok());
    assert!(
        text.iter()
            .any(|t| t.contains("fork") || t.contains("do not match")),
        "{text:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_is_refused_when_the_audit_store_cannot_be_written() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path();
    let manifest = init(
        dir,
        &InitOptions {
            name: "failing-audit".to_owned(),
            nodes: 2,
            threshold: 2,
            write_quorum: None,
            base_port: 0,
        },
    )
    .expect("init");
    let mut config = NodeConfig::load(&dir.join("nodes/node-1/node.toml")).expect("config");
    config.listen = "127.0.0.1:0".parse().expect("addr");
    config.cluster = None;
    let store = MemoryAuditStore::new();
    let node = Node::start_with_audit(config, Arc::new(store.clone()))
        .await
        .expect("start");
    let mut nodes = manifest.nodes.clone();
    nodes[0].addresses = vec![node.local_addr()];
    let manifest = Manifest::new(manifest.name.clone(), 2, None, nodes).expect("manifest");
    let connect = |name: &str| {
        let identity = Identity::load(&dir.join("clients").join(name)).expect("identity");
        Client::new(manifest.clone(), identity, ClientOptions::default()).expect("client")
    };
    // Only node-1 runs, so the put cannot reach its quorum, but node-1 stores its share.
    let put = connect("collector").put(&key("fail/r1"), &[7; 64]).await;
    assert!(
        matches!(
            put,
            Err(bunsan_client::Error::WriteQuorumNotMet { acked: 1, .. })
        ),
        "{put:?}"
    );
    let get = Request::Get {
        request_id: RequestId([2; 16]),
        key: key("fail/r1"),
        purpose: Some(purpose("treatment", "ward round")),
        version: None,
    };
    let reader = connect("reader");
    assert!(matches!(
        reader.call("node-1", &get).await.expect("get"),
        Response::Share(_)
    ));
    let logged = store.size().await.expect("len");

    store.set_failing(true);
    match reader.call("node-1", &get).await.expect("get") {
        Response::Error(e) => {
            assert_eq!(e.code, ErrorCode::Unavailable);
            assert!(e.message.contains("audit log unavailable"), "{}", e.message);
        }
        other => panic!("a share was released without an audit entry: {other:?}"),
    }
    store.set_failing(false);
    assert!(
        matches!(
            reader.call("node-1", &get).await.expect("get"),
            Response::Error(_)
        ),
        "the node stays closed until it is restarted"
    );
    assert_eq!(
        store.size().await.expect("len"),
        logged,
        "nothing was logged"
    );
    node.shutdown().await;
}
