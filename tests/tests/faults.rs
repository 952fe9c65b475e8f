//! Faults: nodes killed with SIGKILL under load, frozen with SIGSTOP, and writers racing on
//! one key. A reference model says what must be readable afterwards.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bunsan_client::{Client, Error};
use bunsan_cluster::LocalCluster;
use bunsan_protocol::message::{Request, Response};
use bunsan_protocol::{RecordKey, RequestId, Version};
use bunsan_tests::{client, client_with_timeout, key, pattern, purpose, start_cluster_with_quorum};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rand::Rng;

const NODE: &str = env!("CARGO_BIN_EXE_bunsan-test-node");

/// What a writer did to one key, in the order it did it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Put(Vec<u8>),
    Delete,
}

/// The reference model of one key: every operation, and which were acknowledged. After any
/// crash sequence, a read must return the last acknowledged operation or one attempted after
/// it (an unacknowledged write may or may not have landed), never anything older.
#[derive(Debug, Default, Clone)]
struct KeyHistory {
    ops: Vec<(Op, bool)>,
}

impl KeyHistory {
    fn acceptable(&self) -> &[(Op, bool)] {
        let last_acked = self.ops.iter().rposition(|(_, acked)| *acked);
        match last_acked {
            Some(position) => &self.ops[position..],
            None => &self.ops[..],
        }
    }

    fn anything_acked(&self) -> bool {
        self.ops.iter().any(|(_, acked)| *acked)
    }
}

/// Puts (as collector) and deletes (as admin) random keys of its own. Both clients run on this
/// machine's clock and each operation starts after the previous one ended, so each key's
/// operations get increasing versions.
async fn writer(
    collector: Client,
    admin: Client,
    keys: Vec<RecordKey>,
    model: Arc<Mutex<BTreeMap<RecordKey, KeyHistory>>>,
    stop: Arc<AtomicBool>,
    seed: u64,
) {
    // Stopped by a flag, never aborted: an aborted operation would still reach some nodes
    // without the model knowing it was attempted.
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        let (k, op) = {
            let mut rng = rand::rng();
            let k = keys[rng.random_range(0..keys.len())].clone();
            let op = if rng.random_range(0..5) == 0 {
                Op::Delete
            } else {
                let len = rng.random_range(0..2048);
                Op::Put(pattern(len, seed * 1_000_003 + round))
            };
            (k, op)
        };
        let acked = match &op {
            Op::Put(data) => collector.put(&k, data).await.is_ok(),
            Op::Delete => admin.delete(&k).await.is_ok(),
        };
        model
            .lock()
            .expect("model lock")
            .entry(k)
            .or_default()
            .ops
            .push((op, acked));
    }
}

/// Sends SIGSTOP and waits until the kernel shows the process stopped: `kill` returns before
/// every thread has stopped, and a request could slip through in between.
async fn freeze(pid: Pid) {
    kill(pid, Signal::SIGSTOP).expect("SIGSTOP");
    for _ in 0..200 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().chars().next());
        if state == Some(Some('T')) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("pid {pid} did not stop");
}

fn pid_of(cluster: &LocalCluster, index: u8) -> Pid {
    let pid = cluster
        .nodes()
        .into_iter()
        .find(|node| node.index == index)
        .and_then(|node| node.pid)
        .expect("the node runs");
    Pid::from_raw(pid as i32)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_fifty_kills_under_concurrent_puts_and_deletes() {
    // W = 4: one node may be down at any time and writes still succeed.
    let mut cluster = start_cluster_with_quorum(NODE, 5, 3, Some(4)).await;
    let model = Arc::new(Mutex::new(BTreeMap::new()));
    let keys_a: Vec<_> = (0..12).map(|i| key(&format!("kill/a/{i}"))).collect();
    let keys_b: Vec<_> = (0..12).map(|i| key(&format!("kill/b/{i}"))).collect();
    let timeout = Duration::from_secs(3);
    let stop = Arc::new(AtomicBool::new(false));
    // Each writer owns its keys, so each key's operations are ordered by one client's clock.
    let writers = [
        tokio::spawn(writer(
            client_with_timeout(&cluster, "collector", timeout),
            client_with_timeout(&cluster, "admin", timeout),
            keys_a,
            Arc::clone(&model),
            Arc::clone(&stop),
            1,
        )),
        tokio::spawn(writer(
            client_with_timeout(&cluster, "collector", timeout),
            client_with_timeout(&cluster, "admin", timeout),
            keys_b,
            Arc::clone(&model),
            Arc::clone(&stop),
            2,
        )),
    ];

    // At least 50 kills, and on until the writers have had 50 writes acknowledged so the check
    // below is never vacuous, however slow the machine (capped, so a stuck cluster fails).
    let acked_so_far = || {
        model
            .lock()
            .expect("model lock")
            .values()
            .map(|h| h.ops.iter().filter(|(_, acked)| *acked).count())
            .sum::<usize>()
    };
    let mut kills = 0;
    while kills < 50 || (acked_so_far() < 50 && kills < 400) {
        let victim = rand::rng().random_range(1..=5u8);
        tokio::time::sleep(Duration::from_millis(rand::rng().random_range(20..120))).await;
        cluster.kill_node(victim).await.expect("kill -9");
        kills += 1;
        tokio::time::sleep(Duration::from_millis(rand::rng().random_range(0..80))).await;
        cluster
            .start_node(victim)
            .await
            .expect("restart after kill -9");
    }
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.expect("writer task");
    }

    // Every node is up again; every key must read as the model allows.
    let reader = client(&cluster, "reader");
    let model = model.lock().expect("model lock").clone();
    let mut acked_ops = 0;
    for (k, history) in &model {
        acked_ops += history.ops.iter().filter(|(_, acked)| *acked).count();
        let read = reader.get(k, &purpose()).await;
        let acceptable = history.acceptable();
        let ok = match &read {
            Ok(data) => acceptable
                .iter()
                .any(|(op, _)| *op == Op::Put(data.to_vec())),
            Err(Error::Deleted { .. }) => acceptable.iter().any(|(op, _)| *op == Op::Delete),
            Err(Error::NotFound { .. }) => !history.anything_acked(),
            // Nothing acknowledged: partial writes may have reached fewer than k nodes, and
            // "cannot rebuild" is an honest answer (a wrong record never is).
            Err(Error::NotEnoughShares { .. }) => !history.anything_acked(),
            Err(_) => false,
        };
        if !ok {
            let admin = client(&cluster, "admin");
            for node in &cluster.manifest().nodes {
                let held = admin.list_node_by_id(&node.id, k.as_str(), true).await;
                eprintln!("{}: {:?}", node.id, held);
            }
            eprintln!(
                "history: {:?}",
                history
                    .ops
                    .iter()
                    .map(|(op, acked)| (matches!(op, Op::Delete), *acked))
                    .collect::<Vec<_>>()
            );
        }
        assert!(
            ok,
            "{k}: read {:?} is not one of the {} acceptable outcomes",
            read.as_ref().map(|d| d.len()).map_err(|e| e.to_string()),
            acceptable.len()
        );
    }
    assert!(
        acked_ops >= 50,
        "the writers made progress ({acked_ops} acknowledged)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_node_does_not_hold_a_get_past_its_deadline() {
    let cluster = start_cluster_with_quorum(NODE, 5, 3, None).await;
    let k = key("sigstop/record");
    let record = pattern(10_000, 5);
    client(&cluster, "collector")
        .put(&k, &record)
        .await
        .expect("put");
    let reader = client_with_timeout(&cluster, "reader", Duration::from_secs(2));
    // Warm the connections, then freeze two nodes: their connections stay open but silent.
    reader.get(&k, &purpose()).await.expect("warm get");
    let frozen = [pid_of(&cluster, 2), pid_of(&cluster, 5)];
    for pid in frozen {
        freeze(pid).await;
    }
    for _ in 0..3 {
        let back = reader
            .get(&k, &purpose())
            .await
            .expect("a get succeeds from the three live nodes");
        assert!(back.as_slice() == record.as_slice());
    }
    // With a third node frozen the get cannot succeed: it must fail at its deadline, naming
    // what it found, rather than hang.
    let third = pid_of(&cluster, 3);
    freeze(third).await;
    match reader.get_versioned(&k, &purpose()).await {
        Err(Error::NotEnoughShares { found, needed, .. }) => assert_eq!((found, needed), (2, 3)),
        Err(other) => panic!("expected NotEnoughShares, got {other}"),
        Ok(outcome) => panic!(
            "2 live nodes cannot rebuild a 3-of-5 record, yet it came from {:?}",
            outcome.sources
        ),
    }
    for pid in [frozen[0], frozen[1], third] {
        kill(pid, Signal::SIGCONT).expect("SIGCONT");
    }
    let back = client(&cluster, "reader")
        .get(&k, &purpose())
        .await
        .expect("get after SIGCONT");
    assert!(back.as_slice() == record.as_slice());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_of_one_key_converge_to_the_highest_version() {
    let cluster = start_cluster_with_quorum(NODE, 5, 3, None).await;
    let k = key("race/one-key");
    let mut tasks = Vec::new();
    for writer in 0..4u64 {
        // Four sessions of the collector identity: each has its own writer id.
        let collector = client(&cluster, "collector");
        let k = k.clone();
        tasks.push(tokio::spawn(async move {
            let mut versions: Vec<(Version, Vec<u8>)> = Vec::new();
            for round in 0..15u64 {
                let data = pattern(64 + round as usize, writer * 100 + round);
                if let Ok(receipt) = collector.put(&k, &data).await {
                    versions.push((receipt.version, data));
                }
            }
            versions
        }));
    }
    let mut acknowledged = Vec::new();
    for task in tasks {
        acknowledged.extend(task.await.expect("writer task"));
    }
    let admin = client(&cluster, "admin");
    let mut held = Vec::new();
    for node in &cluster.manifest().nodes {
        let entries = admin
            .list_node_by_id(&node.id, "race/", true)
            .await
            .expect("list one node");
        assert_eq!(entries.len(), 1, "{} holds one entry", node.id);
        held.push(entries[0].version);
    }
    assert!(
        held.windows(2).all(|pair| pair[0] == pair[1]),
        "nodes disagree: {held:?}"
    );
    let newest_acked = acknowledged
        .iter()
        .map(|(version, _)| *version)
        .max()
        .expect("some write was acknowledged");
    assert!(held[0] >= newest_acked, "a node kept an older version");
    let back = client(&cluster, "reader")
        .get_versioned(&k, &purpose())
        .await
        .expect("get");
    assert_eq!(back.version, held[0]);
    if let Some((_, data)) = acknowledged.iter().find(|(v, _)| *v == back.version) {
        assert!(back.data.as_slice() == data.as_slice());
    }
}

/// Put with only `up` running: each later write reaches those nodes and fails its quorum.
async fn partial_put(cluster: &mut LocalCluster, k: &RecordKey, data: &[u8], up: &[u8]) {
    for index in 1..=5u8 {
        match up.contains(&index) {
            true if !cluster.is_running(index) => cluster.start_node(index).await.expect("start"),
            false if cluster.is_running(index) => {
                cluster.stop_node(index).await.expect("stop");
            }
            _ => {}
        }
    }
    let collector = client_with_timeout(cluster, "collector", Duration::from_secs(2));
    match collector.put(k, data).await {
        Err(Error::WriteQuorumNotMet { acked, .. }) => assert_eq!(acked, up.len()),
        other => panic!("expected a put that reaches {up:?} only, got {other:?}"),
    }
    collector.close().await;
}

/// What one node says it holds for `k`: its newest version and the versions kept under it.
async fn held_by(cluster: &LocalCluster, node: &str, k: &RecordKey) -> (Version, Vec<Version>) {
    let request = Request::Get {
        request_id: RequestId([7; 16]),
        key: k.clone(),
        purpose: Some(purpose()),
        version: None,
    };
    match client(cluster, "reader")
        .call(node, &request)
        .await
        .expect("get")
    {
        Response::Share(envelope) => (envelope.header.version, Vec::new()),
        Response::ShareWithOlder { envelope, older } => (
            envelope.header.version,
            older.iter().map(|o| o.version).collect(),
        ),
        other => panic!("{node}: {other:?}"),
    }
}

/// The kill loop above in slow motion: after an acknowledged put, three later writes each
/// reach a different minority of nodes (2 + 2 + 1), so no version is on k = 3 nodes. Every node
/// keeps the acknowledged version under its newer one, and the get falls back to it; the next
/// acknowledged put's commit frees what the nodes kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_write_reads_back_after_later_writes_fail_partway() {
    let mut cluster = start_cluster_with_quorum(NODE, 5, 3, Some(4)).await;
    let k = key("partial/record");
    let acked = pattern(3000, 11);
    let receipt = client(&cluster, "collector")
        .put(&k, &acked)
        .await
        .expect("put on every node");
    partial_put(&mut cluster, &k, &pattern(100, 12), &[1, 2]).await;
    partial_put(&mut cluster, &k, &pattern(200, 13), &[3, 4]).await;
    partial_put(&mut cluster, &k, &pattern(300, 14), &[5]).await;
    for index in 1..=5u8 {
        if !cluster.is_running(index) {
            cluster.start_node(index).await.expect("start");
        }
    }
    let mut newest = BTreeMap::new();
    for node in &cluster.manifest().nodes {
        let (head, kept) = held_by(&cluster, &node.id, &k).await;
        assert_eq!(
            kept,
            [receipt.version],
            "{} keeps the acknowledged version",
            node.id
        );
        *newest.entry(head).or_insert(0) += 1;
    }
    assert!(
        newest.values().all(|&holders| holders < 3),
        "no newer version is on k nodes: {newest:?}"
    );
    let back = client(&cluster, "reader")
        .get_versioned(&k, &purpose())
        .await
        .expect("the acknowledged write reads back");
    assert_eq!(back.version, receipt.version);
    assert!(back.data.as_slice() == acked.as_slice());
    // Repair sees the failed newest versions over the complete kept one, and leaves the key to
    // readers instead of failing to rebuild a version that only two nodes hold.
    let admin = std::sync::Arc::new(client(&cluster, "admin"));
    let plan = bunsan_cluster::inventory::plan(
        &bunsan_cluster::inventory::gather(&admin, cluster.manifest()).await,
        3,
    );
    assert_eq!(
        plan.incomplete
            .iter()
            .map(|(key, _)| key)
            .collect::<Vec<_>>(),
        [&k],
        "{plan:?}"
    );
    assert!(plan.findings.is_empty(), "{plan:?}");

    // The next acknowledged put commits: every node drops what it kept.
    let latest = pattern(500, 15);
    let collector = client(&cluster, "collector");
    let receipt = collector.put(&k, &latest).await.expect("put");
    collector.close().await;
    for node in &cluster.manifest().nodes {
        assert_eq!(
            held_by(&cluster, &node.id, &k).await,
            (receipt.version, Vec::new()),
            "{} dropped the versions it kept",
            node.id
        );
    }
    let back = client(&cluster, "reader")
        .get(&k, &purpose())
        .await
        .expect("get");
    assert!(back.as_slice() == latest.as_slice());
}

/// A get asks k nodes for their shares (and probes R − k more for their version). Whichever
/// nodes it starts with, nodes that missed the newest acknowledged write cannot make it answer
/// the older version or fail: the shares it lacks (or a probe reporting the newer version)
/// send it to the other nodes. On a cluster where every node is current, k shares suffice.
async fn every_get_finds_the_newest_version(k: u8, write_quorum: u8, behind: &[u8]) {
    let mut cluster = start_cluster_with_quorum(NODE, 5, k, Some(write_quorum)).await;
    let key = key("probe/record");
    client(&cluster, "collector")
        .put(&key, &pattern(2000, 21))
        .await
        .expect("put on every node");
    for &index in behind {
        cluster.stop_node(index).await.expect("stop");
    }
    let newer = pattern(2000, 22);
    let collector = client_with_timeout(&cluster, "collector", Duration::from_secs(2));
    let receipt = collector
        .put(&key, &newer)
        .await
        .expect("a put acknowledged by a write quorum");
    collector.close().await;
    for &index in behind {
        cluster.start_node(index).await.expect("start");
    }
    let reader = client(&cluster, "reader");
    // Five gets: the client turns which nodes it asks first, so every run of consecutive
    // nodes is tried, the nodes behind among them.
    for turn in 0..5 {
        let back = reader
            .get_versioned(&key, &purpose())
            .await
            .unwrap_or_else(|e| panic!("get {turn}: {e}"));
        assert_eq!(back.version, receipt.version, "get {turn}");
        assert!(back.data.as_slice() == newer.as_slice());
    }
    let latest = pattern(5000, 23);
    client(&cluster, "collector")
        .put(&key, &latest)
        .await
        .expect("put on every node");
    for _ in 0..5 {
        let back = reader.get_versioned(&key, &purpose()).await.expect("get");
        assert!(back.data.as_slice() == latest.as_slice());
        assert_eq!(
            back.sources.len(),
            usize::from(k),
            "k shares, from {:?}",
            back.sources
        );
    }
}

/// 3-of-5, W = 4, so R = k = 3: no probes; one node behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_get_finds_the_newest_version_whichever_k_nodes_it_asks() {
    every_get_finds_the_newest_version(3, 4, &[1]).await;
}

/// 2-of-5, W = 3, so R = 3 > k: one probe; two nodes behind hold a complete older version,
/// and only the probe's answer keeps the get from returning it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_keeps_a_get_from_answering_an_older_version() {
    every_get_finds_the_newest_version(2, 3, &[1, 2]).await;
}

/// A frozen node among the k nodes a get asks first costs that get `read_hedge`, not its
/// timeout: the get asks the others and answers while the call to the frozen node is still
/// pending, so that node is not among the get's failures (it would be, had the get waited for
/// the call to time out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_does_not_wait_for_a_frozen_node_among_its_first_k() {
    let cluster = start_cluster_with_quorum(NODE, 5, 3, None).await;
    let k = key("hedge/record");
    let record = pattern(3000, 31);
    client(&cluster, "collector")
        .put(&k, &record)
        .await
        .expect("put");
    let reader = client_with_timeout(&cluster, "reader", Duration::from_secs(30));
    reader.get(&k, &purpose()).await.expect("warm get");
    let frozen = pid_of(&cluster, 2);
    freeze(frozen).await;
    // The frozen node never fails a call within the test, so it stays among the nodes asked
    // first: in turns, three of these five gets ask it.
    for turn in 0..5 {
        let outcome = reader.get_versioned(&k, &purpose()).await.expect("get");
        assert!(outcome.data.as_slice() == record.as_slice());
        assert!(
            outcome.failures.is_empty(),
            "get {turn} waited for the frozen node: {:?}",
            outcome.failures
        );
    }
    kill(frozen, Signal::SIGCONT).expect("SIGCONT");
}
