//! Offline export of one share, for recovery without Bunsan (docs/RECOVERY.md).
//!
//! `bunsan-node export --config node.toml KEY --out FILE` opens the node's store directly (the
//! node must be stopped: sled allows one process at a time) and writes:
//!
//! - `FILE`: the share in the `sharks` byte layout, `[x] ++ y`: the plain `sharks` crate
//!   combines any k such files into `record ‖ salt`;
//! - `FILE.txt`: what is needed to check the result by hand: key, version, k, n, record length,
//!   the end-to-end check BLAKE3(salt ‖ record) from the signed header, the share's commitment
//!   and nonce, and the writer certificate and signature;
//! - `FILE.envelope`: the whole stored envelope (format byte + postcard), for Bunsan tools.
//!
//! A share is exported only if it still matches its commitment: a rotten share would make the
//! recovery fail its end-to-end check without saying which file was wrong. All three files hold
//! share material or its nonce and are created with mode 0600, never overwritten.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use bunsan_protocol::envelope::ShareEnvelope;
use bunsan_protocol::RecordKey;

use crate::config::NodeConfig;
use crate::error::{Error, Result};
use crate::store;

/// One share read from a node's store, checked against its commitment.
pub struct ExportedShare {
    envelope: ShareEnvelope,
}

impl std::fmt::Debug for ExportedShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportedShare")
            .field("envelope", &self.envelope)
            .finish()
    }
}

/// Reads the share of `key` from the store of the node configured by `config`.
///
/// Fails if the store cannot be opened (for sled: the node is still running), the node holds
/// nothing or only a tombstone for `key` ([`Error::NothingToExport`]), or the share fails its
/// commitment ([`Error::Corrupt`]).
pub async fn export(config: &NodeConfig, key: &RecordKey) -> Result<ExportedShare> {
    let store = store::open(&config.store, &config.data_dir, config.index).await?;
    let nothing = |reason: &str| Error::NothingToExport {
        key: key.clone(),
        reason: reason.to_owned(),
    };
    let envelope = store
        .get(key)
        .await?
        .ok_or_else(|| nothing("this node holds no share of it"))?;
    if envelope.header.tombstone {
        return Err(nothing("it was deleted"));
    }
    envelope.check_commitment().map_err(|e| Error::Corrupt {
        key: key.to_string(),
        reason: e.to_string(),
    })?;
    Ok(ExportedShare { envelope })
}

impl ExportedShare {
    /// The envelope as stored.
    pub fn envelope(&self) -> &ShareEnvelope {
        &self.envelope
    }

    /// The share as `sharks` reads it: the x byte, then the y bytes (record part, then salt
    /// part).
    pub fn sharks_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(1 + self.envelope.payload.len());
        bytes.push(self.envelope.index.get());
        bytes.extend_from_slice(&self.envelope.payload);
        bytes
    }

    /// The `FILE.txt` description: one `name = value` line per fact.
    pub fn description(&self) -> String {
        let e = &self.envelope;
        let h = &e.header;
        let hex_of = |bytes: &[u8]| hex::encode(bytes);
        let mut text = String::new();
        let mut line = |name: &str, value: String| {
            let _ = writeln!(text, "{name} = {value}");
        };
        line(
            "format",
            "bunsan share export, envelope format 2".to_owned(),
        );
        line("key", h.key.to_string());
        line("version", h.version.to_string());
        line("share_index", e.index.to_string());
        line("threshold", h.scheme.threshold().to_string());
        line("shares", h.scheme.shares().to_string());
        line("record_len", h.record_len.to_string());
        line(
            "salt_bytes",
            bunsan_protocol::integrity::SALT_BYTES.to_string(),
        );
        line(
            "record_check_blake3_salt_then_record",
            h.record_check.map(|d| hex_of(&d.0)).unwrap_or_default(),
        );
        line(
            "commitment_blake3_nonce_x_share",
            h.commitment(e.index)
                .map(|d| hex_of(&d.0))
                .unwrap_or_default(),
        );
        line(
            "nonce",
            e.nonce
                .as_ref()
                .map(|n| hex_of(n.as_bytes()))
                .unwrap_or_default(),
        );
        line("writer_certificate_der", hex_of(&e.signature.certificate));
        line(
            "signature_ecdsa_p256_sha256",
            hex_of(&e.signature.signature),
        );
        text
    }

    /// Writes `out`, `out.txt` and `out.envelope` (mode 0600, refusing to overwrite).
    pub fn write(&self, out: &Path) -> Result<Vec<PathBuf>> {
        let envelope = self.envelope.encode()?;
        let files = [
            (out.to_path_buf(), self.sharks_bytes()),
            (with_suffix(out, ".txt"), self.description().into_bytes()),
            (with_suffix(out, ".envelope"), envelope),
        ];
        for (path, bytes) in &files {
            write_private(path, bytes)?;
        }
        Ok(files.into_iter().map(|(path, _)| path).collect())
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| Error::Io {
        action: "write",
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)
}
