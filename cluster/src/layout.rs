//! Where everything lives in a cluster directory, and the `node.toml` each node reads.
//!
//! ```text
//! DIR/cluster.toml                          the manifest every client and tool reads
//! DIR/ca/ca.pem, DIR/ca/ca-key.pem          the cluster CA (the key never leaves DIR/ca)
//! DIR/ca/crl.pem, DIR/ca/revoked.toml       the CRL and the record of what it revokes
//! DIR/nodes/node-I/node.toml                the node's own configuration (see NodeConfig)
//! DIR/nodes/node-I/{cert,key,ca,crl}.pem    the node's identity and its copy of the CRL
//! DIR/nodes/node-I/data/                    the node's share store
//! DIR/clients/NAME/{cert,key,ca}.pem        client identities: collector, reader, auditor, admin
//! DIR/run/node-I.pid, DIR/run/node-I.log    written by `bunsan-cluster up`
//! ```
//!
//! Paths in `node.toml` are relative to the node's directory, so a cluster directory can be
//! moved or copied as a whole. Directories holding private keys are created with mode 0700 and
//! key files with mode 0600.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use bunsan_protocol::manifest::Manifest;
use serde::{Deserialize, Serialize};

use crate::error::{io_err, Error, Result};

/// The manifest's file name in a cluster directory.
pub const MANIFEST_FILE: &str = "cluster.toml";
/// The CA certificate's file name in `DIR/ca`.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The CA private key's file name in `DIR/ca`.
pub const CA_KEY_FILE: &str = "ca-key.pem";
/// A node's configuration file name in its directory.
pub const NODE_CONFIG_FILE: &str = "node.toml";
/// The certificate file in an identity directory.
pub const CERT_FILE: &str = "cert.pem";
/// The private key file in an identity directory.
pub const KEY_FILE: &str = "key.pem";
/// The copy of the CA certificate in an identity directory.
pub const IDENTITY_CA_FILE: &str = "ca.pem";
/// The certificate revocation list, in `DIR/ca` and in every node directory.
pub const CRL_FILE: &str = "crl.pem";
/// The record of revoked certificates in `DIR/ca`, from which every CRL is signed.
pub const REVOKED_FILE: &str = "revoked.toml";
/// A node's data directory, relative to its node directory.
pub const NODE_DATA_DIR: &str = "data";

/// Mode of files holding private keys: readable by the owner only.
pub(crate) const PRIVATE_FILE_MODE: u32 = 0o600;
/// Mode of certificates and configuration files.
pub(crate) const PUBLIC_FILE_MODE: u32 = 0o644;
/// Mode of directories holding private keys.
const PRIVATE_DIR_MODE: u32 = 0o700;

/// The paths of one cluster directory. Nothing is read or checked until asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterLayout {
    root: PathBuf,
}

impl ClusterLayout {
    /// The layout of the cluster directory `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The cluster directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `DIR/cluster.toml`.
    pub fn manifest_path(&self) -> PathBuf {
        self.root.join(MANIFEST_FILE)
    }

    /// `DIR/ca`.
    pub fn ca_dir(&self) -> PathBuf {
        self.root.join("ca")
    }

    /// `DIR/ca/crl.pem`: the latest CRL.
    pub fn crl_path(&self) -> PathBuf {
        self.ca_dir().join(CRL_FILE)
    }

    /// `DIR/ca/revoked.toml`: every revoked certificate and the last CRL number.
    pub fn revoked_path(&self) -> PathBuf {
        self.ca_dir().join(REVOKED_FILE)
    }

    /// `DIR/nodes/NAME`: the directory of the node called `name` (`node-I`).
    pub fn node_dir_named(&self, name: &str) -> PathBuf {
        self.root.join("nodes").join(name)
    }

    /// `DIR/nodes/node-I`.
    pub fn node_dir(&self, index: u8) -> PathBuf {
        self.root.join("nodes").join(format!("node-{index}"))
    }

    /// `DIR/nodes/node-I/node.toml`.
    pub fn node_config_path(&self, index: u8) -> PathBuf {
        self.node_dir(index).join(NODE_CONFIG_FILE)
    }

    /// `DIR/nodes/node-I/data`: where node I keeps its shares (as `init` configures it).
    pub fn node_data_dir(&self, index: u8) -> PathBuf {
        self.node_dir(index).join(NODE_DATA_DIR)
    }

    /// `DIR/clients/NAME`: an identity directory for `bunsan_client::Identity::load`.
    pub fn client_dir(&self, name: &str) -> PathBuf {
        self.root.join("clients").join(name)
    }

    /// `DIR/run`: pid files and logs of running nodes.
    pub fn run_dir(&self) -> PathBuf {
        self.root.join("run")
    }

    /// `DIR/run/node-I.pid`.
    pub fn pid_file(&self, index: u8) -> PathBuf {
        self.run_dir().join(format!("node-{index}.pid"))
    }

    /// `DIR/run/node-I.log`.
    pub fn log_file(&self, index: u8) -> PathBuf {
        self.run_dir().join(format!("node-{index}.log"))
    }

    /// Reads and checks `DIR/cluster.toml`.
    pub fn read_manifest(&self) -> Result<Manifest> {
        let path = self.manifest_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotACluster { path })
            }
            Err(e) => return Err(io_err("read", path)(e)),
        };
        Ok(Manifest::from_toml(&text)?)
    }

    /// Reads `DIR/nodes/node-I/node.toml`.
    pub fn read_node_config(&self, index: u8) -> Result<NodeConfig> {
        let path = self.node_config_path(index);
        let text = std::fs::read_to_string(&path).map_err(io_err("read", &path))?;
        toml::from_str(&text).map_err(|e| Error::InvalidNodeConfig {
            path,
            reason: e.to_string(),
        })
    }
}

/// The configuration file of one node (`node.toml`), as `bunsan-node --config` reads it.
/// Relative paths are relative to the directory holding the file.
///
/// ```toml
/// id = "node-1"
/// index = 1
/// listen = "127.0.0.1:7101"
/// data_dir = "data"
/// cert = "cert.pem"
/// key = "key.pem"
/// ca = "ca.pem"
/// cluster = "../../cluster.toml"
/// crl = "crl.pem"
/// cluster = "../../cluster.toml"
///
/// [metrics]
/// listen = "127.0.0.1:9101"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeConfig {
    /// The node id, as in the manifest and the certificate's DNS name.
    pub id: String,
    /// The share index the node holds.
    pub index: u8,
    /// The UDP address the node's QUIC endpoint binds.
    pub listen: SocketAddr,
    /// The share store directory.
    pub data_dir: PathBuf,
    /// The node's certificate (PEM).
    pub cert: PathBuf,
    /// The node's private key (PKCS#8 PEM).
    pub key: PathBuf,
    /// The cluster CA certificate (PEM).
    pub ca: PathBuf,
    /// The cluster manifest, so the node knows its peers: it cosigns their audit logs and
    /// repairs and refreshes shares with them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<PathBuf>,
    /// The certificate revocation list (PEM) the node enforces and reloads when it changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crl: Option<PathBuf>,
    /// The metrics endpoint, if any (the `[metrics]` table).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsSection>,
}

/// The `[metrics]` table of `node.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricsSection {
    /// The TCP address the node serves `GET /metrics` on.
    pub listen: SocketAddr,
}

impl NodeConfig {
    /// The configuration `init` writes for a node: everything in the node's own directory.
    pub fn standard(id: &str, index: u8, listen: SocketAddr) -> Self {
        Self {
            id: id.to_owned(),
            index,
            listen,
            data_dir: NODE_DATA_DIR.into(),
            cert: CERT_FILE.into(),
            key: KEY_FILE.into(),
            ca: IDENTITY_CA_FILE.into(),
            cluster: Some(Path::new("..").join("..").join(MANIFEST_FILE)),
            crl: Some(CRL_FILE.into()),
            metrics: None,
        }
    }

    /// The same configuration with a metrics endpoint on `listen`.
    pub fn with_metrics(self, listen: SocketAddr) -> Self {
        Self {
            metrics: Some(MetricsSection { listen }),
            ..self
        }
    }

    /// Renders the configuration as TOML.
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string(self).map_err(|e| Error::InvalidNodeConfig {
            path: NODE_CONFIG_FILE.into(),
            reason: e.to_string(),
        })
    }
}

/// Replaces `path` atomically: writes a temporary file beside it, syncs it, renames it over
/// `path`, and syncs the directory. A node polling `path` sees the old or the new file,
/// never half of one.
pub(crate) fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let name = path.file_name().map_or_else(
        || "file".to_owned(),
        |name| name.to_string_lossy().into_owned(),
    );
    let temporary = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    // A leftover from a crashed run of this very pid would make create_new fail.
    let _ = std::fs::remove_file(&temporary);
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temporary)
            .map_err(io_err("create", &temporary))?;
        file.write_all(contents)
            .map_err(io_err("write", &temporary))?;
        file.sync_all().map_err(io_err("sync", &temporary))?;
        std::fs::rename(&temporary, path).map_err(io_err("rename into place", path))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written?;
    // The rename is durable only once the directory is.
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("sync", dir))
}

/// Creates `dir` and any missing parents with mode 0700.
pub(crate) fn create_private_dir(dir: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(dir)
        .map_err(io_err("create directory", dir))
}

/// Writes a new file with `mode`; fails if it exists, so nothing is ever silently replaced.
pub(crate) fn write_new_file(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io_err("create", path))?;
    file.write_all(contents).map_err(io_err("write", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_config_matches_the_documented_format() {
        let addr: SocketAddr = "127.0.0.1:7101".parse().expect("addr");
        let text = NodeConfig::standard("node-1", 1, addr)
            .to_toml()
            .expect("toml");
        let expected = "id = \"node-1\"\nindex = 1\nlisten = \"127.0.0.1:7101\"\n\
                        data_dir = \"data\"\ncert = \"cert.pem\"\nkey = \"key.pem\"\nca = \"ca.pem\"\n\
                        cluster = \"../../cluster.toml\"\ncrl = \"crl.pem\"\n";
        assert_eq!(text, expected);
        let back: NodeConfig = toml::from_str(&text).expect("parse");
        assert_eq!(back, NodeConfig::standard("node-1", 1, addr));

        let metrics: SocketAddr = "127.0.0.1:9101".parse().expect("addr");
        let with_metrics = NodeConfig::standard("node-1", 1, addr).with_metrics(metrics);
        let text = with_metrics.to_toml().expect("toml");
        assert!(
            text.ends_with("\n[metrics]\nlisten = \"127.0.0.1:9101\"\n"),
            "{text}"
        );
        // What init writes is what the node reads.
        let node = bunsan_node::NodeConfig::from_toml(&text, Path::new("/n")).expect("node");
        assert_eq!(node.metrics.map(|m| m.listen), Some(metrics));
    }

    #[test]
    fn new_files_are_never_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        write_new_file(&path, b"one", PUBLIC_FILE_MODE).expect("first write");
        assert!(write_new_file(&path, b"two", PUBLIC_FILE_MODE).is_err());
        assert_eq!(std::fs::read(&path).expect("read"), b"one");
    }

    #[test]
    fn atomic_writes_replace_whole_files_and_leave_no_temporaries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("crl.pem");
        write_atomic(&path, b"one", PUBLIC_FILE_MODE).expect("first");
        write_atomic(&path, b"two", PUBLIC_FILE_MODE).expect("second");
        assert_eq!(std::fs::read(&path).expect("read"), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|entry| entry.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("crl.pem")]);
    }

    #[test]
    fn a_directory_without_a_manifest_is_not_a_cluster() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(matches!(
            ClusterLayout::new(dir.path()).read_manifest(),
            Err(Error::NotACluster { .. })
        ));
    }
}
