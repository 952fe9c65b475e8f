//! `bunsan`: the command line over the client SDK.
//!
//! ```text
//! bunsan put KEY [FILE|-]                                      store a record (collector)
//! bunsan get KEY --purpose TEXT [-o FILE] [--range START-END]  rebuild a record (reader)
//! bunsan rm KEY                                                delete a record (admin)
//! bunsan ls [PREFIX]                                           list records (admin)
//! ```
//! The cluster manifest comes from `--cluster FILE` or `BUNSAN_CLUSTER`, the identity
//! (a directory with cert.pem, key.pem, ca.pem) from `--identity DIR` or `BUNSAN_IDENTITY`.
//!
//! Records stream: `put` reads its file or standard input a chunk at a time and `get` writes
//! chunks out as they are checked, so memory stays bounded by the chunk size times the chunks
//! in flight (see [`crate::chunked`]), whatever the record size.
//!
//! This is the binary's code, kept in the library so that other packages can embed the
//! command unchanged (the integration tests run it as their own binary); like a binary it
//! reports errors with `anyhow`, and only [`run`] is public.

use std::ffi::OsString;
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use bunsan_protocol::manifest::Manifest;
use bunsan_protocol::{Purpose, RecordKey};
use clap::{Parser, Subcommand};
use tokio::io::AsyncWriteExt;

use crate::chunked::{ChunkOptions, Chunked};
use crate::{Client, ClientOptions, Identity};

/// Store and rebuild records in a Bunsan cluster: every record is split k-of-n on this machine,
/// one share per node; no node ever sees the record.
#[derive(Parser)]
#[command(name = "bunsan", version, propagate_version = true)]
struct Cli {
    /// The cluster manifest (cluster.toml).
    #[arg(long, env = "BUNSAN_CLUSTER", global = true, value_name = "FILE")]
    cluster: Option<PathBuf>,
    /// Identity directory holding cert.pem, key.pem and ca.pem.
    #[arg(long, env = "BUNSAN_IDENTITY", global = true, value_name = "DIR")]
    identity: Option<PathBuf>,
    /// Deadline of one operation across all nodes, in seconds.
    #[arg(long, default_value_t = 30, global = true, value_name = "SECONDS")]
    timeout: u64,
    /// Records longer than this many bytes are stored as chunks of this size (at most 16 MiB).
    #[arg(long, default_value_t = bunsan_protocol::chunk::CHUNK_SIZE_DEFAULT, global = true,
          value_name = "BYTES")]
    chunk_size: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Store a record read from FILE, or from standard input when FILE is '-' or absent
    /// (collector role).
    Put {
        /// The record key, e.g. clinic-7/patient-1234/2026-11-25/note.hl7
        key: String,
        /// The file to store; '-' or nothing reads standard input.
        file: Option<PathBuf>,
    },
    /// Rebuild a record from k shares and write it to standard output or a file
    /// (reader role). The purpose is written to every node's audit log.
    Get {
        /// The record key.
        key: String,
        /// Why you read this record (free text, recorded in the audit log).
        #[arg(long)]
        purpose: String,
        /// A purpose code: treatment, emergency, research, drill, ...
        #[arg(long, default_value = "")]
        purpose_code: String,
        /// Write the record here instead of standard output. The file appears only once
        /// every byte of it has been checked.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Only the bytes START to END, both included and counted from 0 (as in HTTP ranges);
        /// END may be left out to read to the end.
        #[arg(long, value_name = "START-END", value_parser = parse_range)]
        range: Option<Range<u64>>,
    },
    /// Delete a record: write a tombstone and purge its shares on every node (admin role).
    Rm {
        /// The record key.
        key: String,
    },
    /// List live records, optionally only those whose key starts with PREFIX (admin role).
    Ls {
        /// Only keys starting with this text.
        #[arg(default_value = "")]
        prefix: String,
        /// Also list Bunsan's internal records (the chunks of large records).
        #[arg(long)]
        all: bool,
    },
}

/// Parses the arguments (program name first) as `bunsan` does, runs the command, and returns
/// the process exit code: failure with a one-line reason on standard error.
pub fn run<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init()
        .ok();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("bunsan: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(main(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bunsan: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn main(cli: Cli) -> anyhow::Result<()> {
    let client = connect(&cli)?;
    let options = ChunkOptions {
        chunk_size: cli.chunk_size,
        ..ChunkOptions::default()
    };
    let result = execute(&client, options, cli.command).await;
    client.close().await;
    result
}

/// `START-END` (both included) or `START-` as a half-open byte range.
fn parse_range(text: &str) -> Result<Range<u64>, String> {
    let (start, end) = text
        .split_once('-')
        .ok_or_else(|| "expected START-END or START-".to_owned())?;
    let start: u64 = start.parse().map_err(|e| format!("bad START: {e}"))?;
    let end = match end {
        "" => u64::MAX,
        end => {
            let last: u64 = end.parse().map_err(|e| format!("bad END: {e}"))?;
            if last < start {
                return Err(format!("END {last} is before START {start}"));
            }
            last.saturating_add(1)
        }
    };
    Ok(start..end)
}

fn connect(cli: &Cli) -> anyhow::Result<Client> {
    let Some(cluster) = &cli.cluster else {
        bail!("no cluster manifest: pass --cluster FILE or set BUNSAN_CLUSTER");
    };
    let Some(identity) = &cli.identity else {
        bail!("no identity: pass --identity DIR or set BUNSAN_IDENTITY");
    };
    let text = std::fs::read_to_string(cluster)
        .with_context(|| format!("cannot read the manifest {}", cluster.display()))?;
    let manifest = Manifest::from_toml(&text)
        .with_context(|| format!("bad manifest {}", cluster.display()))?;
    let identity = Identity::load(identity)
        .with_context(|| format!("cannot load the identity in {}", identity.display()))?;
    let options = ClientOptions {
        timeout: Duration::from_secs(cli.timeout),
        ..ClientOptions::default()
    };
    Ok(Client::new(manifest, identity, options)?)
}

async fn execute(client: &Client, options: ChunkOptions, command: Command) -> anyhow::Result<()> {
    let chunked = Chunked::with_options(client, options);
    match command {
        Command::Put { key, file } => {
            let key = RecordKey::new(key)?;
            let receipt = match file {
                Some(path) if path.as_os_str() != "-" => {
                    let file = tokio::fs::File::open(&path)
                        .await
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    chunked.put_stream(&key, file).await?
                }
                _ => chunked.put_stream(&key, tokio::io::stdin()).await?,
            };
            let chunks = match receipt.chunks {
                0 => String::new(),
                n => format!(" in {n} chunks"),
            };
            eprintln!(
                "stored {key} ({} bytes{chunks}) version {} on {} of {} nodes",
                receipt.record_len,
                receipt.receipt.version,
                receipt.receipt.acked.len(),
                client.manifest().nodes.len()
            );
            for failure in &receipt.receipt.failures {
                eprintln!("warning: under-replicated: {failure}");
            }
            if receipt.under_replicated_chunks > 0 {
                eprintln!(
                    "warning: {} chunks are under-replicated",
                    receipt.under_replicated_chunks
                );
            }
        }
        Command::Get {
            key,
            purpose,
            purpose_code,
            output,
            range,
        } => {
            let key = RecordKey::new(key)?;
            let purpose = Purpose::new(purpose_code, purpose)?;
            match output {
                Some(path) => get_to_file(&chunked, &key, &purpose, &path, range).await?,
                None => {
                    let mut stdout = tokio::io::stdout();
                    chunked.get_to(&key, &purpose, &mut stdout, range).await?;
                    stdout.flush().await?;
                }
            }
        }
        Command::Rm { key } => {
            let key = RecordKey::new(key)?;
            let deleted = chunked.delete(&key).await?;
            let chunks = match deleted.chunks {
                0 => String::new(),
                n => format!(" and {n} chunks"),
            };
            eprintln!(
                "deleted {key}{chunks} (tombstone version {}) on {} nodes",
                deleted.receipt.version,
                deleted.receipt.acked.len()
            );
        }
        Command::Ls { prefix, all } => {
            let mut stdout = std::io::stdout().lock();
            for record in client.list(&prefix).await? {
                if record.key.is_internal() && !all {
                    continue;
                }
                writeln!(
                    stdout,
                    "{}\t{}\t{}\t{}",
                    record.key, record.record_len, record.version, record.replicas
                )?;
            }
        }
    }
    Ok(())
}

/// Streams the record into `path` through a temporary file beside it, renamed into place only
/// once the whole record was written and checked: a failed get leaves no partial file.
async fn get_to_file(
    chunked: &Chunked<'_>,
    key: &RecordKey,
    purpose: &Purpose,
    path: &Path,
    range: Option<Range<u64>>,
) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().context("the output path names no file")?;
    let mut partial_name = OsString::from(".");
    partial_name.push(name);
    partial_name.push(".bunsan-partial");
    let partial = dir.join(partial_name);
    let result = async {
        let file = tokio::fs::File::create(&partial)
            .await
            .with_context(|| format!("cannot create {}", partial.display()))?;
        let mut sink = tokio::io::BufWriter::with_capacity(1 << 20, file);
        chunked.get_to(key, purpose, &mut sink, range).await?;
        sink.flush().await?;
        sink.into_inner().sync_all().await?;
        tokio::fs::rename(&partial, path)
            .await
            .with_context(|| format!("cannot write {}", path.display()))
    }
    .await;
    if result.is_err() {
        // Best effort: the get's own error is the one to report.
        let _ = tokio::fs::remove_file(&partial).await;
    }
    result
}
