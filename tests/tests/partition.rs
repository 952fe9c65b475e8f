//! A network partition, made with network namespaces: every node runs in a namespace of its
//! own, reached over a veth pair; taking a pair down cuts that node off. Isolating n − k nodes
//! keeps reads working; isolating more fails cleanly within the deadline.
//!
//! Where namespaces are not permitted (not root, no `ip`, a sandbox without CAP_NET_ADMIN)
//! the test says so and skips: it needs the privilege, not a particular machine.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bunsan_client::{Client, ClientOptions, Error, Identity};
use bunsan_cluster::init::{init, InitOptions};
use bunsan_protocol::manifest::Manifest;
use bunsan_tests::{key, pattern, purpose};

const NODE: &str = env!("CARGO_BIN_EXE_bunsan-test-node");
const PORT: u16 = 7101;

/// Runs `ip` with `args`, returning its error output on failure.
fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// The namespaces, links and node processes of one test; all removed on drop.
struct Sites {
    tag: String,
    subnet: u8,
    nodes: usize,
    children: Vec<Child>,
}

impl Sites {
    fn namespace(&self, i: usize) -> String {
        format!("{}n{i}", self.tag)
    }

    /// The root-side end of node i's veth pair (interface names are at most 15 bytes).
    fn link(&self, i: usize) -> String {
        format!("{}r{i}", self.tag)
    }

    fn node_address(&self, i: usize) -> String {
        format!("10.233.{}.{}", self.subnet, 4 * i + 2)
    }

    /// Creates namespace and veth pair for node i: 10.233.S.(4i+1) here, (4i+2) there.
    fn create(&self, i: usize) -> Result<(), String> {
        let (ns, root_end, node_end) =
            (self.namespace(i), self.link(i), format!("{}v{i}", self.tag));
        let here = format!("10.233.{}.{}/30", self.subnet, 4 * i + 1);
        let there = format!("{}/30", self.node_address(i));
        ip(&["netns", "add", &ns])?;
        ip(&[
            "link", "add", &root_end, "type", "veth", "peer", "name", &node_end,
        ])?;
        ip(&["link", "set", &node_end, "netns", &ns])?;
        ip(&["addr", "add", &here, "dev", &root_end])?;
        ip(&["link", "set", &root_end, "up"])?;
        ip(&[
            "netns", "exec", &ns, "ip", "addr", "add", &there, "dev", &node_end,
        ])?;
        ip(&["netns", "exec", &ns, "ip", "link", "set", &node_end, "up"])?;
        ip(&["netns", "exec", &ns, "ip", "link", "set", "lo", "up"])
    }

    fn isolate(&self, i: usize) {
        ip(&["link", "set", &self.link(i), "down"]).expect("take the link down");
    }

    fn heal(&self, i: usize) {
        ip(&["link", "set", &self.link(i), "up"]).expect("bring the link up");
    }
}

impl Drop for Sites {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for i in 1..=self.nodes {
            // Deleting the namespace deletes the veth pair with it.
            let _ = ip(&["netns", "del", &self.namespace(i)]);
            let _ = ip(&["link", "del", &self.link(i)]);
        }
    }
}

fn client(dir: &Path, manifest: &Manifest, name: &str, timeout: Duration) -> Client {
    let identity = Identity::load(&dir.join("clients").join(name)).expect("identity");
    let options = ClientOptions {
        timeout,
        connect_timeout: timeout,
        ..ClientOptions::default()
    };
    Client::new(manifest.clone(), identity, options).expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolating_n_minus_k_nodes_keeps_reads_working_and_more_fails_cleanly() {
    let pid = std::process::id();
    let mut sites = Sites {
        tag: format!("bp{}", pid % 100_000),
        subnet: (pid % 250) as u8,
        nodes: 5,
        children: Vec::new(),
    };
    if let Err(reason) = sites.create(1) {
        eprintln!("SKIPPED: network namespaces are not permitted here ({reason})");
        return;
    }
    for i in 2..=5 {
        sites.create(i).expect("create a site namespace");
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    init(
        root,
        &InitOptions {
            base_port: 0,
            ..InitOptions::default()
        },
    )
    .expect("init");
    // Every node listens on its namespace's address, all on the same port.
    let manifest_path = root.join("cluster.toml");
    let mut manifest =
        Manifest::from_toml(&std::fs::read_to_string(&manifest_path).expect("manifest"))
            .expect("manifest");
    for node in &mut manifest.nodes {
        let i = usize::from(node.index.get());
        let address = format!("{}:{PORT}", sites.node_address(i));
        node.addresses = vec![address.parse().expect("address")];
        let config: PathBuf = root.join("nodes").join(&node.id).join("node.toml");
        let text = std::fs::read_to_string(&config).expect("node.toml");
        let text: String = text
            .lines()
            .map(|line| {
                if line.starts_with("listen") {
                    format!("listen = \"{address}\"\n")
                } else {
                    format!("{line}\n")
                }
            })
            .collect();
        std::fs::write(&config, text).expect("write node.toml");
        let log = std::fs::File::create(root.join(format!("{}.log", node.id))).expect("log");
        let child = Command::new("ip")
            .args(["netns", "exec", &sites.namespace(i), NODE, "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start a node in its namespace");
        sites.children.push(child);
    }
    std::fs::write(&manifest_path, manifest.to_toml().expect("toml")).expect("write manifest");

    let admin = client(root, &manifest, "admin", Duration::from_secs(2));
    let started = Instant::now();
    for node in &manifest.nodes {
        while admin.health(&node.id).await.is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{} did not come up",
                node.id
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let collector = client(root, &manifest, "collector", Duration::from_secs(5));
    let records: Vec<_> = (0..5)
        .map(|i| (key(&format!("partition/{i}")), pattern(3000 + i, i as u64)))
        .collect();
    for (k, data) in &records {
        collector.put(k, data).await.expect("put");
    }

    // n − k = 2 sites cut off: every record still reads.
    sites.isolate(2);
    sites.isolate(4);
    let reader = client(root, &manifest, "reader", Duration::from_secs(2));
    for (k, data) in &records {
        let back = reader
            .get(k, &purpose())
            .await
            .expect("get with 2 sites cut off");
        assert!(back.as_slice() == data.as_slice());
    }

    // A third site cut off: the get fails with a typed error, bounded by its deadline.
    sites.isolate(5);
    let reader = client(root, &manifest, "reader", Duration::from_secs(2));
    let asked = Instant::now();
    match reader.get(&records[0].0, &purpose()).await {
        Err(Error::NotEnoughShares { found, needed, .. }) => assert_eq!((found, needed), (2, 3)),
        Err(other) => panic!("expected NotEnoughShares, got {other}"),
        Ok(_) => panic!("2 reachable sites cannot rebuild a 3-of-5 record"),
    }
    // Generous: the deadline is 2 s; a hang would take the idle timeout or forever.
    assert!(
        asked.elapsed() < Duration::from_secs(15),
        "the get outlived its deadline"
    );

    // Healed: everything reads again.
    for i in [2, 4, 5] {
        sites.heal(i);
    }
    let reader = client(root, &manifest, "reader", Duration::from_secs(5));
    for (k, data) in &records {
        let back = reader.get(k, &purpose()).await.expect("get after healing");
        assert!(back.as_slice() == data.as_slice());
    }
}
