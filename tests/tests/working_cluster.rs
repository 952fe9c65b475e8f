//! A working cluster: records split 3-of-5 on the client, one share per node, durable,
//! reassembled bit-exact, surviving the loss of n − k nodes and node restarts.

use bunsan_client::Error;
use bunsan_protocol::role::Role;
use bunsan_tests::{client, contains, files_under, key, pattern, purpose, start_cluster};

const NODE: &str = env!("CARGO_BIN_EXE_bunsan-test-node");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_of_every_size_come_back_bit_exact() {
    let cluster = start_cluster(NODE, 5, 3).await;
    let collector = client(&cluster, "collector");
    let reader = client(&cluster, "reader");
    for (seed, len) in [0usize, 1, 1024, 1 << 20, 16 << 20].into_iter().enumerate() {
        let record = pattern(len, seed as u64);
        let k = key(&format!("sizes/{len}"));
        let receipt = collector.put(&k, &record).await.expect("put");
        assert_eq!(receipt.acked.len(), 5, "every node acknowledges");
        assert!(!receipt.under_replicated());
        let back = reader.get(&k, &purpose()).await.expect("get");
        assert!(
            back.as_slice() == record.as_slice(),
            "record of {len} bytes differs"
        );
    }
    cluster.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_survive_two_lost_nodes_and_fail_cleanly_with_three() {
    let mut cluster = start_cluster(NODE, 5, 3).await;
    let collector = client(&cluster, "collector");
    let record = pattern(4096, 7);
    let k = key("loss/record");
    collector.put(&k, &record).await.expect("put");

    cluster.stop_node(2).await.expect("stop node 2");
    cluster.kill_node(4).await.expect("kill node 4");
    let reader = client(&cluster, "reader");
    let back = reader
        .get(&k, &purpose())
        .await
        .expect("get with 3 of 5 nodes");
    assert!(back.as_slice() == record.as_slice());

    cluster.stop_node(5).await.expect("stop node 5");
    let reader = client(&cluster, "reader");
    match reader.get(&k, &purpose()).await {
        Err(Error::NotEnoughShares {
            found,
            needed,
            failures,
            ..
        }) => {
            assert_eq!((found, needed), (2, 3));
            let failed: Vec<&str> = failures.iter().map(|f| f.node.as_str()).collect();
            for node in ["node-2", "node-4", "node-5"] {
                assert!(failed.contains(&node), "{node} is named in {failed:?}");
            }
            let message = Error::NotEnoughShares {
                key: k.clone(),
                found,
                needed,
                failures,
            }
            .to_string();
            assert!(message.contains("found 2") && message.contains("3 are needed"));
        }
        Err(other) => panic!("expected NotEnoughShares, got {other}"),
        Ok(_) => panic!("a get with 2 of 5 nodes must fail"),
    }
    // Writes need W = 5 acknowledgements by default: with 3 nodes down they are refused,
    // and the error names the quorum.
    match collector.put(&key("loss/other"), b"x").await {
        Err(Error::WriteQuorumNotMet { acked, needed, .. }) => assert_eq!((acked, needed), (2, 5)),
        other => panic!(
            "expected WriteQuorumNotMet, got {:?}",
            other.map(|r| r.acked)
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_serves_everything_it_acknowledged() {
    let mut cluster = start_cluster(NODE, 5, 3).await;
    let collector = client(&cluster, "collector");
    let records: Vec<_> = (0..40)
        .map(|i| {
            (
                key(&format!("restart/{i:03}")),
                pattern(100 + i * 37, i as u64),
            )
        })
        .collect();
    for (k, record) in &records {
        collector.put(k, record).await.expect("put");
    }
    // A crash right after the acknowledgements, then a restart.
    cluster.kill_node(1).await.expect("kill node 1");
    cluster.start_node(1).await.expect("restart node 1");
    // Without nodes 2 and 3, every read needs node 1's shares.
    cluster.stop_node(2).await.expect("stop node 2");
    cluster.stop_node(3).await.expect("stop node 3");
    let reader = client(&cluster, "reader");
    for (k, record) in &records {
        let back = reader.get(k, &purpose()).await.expect("get after restart");
        assert!(back.as_slice() == record.as_slice(), "{k} differs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_node_stores_the_plaintext() {
    let cluster = start_cluster(NODE, 5, 3).await;
    let collector = client(&cluster, "collector");
    let mut marker = b"MARKER-RECORD patient=Yamada Taro dob=1950-01-01 dx=I21.4 ".repeat(40);
    marker.extend_from_slice(&pattern(4096, 99));
    collector
        .put(&key("privacy/marker"), &marker)
        .await
        .expect("put");
    // Acknowledged means flushed: the shares are on disk now, while the nodes run.
    let dirs: Vec<_> = (1..=5).map(|i| cluster.node_data_dir(i)).collect();
    let probes: Vec<&[u8]> = vec![
        &marker[..32],
        &marker[1000..1032],
        &marker[marker.len() - 32..],
        b"Yamada Taro",
    ];
    let mut scanned = 0;
    for dir in dirs {
        for file in files_under(&dir) {
            let bytes = std::fs::read(&file).expect("read a data file");
            scanned += bytes.len();
            for probe in &probes {
                assert!(
                    !contains(&bytes, probe),
                    "{} contains plaintext of the marker record",
                    file.display()
                );
            }
        }
    }
    assert!(
        scanned >= 5 * marker.len(),
        "the shares were on disk to scan"
    );
    cluster.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_node_enforces_roles_on_its_own() {
    let cluster = start_cluster(NODE, 5, 3).await;
    let k = key("roles/record");
    client(&cluster, "collector")
        .put(&k, b"record")
        .await
        .expect("a collector may put");
    let refused = |result: Result<_, Error>| match result {
        Err(Error::WriteQuorumNotMet { failures, .. })
        | Err(Error::NotEnoughShares { failures, .. }) => {
            assert_eq!(failures.len(), 5);
            assert!(
                failures.iter().all(|f| f.reason.contains("Forbidden")),
                "{failures:?}"
            );
        }
        Err(Error::Remote { error, .. }) => {
            assert_eq!(error.code, bunsan_protocol::message::ErrorCode::Forbidden)
        }
        Err(other) => panic!("expected a refusal, got {other}"),
        Ok(_) => panic!("expected a refusal"),
    };
    refused(
        client(&cluster, "collector")
            .get(&k, &purpose())
            .await
            .map(|_| ()),
    );
    refused(
        client(&cluster, "admin")
            .get(&k, &purpose())
            .await
            .map(|_| ()),
    );
    refused(
        client(&cluster, "auditor")
            .get(&k, &purpose())
            .await
            .map(|_| ()),
    );
    refused(
        client(&cluster, "reader")
            .put(&k, b"overwrite")
            .await
            .map(|_| ()),
    );
    refused(client(&cluster, "collector").list("").await.map(|_| ()));
    refused(client(&cluster, "reader").delete(&k).await.map(|_| ()));
    let back = client(&cluster, "reader")
        .get(&k, &purpose())
        .await
        .expect("a reader may get");
    assert_eq!(back.as_slice(), b"record");
    assert_eq!(Role::Reader.as_str(), "reader");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_and_list_work_across_the_cluster() {
    let cluster = start_cluster(NODE, 5, 3).await;
    let collector = client(&cluster, "collector");
    let admin = client(&cluster, "admin");
    let reader = client(&cluster, "reader");
    for i in 0..5 {
        collector
            .put(&key(&format!("clinic-1/{i}")), &pattern(10, i))
            .await
            .expect("put");
    }
    collector
        .put(&key("clinic-2/0"), b"other")
        .await
        .expect("put");
    let listed = admin.list("clinic-1/").await.expect("list");
    assert_eq!(listed.len(), 5);
    assert!(listed.iter().all(|r| r.replicas == 5 && r.record_len == 10));

    let gone = key("clinic-1/3");
    admin.delete(&gone).await.expect("delete");
    assert!(matches!(
        reader.get(&gone, &purpose()).await,
        Err(Error::Deleted { .. })
    ));
    assert_eq!(admin.list("clinic-1/").await.expect("list").len(), 4);
    assert!(matches!(
        reader.get(&key("never/written"), &purpose()).await,
        Err(Error::NotFound { .. })
    ));
    // A newer put after a delete brings the record back; the version order decides.
    collector
        .put(&gone, b"again")
        .await
        .expect("put after delete");
    let back = reader.get(&gone, &purpose()).await.expect("get");
    assert_eq!(back.as_slice(), b"again");
}
