//! # bunsan-client: the SDK for talking to a Bunsan cluster
//!
//! A [`Client`] is built from the cluster manifest and an identity (certificate + key). Every
//! operation fans out to all nodes concurrently over QUIC with mutual TLS:
//!
//! ```text
//! put:    record ─split(k,n)─▶ share i ─▶ node i      ok once W nodes acknowledged durably
//! get:    node 1..n ─▶ envelopes ─group by version─▶ k shares of the newest ─combine─▶ record
//! delete: tombstone(version) ─▶ every node            ok once W nodes acknowledged durably
//! list:   every node's inventory, merged by key, newest version wins
//! ```
//!
//! The record exists in plaintext only inside this process: nodes see one share each.
//! [`chunked`] stores records of any size in bounded memory as chunks tied by a manifest, and
//! [`cli`] is the `bunsan` command line. [`tls`] holds the transport policy every Bunsan
//! endpoint uses (nodes included), and [`socket`] the UDP socket setup they share.

pub mod chunked;
pub mod cli;
pub mod client;
pub mod error;
pub mod socket;
pub mod tls;
mod transport;

pub use chunked::{ChunkOptions, Chunked};
pub use client::{Client, ClientOptions, GetOutcome, ListedRecord, PutReceipt};
pub use error::{Error, NodeFailure, Result};
pub use tls::Identity;
