//! The node's configuration file, `node.toml`.
//!
//! ```toml
//! id = "node-1"            # the node id from the manifest (also the DNS SAN of its cert)
//! index = 1                # share index it holds
//! listen = "127.0.0.1:7101"
//! data_dir = "data"
//! cert = "cert.pem"
//! key = "key.pem"
//! ca = "ca.pem"
//! # crl = "crl.pem"        # optional: revoked client certificates (PEM CRLs)
//! # crl_poll_ms = 1000     # how often the CRL file is checked for changes; 0: SIGHUP only
//! # cluster = "../../cluster.toml"  # optional: the manifest, to cosign the other nodes' logs
//! #                                   and to repair and refresh shares with them
//! [limits]                 # every key optional; see [`Limits`] for defaults and why
//! max_concurrent_streams = 256
//! max_connections = 1024
//! request_timeout_ms = 30000
//! idle_timeout_ms = 60000
//! max_inflight_request_bytes = 1073741824
//! [store]
//! backend = "sled"         # "sled" (default), "memory" or "s3"
//! tombstone_retention_secs = 2592000  # tombstones older than this (30 days) are compacted
//! compaction_interval_ms = 3600000    # how often; 0 turns compaction off
//! # [store.s3]             # required iff backend = "s3"; see [`S3Config`]
//! # endpoint = "https://rgw.site-1.example"
//! # bucket = "bunsan-site-1"
//! # sealing_key = "store.key"        # 64 hex digits, mode 0600, same on every process
//! # credentials = "s3.toml"          # optional: else AWS_ACCESS_KEY_ID / _SECRET_ACCESS_KEY
//! [metrics]                # optional: no [metrics] table, no metrics endpoint
//! listen = "127.0.0.1:9101"
//!
//! [audit]                  # every key optional; see [`AuditConfig`]
//! checkpoint_interval_ms = 10000
//! checkpoint_entries = 1000
//! cosign_interval_ms = 60000
//! ```
//!
//! docs/CONFIGURATION.md describes every key, its default and why.
//!
//! Relative paths are resolved against the directory holding the file, so a node directory
//! can be moved as a whole. Unknown keys are an error: a misspelt limit must not silently fall
//! back to its default on a node holding medical records.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bunsan_protocol::frame::{FRAME_MAX_BYTES, PREFIX_BYTES};
use bunsan_protocol::ShareIndex;
use serde::Deserialize;

use crate::error::{Error, Result};
pub use crate::objstore::S3Config;

/// A checked node configuration: paths are resolved and every limit is in range.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// The node id from the manifest: a host-name label, also the DNS name in its certificate.
    pub id: String,
    /// The share index (x-coordinate) this node holds.
    pub index: ShareIndex,
    /// The UDP address the QUIC endpoint binds.
    pub listen: SocketAddr,
    /// The directory holding the share store (created with mode 0700 if missing).
    pub data_dir: PathBuf,
    /// The node certificate chain (PEM, leaf first), with role `node`.
    pub cert: PathBuf,
    /// The node's PKCS#8 private key (PEM).
    pub key: PathBuf,
    /// The cluster CA certificate (PEM); client certificates must chain to it.
    pub ca: PathBuf,
    /// Certificate revocation lists (PEM) checked for every client certificate. Reloaded
    /// without restart on SIGHUP and when the file changes; see [`crate::revocation`].
    #[serde(default)]
    pub crl: Option<PathBuf>,
    /// How often the node looks at the CRL file for a new version, in milliseconds. Default
    /// 1000: a revocation takes effect within about a second, and reading a file of a few KiB
    /// once a second costs nothing. 0 turns polling off (reload on SIGHUP only).
    #[serde(default = "default_crl_poll_ms")]
    pub crl_poll_ms: u64,
    /// Resource limits.
    #[serde(default)]
    pub limits: Limits,
    /// Which store backend keeps the shares.
    #[serde(default)]
    pub store: StoreConfig,
    /// The cluster manifest: the peers whose audit logs this node cosigns, and with whom it
    /// repairs and refreshes shares. Without it the node still logs and signs its own
    /// checkpoints, but witnesses no one and refuses repair and refresh requests.
    #[serde(default)]
    pub cluster: Option<PathBuf>,
    /// When the audit log signs checkpoints and cosigns the other nodes' logs.
    #[serde(default)]
    pub audit: AuditConfig,
    /// The Prometheus metrics endpoint; none unless configured.
    #[serde(default)]
    pub metrics: Option<MetricsConfig>,
}

/// The `[metrics]` table: where the node serves `GET /metrics` (plain HTTP, no
/// authentication, so a loopback or management-network address).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// The TCP address the metrics endpoint binds.
    pub listen: SocketAddr,
}

fn default_crl_poll_ms() -> u64 {
    1000
}

/// The `[audit]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Sign a checkpoint this often when entries were added. Default 10 000 ms: an auditor or
    /// witness never sees entries older than this unsigned, at a cost of one ECDSA signature.
    pub checkpoint_interval_ms: u64,
    /// Also sign one as soon as this many entries were added. Default 1000.
    pub checkpoint_entries: u64,
    /// Cosign every other node's latest checkpoint this often. Default 60 000 ms: a rewritten
    /// log is noticed within about a minute, for n − 1 small calls per node per minute.
    pub cosign_interval_ms: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            checkpoint_interval_ms: 10_000,
            checkpoint_entries: 1000,
            cosign_interval_ms: 60_000,
        }
    }
}

/// Resource limits: everything a peer can make the node hold is bounded by one of these.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Bidirectional streams (= concurrent requests) one connection may have open. Default 256:
    /// a client fans out one request per record and node, so 256 keeps a bulk import busy
    /// while one connection cannot monopolise the node. Enforced by QUIC flow control, so a
    /// peer cannot even open stream 257.
    pub max_concurrent_streams: u32,
    /// Connections served at once; further handshakes are refused. Default 1024: each costs a
    /// few tens of KiB of QUIC state, and real clusters have a handful of clients per site.
    pub max_connections: u32,
    /// Time for one request from its first byte to the last byte of the answer. Default
    /// 30 000 ms: enough to move a 64 MiB share over a slow (~20 Mbit/s) inter-site link, short
    /// enough that a stalled peer releases its memory and stream slot quickly.
    pub request_timeout_ms: u64,
    /// A connection silent for this long is closed. Default 60 000 ms: clients reconnect
    /// cheaply, and the node sends no keep-alives of its own so idle clients do not hold
    /// connection slots forever.
    pub idle_timeout_ms: u64,
    /// Request body bytes buffered at once over all connections; a request waits for room
    /// before its body is read. Default 1 GiB, about 15 requests of the largest size, well
    /// inside a node's memory. Must be at least one maximum frame so every legal request can
    /// be served. (Responses are not counted yet: a get's answer is as large as its share.)
    pub max_inflight_request_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_concurrent_streams: 256,
            max_connections: 1024,
            request_timeout_ms: 30_000,
            idle_timeout_ms: 60_000,
            max_inflight_request_bytes: 1 << 30,
        }
    }
}

/// The `[store]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// The backend; sled unless stated.
    pub backend: StoreBackend,
    /// The bucket of the `s3` backend: required with it, refused with any other.
    pub s3: Option<S3Config>,
    /// How long a tombstone is kept, in seconds, before compaction removes it. Default 30
    /// days. While compaction is on, the node refuses puts and deletes whose version is older
    /// than this: such a late write could otherwise bring back a record whose tombstone was
    /// compacted. A write's version is its writer's clock, so this also bounds the clock skew a
    /// writer may have.
    pub tombstone_retention_secs: u64,
    /// How often compaction looks for tombstones past their retention, in milliseconds.
    /// Default one hour. 0 turns compaction (and the refusal of old versions) off.
    pub compaction_interval_ms: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            backend: StoreBackend::default(),
            s3: None,
            tombstone_retention_secs: 30 * 24 * 3600,
            compaction_interval_ms: 3_600_000,
        }
    }
}

impl StoreConfig {
    /// How long tombstones are kept, if compaction is on.
    pub fn tombstone_retention(&self) -> Option<std::time::Duration> {
        (self.compaction_interval_ms > 0)
            .then(|| std::time::Duration::from_secs(self.tombstone_retention_secs))
    }
}

/// Where shares are kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// sled in `data_dir/shares`: durable, the default.
    #[default]
    Sled,
    /// In memory only: everything is lost when the process ends. For tests and demos.
    Memory,
    /// A site's S3-compatible object store (`[store.s3]`), sealed and under hashed names;
    /// see [`crate::store::s3`].
    S3,
}

/// The longest idle timeout accepted: one day. Longer would hold dead peers' state for days.
const IDLE_TIMEOUT_MS_MAX: u64 = 86_400_000;

impl NodeConfig {
    /// The standard layout of a node directory (as `bunsan-cluster init` writes it):
    /// `dir/data`, `dir/cert.pem`, `dir/key.pem`, `dir/ca.pem`, default limits, sled store.
    pub fn in_dir(
        id: impl Into<String>,
        index: ShareIndex,
        listen: SocketAddr,
        dir: &Path,
    ) -> Self {
        Self {
            id: id.into(),
            index,
            listen,
            data_dir: dir.join("data"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            ca: dir.join("ca.pem"),
            crl: None,
            crl_poll_ms: default_crl_poll_ms(),
            limits: Limits::default(),
            store: StoreConfig::default(),
            metrics: None,
            cluster: None,
            audit: AuditConfig::default(),
        }
    }

    /// Reads, parses and checks `path`; relative paths inside are resolved against its
    /// directory.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
            path: path.to_owned(),
            reason: format!("cannot read: {e}"),
        })?;
        let base = path.parent().unwrap_or_else(|| Path::new(""));
        Self::from_toml(&text, base).map_err(|e| match e {
            Error::Config { reason, .. } => Error::Config {
                path: path.to_owned(),
                reason,
            },
            other => other,
        })
    }

    /// Parses and checks configuration text, resolving relative paths against `base`.
    pub fn from_toml(text: &str, base: &Path) -> Result<Self> {
        let mut config: NodeConfig = toml::from_str(text).map_err(|e| Error::Config {
            path: PathBuf::from("<text>"),
            reason: e.to_string(),
        })?;
        for path in [
            &mut config.data_dir,
            &mut config.cert,
            &mut config.key,
            &mut config.ca,
        ] {
            *path = base.join(&*path);
        }
        if let Some(crl) = &mut config.crl {
            *crl = base.join(&*crl);
        }
        if let Some(cluster) = &mut config.cluster {
            *cluster = base.join(&*cluster);
        }
        if let Some(s3) = &mut config.store.s3 {
            s3.resolve_paths(base);
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: the id is a host-name label and every limit is in range.
    /// [`Node::start`](crate::Node::start) calls it too, for configurations built in code.
    pub fn validate(&self) -> Result<()> {
        let id = &self.id;
        let label_ok = !id.is_empty()
            && id.len() <= 63
            && !id.starts_with('-')
            && !id.ends_with('-')
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        let l = &self.limits;
        let frame_max = u64::from(FRAME_MAX_BYTES) + PREFIX_BYTES as u64;
        let reason = if !label_ok {
            format!("id {id:?} is not a host-name label (1-63 of a-z, 0-9 and '-')")
        } else if l.max_concurrent_streams == 0 {
            "limits.max_concurrent_streams must be at least 1".to_owned()
        } else if l.max_connections == 0 {
            "limits.max_connections must be at least 1".to_owned()
        } else if l.request_timeout_ms == 0 {
            "limits.request_timeout_ms must be at least 1".to_owned()
        } else if l.idle_timeout_ms == 0 || l.idle_timeout_ms > IDLE_TIMEOUT_MS_MAX {
            format!("limits.idle_timeout_ms must be within 1..={IDLE_TIMEOUT_MS_MAX}")
        } else if self.audit.checkpoint_interval_ms < 10 || self.audit.cosign_interval_ms < 100 {
            "audit.checkpoint_interval_ms must be at least 10 and audit.cosign_interval_ms at \
             least 100"
                .to_owned()
        } else if self.store.compaction_interval_ms > 0 && self.store.tombstone_retention_secs == 0
        {
            "store.tombstone_retention_secs must be at least 1 while compaction is on".to_owned()
        } else if self.audit.checkpoint_entries == 0 {
            "audit.checkpoint_entries must be at least 1".to_owned()
        } else if l.max_inflight_request_bytes < frame_max {
            format!(
                "limits.max_inflight_request_bytes must be at least one maximum frame \
                 ({frame_max} bytes), or the largest records could never be stored"
            )
        } else {
            return match (self.store.backend, &self.store.s3) {
                (StoreBackend::S3, Some(s3)) => s3.validate(),
                (StoreBackend::S3, None) => Err(Error::Config {
                    path: PathBuf::from("<config>"),
                    reason: "store.backend = \"s3\" needs a [store.s3] table".to_owned(),
                }),
                (_, Some(_)) => Err(Error::Config {
                    path: PathBuf::from("<config>"),
                    reason: "[store.s3] is set but store.backend is not \"s3\"".to_owned(),
                }),
                (_, None) => Ok(()),
            };
        };
        Err(Error::Config {
            path: PathBuf::from("<config>"),
            reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCUMENTED: &str = r#"
id = "node-1"
index = 1
listen = "127.0.0.1:7101"
data_dir = "data"
cert = "cert.pem"
key = "key.pem"
ca = "/etc/bunsan/ca.pem"
crl = "crl.pem"
[limits]
max_concurrent_streams = 16
max_connections = 8
request_timeout_ms = 1000
[store]
backend = "memory"
[metrics]
listen = "127.0.0.1:9101"

[audit]
cosign_interval_ms = 500
"#;

    #[test]
    fn parses_the_documented_format_relative_to_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node.toml");
        std::fs::write(&path, DOCUMENTED).expect("write");
        let config = NodeConfig::load(&path).expect("load");
        assert_eq!(config.id, "node-1");
        assert_eq!(config.index.get(), 1);
        assert_eq!(config.data_dir, dir.path().join("data"));
        assert_eq!(config.cert, dir.path().join("cert.pem"));
        assert_eq!(config.ca, PathBuf::from("/etc/bunsan/ca.pem"));
        assert_eq!(config.crl, Some(dir.path().join("crl.pem")));
        assert_eq!(config.limits.max_concurrent_streams, 16);
        assert_eq!(config.limits.max_connections, 8);
        assert_eq!(config.limits.request_timeout_ms, 1000);
        assert_eq!(config.limits.idle_timeout_ms, 60_000, "defaulted");
        assert_eq!(config.store.backend, StoreBackend::Memory);
        let metrics = config.metrics.expect("metrics table");
        assert_eq!(metrics.listen, "127.0.0.1:9101".parse().expect("addr"));
        assert_eq!(config.audit.cosign_interval_ms, 500);
        assert_eq!(config.audit.checkpoint_entries, 1000, "defaulted");
        assert_eq!(config.cluster, None);
        let with_cluster = format!("cluster = \"../../cluster.toml\"\n{DOCUMENTED}");
        let config =
            NodeConfig::from_toml(&with_cluster, Path::new("/c/nodes/node-1")).expect("cluster");
        assert_eq!(
            config.cluster,
            Some(PathBuf::from("/c/nodes/node-1/../../cluster.toml"))
        );
    }

    #[test]
    fn optional_tables_default() {
        let text = "id = \"node-2\"\nindex = 2\nlisten = \"127.0.0.1:0\"\n\
                    data_dir = \"d\"\ncert = \"c\"\nkey = \"k\"\nca = \"a\"\n";
        let config = NodeConfig::from_toml(text, Path::new("/n")).expect("parse");
        assert_eq!(config.limits, Limits::default());
        assert_eq!(config.store.backend, StoreBackend::Sled);
        assert_eq!(config.crl, None);
        assert_eq!(config.crl_poll_ms, 1000);
        assert_eq!(config.metrics, None);
        let built = NodeConfig::in_dir(
            "node-2",
            ShareIndex::new(2).expect("index"),
            "127.0.0.1:0".parse().expect("addr"),
            Path::new("/n"),
        );
        assert_eq!(built.id, config.id);
        assert!(built.validate().is_ok());
    }

    #[test]
    fn unknown_keys_are_errors() {
        for typo in [
            DOCUMENTED.replace("crl =", "crls ="),
            DOCUMENTED.replace("max_connections", "max_conections"),
            DOCUMENTED.replace("backend", "engine"),
            DOCUMENTED.replace("\"memory\"", "\"rocksdb\""),
            DOCUMENTED.replace(
                "listen = \"127.0.0.1:9101\"",
                "address = \"127.0.0.1:9101\"",
            ),
        ] {
            let err = NodeConfig::from_toml(&typo, Path::new("")).expect_err("typo accepted");
            assert!(matches!(err, Error::Config { .. }), "{err}");
        }
    }

    #[test]
    fn bad_values_are_errors_naming_the_key() {
        let cases = [
            (DOCUMENTED.replace("node-1", "Node_1"), "host-name label"),
            (DOCUMENTED.replace("index = 1", "index = 0"), "index"),
            (
                DOCUMENTED.replace("max_connections = 8", "max_connections = 0"),
                "max_connections",
            ),
            (
                DOCUMENTED.replace("request_timeout_ms = 1000", "request_timeout_ms = 0"),
                "request_timeout_ms",
            ),
            (
                DOCUMENTED.replace("[store]", "max_inflight_request_bytes = 1024\n[store]"),
                "max_inflight_request_bytes",
            ),
        ];
        for (text, needle) in cases {
            let err = NodeConfig::from_toml(&text, Path::new("")).expect_err(needle);
            assert!(err.to_string().contains(needle), "{needle}: {err}");
        }
    }

    #[test]
    fn the_s3_backend_needs_its_table_and_resolves_its_paths() {
        let s3 = DOCUMENTED.replace(
            "backend = \"memory\"",
            "backend = \"s3\"\n[store.s3]\nendpoint = \"https://rgw.example\"\n\
             bucket = \"site-1\"\nsealing_key = \"store.key\"\ncredentials = \"s3.toml\"",
        );
        let config = NodeConfig::from_toml(&s3, Path::new("/n")).expect("s3");
        assert_eq!(config.store.backend, StoreBackend::S3);
        let table = config.store.s3.expect("table");
        assert_eq!(table.sealing_key, PathBuf::from("/n/store.key"));
        assert_eq!(table.credentials, Some(PathBuf::from("/n/s3.toml")));
        assert_eq!(
            (table.region.as_str(), table.prefix.as_str()),
            ("us-east-1", "")
        );
        let cases = [
            (
                DOCUMENTED.replace("\"memory\"", "\"s3\""),
                "needs a [store.s3] table",
            ),
            (
                s3.replace("backend = \"s3\"", "backend = \"sled\""),
                "store.backend is not",
            ),
            (s3.replace("https://", "http://"), "plain http"),
            (s3.replace("bucket = \"site-1\"\n", ""), "bucket"),
        ];
        for (text, needle) in cases {
            let err = NodeConfig::from_toml(&text, Path::new("")).expect_err(needle);
            assert!(
                matches!(&err, Error::Config { .. }) && err.to_string().contains(needle),
                "{needle}: {err}"
            );
        }
    }

    #[test]
    fn a_missing_file_names_its_path() {
        let err = NodeConfig::load(Path::new("/nonexistent/node.toml")).expect_err("missing");
        assert!(err.to_string().contains("/nonexistent/node.toml"), "{err}");
    }
}
