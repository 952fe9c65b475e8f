//! # bunsan-cluster: creating and running Bunsan clusters
//!
//! Everything an operator (or a test) needs between "I have the binaries" and "I have a
//! cluster answering requests":
//!
//! ```text
//! init ──▶ DIR/ ── cluster.toml      manifest: k, n, W, nodes and their addresses
//!               ├─ ca/               the cluster CA (key stays here, mode 0600), CRL
//!               ├─ nodes/node-I/     node.toml + node identity + data/
//!               └─ clients/NAME/     collector, reader, auditor, admin identities
//!
//! up ──▶ bunsan-node --config DIR/nodes/node-I/node.toml   (× n, logs and pids in DIR/run/)
//!        └─ health request to each node over QUIC + mTLS, as admin
//! status ──▶ every node's counts, as admin          down ──▶ SIGTERM by pid file
//! revoke NAME / crl --renew ──▶ DIR/ca/crl.pem ──copy──▶ DIR/nodes/*/crl.pem (nodes reload)
//! ```
//!
//! - [`pki`]: the cluster CA and the leaf certificates it issues; each leaf carries its role as
//!   a `urn:bunsan:role:<role>` URI and its holder's name as the common name.
//! - [`layout`]: where each file lives in a cluster directory, and `node.toml`.
//! - [`init`](mod@init): creating a cluster directory, and issuing more identities.
//! - [`crl`]: revoking identities: the CRL, its record in `DIR/ca/revoked.toml`, renewal, and
//!   its distribution to every node directory.
//! - [`local`]: running a cluster as child processes ([`LocalCluster`]), which integration
//!   tests use too.
//! - [`ops`]: `down` and `status` for a cluster that another process started.
//! - [`status`]: the `status` table and JSON (versions, counts, audit head, lag).
//! - [`demo`](mod@demo): the narrated end-to-end demonstration.
//!
//! What this crate does not do: it never sees a record's plaintext except in the demo (as the
//! collector and reader would), and it is not a deployment tool for real machines. A
//! production cluster uses the same `init` output, copied node by node to its hosts, with
//! the CA key kept offline.
//!
//! The crate is Unix-only: it sets file modes and signals node processes.

pub mod crl;
pub mod demo;
pub mod drill;
pub mod error;
pub mod init;
pub mod inventory;
pub mod layout;
pub mod local;
pub mod ops;
pub mod pki;
pub mod refresh;
pub mod repair;
pub mod status;

pub use crl::{renew as renew_crl, revoke, CrlWindow, RevocationReason};
pub use demo::{demo, DemoOptions, DemoReport};
pub use error::{Error, Result};
pub use init::{init, issue, InitOptions};
pub use layout::{ClusterLayout, NodeConfig};
pub use local::{LocalCluster, LocalNode, LocalOptions};
pub use pki::{ClusterCa, IssuedIdentity, Validity};
