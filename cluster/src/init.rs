//! Creating a cluster directory (`init`) and issuing further identities (`issue`).
//!
//! `init` checks everything it can before it writes anything: that no cluster is there yet,
//! that k, n and W make a valid manifest, and that the ports fit. It then writes the CA, one
//! directory per node, a first (empty) CRL that every node enforces, the four standard client
//! identities, and finally `cluster.toml`, so a directory with a manifest is a complete one.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};

use bunsan_protocol::manifest::{Manifest, NodeEntry};
use bunsan_protocol::role::Role;
use bunsan_protocol::{Scheme, ShareIndex};

use crate::error::{io_err, Error, Result};
use crate::layout::{
    create_private_dir, write_new_file, ClusterLayout, NodeConfig, PUBLIC_FILE_MODE,
};
use crate::pki::{ClusterCa, Validity};

/// The port node 1 listens on by default; node i listens on `DEFAULT_BASE_PORT + i - 1`.
pub const DEFAULT_BASE_PORT: u16 = 7101;

/// How far above its QUIC (UDP) port a node's metrics endpoint (TCP) listens when ports are
/// consecutive: 7101 → 9101. A fixed offset lets an operator tell a node's metrics port from
/// its service port at a glance, and keeps both ranges apart for firewall rules.
pub const METRICS_PORT_OFFSET: u16 = 2000;

/// The client identities every new cluster gets, each named after its role.
pub const STANDARD_CLIENT_ROLES: [Role; 4] =
    [Role::Collector, Role::Reader, Role::Auditor, Role::Admin];

/// What `init` creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitOptions {
    /// The cluster's name (in the manifest and the CA's common name).
    pub name: String,
    /// n: the number of nodes, one share each.
    pub nodes: usize,
    /// k: the shares needed to rebuild a record.
    pub threshold: u8,
    /// W: acknowledgements a write needs; `None` means n.
    pub write_quorum: Option<u8>,
    /// The port of node 1 on 127.0.0.1; node i gets `base_port + i - 1`, and its metrics
    /// endpoint `METRICS_PORT_OFFSET` above that. 0 picks free ports (UDP for the service, TCP
    /// for metrics) for every node, for tests that run in parallel.
    pub base_port: u16,
}

impl Default for InitOptions {
    /// A 3-of-5 cluster called `bunsan-local` on ports 7101-7105.
    fn default() -> Self {
        Self {
            name: "bunsan-local".to_owned(),
            nodes: 5,
            threshold: 3,
            write_quorum: None,
            base_port: DEFAULT_BASE_PORT,
        }
    }
}

/// Creates a cluster directory at `dir` (which may exist, but must not hold a cluster) and
/// returns its manifest. See [`crate::layout`] for what is written where.
pub fn init(dir: &Path, options: &InitOptions) -> Result<Manifest> {
    let layout = ClusterLayout::new(dir);
    for existing in [layout.manifest_path(), layout.ca_dir()] {
        if existing.exists() {
            return Err(Error::AlreadyInitialised { found: existing });
        }
    }
    // k and n first: a typed error for k > n, and a bound on n before it is used as an index.
    let scheme = Scheme::new(options.threshold, options.nodes)?;
    let ports = node_ports(options.base_port, options.nodes)?;
    let metrics_ports = metrics_ports(options.base_port, options.nodes)?;
    let nodes = (1..=scheme.shares())
        .zip(ports)
        .map(|(index, port)| {
            Ok(NodeEntry {
                id: format!("node-{index}"),
                index: ShareIndex::new(index)?,
                site: format!("site-{index}"),
                addresses: vec![SocketAddr::from((Ipv4Addr::LOCALHOST, port))],
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let manifest = Manifest::new(
        options.name.clone(),
        options.threshold,
        options.write_quorum,
        nodes,
    )?;
    let manifest_text = manifest.to_toml()?;

    let ca = ClusterCa::generate(&manifest.name)?;
    ca.write(&layout.ca_dir())?;
    for (node, metrics_port) in manifest.nodes.iter().zip(metrics_ports) {
        let index = node.index.get();
        let node_dir = layout.node_dir(index);
        ca.issue(Role::Node, &node.id)?.write(&node_dir, &ca)?;
        create_private_dir(&layout.node_data_dir(index))?;
        // Every address in an `init` manifest is the node's own listening address.
        let listen = node.addresses[0];
        // Metrics on loopback only: the endpoint has no authentication (docs/CONFIGURATION.md).
        let metrics = SocketAddr::from((Ipv4Addr::LOCALHOST, metrics_port));
        let config = NodeConfig::standard(&node.id, index, listen)
            .with_metrics(metrics)
            .to_toml()?;
        write_new_file(
            &layout.node_config_path(index),
            config.as_bytes(),
            PUBLIC_FILE_MODE,
        )?;
    }
    // Nodes always run with a CRL (node.toml says `crl = "crl.pem"`), so revoking later is a
    // file change they pick up, never a configuration change and a restart.
    let node_dirs: Vec<PathBuf> = manifest
        .nodes
        .iter()
        .map(|node| layout.node_dir(node.index.get()))
        .collect();
    crate::crl::publish_initial(&layout, &ca, &node_dirs)?;
    for role in STANDARD_CLIENT_ROLES {
        ca.issue(role, role.as_str())?
            .write(&layout.client_dir(role.as_str()), &ca)?;
    }
    write_new_file(
        &layout.manifest_path(),
        manifest_text.as_bytes(),
        PUBLIC_FILE_MODE,
    )?;
    Ok(manifest)
}

/// Issues a new identity `name` in `role` from the CA of the cluster at `dir`, writing it to
/// `DIR/clients/NAME/` (which must not exist yet). Returns that directory.
pub fn issue(dir: &Path, role: Role, name: &str) -> Result<PathBuf> {
    issue_with_validity(
        dir,
        role,
        name,
        Validity::days_from_now(crate::pki::LEAF_VALIDITY_DAYS),
    )
}

/// [`issue`] with an explicit validity period (short-lived identities; expired ones in tests).
pub fn issue_with_validity(
    dir: &Path,
    role: Role,
    name: &str,
    validity: Validity,
) -> Result<PathBuf> {
    crate::pki::check_identity_name(role, name)?;
    let layout = ClusterLayout::new(dir);
    // Checks that this is a cluster directory before the CA key is even read.
    layout.read_manifest()?;
    let target = layout.client_dir(name);
    if target.exists() {
        return Err(Error::AlreadyInitialised { found: target });
    }
    let ca = ClusterCa::load(&layout.ca_dir())?;
    ca.issue_with_validity(role, name, validity)?
        .write(&target, &ca)?;
    Ok(target)
}

/// The ports of n nodes: consecutive from `base_port`, or free ones chosen by the OS when
/// `base_port` is 0.
fn node_ports(base_port: u16, nodes: usize) -> Result<Vec<u16>> {
    if base_port != 0 {
        let last = usize::from(base_port) + nodes.saturating_sub(1);
        if last > usize::from(u16::MAX) {
            return Err(Error::PortsOutOfRange { base_port, nodes });
        }
        return Ok((0..nodes).map(|i| base_port + i as u16).collect());
    }
    // Hold every socket until all are bound, so the OS cannot hand out one port twice. The
    // ports are free again once this returns; another process could take one before the node
    // starts, which `up` reports as a node that does not become healthy.
    let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let sockets = (0..nodes)
        .map(|_| UdpSocket::bind(loopback).map_err(io_err("bind a UDP socket on", "127.0.0.1:0")))
        .collect::<Result<Vec<_>>>()?;
    sockets
        .iter()
        .map(|socket| {
            socket
                .local_addr()
                .map(|addr| addr.port())
                .map_err(io_err("read the address of a UDP socket on", "127.0.0.1:0"))
        })
        .collect()
}

/// The metrics (TCP) ports of n nodes: `METRICS_PORT_OFFSET` above consecutive service
/// ports, or free ones chosen by the OS when `base_port` is 0 (held until all are bound, as in
/// [`node_ports`]).
fn metrics_ports(base_port: u16, nodes: usize) -> Result<Vec<u16>> {
    if base_port != 0 {
        let first = usize::from(base_port) + usize::from(METRICS_PORT_OFFSET);
        if first + nodes.saturating_sub(1) > usize::from(u16::MAX) {
            return Err(Error::PortsOutOfRange { base_port, nodes });
        }
        return Ok((0..nodes).map(|i| (first + i) as u16).collect());
    }
    let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let listeners = (0..nodes)
        .map(|_| TcpListener::bind(loopback).map_err(io_err("bind a TCP socket on", "127.0.0.1:0")))
        .collect::<Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|listener| {
            listener
                .local_addr()
                .map(|addr| addr.port())
                .map_err(io_err("read the address of a TCP socket on", "127.0.0.1:0"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::os::unix::fs::PermissionsExt;

    use bunsan_protocol::role::PeerIdentity;

    use super::*;

    fn options(nodes: usize, threshold: u8) -> InitOptions {
        InitOptions {
            name: "test".to_owned(),
            nodes,
            threshold,
            write_quorum: None,
            base_port: 0,
        }
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode()
            & 0o777
    }

    #[test]
    fn init_writes_the_documented_layout_with_private_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let manifest = init(dir.path(), &options(3, 2)).expect("init");
        let layout = ClusterLayout::new(dir.path());
        assert_eq!(layout.read_manifest().expect("manifest"), manifest);
        assert_eq!(mode(&layout.ca_dir().join("ca-key.pem")), 0o600);
        assert!(layout.ca_dir().join("ca.pem").is_file());
        for node in &manifest.nodes {
            let index = node.index.get();
            let node_dir = layout.node_dir(index);
            for file in ["node.toml", "cert.pem", "ca.pem", "crl.pem"] {
                assert!(node_dir.join(file).is_file(), "{file}");
            }
            assert_eq!(mode(&node_dir.join("key.pem")), 0o600);
            assert_eq!(mode(&node_dir), 0o700);
            assert!(layout.node_data_dir(index).is_dir());
            let config = layout.read_node_config(index).expect("node.toml");
            assert_eq!(config.id, node.id);
            assert_eq!(config.listen, node.addresses[0]);
            assert_eq!(config.crl.as_deref(), Some(Path::new("crl.pem")));
            let metrics = config.metrics.expect("init configures metrics");
            assert!(metrics.listen.ip().is_loopback());
            let manifest_from_node = node_dir.join(config.cluster.expect("cluster key"));
            assert_eq!(
                manifest_from_node.canonicalize().expect("manifest"),
                layout.manifest_path().canonicalize().expect("manifest"),
                "node.toml points at the cluster manifest, so nodes know their witnesses"
            );
            let identity = bunsan_client::Identity::load(&node_dir).expect("node identity");
            assert_eq!(identity.peer().name, node.id);
            assert_eq!(identity.role(), Role::Node);
        }
        for role in STANDARD_CLIENT_ROLES {
            let client_dir = layout.client_dir(role.as_str());
            assert_eq!(mode(&client_dir.join("key.pem")), 0o600);
            let identity = bunsan_client::Identity::load(&client_dir).expect("client identity");
            assert_eq!(identity.role(), role);
            assert_eq!(identity.peer().name, role.as_str());
            // Every identity works as TLS configuration with the cluster's policy.
            bunsan_client::tls::client_config(&identity).expect("client config");
        }
        let node = bunsan_client::Identity::load(&layout.node_dir(1)).expect("node identity");
        bunsan_client::tls::server_tls_config(&node, Vec::new()).expect("server config");
    }

    #[test]
    fn init_refuses_to_overwrite_a_cluster() {
        let dir = tempfile::tempdir().expect("tempdir");
        init(dir.path(), &options(3, 2)).expect("init");
        let before = std::fs::read(dir.path().join("ca/ca-key.pem")).expect("key");
        assert!(matches!(
            init(dir.path(), &options(3, 2)),
            Err(Error::AlreadyInitialised { .. })
        ));
        let after = std::fs::read(dir.path().join("ca/ca-key.pem")).expect("key");
        assert_eq!(before, after);

        // The remains of an interrupted init (a CA but no manifest) are refused too.
        let partial = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(partial.path().join("ca")).expect("mkdir");
        assert!(matches!(
            init(partial.path(), &options(3, 2)),
            Err(Error::AlreadyInitialised { .. })
        ));
    }

    #[test]
    fn init_rejects_bad_shapes_before_writing_anything() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("cluster");
        assert!(matches!(
            init(&target, &options(3, 4)),
            Err(Error::Protocol(
                bunsan_protocol::Error::ThresholdAboveShares {
                    threshold: 4,
                    shares: 3
                }
            ))
        ));
        let bad_quorum = InitOptions {
            write_quorum: Some(2),
            ..options(3, 2)
        };
        assert!(matches!(
            init(&target, &bad_quorum),
            Err(Error::Protocol(
                bunsan_protocol::Error::InvalidManifest { .. }
            ))
        ));
        let high_ports = InitOptions {
            base_port: 65534,
            ..options(3, 2)
        };
        assert!(matches!(
            init(&target, &high_ports),
            Err(Error::PortsOutOfRange { .. })
        ));
        assert!(!target.exists(), "nothing may be written for a bad shape");
    }

    #[test]
    fn base_port_zero_yields_distinct_ports_and_a_base_port_consecutive_ones() {
        let free = node_ports(0, 16).expect("ports");
        assert_eq!(free.iter().collect::<BTreeSet<_>>().len(), 16);
        assert!(!free.contains(&0));
        assert_eq!(node_ports(7101, 3).expect("ports"), vec![7101, 7102, 7103]);
        assert_eq!(
            node_ports(65533, 3).expect("ports"),
            vec![65533, 65534, 65535]
        );
        assert_eq!(
            metrics_ports(7101, 3).expect("ports"),
            vec![9101, 9102, 9103]
        );
        assert!(matches!(
            metrics_ports(63535, 2),
            Err(Error::PortsOutOfRange { .. })
        ));
        let free = metrics_ports(0, 8).expect("ports");
        assert_eq!(free.iter().collect::<BTreeSet<_>>().len(), 8);
    }

    #[test]
    fn issue_adds_an_identity_from_the_existing_ca() {
        let dir = tempfile::tempdir().expect("tempdir");
        init(dir.path(), &options(3, 2)).expect("init");
        let target = issue(dir.path(), Role::Collector, "clinic-7").expect("issue");
        assert_eq!(target, dir.path().join("clients/clinic-7"));
        let identity = bunsan_client::Identity::load(&target).expect("identity");
        assert_eq!(identity.role(), Role::Collector);
        let peer = PeerIdentity::from_certificate(identity.certificate()).expect("peer");
        assert_eq!(peer.name, "clinic-7");
        assert!(matches!(
            issue(dir.path(), Role::Collector, "clinic-7"),
            Err(Error::AlreadyInitialised { .. })
        ));
        assert!(matches!(
            issue(dir.path(), Role::Reader, "../escape"),
            Err(Error::InvalidIdentityName { .. })
        ));
        let empty = tempfile::tempdir().expect("tempdir");
        assert!(matches!(
            issue(empty.path(), Role::Reader, "r"),
            Err(Error::NotACluster { .. })
        ));
    }
}
