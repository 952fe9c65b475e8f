//! # bunsan-benches: what the end-to-end benchmark is made of
//!
//! `bunsan-bench` (in `src/bin`) measures a real cluster (five node processes on loopback,
//! 3-of-5) through the real SDK, and in the same run the floors that bound it: the same bytes
//! over quinn with the same TLS policy to five echo endpoints, and the same share written to
//! sled with a flush. It prints our ratio to each floor, so a result says how much of the time
//! is ours and how much the transport and the disk would take anyway.
//!
//! - [`measure`]: runs an operation at a fixed concurrency for a time budget; percentiles.
//! - [`floors`]: the quinn echo endpoints and the sled insert + flush.
//! - [`large`]: the large record, streamed through the chunked layer in a child process
//!   whose peak RSS is the client's.
//! - [`report`]: the table, the JSON file and the SVG plot.
//!
//! The sharing kernel's own benchmark is `benches/sharing.rs` (`cargo bench`).

pub mod floors;
pub mod large;
pub mod measure;
pub mod report;
