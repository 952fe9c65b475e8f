//! The auditor's side: fetch every node's audit data into a directory (incrementally), and
//! read such a directory back for offline verification and reporting.
//!
//! The directory layout and file formats are those of
//! [`bunsan_protocol::audit::export`]; verification and the report are pure functions in
//! [`bunsan_protocol::audit::verify`] and [`bunsan_protocol::audit::report`]. This module only
//! moves bytes between the nodes, the files and those functions.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use bunsan_protocol::audit::export::{self, checkpoint_file_name, ExportedEntry};
use bunsan_protocol::audit::report::NodeEntries;
use bunsan_protocol::audit::verify::NodeExport;
use bunsan_protocol::audit::wire::{
    AuditAnswer, AuditQuery, WitnessReport, AUDIT_CHECKPOINTS_LIMIT_MAX, AUDIT_ENTRIES_LIMIT_MAX,
};
use bunsan_protocol::audit::AuditEntry;
use bunsan_protocol::checkpoint::{node_of_origin, Checkpoint};
use bunsan_protocol::manifest::Manifest;
use bunsan_protocol::message::{Request, Response};
use bunsan_protocol::note::SignedNote;
use bunsan_protocol::RequestId;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use crate::error::{Error, Result};
use crate::Client;

/// The CA certificate's file name in an audit directory.
pub const CA_FILE: &str = "ca.pem";
/// The manifest's file name in an audit directory.
pub const MANIFEST_FILE: &str = "cluster.toml";

/// What `fetch` did for one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFetch {
    /// The node.
    pub node: String,
    /// Entries fetched this time.
    pub new_entries: u64,
    /// Entries in the directory now.
    pub entries: u64,
    /// The latest checkpoint size fetched.
    pub checkpoint: Option<u64>,
    /// What went wrong, if the node could not be fetched completely.
    pub problem: Option<String>,
}

/// Fetches every node's new entries, checkpoints (with cosignatures), consistency proofs and
/// cosigned checkpoints of other logs into `dir`, and copies the CA certificate and manifest
/// there. With `cosign`, first asks every node to sign a checkpoint and run a cosigning round,
/// so the newest entries arrive signed and cosigned. A node that cannot be reached is reported,
/// not fatal. Re-running fetches only what is new.
pub async fn fetch(
    client: &Client,
    ca_der: &[u8],
    dir: &Path,
    cosign: bool,
) -> Result<Vec<NodeFetch>> {
    fs::create_dir_all(dir.join("nodes")).map_err(write_err(dir))?;
    write_if_absent(&dir.join(CA_FILE), pem("CERTIFICATE", ca_der).as_bytes())?;
    write_if_absent(
        &dir.join(MANIFEST_FILE),
        client.manifest().to_toml()?.as_bytes(),
    )?;
    let nodes: Vec<String> = client
        .manifest()
        .nodes
        .iter()
        .map(|n| n.id.clone())
        .collect();
    if cosign {
        for node in &nodes {
            // Best effort: an unreachable node is reported by the fetch below.
            let _ = ask(
                client,
                node,
                AuditQuery::Checkpoints {
                    from_size: u64::MAX,
                    limit: 1,
                    sign_now: true,
                },
            )
            .await;
        }
        for node in &nodes {
            let _ = cosign_now(client, node).await;
        }
    }
    let mut summary = Vec::with_capacity(nodes.len());
    for node in &nodes {
        let mut fetched = NodeFetch {
            node: node.clone(),
            new_entries: 0,
            entries: 0,
            checkpoint: None,
            problem: None,
        };
        if let Err(e) = fetch_node(client, node, &dir.join("nodes").join(node), &mut fetched).await
        {
            fetched.problem = Some(e.to_string());
        }
        summary.push(fetched);
    }
    Ok(summary)
}

/// Asks `node` to run a cosigning round now.
pub async fn cosign_now(client: &Client, node: &str) -> Result<Vec<WitnessReport>> {
    match ask(client, node, AuditQuery::CosignNow).await? {
        AuditAnswer::CosignRound { reports } => Ok(reports),
        other => Err(unexpected(node, &other)),
    }
}

async fn fetch_node(
    client: &Client,
    node: &str,
    dir: &Path,
    fetched: &mut NodeFetch,
) -> Result<()> {
    for sub in ["checkpoints", "proofs", "witnessed"] {
        fs::create_dir_all(dir.join(sub)).map_err(write_err(dir))?;
    }
    let entries_path = dir.join("entries");
    let have = match fs::read_to_string(&entries_path) {
        Ok(text) => text.lines().filter(|l| !l.is_empty()).count() as u64,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(read_err(&entries_path)(e)),
    };
    fetched.entries = have;
    let previous = latest_checkpoint_size(&dir.join("checkpoints"));
    // Checkpoints from the last one fetched (again: it may have gained cosignatures).
    let mut from_size = previous.unwrap_or(0);
    let mut latest = previous;
    loop {
        let (certificate, notes) = match ask(
            client,
            node,
            AuditQuery::Checkpoints {
                from_size,
                limit: AUDIT_CHECKPOINTS_LIMIT_MAX,
                sign_now: false,
            },
        )
        .await?
        {
            AuditAnswer::Checkpoints { certificate, notes } => (certificate, notes),
            other => return Err(unexpected(node, &other)),
        };
        fs::write(
            dir.join("certificate.pem"),
            pem("CERTIFICATE", &certificate),
        )
        .map_err(write_err(dir))?;
        let count = notes.len();
        for note in notes {
            let size = save_checkpoint(&dir.join("checkpoints"), &note)?;
            latest = latest.max(Some(size));
            from_size = size + 1;
        }
        if count < AUDIT_CHECKPOINTS_LIMIT_MAX as usize {
            break;
        }
    }
    fetched.checkpoint = latest;
    let target = latest.unwrap_or(0);
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&entries_path)
        .map_err(write_err(&entries_path))?;
    let mut next = have;
    while next < target {
        let limit = (target - next).min(u64::from(AUDIT_ENTRIES_LIMIT_MAX)) as u32;
        let records = match ask(client, node, AuditQuery::Entries { from: next, limit }).await? {
            AuditAnswer::Entries { records, .. } => records,
            other => return Err(unexpected(node, &other)),
        };
        if records.is_empty() {
            fetched.problem = Some(format!(
                "the node signed a checkpoint of size {target} but serves only {next} entries"
            ));
            break;
        }
        let mut text = String::new();
        for record in &records {
            text.push_str(&export::entry_line(next, record));
            next += 1;
        }
        file.write_all(text.as_bytes())
            .map_err(write_err(&entries_path))?;
    }
    file.sync_all().map_err(write_err(&entries_path))?;
    fetched.new_entries = next - have;
    fetched.entries = next;
    if let Some(from) = previous.filter(|&from| from > 0 && from < target) {
        match ask(
            client,
            node,
            AuditQuery::Consistency {
                from_size: from,
                to_size: target,
            },
        )
        .await?
        {
            AuditAnswer::Proof { hashes } => fs::write(
                dir.join("proofs")
                    .join(format!("{from:020}-{target:020}.proof")),
                export::proof_text(from, target, &hashes),
            )
            .map_err(write_err(dir))?,
            other => return Err(unexpected(node, &other)),
        }
    }
    match ask(client, node, AuditQuery::Witnessed).await? {
        AuditAnswer::Witnessed { notes } => {
            for note in notes {
                let Ok(checkpoint) =
                    SignedNote::parse(&note).and_then(|n| Checkpoint::parse_text(&n.text))
                else {
                    continue;
                };
                let log = node_of_origin(&checkpoint.origin).unwrap_or("unknown");
                let log_dir = dir.join("witnessed").join(sanitize(log));
                fs::create_dir_all(&log_dir).map_err(write_err(&log_dir))?;
                fs::write(log_dir.join(checkpoint_file_name(checkpoint.size)), note)
                    .map_err(write_err(&log_dir))?;
            }
        }
        other => return Err(unexpected(node, &other)),
    }
    Ok(())
}

/// Saves a checkpoint note as `SIZE.note`: merging cosignatures into a stored note of the same
/// checkpoint, and keeping a different checkpoint of the same size beside it (a fork is
/// evidence, never overwritten).
fn save_checkpoint(dir: &Path, note: &str) -> Result<u64> {
    let parsed = SignedNote::parse(note)?;
    let size = Checkpoint::parse_text(&parsed.text)?.size;
    let path = dir.join(checkpoint_file_name(size));
    let merged = match fs::read_to_string(&path) {
        Ok(existing) => match SignedNote::parse(&existing) {
            Ok(mut existing) if existing.text == parsed.text => {
                for signature in parsed.signatures {
                    existing.add_signature(signature);
                }
                existing.to_text()
            }
            _ => {
                let digest = blake3::hash(note.as_bytes()).to_hex();
                let fork = dir.join(format!("{size:020}-{}.note", &digest[..16]));
                fs::write(&fork, note).map_err(write_err(&fork))?;
                return Ok(size);
            }
        },
        Err(_) => note.to_owned(),
    };
    fs::write(&path, merged).map_err(write_err(&path))?;
    Ok(size)
}

fn latest_checkpoint_size(dir: &Path) -> Option<u64> {
    fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(".note")?.parse::<u64>().ok()
        })
        .max()
}

async fn ask(client: &Client, node: &str, query: AuditQuery) -> Result<AuditAnswer> {
    let request = Request::Audit {
        request_id: RequestId::random(&mut rand::rng()),
        query,
    };
    match client.call(node, &request).await? {
        Response::Audit(answer) => Ok(answer),
        Response::Error(error) => Err(Error::Remote {
            node: node.to_owned(),
            error,
        }),
        other => Err(Error::UnexpectedResponse {
            node: node.to_owned(),
            request: "audit",
            got: format!("{other:?}"),
        }),
    }
}

fn unexpected(node: &str, answer: &AuditAnswer) -> Error {
    Error::UnexpectedResponse {
        node: node.to_owned(),
        request: "audit",
        got: format!("{answer:?}"),
    }
}

/// A fetched audit directory, read back.
#[derive(Debug, Clone)]
pub struct AuditDir {
    /// The CA certificate (DER) the directory is checked against.
    pub ca: Vec<u8>,
    /// The manifest copied by fetch, if present.
    pub manifest: Option<Manifest>,
    /// Every node's data.
    pub nodes: Vec<NodeExport>,
}

/// Reads an audit directory; the CA certificate comes from `ca` if given, else `DIR/ca.pem`.
pub fn load(dir: &Path, ca: Option<&Path>) -> Result<AuditDir> {
    let ca_path = ca.map_or_else(|| dir.join(CA_FILE), Path::to_path_buf);
    let ca = read_certificate(&ca_path)?.ok_or_else(|| Error::BadIdentity {
        path: ca_path.clone(),
        reason: "no CA certificate".to_owned(),
    })?;
    let manifest = match fs::read_to_string(dir.join(MANIFEST_FILE)) {
        Ok(text) => Some(Manifest::from_toml(&text)?),
        Err(_) => None,
    };
    let nodes_dir = dir.join("nodes");
    let mut nodes = Vec::new();
    for node_dir in sorted_dir(&nodes_dir)? {
        if !node_dir.is_dir() {
            continue;
        }
        let node_id = node_dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        let entries = match fs::read_to_string(node_dir.join("entries")) {
            Ok(text) => export::parse_entries(&text),
            Err(_) => Vec::new(),
        };
        let mut proofs = Vec::new();
        for path in sorted_dir(&node_dir.join("proofs"))? {
            let parsed = fs::read_to_string(&path)
                .map_err(|e| e.to_string())
                .and_then(|text| export::parse_proof(&text).map_err(|e| e.to_string()));
            proofs.push((file_name(&path), parsed));
        }
        let mut witnessed = Vec::new();
        for log_dir in sorted_dir(&node_dir.join("witnessed"))? {
            for (name, note) in notes_in(&log_dir)? {
                witnessed.push((format!("{}/{name}", file_name(&log_dir)), note));
            }
        }
        nodes.push(NodeExport {
            certificate: read_certificate(&node_dir.join("certificate.pem"))?,
            checkpoints: notes_in(&node_dir.join("checkpoints"))?,
            node_id,
            entries,
            proofs,
            witnessed,
        });
    }
    Ok(AuditDir {
        ca,
        manifest,
        nodes,
    })
}

/// The decodable entries of every node, for the report (verify first: the report states what
/// the logs say, not whether they are intact).
pub fn entries_of(nodes: &[NodeExport]) -> Vec<NodeEntries> {
    nodes
        .iter()
        .map(|node| NodeEntries {
            node_id: node.node_id.clone(),
            entries: node
                .entries
                .iter()
                .filter_map(|e: &ExportedEntry| e.entry.as_ref().ok())
                .filter_map(|bytes| AuditEntry::decode(bytes).ok())
                .collect(),
        })
        .collect()
}

fn notes_in(dir: &Path) -> Result<Vec<(String, String)>> {
    let mut notes = Vec::new();
    for path in sorted_dir(dir)? {
        if path.extension().is_some_and(|e| e == "note") {
            let text = fs::read_to_string(&path).map_err(read_err(&path))?;
            notes.push((file_name(&path), text));
        }
    }
    Ok(notes)
}

fn sorted_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut paths: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(entries) => entries.flatten().map(|e| e.path()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(read_err(dir)(e)),
    };
    paths.sort();
    Ok(paths)
}

fn read_certificate(path: &Path) -> Result<Option<Vec<u8>>> {
    let pem = match fs::read(path) {
        Ok(pem) => pem,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_err(path)(e)),
    };
    match CertificateDer::pem_slice_iter(&pem).next() {
        Some(Ok(cert)) => Ok(Some(cert.to_vec())),
        _ => Err(Error::BadIdentity {
            path: path.to_owned(),
            reason: "not a PEM certificate".to_owned(),
        }),
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A node id as a single path component (ids are host-name labels, but the note is remote data).
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// PEM text of one DER object.
fn pem(label: &str, der: &[u8]) -> String {
    let body = BASE64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn write_if_absent(path: &Path, contents: &[u8]) -> Result<()> {
    if path.exists() {
        return Ok(());
    }
    fs::write(path, contents).map_err(write_err(path))
}

fn write_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::WriteFile {
        path: path.to_owned(),
        source,
    }
}

fn read_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::ReadFile {
        path: path.to_owned(),
        source,
    }
}
