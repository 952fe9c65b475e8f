//! `bunsan-cluster demo`: a whole cluster's life in one command, narrated step by step.
//!
//! 1. `init` a 3-of-5 cluster on free loopback ports in a temporary directory;
//! 2. start the five nodes and wait until they are healthy;
//! 3. put four sample records as the collector: a (synthetic) clinic note, a check-up result as
//!    JSON, 1 MiB of binary data, and an empty record;
//! 4. read them back as the reader and compare them bit for bit;
//! 5. search every file under every node's data directory for the records' plaintext, to show
//!    that no node holds it;
//! 6. stop n − k nodes and read every record again from the k that are left;
//! 7. stop the cluster.
//!
//! The demo fails (and `bunsan-cluster demo` exits non-zero) unless every record comes back
//! bit-exact both times and no plaintext is found on disk.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use bunsan_protocol::role::Role;
use bunsan_protocol::{Purpose, RecordKey};

use crate::error::{io_err, Error, Result};
use crate::init::{init, InitOptions};
use crate::local::{LocalCluster, LocalOptions};

/// What the demo runs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// n.
    pub nodes: usize,
    /// k.
    pub threshold: u8,
    /// Where to create the cluster; `None` uses a temporary directory removed at the end.
    /// A given directory is kept, so its logs and stores can be inspected afterwards.
    pub dir: Option<PathBuf>,
    /// How the nodes run.
    pub local: LocalOptions,
}

impl Default for DemoOptions {
    /// 3-of-5 in a temporary directory.
    fn default() -> Self {
        Self {
            nodes: 5,
            threshold: 3,
            dir: None,
            local: LocalOptions::default(),
        }
    }
}

/// What a successful demo did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoReport {
    /// Records written, read back twice, and found intact.
    pub records: usize,
    /// Their total size in bytes.
    pub bytes: usize,
    /// Nodes stopped before the second read.
    pub nodes_stopped: usize,
}

/// A sample record: its key, its contents, and a piece of its plaintext to search the nodes'
/// disks for (`None` for a record with nothing to search for).
struct Sample {
    key: RecordKey,
    label: &'static str,
    data: Vec<u8>,
    needle: Option<Vec<u8>>,
}

/// Runs the demo, narrating each step to `out`.
pub async fn demo(options: &DemoOptions, out: &mut dyn Write) -> Result<DemoReport> {
    let started = Instant::now();
    let mut say = |text: String| -> Result<()> {
        let secs = started.elapsed().as_secs_f64();
        writeln!(out, "[{secs:7.3}s] {text}").map_err(io_err("write", "the demo output"))
    };

    let temporary;
    let dir: &Path = match &options.dir {
        Some(dir) => dir,
        None => {
            temporary = tempfile::Builder::new()
                .prefix("bunsan-demo-")
                .tempdir()
                .map_err(io_err("create", std::env::temp_dir()))?;
            temporary.path()
        }
    };

    let init_options = InitOptions {
        name: "bunsan-demo".to_owned(),
        nodes: options.nodes,
        threshold: options.threshold,
        write_quorum: None,
        base_port: 0,
    };
    let manifest = init(dir, &init_options)?;
    let (k, n) = (manifest.threshold, manifest.nodes.len());
    say(format!(
        "init: {k}-of-{n} cluster {:?} in {} (CA, {n} node identities, 4 client identities)",
        manifest.name,
        dir.display()
    ))?;

    let step = Instant::now();
    let mut cluster = LocalCluster::start_with(dir, options.local.clone()).await?;
    say(format!(
        "up: {n} nodes healthy in {} ms",
        step.elapsed().as_millis()
    ))?;
    for node in cluster.nodes() {
        let pid = node
            .pid
            .map_or_else(|| "-".to_owned(), |pid| pid.to_string());
        say(format!(
            "      {} (share index {}) on {}, pid {pid}",
            node.id, node.index, node.address
        ))?;
    }

    let samples = samples()?;
    let collector = cluster.client(Role::Collector)?;
    for sample in &samples {
        let step = Instant::now();
        let receipt = collector.put(&sample.key, &sample.data).await?;
        say(format!(
            "put {} ({}, {} bytes) as collector: version {}, acknowledged by {} of {n} nodes in {} ms",
            sample.key,
            sample.label,
            sample.data.len(),
            receipt.version,
            receipt.acked.len(),
            step.elapsed().as_millis()
        ))?;
    }
    drop(collector);

    let purpose = Purpose::new("demo", "bunsan-cluster demo: read-back check")?;
    let reader = cluster.client(Role::Reader)?;
    for sample in &samples {
        let step = Instant::now();
        let data = reader.get(&sample.key, &purpose).await?;
        check_same(sample, &data)?;
        say(format!(
            "get {} as reader (purpose \"demo\"): {} bytes, bit-exact, in {} ms",
            sample.key,
            data.len(),
            step.elapsed().as_millis()
        ))?;
    }

    let step = Instant::now();
    let mut files = 0;
    for node in &manifest.nodes {
        files += scan_for_plaintext(&cluster.node_data_dir(node.index.get()), &samples)?;
    }
    say(format!(
        "disk: searched {files} files under {n} data directories for the plaintext of {} records: not found on any node ({} ms)",
        samples.iter().filter(|s| s.needle.is_some()).count(),
        step.elapsed().as_millis()
    ))?;

    let stopped: Vec<u8> = manifest
        .nodes
        .iter()
        .rev()
        .take(n - usize::from(k))
        .map(|node| node.index.get())
        .collect();
    for &index in &stopped {
        let step = Instant::now();
        cluster.stop_node(index).await?;
        say(format!(
            "stop node-{index}: stopped in {} ms",
            step.elapsed().as_millis()
        ))?;
    }
    // A fresh client, so no read waits on a connection to a stopped node. Clients are dropped
    // rather than closed: a graceful close waits up to a second for the nodes' acknowledgement.
    drop(reader);
    let reader = cluster.client(Role::Reader)?;
    for sample in &samples {
        let step = Instant::now();
        let data = reader.get(&sample.key, &purpose).await?;
        check_same(sample, &data)?;
        say(format!(
            "get {} with {} of {n} nodes up: {} bytes, bit-exact, in {} ms",
            sample.key,
            n - stopped.len(),
            data.len(),
            step.elapsed().as_millis()
        ))?;
    }
    drop(reader);

    let step = Instant::now();
    cluster.stop().await?;
    say(format!(
        "down: every node stopped in {} ms",
        step.elapsed().as_millis()
    ))?;
    if options.dir.is_some() {
        say(format!("kept the cluster directory {}", dir.display()))?;
    }
    let report = DemoReport {
        records: samples.len(),
        bytes: samples.iter().map(|s| s.data.len()).sum(),
        nodes_stopped: stopped.len(),
    };
    say(format!(
        "ok: {} records ({} bytes) came back bit-exact with all {n} nodes and with {} stopped",
        report.records, report.bytes, report.nodes_stopped
    ))?;
    Ok(report)
}

fn check_same(sample: &Sample, data: &[u8]) -> Result<()> {
    if data != sample.data.as_slice() {
        return Err(Error::RecordMismatch {
            key: sample.key.to_string(),
            written: sample.data.len(),
            read: data.len(),
        });
    }
    Ok(())
}

/// The demo's records. All of them are synthetic: no real patient appears anywhere.
fn samples() -> Result<Vec<Sample>> {
    let prefix = "demo/clinic-0042/patient-p7f3a/2026-03-14";
    let note = "SYNTHETIC CLINIC NOTE (demo data, not a real patient)\n\
                Patient pseudonym: P-7F3A, 54 y\n\
                Reason for visit: persistent cough for three weeks, no fever.\n\
                Findings: chest clear on auscultation, SpO2 98 %, BP 128/82 mmHg.\n\
                Plan: spirometry in two weeks; return earlier if breathless.\n\
                Marker: BUNSAN-DEMO-PLAINTEXT-MARKER-5f0c2a\n";
    let checkup = r#"{"pseudonym":"P-7F3A","date":"2026-03-14","panel":"annual check-up","results":{"hba1c_percent":5.6,"ldl_mmol_per_l":2.9,"egfr_ml_per_min":91,"bmi":24.8},"note":"synthetic demo data"}"#;
    let binary = pseudo_random_bytes(1024 * 1024);
    let window = binary[512 * 1024..512 * 1024 + 64].to_vec();
    Ok(vec![
        Sample {
            key: RecordKey::new(format!("{prefix}/visit-note.txt"))?,
            label: "clinic note",
            data: note.as_bytes().to_vec(),
            needle: Some(b"BUNSAN-DEMO-PLAINTEXT-MARKER-5f0c2a".to_vec()),
        },
        Sample {
            key: RecordKey::new(format!("{prefix}/checkup.json"))?,
            label: "check-up result, JSON",
            data: checkup.as_bytes().to_vec(),
            needle: Some(br#""hba1c_percent":5.6,"ldl_mmol_per_l":2.9"#.to_vec()),
        },
        Sample {
            key: RecordKey::new(format!("{prefix}/scan.bin"))?,
            label: "1 MiB binary",
            data: binary,
            needle: Some(window),
        },
        Sample {
            key: RecordKey::new(format!("{prefix}/empty"))?,
            label: "empty record",
            data: Vec::new(),
            needle: None,
        },
    ])
}

/// Deterministic bytes that look random (splitmix64): incompressible, and reproducible so a
/// failure can be replayed.
fn pseudo_random_bytes(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x0B0A_5A4E_D3E4_0000;
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        bytes.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

/// Searches every file under `dir` for each sample's needle; returns the number of files read,
/// or the first file holding plaintext as an error.
fn scan_for_plaintext(dir: &Path, samples: &[Sample]) -> Result<usize> {
    let mut files = 0;
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir).map_err(io_err("list", &dir))?;
        for entry in entries {
            let entry = entry.map_err(io_err("list", &dir))?;
            let path = entry.path();
            let kind = entry.file_type().map_err(io_err("inspect", &path))?;
            if kind.is_dir() {
                pending.push(path);
            } else if kind.is_file() {
                let contents = std::fs::read(&path).map_err(io_err("read", &path))?;
                files += 1;
                for sample in samples {
                    if let Some(needle) = &sample.needle {
                        if contains(&contents, needle) {
                            return Err(Error::PlaintextOnDisk {
                                what: sample.key.to_string(),
                                path,
                            });
                        }
                    }
                }
            }
        }
    }
    Ok(files)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty()
        && haystack
            .windows(needle.len())
            .any(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_disk_scan_finds_plaintext_and_passes_clean_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let samples = samples().expect("samples");
        std::fs::create_dir(dir.path().join("sub")).expect("mkdir");
        std::fs::write(dir.path().join("sub/clean"), pseudo_random_bytes(4096)).expect("write");
        assert_eq!(scan_for_plaintext(dir.path(), &samples).expect("clean"), 1);
        let mut leaky = pseudo_random_bytes(100);
        leaky.extend_from_slice(&samples[2].data[512 * 1024..512 * 1024 + 64]);
        std::fs::write(dir.path().join("sub/leaky"), leaky).expect("write");
        assert!(matches!(
            scan_for_plaintext(dir.path(), &samples),
            Err(Error::PlaintextOnDisk { .. })
        ));
    }

    #[test]
    fn samples_cover_the_documented_shapes() {
        let samples = samples().expect("samples");
        assert_eq!(samples[2].data.len(), 1024 * 1024);
        assert!(samples[3].data.is_empty());
        for sample in &samples[..3] {
            let needle = sample.needle.as_deref().expect("needle");
            assert!(contains(&sample.data, needle), "{}", sample.key);
        }
    }
}
