//! Repair, refresh and drills on real nodes: a wiped node and a stale node are rebuilt without
//! any party holding k shares, a refresh keeps every record and breaks mixing of old and new
//! shares, and a drill runs end to end.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bunsan_client::audit as fetcher;
use bunsan_client::{Client, ClientOptions, Error, Identity};
use bunsan_cluster::drill::{self, DrillOptions, NodeControl};
use bunsan_cluster::inventory;
use bunsan_cluster::refresh::{self, RefreshOptions};
use bunsan_cluster::repair::{self, RepairOptions, ADMIN_CALL_TIMEOUT};
use bunsan_cluster::LocalCluster;
use bunsan_protocol::audit::Outcome;
use bunsan_protocol::envelope::ShareEnvelope;
use bunsan_protocol::gf256;
use bunsan_protocol::integrity::Signer;
use bunsan_protocol::message::{Request, Response};
use bunsan_protocol::shamir::{self, Share};
use bunsan_protocol::{RecordKey, RequestId};
use bunsan_tests::{client, key, pattern, purpose, start_cluster_with_quorum};

/// These tests stop and restart nodes on the ports `init` chose. Run side by side, one test's
/// `init` can pick a port that another test's stopped node still needs for its restart (seen:
/// a drill's node-4 could not listen on its metrics port again). One at a time, they cannot.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const NODE: &str = env!("CARGO_BIN_EXE_bunsan-test-node");

fn admin(cluster: &LocalCluster) -> Arc<Client> {
    Arc::new(
        cluster
            .client_for(
                "admin",
                ClientOptions {
                    timeout: ADMIN_CALL_TIMEOUT,
                    ..ClientOptions::default()
                },
            )
            .expect("admin identity"),
    )
}

fn admin_signer(cluster: &LocalCluster) -> Arc<Signer> {
    Arc::new(
        Identity::load(&cluster.layout().client_dir("admin"))
            .expect("admin identity")
            .signer()
            .expect("admin signer"),
    )
}

/// Node `id`'s envelope for `key`, fetched as a reader (what a reader would be released).
async fn envelope(reader: &Client, id: &str, key: &RecordKey) -> Option<ShareEnvelope> {
    let request = Request::Get {
        request_id: RequestId::random(&mut rand::rng()),
        key: key.clone(),
        purpose: Some(purpose()),
        version: None,
    };
    match reader.call(id, &request).await.expect("node answers") {
        Response::Share(envelope) => Some(envelope),
        Response::NotFound => None,
        other => panic!("{id} answered {other:?}"),
    }
}

async fn run_repair(admin: &Arc<Client>, cluster: &LocalCluster) -> repair::RepairSummary {
    repair::repair_with(
        admin,
        cluster.manifest(),
        &cluster.layout().run_dir(),
        &RepairOptions::default(),
    )
    .await
    .expect("repair runs")
}

/// BLAKE3 (hex) of every masked contribution the node at `index` logged receiving.
fn contributions_received(cluster: &LocalCluster, index: u8) -> Vec<String> {
    let log = std::fs::read_to_string(cluster.node_log(index)).expect("node log");
    log.lines()
        .filter(|line| line.contains("repair contribution received"))
        .filter_map(|line| {
            let (_, rest) = line.split_once("data_blake3=")?;
            Some(rest.split_whitespace().next()?.to_owned())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiped_and_stale_nodes_are_rebuilt_and_no_share_travels_unmasked() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    // 3-of-5, W = 4 so that writes go on while one node is down.
    let mut cluster = start_cluster_with_quorum(NODE, 5, 3, Some(4)).await;
    let collector = client(&cluster, "collector");
    let reader = client(&cluster, "reader");
    let deleter = client(&cluster, "admin");
    let mut expected: BTreeMap<RecordKey, Option<Vec<u8>>> = BTreeMap::new();
    for i in 0..10u64 {
        let (k, data) = (key(&format!("rep/{i}")), pattern(i as usize * 700, i));
        collector.put(&k, &data).await.expect("put");
        expected.insert(k, Some(data));
    }
    deleter.delete(&key("rep/3")).await.expect("delete");
    expected.insert(key("rep/3"), None);

    // node-5 misses writes, an overwrite and a delete while it is down: stale. The writes go
    // through a client that is closed before node-5 returns, or its unacknowledged background
    // put could still reach the restarted node.
    cluster.stop_node(5).await.expect("stop node-5");
    let degraded = client(&cluster, "collector");
    let degraded_admin = client(&cluster, "admin");
    for i in [1u64, 20, 21] {
        let (k, data) = (key(&format!("rep/{i}")), pattern(900 + i as usize, 100 + i));
        degraded.put(&k, &data).await.expect("degraded put");
        expected.insert(k, Some(data));
    }
    degraded_admin
        .delete(&key("rep/4"))
        .await
        .expect("degraded delete");
    expected.insert(key("rep/4"), None);
    degraded.close().await;
    degraded_admin.close().await;
    cluster.start_node(5).await.expect("restart node-5");

    let admin = admin(&cluster);
    let stale = run_repair(&admin, &cluster).await;
    assert!(stale.is_clean(), "{stale:?}");
    assert_eq!(
        (stale.repaired, stale.resent),
        (3, 1),
        "node-5 gets the overwrite, two new records and the tombstone: {stale:?}"
    );

    // The writer could not seal nonces to node-5 while it was down, so node-5 holds its
    // regenerated shares without a nonce (confirmed by two helper sets) and does not release
    // them yet: a refresh commits every share anew, sealed to every node.
    let signer = admin_signer(&cluster);
    let refreshed = refresh::refresh_with(
        &admin,
        &signer,
        cluster.manifest(),
        &RefreshOptions::default(),
    )
    .await
    .expect("refresh runs");
    assert!(refreshed.failed.is_empty(), "{refreshed:?}");

    // node-2 loses its disk: a new, empty node at the same index.
    cluster.stop_node(2).await.expect("stop node-2");
    std::fs::remove_dir_all(cluster.node_data_dir(2)).expect("wipe node-2");
    cluster.start_node(2).await.expect("start empty node-2");

    // The helpers' shares before the repair, to check nothing of them reaches a target.
    let mut helper_shares = Vec::new();
    for id in ["node-1", "node-3", "node-4", "node-5"] {
        for k in expected.keys() {
            // An empty record's shares are empty: nothing to hide, and every empty piece
            // hashes alike.
            if let Some(envelope) = envelope(&reader, id, k).await {
                if !envelope.payload.is_empty() {
                    helper_shares.push(envelope.payload);
                }
            }
        }
    }

    let summary = run_repair(&admin, &cluster).await;
    assert!(summary.is_clean(), "{summary:?}");
    assert_eq!(
        (summary.repaired, summary.resent),
        (10, 2),
        "node-2 gets every live record and tombstone: {summary:?}"
    );
    let after = inventory::plan(
        &inventory::gather(&admin, cluster.manifest()).await,
        cluster.manifest().scheme.threshold().as_usize(),
    );
    assert!(after.findings.is_empty(), "{:?}", after.findings);
    // A second run finds nothing to do.
    let again = run_repair(&admin, &cluster).await;
    assert_eq!((again.planned, again.repaired), (0, 0));

    // The audit logs: every contribution that left a helper is a `repair-release` entry (no
    // node released a share through a get for the repair), every regenerated share stored is a
    // `repair-store` entry on its target, and all of it verifies.
    let audit_dir = tempfile::tempdir().expect("tempdir");
    let auditor = client(&cluster, "auditor");
    let ca = Identity::load(&cluster.layout().client_dir("auditor"))
        .expect("auditor identity")
        .ca()
        .to_vec();
    fetcher::fetch(&auditor, &ca, audit_dir.path(), true)
        .await
        .expect("fetch the audit logs");
    let loaded = fetcher::load(audit_dir.path(), None).expect("load the audit logs");
    let logs = fetcher::entries_of(&loaded.nodes);
    let count = |node: &str, action: &str, outcome: Outcome| {
        logs.iter()
            .filter(|log| log.node_id == node)
            .flat_map(|log| &log.entries)
            .filter(|e| e.action == action && e.outcome == outcome)
            .count()
    };
    let stored = count("node-2", "repair-store", Outcome::Stored)
        + count("node-5", "repair-store", Outcome::Stored);
    assert_eq!(
        stored,
        stale.repaired + summary.repaired,
        "repair-store entries"
    );
    let released: usize = ["node-1", "node-2", "node-3", "node-4", "node-5"]
        .iter()
        .map(|node| count(node, "repair-release", Outcome::Released))
        .sum();
    // node-2's log went with its disk, so count the releases of the rebuild after the wipe,
    // whose helpers all kept their logs.
    assert!(
        released >= 3 * summary.repaired,
        "k repair-release entries per repaired share: {released}"
    );
    let repair_requests: HashSet<_> = logs
        .iter()
        .flat_map(|log| &log.entries)
        .filter(|e| e.action == "repair-release")
        .filter_map(|e| e.request_id)
        .collect();
    assert!(
        logs.iter()
            .flat_map(|log| &log.entries)
            .filter(|e| e.action == "get" && e.outcome == Outcome::Released)
            .all(|e| e.request_id.is_none_or(|id| !repair_requests.contains(&id))),
        "a share was released through a get as part of a repair"
    );

    // Only the rebuilt node-2, the once-stale node-5 and node-3 are left: every read now
    // needs the repaired shares.
    cluster.stop_node(1).await.expect("stop node-1");
    cluster.stop_node(4).await.expect("stop node-4");
    let reader = client(&cluster, "reader");
    for (k, want) in &expected {
        match (reader.get(k, &purpose()).await, want) {
            (Ok(data), Some(want)) => assert!(data[..] == want[..], "{k} differs"),
            (Err(Error::Deleted { .. }), None) => {}
            (got, want) => panic!(
                "{k}: got {:?}, wanted {}",
                got.map(|d| d.len()),
                want.as_ref()
                    .map_or("deleted".to_owned(), |w| w.len().to_string())
            ),
        }
    }

    // What the targets received were masked pieces: never a helper's share, nor a share
    // multiplied by any Lagrange weight.
    let received: Vec<String> = [2, 5]
        .into_iter()
        .flat_map(|index| contributions_received(&cluster, index))
        .collect();
    assert!(
        received.len() >= 3 * (stale.repaired + summary.repaired),
        "every repair delivers k = 3 contributions (per helper set): {} logged",
        received.len()
    );
    let received: HashSet<String> = received.into_iter().collect();
    for share in &helper_shares {
        for weight in 1..=255u8 {
            let mut weighted = vec![0u8; share.len()];
            gf256::mul_add_assign(&mut weighted, share, weight);
            let digest = blake3::hash(&weighted).to_hex().to_string();
            assert!(
                !received.contains(&digest),
                "a target received a helper's share times {weight}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_keeps_records_and_makes_old_shares_useless_with_new_ones() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let cluster = start_cluster_with_quorum(NODE, 5, 3, Some(4)).await;
    let collector = client(&cluster, "collector");
    let reader = client(&cluster, "reader");
    let ids: Vec<String> = cluster.nodes().into_iter().map(|n| n.id).collect();
    let mut records = Vec::new();
    for i in 0..5u64 {
        let (k, data) = (
            key(&format!("fresh/{i}")),
            pattern(64 + i as usize * 300, 7 + i),
        );
        collector.put(&k, &data).await.expect("put");
        records.push((k, data));
    }
    let mut old = BTreeMap::new();
    for (k, _) in &records {
        for id in &ids {
            old.insert(
                (k.clone(), id.clone()),
                envelope(&reader, id, k).await.expect("held"),
            );
        }
    }

    let admin = admin(&cluster);
    let signer = admin_signer(&cluster);
    let summary = refresh::refresh_with(
        &admin,
        &signer,
        cluster.manifest(),
        &RefreshOptions::default(),
    )
    .await
    .expect("refresh runs");
    assert_eq!(summary.refreshed, 5, "{summary:?}");
    assert!(summary.failed.is_empty(), "{summary:?}");

    let threshold = cluster.manifest().scheme.threshold();
    for (k, data) in &records {
        let got = reader.get(k, &purpose()).await.expect("read after refresh");
        assert!(got[..] == data[..], "{k} changed");
        let mut new = Vec::new();
        for id in &ids {
            let envelope = envelope(&reader, id, k).await.expect("held");
            let before = &old[&(k.clone(), id.clone())];
            assert_eq!(envelope.epoch(), before.epoch() + 1);
            assert!(
                envelope.check_commitment().is_ok(),
                "new commitment in force"
            );
            assert_eq!(envelope.header.version, before.header.version);
            assert_ne!(envelope.payload, before.payload, "{id} {k} share unchanged");
            new.push(Share::new(envelope.index, envelope.payload));
        }
        let olds: Vec<Share> = ids
            .iter()
            .map(|id| {
                let e = &old[&(k.clone(), id.clone())];
                Share::new(e.index, e.payload.clone())
            })
            .collect();
        // k new shares rebuild the record (followed by its salt); two old shares and a new
        // one do not.
        let rebuilt = shamir::combine(&new[2..], threshold).expect("combine new");
        assert!(rebuilt[..data.len()] == data[..]);
        let mixed = [olds[0].clone(), olds[1].clone(), new[2].clone()];
        let wrong = shamir::combine(&mixed, threshold).expect("combine mixed");
        assert!(
            wrong[..data.len()] != data[..],
            "old and new shares of {k} still combine"
        );
    }
    let after = inventory::plan(
        &inventory::gather(&admin, cluster.manifest()).await,
        cluster.manifest().scheme.threshold().as_usize(),
    );
    assert!(after.findings.is_empty(), "{:?}", after.findings);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_loses_two_sites_rebuilds_one_and_reports() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let mut cluster = start_cluster_with_quorum(NODE, 5, 3, Some(4)).await;
    let collector = client(&cluster, "collector");
    for i in 0..6u64 {
        collector
            .put(&key(&format!("patients/{i}")), &pattern(500, i))
            .await
            .expect("put");
    }
    let dir = cluster.dir().to_path_buf();
    let options = DrillOptions {
        lose: vec!["node-2".to_owned(), "node-4".to_owned()],
        wipe: vec!["node-2".to_owned()],
        sample: None,
        canaries: 3,
    };
    let report = tokio::time::timeout(
        Duration::from_secs(80),
        drill::drill(&dir, NodeControl::Owned(&mut cluster), &options),
    )
    .await
    .expect("the drill finishes")
    .expect("the drill runs");
    let markdown = report.to_markdown();
    assert!(report.ok, "{markdown}");
    assert_eq!(report.records_verified, 9, "{markdown}");
    assert!(report.shares_rebuilt >= 9, "{markdown}");
    assert!(markdown.contains("**Result: PASS**"), "{markdown}");
    for step in ["detect loss", "verify records", "rebuild (repair)"] {
        assert!(report.steps.iter().any(|s| s.name == step), "{step}");
    }
    let json = report.to_json().expect("json");
    assert!(json.contains("\"ok\": true"), "{json}");
    assert!(cluster.is_running(2) && cluster.is_running(4));
}
