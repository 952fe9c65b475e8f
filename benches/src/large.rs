//! The large record: streamed through `bunsan_client::chunked` in a child process, so that its
//! peak RSS (`VmHWM`) is the client's alone and not the benchmark's or the nodes'.
//!
//! The parent runs `bunsan-bench large-client ...` ([`run_child`]) and reads one JSON line of
//! [`LargeResult`] from its standard output ([`spawn_child`]). The record is generated while
//! it is read (never held whole), and the get writes into a sink that only hashes, so the
//! figures are the SDK's streaming path and nothing else.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;

use anyhow::Context;
use bunsan_client::{ChunkOptions, Chunked, Client, ClientOptions, Identity};
use bunsan_protocol::manifest::Manifest;
use bunsan_protocol::{Purpose, RecordKey};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::measure::{peak_rss_bytes, reset_peak_rss};

/// What the child measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LargeResult {
    /// The record's length in bytes.
    pub bytes: u64,
    /// Chunks written.
    pub chunks: usize,
    /// Seconds for the streamed put (chunks and manifest, all acknowledged).
    pub put_secs: f64,
    /// Seconds for the streamed get (every chunk checked, the record's digest checked).
    pub get_secs: f64,
    /// The child's peak RSS during the put, in bytes.
    pub put_peak_rss: u64,
    /// The child's peak RSS during the get, in bytes (the whole run's if the kernel could not
    /// reset the peak between the two).
    pub get_peak_rss: u64,
    /// Whether the peak was reset between put and get.
    pub peak_reset: bool,
}

/// Runs the child: puts a generated record of `bytes` bytes as the collector identity in
/// `clients/collector`, gets it back as `clients/reader`, and prints a [`LargeResult`] line.
pub async fn run_child(manifest: &Path, clients: &Path, bytes: u64) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(manifest)
        .with_context(|| format!("cannot read {}", manifest.display()))?;
    let manifest = Manifest::from_toml(&text)?;
    let options = ClientOptions {
        timeout: std::time::Duration::from_secs(60),
        ..ClientOptions::default()
    };
    let collector = Client::new(
        manifest.clone(),
        Identity::load(&clients.join("collector"))?,
        options.clone(),
    )?;
    let reader = Client::new(manifest, Identity::load(&clients.join("reader"))?, options)?;
    let key = RecordKey::new(format!("bench/large/{}", std::process::id()))?;
    let purpose = Purpose::new("drill", "bunsan-bench large record")?;

    let baseline_reset = reset_peak_rss();
    let started = Instant::now();
    let source = PatternReader::new(bytes);
    let receipt = Chunked::with_options(&collector, ChunkOptions::default())
        .put_stream(&key, source)
        .await?;
    let put_secs = started.elapsed().as_secs_f64();
    let put_peak_rss = peak_rss_bytes().unwrap_or(0);

    let peak_reset = baseline_reset && reset_peak_rss();
    let started = Instant::now();
    let mut sink = HashSink::default();
    let streamed = Chunked::with_options(&reader, ChunkOptions::default())
        .get_to(&key, &purpose, &mut sink, None)
        .await?;
    let get_secs = started.elapsed().as_secs_f64();
    let get_peak_rss = peak_rss_bytes().unwrap_or(0);
    anyhow::ensure!(
        streamed.written == bytes && sink.len == bytes,
        "the get returned {} bytes of {bytes}",
        sink.len
    );
    // Hashed after the timings: the generator makes the same record again.
    anyhow::ensure!(
        sink.hasher.finalize() == pattern_digest(bytes),
        "the record came back different"
    );
    collector.close().await;
    reader.close().await;
    let result = LargeResult {
        bytes,
        chunks: receipt.chunks,
        put_secs,
        get_secs,
        put_peak_rss,
        get_peak_rss,
        peak_reset,
    };
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}

/// Runs `exe large-client ...` and parses its result line.
pub async fn spawn_child(
    exe: &Path,
    manifest: &Path,
    clients: &Path,
    bytes: u64,
) -> anyhow::Result<LargeResult> {
    let output = tokio::process::Command::new(exe)
        .arg("large-client")
        .arg("--cluster")
        .arg(manifest)
        .arg("--identity-dir")
        .arg(clients)
        .arg("--bytes")
        .arg(bytes.to_string())
        .stderr(std::process::Stdio::inherit())
        .output()
        .await?;
    anyhow::ensure!(
        output.status.success(),
        "the large-record client failed ({})",
        output.status
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .last()
        .context("the large-record client printed nothing")?;
    Ok(serde_json::from_str(line)?)
}

/// The length of the block the generated record repeats (with the block number stamped in).
const BLOCK_BYTES: usize = 1 << 20;

/// A record of `len` bytes made on the fly: one random block repeated, each copy stamped with
/// its number, so that every chunk differs and nothing is held but one block.
pub struct PatternReader {
    block: Vec<u8>,
    current: Vec<u8>,
    current_index: u64,
    position: u64,
    len: u64,
}

impl PatternReader {
    /// A record of `len` bytes from a fixed seed (so its digest is known in advance).
    pub fn new(len: u64) -> Self {
        let mut block = vec![0u8; BLOCK_BYTES];
        let mut rng = <rand_chacha::ChaCha12Rng as rand::SeedableRng>::seed_from_u64(0xb5);
        rng.fill_bytes(&mut block);
        Self {
            current: stamp(&block, 0),
            block,
            current_index: 0,
            position: 0,
            len,
        }
    }
}

fn stamp(block: &[u8], index: u64) -> Vec<u8> {
    let mut copy = block.to_vec();
    copy[..8].copy_from_slice(&index.to_le_bytes());
    copy
}

/// BLAKE3 of the record a [`PatternReader`] of `len` bytes produces.
pub fn pattern_digest(len: u64) -> blake3::Hash {
    let mut reader = PatternReader::new(len);
    let mut hasher = blake3::Hasher::new();
    while reader.position < reader.len {
        let range = reader.advance(usize::MAX);
        hasher.update(&reader.current[range]);
    }
    hasher.finalize()
}

impl PatternReader {
    /// Moves on by up to `max` bytes; returns where they are in the current block.
    fn advance(&mut self, max: usize) -> Range<usize> {
        let index = self.position / BLOCK_BYTES as u64;
        if index != self.current_index {
            self.current = stamp(&self.block, index);
            self.current_index = index;
        }
        let offset = (self.position % BLOCK_BYTES as u64) as usize;
        let left = (self.len - self.position).min(BLOCK_BYTES as u64) as usize;
        let take = (BLOCK_BYTES - offset).min(left).min(max);
        self.position += take as u64;
        offset..offset + take
    }
}

impl AsyncRead for PatternReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.position < self.len && buf.remaining() > 0 {
            let range = self.advance(buf.remaining());
            buf.put_slice(&self.current[range]);
        }
        Poll::Ready(Ok(()))
    }
}

/// A sink that hashes and counts what is written to it.
#[derive(Default)]
pub struct HashSink {
    /// BLAKE3 of everything written.
    pub hasher: blake3::Hasher,
    /// Bytes written.
    pub len: u64,
}

impl AsyncWrite for HashSink {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.hasher.update(buf);
        self.len += buf.len() as u64;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The clients directory of a cluster directory.
pub fn clients_dir(cluster_dir: &Path) -> PathBuf {
    cluster_dir.join("clients")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn the_pattern_is_what_its_digest_says() {
        let len = 3 * BLOCK_BYTES as u64 + 17;
        let mut reader = PatternReader::new(len);
        let mut all = Vec::new();
        reader.read_to_end(&mut all).await.expect("read");
        assert_eq!(all.len() as u64, len);
        assert_eq!(blake3::hash(&all), pattern_digest(len));
        assert_ne!(all[..BLOCK_BYTES], all[BLOCK_BYTES..2 * BLOCK_BYTES]);
    }
}
