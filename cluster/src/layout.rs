//! Where everything lives in a cluster directory, and the `node.toml` each node reads.
//!
//! ```text
//! DIR/cluster.toml                          the manifest every client and tool reads
//! DIR/ca/ca.pem, DIR/ca/ca-key.pem          the cluster CA (the key never leaves DIR/ca)
//! DIR/nodes/node-I/node.toml                the node's own configuration (see NodeConfig)
//! DIR/nodes/node-I/{cert,key,ca}.pem        the node's identity
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
    /// The cluster manifest, so the node knows its peers and cosigns their audit logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<PathBuf>,
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
                        cluster = \"../../cluster.toml\"\n";
        assert_eq!(text, expected);
        let back: NodeConfig = toml::from_str(&text).expect("parse");
        assert_eq!(back, NodeConfig::standard("node-1", 1, addr));
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
    fn a_directory_without_a_manifest_is_not_a_cluster() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(matches!(
            ClusterLayout::new(dir.path()).read_manifest(),
            Err(Error::NotACluster { .. })
        ));
    }
}
