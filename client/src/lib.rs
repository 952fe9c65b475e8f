//! # bunsan-client: the SDK for talking to a Bunsan cluster
//!
//! A [`Client`] is built from the cluster manifest and an identity (certificate + key). Every
//! operation fans out to all nodes concurrently over QUIC with mutual TLS:
//!
//! ```text
//! put:    record ‖ salt ─split(k,n)─▶ share i + signed header (commitments, sealed nonces)
//!         ─▶ node i                                    ok once W nodes acknowledged durably
//! get:    node 1..n ─▶ envelopes ─verify signature + commitment─▶ k shares of the newest
//!         ─combine─▶ record ‖ salt ─end-to-end check─▶ record   (robust decoding on failure)
//! delete: tombstone(version) ─▶ every node            ok once W nodes acknowledged durably
//! list:   every node's inventory, merged by key, newest version wins
//! ```
//!
//! The record exists in plaintext only inside this process: nodes see one share each.
//! [`tls`] holds the transport policy every Bunsan endpoint uses (nodes included), and
//! [`socket`] the UDP socket setup they share; [`audit`] fetches the nodes' audit logs for
//! offline verification (`bunsan audit`). [`chunked`] stores records of any size in bounded
//! memory as chunks tied by a manifest, and [`cli`] is the `bunsan` command line.
//! [`ssmix2`] is a collector built on the SDK: it uploads an SS-MIX2 storage tree under
//! pseudonymous keys (the `bunsan-ssmix2` command), and [`logging`] the log setup every
//! command-line tool shares.

pub mod audit;
pub mod chunked;
pub mod cli;
pub mod client;
pub mod error;
pub mod logging;
pub mod read;
pub mod socket;
pub mod ssmix2;
pub mod tls;
mod transport;

pub use chunked::{ChunkOptions, Chunked};
pub use client::{
    Client, ClientOptions, GetOutcome, ListedRecord, PutReceipt, BATCHES_IN_FLIGHT,
    BATCH_BYTES_MAX, BATCH_RECORD_MAX,
};
pub use error::{Error, NodeFailure, Result};
pub use read::{BadShare, BadShareReason};
pub use tls::Identity;
