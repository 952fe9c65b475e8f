//! A site larger than one machine: every site keeps its shares and audit log in a bucket of a
//! real Garage S3 server, and site 1 runs two node processes on one bucket. One of them is
//! killed with SIGKILL under load; every acknowledged record must still come back, and the
//! audit logs (site 1's written by both processes) must still verify.
//!
//! Garage is installed once per machine by `tests/garage/install.sh` (about 8 minutes the
//! first time). These tests fail, never skip, when it cannot run.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bunsan_client::audit as fetcher;
use bunsan_cluster::init::InitOptions;
use bunsan_cluster::layout::ClusterLayout;
use bunsan_cluster::local::{LocalCluster, LocalOptions};
use bunsan_protocol::audit::verify::{verify_logs, NodeVerdict};
use bunsan_protocol::manifest::Manifest;
use bunsan_tests::garage::Garage;
use bunsan_tests::{client_with_timeout, key, pattern, purpose};

const NODE: &str = env!("CARGO_BIN_EXE_bunsan-test-node");
const SITES: usize = 5;

/// Appends an `[store]` table pointing node `index` at bucket `site-index` of `garage`.
fn point_at_garage(layout: &ClusterLayout, index: u8, garage: &Garage) {
    let node_dir = layout.node_config_path(index);
    let node_dir = node_dir.parent().expect("node directory");
    let s3 = garage.s3_config(node_dir, &format!("site-{index}"), "bunsan");
    let mut text = std::fs::read_to_string(layout.node_config_path(index)).expect("node.toml");
    text.push_str(&format!(
        "\n[store]\nbackend = \"s3\"\n\n[store.s3]\nendpoint = \"{}\"\nbucket = \"{}\"\nregion = \"{}\"\nprefix = \"{}\"\ncredentials = \"s3-credentials.toml\"\nsealing_key = \"store.key\"\nallow_http = true\n",
        s3.endpoint, s3.bucket, s3.region, s3.prefix
    ));
    std::fs::write(layout.node_config_path(index), text).expect("write node.toml");
}

/// A free UDP port on 127.0.0.1.
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|socket| socket.local_addr())
        .expect("a free port")
        .port()
}

/// Writes `node-b.toml` beside node 1's configuration: the same identity, sealing key and
/// bucket, another QUIC port (and metrics port, if any) and data directory. Adds its address
/// to node 1's manifest entry, so clients fail over between the two.
fn second_process_of_site_one(layout: &ClusterLayout) -> std::path::PathBuf {
    let config = layout.node_config_path(1);
    let port = free_udp_port();
    let text = std::fs::read_to_string(&config).expect("node.toml");
    let mut second = String::new();
    let mut table = String::new();
    for line in text.lines() {
        if line.starts_with('[') {
            table = line.to_owned();
        }
        if line.starts_with("listen = ") && table.is_empty() {
            second.push_str(&format!("listen = \"127.0.0.1:{port}\"\n"));
        } else if line.starts_with("listen = ") && table == "[metrics]" {
            let tcp = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free TCP port");
            second.push_str(&format!("listen = \"{tcp}\"\n"));
        } else if line.starts_with("data_dir = ") && table.is_empty() {
            second.push_str("data_dir = \"data-b\"\n");
        } else {
            second.push_str(line);
            second.push('\n');
        }
    }
    let path = config.with_file_name("node-b.toml");
    std::fs::write(&path, second).expect("write node-b.toml");

    let manifest_path = layout.manifest_path();
    let mut manifest =
        Manifest::from_toml(&std::fs::read_to_string(&manifest_path).expect("manifest"))
            .expect("parse manifest");
    manifest.nodes[0]
        .addresses
        .push(format!("127.0.0.1:{port}").parse().expect("address"));
    std::fs::write(&manifest_path, manifest.to_toml().expect("render")).expect("write");
    path
}

fn spawn_node(config: &Path, log: &Path) -> Child {
    let log = std::fs::File::create(log).expect("log file");
    Command::new(NODE)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start the second process of site 1")
}

/// Fetches every node's audit log into `dir`. A process killed between writing an audit batch
/// and committing it blocks its site's log for twice the commit deadline (10 s; see
/// `bunsan_node::audit::s3`), during which the site refuses every request, the auditor's
/// included: so a refusal is retried for up to a minute, as an auditor would.
async fn fetch_every_log(auditor: &bunsan_client::Client, ca: &[u8], dir: &Path) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let problems = match fetcher::fetch(auditor, ca, dir, true).await {
            Ok(nodes) => nodes
                .into_iter()
                .filter_map(|node| {
                    node.problem
                        .map(|problem| format!("{}: {problem}", node.node))
                })
                .collect::<Vec<_>>(),
            Err(e) => vec![e.to_string()],
        };
        if problems.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "fetch every node's log: {problems:?}"
        );
        eprintln!("audit fetch incomplete, retrying: {problems:?}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn verdicts(dir: &Path) -> Vec<NodeVerdict> {
    let loaded = fetcher::load(dir, None).expect("load the fetched logs");
    verify_logs(&loaded.ca, &loaded.nodes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_sites_on_garage_survive_a_killed_process_with_nothing_acknowledged_lost() {
    let buckets: Vec<String> = (1..=SITES).map(|i| format!("site-{i}")).collect();
    let bucket_refs: Vec<&str> = buckets.iter().map(String::as_str).collect();
    let started = std::time::Instant::now();
    let phase = |what: &str| eprintln!("{:>6.1} s  {what}", started.elapsed().as_secs_f64());
    let garage = Garage::start(&bucket_refs);
    phase("garage ready");

    let dir = tempfile::tempdir().expect("tempdir");
    let init = InitOptions {
        name: "bunsan-s3".to_owned(),
        nodes: SITES,
        threshold: 3,
        // W = 4: a put is acknowledged by four sites, so the seconds site 1 spends failing
        // over do not refuse writes.
        write_quorum: Some(4),
        base_port: 0,
    };
    bunsan_cluster::init::init(dir.path(), &init).expect("init");
    let layout = ClusterLayout::new(dir.path());
    for index in 1..=SITES as u8 {
        point_at_garage(&layout, index, &garage);
    }
    let second_config = second_process_of_site_one(&layout);
    let options = LocalOptions {
        node_binary: Some(NODE.into()),
        ..LocalOptions::default()
    };
    let mut cluster = LocalCluster::start_with(dir.path(), options)
        .await
        .expect("the cluster starts on Garage");
    let mut second = spawn_node(&second_config, &dir.path().join("node-1b.log"));
    phase("cluster started");

    let writer = Arc::new(client_with_timeout(
        &cluster,
        "collector",
        Duration::from_secs(20),
    ));
    let reader = client_with_timeout(&cluster, "reader", Duration::from_secs(20));

    // Load: four writers put records until told to stop; every acknowledged put is noted.
    let acknowledged: Arc<Mutex<BTreeMap<String, Vec<u8>>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0u32..4 {
        let (writer, acknowledged, stop) = (
            Arc::clone(&writer),
            Arc::clone(&acknowledged),
            Arc::clone(&stop),
        );
        writers.push(tokio::spawn(async move {
            let mut failed = 0u32;
            let mut i = 0u32;
            while !stop.load(Ordering::SeqCst) {
                let name = format!("clinic/w{w}/r{i}");
                let record = pattern(1024 + (i as usize % 7) * 300, u64::from(w * 1_000_000 + i));
                match writer.put(&key(&name), &record).await {
                    Ok(_) => {
                        acknowledged.lock().expect("lock").insert(name, record);
                    }
                    Err(_) => failed += 1,
                }
                i += 1;
            }
            failed
        }));
    }

    tokio::time::sleep(Duration::from_secs(3)).await;
    let before_kill = acknowledged.lock().expect("lock").len();
    assert!(before_kill > 0, "nothing was acknowledged before the kill");
    // Kill the first process of site 1 (the one clients prefer) with SIGKILL, mid-load.
    cluster
        .kill_node(1)
        .await
        .expect("kill -9 the first process of site 1");
    tokio::time::sleep(Duration::from_secs(6)).await;
    stop.store(true, Ordering::SeqCst);
    let mut failures = 0;
    for writer in writers {
        failures += writer.await.expect("writer task");
    }
    let acknowledged = std::mem::take(&mut *acknowledged.lock().expect("lock"));
    let after_kill = acknowledged.len() - before_kill;
    eprintln!(
        "acknowledged {} puts ({before_kill} before the kill, {after_kill} after), {failures} refused",
        acknowledged.len()
    );
    assert!(after_kill > 0, "no put was acknowledged after the kill");

    phase("load done");
    // Nothing acknowledged is lost: every record reads back, site 1 served by its survivor.
    let reader = Arc::new(reader);
    let mut checks = tokio::task::JoinSet::new();
    let all: Vec<(String, Vec<u8>)> = acknowledged.clone().into_iter().collect();
    for part in all.chunks(all.len().div_ceil(8)) {
        let (reader, part) = (Arc::clone(&reader), part.to_vec());
        checks.spawn(async move {
            for (name, record) in part {
                let back = reader
                    .get(&key(&name), &purpose())
                    .await
                    .unwrap_or_else(|e| {
                        panic!("{name} was acknowledged but does not read back: {e}")
                    });
                assert!(
                    back.as_slice() == record.as_slice(),
                    "{name} came back different"
                );
            }
        });
    }
    while let Some(done) = checks.join_next().await {
        done.expect("a read-back task");
    }

    phase("every acknowledged record read back");
    // The audit logs verify, site 1's included: both processes appended to it.
    let auditor = client_with_timeout(&cluster, "auditor", Duration::from_secs(20));
    let ca = bunsan_client::Identity::load(&cluster.layout().client_dir("auditor"))
        .expect("auditor identity")
        .ca()
        .to_vec();
    let audit_dir = dir.path().join("audit");
    fetch_every_log(&auditor, &ca, &audit_dir).await;
    for verdict in verdicts(&audit_dir) {
        assert!(verdict.is_ok(), "{verdict:?}");
    }

    phase("audit logs verified");
    // A node restarted on a "new machine" (an empty data directory) continues site 1's log
    // and serves its shares: everything it needs is in the bucket.
    let _ = second.kill();
    let _ = second.wait();
    std::fs::remove_dir_all(cluster.node_data_dir(1)).ok();
    cluster
        .start_node(1)
        .await
        .expect("site 1 starts again on an empty disk");
    let sample: Vec<&String> = acknowledged.keys().take(20).collect();
    for name in sample {
        let back = reader
            .get(&key(name), &purpose())
            .await
            .expect("read after the restart");
        assert!(back.as_slice() == acknowledged[name].as_slice());
    }
    phase("sample read back from the restarted site");
    fetch_every_log(&auditor, &ca, &audit_dir).await;
    for verdict in verdicts(&audit_dir) {
        assert!(verdict.is_ok(), "after the restart: {verdict:?}");
    }
    phase("restarted node verified");
    cluster.stop().await.expect("clean stop");
}
