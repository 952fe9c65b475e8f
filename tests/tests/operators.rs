//! What operators and collectors rely on: metrics that count what happened, a status that
//! shows every node, and the SS-MIX2 collector importing a tree end to end, once.

use std::net::SocketAddr;
use std::sync::Arc;

use bunsan_client::ssmix2::synthetic::{self, SyntheticOptions};
use bunsan_client::ssmix2::{self, Document, ImportOptions, PseudonymKey};
use bunsan_client::ClientOptions;
use bunsan_cluster::LocalCluster;
use bunsan_tests::{client, key, pattern, purpose, start_cluster};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NODE: &str = env!("CARGO_BIN_EXE_bunsan-test-node");

/// The metrics address `init` wrote into node `index`'s node.toml.
fn metrics_addr(cluster: &LocalCluster, index: u8) -> SocketAddr {
    cluster
        .layout()
        .read_node_config(index)
        .expect("node.toml")
        .metrics
        .expect("init configures metrics")
        .listen
}

/// GET `path` over plain HTTP/1.1; returns the status line and the body.
async fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the metrics endpoint");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("read response");
    let (head, body) = response.split_once("\r\n\r\n").expect("a header block");
    let status = head.lines().next().unwrap_or_default().to_owned();
    (status, body.to_owned())
}

/// The value of the sample line that starts with `series` (name and labels).
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_and_status_shows_every_node() {
    let mut cluster = start_cluster(NODE, 3, 2).await;
    let collector = client(&cluster, "collector");
    // Every node sees every get (a get otherwise asks only k nodes, in turns).
    let all_shares = ClientOptions {
        read_all_shares: true,
        ..ClientOptions::default()
    };
    let reader = cluster
        .client_for("reader", all_shares.clone())
        .expect("reader");
    let collector_reading = cluster
        .client_for("collector", all_shares)
        .expect("collector");
    let mut stored_bytes = 0;
    for i in 0..4u64 {
        let len = 1000 + 100 * i as usize;
        collector
            .put(&key(&format!("metrics/{i}")), &pattern(len, i))
            .await
            .expect("put");
        stored_bytes += len;
    }
    for i in 0..2 {
        reader
            .get(&key(&format!("metrics/{i}")), &purpose())
            .await
            .expect("get");
    }
    // A collector may not read: refused on every node, and counted as such.
    assert!(collector_reading
        .get(&key("metrics/0"), &purpose())
        .await
        .is_err());

    let addr = metrics_addr(&cluster, 1);
    let (status, body) = http_get(addr, "/metrics").await;
    assert!(status.contains("200"), "{status}");
    let count =
        |series: &str| sample(&body, series).unwrap_or_else(|| panic!("{series} in\n{body}"));
    assert_eq!(
        count(r#"bunsan_requests_total{action="put",role="collector",outcome="stored"}"#),
        4.0
    );
    assert_eq!(
        count(r#"bunsan_requests_total{action="get",role="reader",outcome="released"}"#),
        2.0
    );
    assert_eq!(
        count(r#"bunsan_requests_total{action="get",role="collector",outcome="forbidden"}"#),
        1.0
    );
    // One at a time, each put travelled as a batch of one: timed as a `put-batch` request.
    assert_eq!(
        count(r#"bunsan_request_duration_seconds_count{action="put-batch"}"#),
        4.0
    );
    assert_eq!(count("bunsan_records"), 4.0);
    assert_eq!(count("bunsan_stored_bytes"), stored_bytes as f64);
    assert!(body.contains(r#"bunsan_node_info{node_id="node-1",index="1""#));
    // The audit head is read at every scrape: 4 puts, 2 gets, 1 refusal at least (entries
    // count from 0). The repair backlog is named but absent until repair publishes one.
    assert!(count("bunsan_audit_sequence") >= 6.0, "{body}");
    assert!(!body.contains("bunsan_repair_backlog_records "), "{body}");
    let (status, _) = http_get(addr, "/other").await;
    assert!(status.contains("404"), "{status}");

    let status = bunsan_cluster::status::collect(cluster.dir())
        .await
        .expect("status");
    assert!(status.all_up());
    for node in &status.nodes {
        assert_eq!(node.records, Some(4), "{}", node.id);
        assert_eq!(node.lag, Some(0), "{}", node.id);
        // Four puts, each with its entry, then whatever else the test asked: the newest
        // entry's sequence number is at least 3.
        assert!(
            node.audit_head.is_some_and(|head| head >= 3),
            "{}: audit head {:?}",
            node.id,
            node.audit_head
        );
    }
    cluster.stop_node(3).await.expect("stop node 3");
    let status = bunsan_cluster::status::collect(cluster.dir())
        .await
        .expect("status");
    assert!(!status.all_up());
    assert!(!status.nodes[2].up && status.nodes[2].lag.is_none());
    let table = status.render_table();
    assert!(
        table.lines().nth(3).is_some_and(|l| l.contains("down")),
        "{table}"
    );
    cluster.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssmix2_import_uploads_a_tree_once_and_reads_back_bit_exact() {
    let cluster = start_cluster(NODE, 3, 2).await;
    let work = tempfile::tempdir().expect("tempdir");
    let root = work.path().join("ssmix2");
    let written = synthetic::generate(
        &root,
        &SyntheticOptions {
            patients: 40,
            documents_per_patient: 6,
            seed: 7,
        },
    )
    .expect("synthetic tree");
    assert_eq!(written.len(), 240);
    // A file off the layout is ignored, not uploaded.
    std::fs::write(root.join("README.txt"), "not a document").expect("write");
    let pseudonyms = PseudonymKey::generate(&work.path().join("pseudonym.key")).expect("key");
    let options = ImportOptions {
        root: root.clone(),
        prefix: "ssmix2/clinic-1".to_owned(),
        state: work.path().join("collector.state"),
        jobs: 8,
        progress: false,
    };
    let collector = Arc::new(client(&cluster, "collector"));

    let first = ssmix2::import(Arc::clone(&collector), &pseudonyms, &options)
        .await
        .expect("first import");
    assert_eq!(
        (
            first.found,
            first.uploaded,
            first.skipped,
            first.failed,
            first.ignored
        ),
        (240, 240, 0, 0, 1),
        "{:?}",
        first.failures
    );

    // Every record comes back bit-exact for the reader, under a key without the patient id.
    let reader = client(&cluster, "reader");
    for relative in written.iter().step_by(23) {
        let document = Document::parse(relative).expect("parse");
        let record = document
            .record_key(&options.prefix, &pseudonyms)
            .expect("record key");
        assert!(!record.as_str().contains(&document.patient_id));
        let back = reader.get(&record, &purpose()).await.expect("get");
        let original = std::fs::read(root.join(relative)).expect("read");
        assert!(
            back.as_slice() == original.as_slice(),
            "{relative:?} differs"
        );
    }
    let listed = client(&cluster, "admin")
        .list("ssmix2/clinic-1/")
        .await
        .expect("list");
    assert_eq!(listed.len(), 240);

    // A re-run uploads nothing.
    let second = ssmix2::import(Arc::clone(&collector), &pseudonyms, &options)
        .await
        .expect("second import");
    assert_eq!(
        (second.found, second.uploaded, second.skipped),
        (240, 0, 240)
    );

    // A changed document is uploaded again; a rewritten but identical one is not.
    let changed = root.join(&written[0]);
    let mut bytes = std::fs::read(&changed).expect("read");
    bytes.extend_from_slice(b"NTE|1||amended\r");
    std::fs::write(&changed, &bytes).expect("write");
    let same = root.join(&written[1]);
    let original = std::fs::read(&same).expect("read");
    std::fs::write(&same, b"").expect("truncate");
    std::fs::write(&same, &original).expect("rewrite");
    let third = ssmix2::import(Arc::clone(&collector), &pseudonyms, &options)
        .await
        .expect("third import");
    assert_eq!((third.uploaded, third.skipped, third.failed), (1, 239, 0));
    let record = Document::parse(&written[0])
        .expect("parse")
        .record_key(&options.prefix, &pseudonyms)
        .expect("record key");
    let back = reader.get(&record, &purpose()).await.expect("get");
    assert!(
        back.as_slice() == bytes.as_slice(),
        "the amended version wins"
    );
    cluster.stop().await.expect("clean stop");
}
