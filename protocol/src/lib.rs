//! # bunsan-protocol: the pure core of Bunsan
//!
//! Bunsan stores every medical record as k-of-n Shamir shares over GF(256), one share per
//! storage node. This crate holds everything that can be decided without I/O:
//!
//! ```text
//!  record ──split──▶ n shares ──envelope──▶ Request::Put ──frame──▶ bytes (to node i)
//!  bytes ──frame──▶ Response::Share ──envelope──▶ k shares ──combine──▶ record
//! ```
//!
//! - [`gf256`] and [`shamir`]: constant-time field arithmetic and k-of-n sharing, in the same field
//!   (0x11d) and share layout as the `sharks` crate, so `sharks` can always recover our shares.
//! - [`types`]: newtypes that cannot hold a bad value (threshold, share index, key, version).
//! - [`envelope`]: what a node stores for one record version, with a format version byte.
//! - [`integrity`]: salted per-share commitments, the end-to-end record check, the writer's
//!   signature over the header and its verification against the cluster CA.
//! - [`seal`]: each share's commitment nonce sealed to its node's key (ECDH P-256 + AEAD).
//! - [`dealing`]: record → n signed envelopes, and verified shares → checked record.
//! - [`robust`]: Berlekamp–Welch decoding that locates wrong shares.
//! - [`chunk`]: the manifest that ties the chunks of a large record together, and chunk keys.
//! - [`message`] and [`frame`]: the request/response messages and their length-prefixed framing.
//! - [`manifest`]: the cluster manifest (`cluster.toml`) every client and tool reads.
//! - [`role`]: the roles carried in certificates and what each may do.
//! - [`hlc`]: the hybrid logical clock that orders versions; time is passed in, never read.
//! - [`audit`]: audit entries and their hash chain, the audit wire messages, the export
//!   format, offline verification of fetched logs and the reconstruction report;
//!   [`merkle`] (RFC 6962 trees and proofs), [`note`] and [`checkpoint`] (C2SP signed notes,
//!   checkpoints and cosignatures), [`node_key`] (node keys checked against the cluster CA).
//! - [`repair`]: regenerating one node's share from k helpers' masked contributions, so that
//!   no party ever holds k shares; [`refresh`]: re-randomising all shares of a record with a
//!   distributed sharing of zero (a new epoch).
//!
//! There are no sockets, no async runtime and no clock here (the sans-IO style of
//! `quinn-proto`): the `node` and `client` crates move bytes between this core and the network
//! or the disk, and the hard logic is tested here with plain unit and property tests.

// `unsafe` is denied crate-wide (workspace lint); only the SIMD kernel module allows it.

pub mod audit;
pub mod batch;
mod cert_cache;
pub mod checkpoint;
pub mod chunk;
pub mod dealing;
pub mod envelope;
pub mod error;
pub mod frame;
pub mod gf256;
pub mod hlc;
pub mod integrity;
pub mod manifest;
pub mod merkle;
pub mod message;
pub mod node_key;
pub mod note;
pub mod refresh;
pub mod repair;
pub mod robust;
pub mod role;
pub mod seal;
pub mod shamir;
#[cfg(test)]
mod test_pki;
pub mod types;

pub use error::{Error, Result};
pub use types::{Purpose, RecordKey, RequestId, Scheme, ShareIndex, Threshold, Version, WriterId};
