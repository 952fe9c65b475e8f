//! `LocalCluster` against the real `bunsan-node` binary: start, lose nodes, restart, fail
//! loudly, and leave no process behind.
//!
//! The nodes are this package's own `bunsan-cluster` executable running its embedded node
//! (`bunsan-cluster node --config ...`), which cargo always builds for these tests.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bunsan_cluster::ops::{self, DownOutcome};
use bunsan_cluster::{Error, InitOptions, LocalCluster, LocalOptions};
use bunsan_protocol::role::Role;
use bunsan_protocol::{Purpose, RecordKey};

fn three_nodes() -> InitOptions {
    InitOptions {
        name: "local-test".to_owned(),
        nodes: 3,
        threshold: 2,
        write_quorum: None,
        base_port: 0,
    }
}

/// Nodes run as `bunsan-cluster node --config ...`.
fn embedded() -> LocalOptions {
    LocalOptions {
        node_binary: Some(env!("CARGO_BIN_EXE_bunsan-cluster").into()),
        node_args: vec!["node".into()],
        ..LocalOptions::default()
    }
}

/// Whether `pid` is gone (or a zombie waiting to be reaped), polling for up to five seconds.
async fn exits(pid: u32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return true,
            Ok(stat)
                if stat
                    .rsplit_once(')')
                    .is_some_and(|(_, r)| r.trim_start().starts_with('Z')) =>
            {
                return true
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_can_be_killed_stopped_and_restarted_while_records_stay_readable() -> Result<()> {
    let mut cluster = LocalCluster::start_temporary(&three_nodes(), embedded())
        .await
        .context("start")?;
    let layout = cluster.layout().clone();
    for node in cluster.nodes() {
        assert!(node.pid.is_some(), "{} has no pid", node.id);
        assert!(layout.pid_file(node.index).is_file());
    }

    let key = RecordKey::new("test/a")?;
    let purpose = Purpose::new("test", "local cluster test")?;
    cluster.client(Role::Collector)?.put(&key, b"hello").await?;

    // A crash of n - k nodes leaves every record readable.
    let killed = cluster.kill_node(3).await?.context("node 3 was running")?;
    assert!(!killed.success());
    assert!(!cluster.is_running(3));
    assert!(!layout.pid_file(3).exists());
    let data = cluster.client(Role::Reader)?.get(&key, &purpose).await?;
    assert_eq!(data.as_slice(), b"hello");

    // A restarted node comes back healthy, with its store.
    cluster.start_node(3).await?;
    assert!(cluster.is_running(3));
    let status = cluster.client(Role::Admin)?.status("node-3").await?;
    assert_eq!(status.records, 1);

    // A graceful stop lets the node exit cleanly; stopping it again does nothing.
    let stopped = cluster.stop_node(1).await?.context("node 1 was running")?;
    assert!(stopped.success(), "node-1 exited with {stopped}");
    assert_eq!(cluster.stop_node(1).await?, None);
    assert!(matches!(
        cluster.stop_node(9).await,
        Err(Error::UnknownNode { index: 9 })
    ));

    // Dropping the cluster kills what still runs and removes its directory.
    let pids: Vec<u32> = cluster.nodes().iter().filter_map(|n| n.pid).collect();
    assert_eq!(pids.len(), 2);
    drop(cluster);
    for pid in pids {
        assert!(exits(pid).await, "pid {pid} outlived its LocalCluster");
    }
    assert!(!layout.root().exists());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_cannot_start_is_reported_with_its_log_and_the_others_are_stopped() -> Result<()>
{
    let dir = tempfile::tempdir()?;
    bunsan_cluster::init(dir.path(), &three_nodes())?;
    let layout = bunsan_cluster::ClusterLayout::new(dir.path());
    // bunsan-node refuses unknown keys, so this node exits at once.
    let config = layout.node_config_path(2);
    let text = std::fs::read_to_string(&config)? + "no_such_setting = true\n";
    std::fs::write(&config, text)?;

    let error = LocalCluster::start_with(dir.path(), embedded())
        .await
        .expect_err("node-2 cannot start");
    match &error {
        Error::NodeExited { node, tail, .. } => {
            assert_eq!(node, "node-2");
            assert!(tail.contains("no_such_setting"), "log tail: {tail}");
        }
        other => panic!("expected NodeExited, got {other}"),
    }
    for index in 1..=3 {
        assert!(
            !layout.pid_file(index).exists(),
            "node-{index} was left running"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_cluster_cannot_be_started_twice() -> Result<()> {
    let cluster = LocalCluster::start_temporary(&three_nodes(), embedded()).await?;
    let second = LocalCluster::start_with(cluster.dir(), embedded()).await;
    assert!(
        matches!(second, Err(Error::AlreadyRunning { .. })),
        "{second:?}"
    );
    // The failed second start must not have stopped the first cluster's nodes.
    for node in cluster.nodes() {
        cluster.client(Role::Admin)?.health(&node.id).await?;
    }
    cluster.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detached_cluster_is_seen_by_status_and_stopped_by_down() -> Result<()> {
    let dir = tempfile::tempdir()?;
    bunsan_cluster::init(dir.path(), &three_nodes())?;
    let options = LocalOptions {
        detachable: true,
        ..embedded()
    };
    let nodes = LocalCluster::start_with(dir.path(), options)
        .await?
        .detach();
    let pids: Vec<u32> = nodes.iter().filter_map(|n| n.pid).collect();
    assert_eq!(pids.len(), 3);

    let reports = ops::status(dir.path()).await?;
    assert!(reports.iter().all(|r| r.status.is_ok()), "{reports:?}");

    let stopped = ops::down(dir.path(), Duration::from_secs(10)).await?;
    let ids: Vec<&str> = stopped.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(ids, ["node-1", "node-2", "node-3"]);
    assert!(
        stopped.iter().all(|n| n.outcome == DownOutcome::Stopped),
        "{stopped:?}"
    );
    for pid in pids {
        assert!(exits(pid).await, "pid {pid} survived down");
    }
    let layout = bunsan_cluster::ClusterLayout::new(dir.path());
    assert!((1..=3).all(|i| !layout.pid_file(i).exists()));

    // Once down, status reports every node down instead of failing, and down does nothing.
    let reports = ops::status(dir.path()).await?;
    assert!(reports.iter().all(|r| r.status.is_err()), "{reports:?}");
    let again = ops::down(dir.path(), Duration::from_secs(10)).await?;
    assert!(again.iter().all(|n| n.outcome == DownOutcome::NotRunning));
    Ok(())
}
