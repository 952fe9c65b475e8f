//! `bunsan`: the command line over the client SDK.
//!
//! ```text
//! bunsan put KEY [FILE|-]                                      store a record (collector)
//! bunsan get KEY --purpose TEXT [-o FILE] [--range START-END]  rebuild a record (reader)
//! bunsan rm KEY                                                delete a record (admin)
//! bunsan ls [PREFIX]                                           list records (admin)
//! bunsan audit fetch --out DIR                 pull every node's audit log, incrementally (auditor)
//! bunsan audit verify DIR [--ca FILE]          check chains, trees, signatures, cosignatures offline
//! bunsan audit report DIR [--record KEY] [--actor NAME|FP] [--since T] [--json]
//! bunsan completions bash|zsh|fish             print a shell completion script
//! ```
//! The cluster manifest comes from `--cluster FILE` or `BUNSAN_CLUSTER`, the identity
//! (a directory with cert.pem, key.pem, ca.pem) from `--identity DIR` or `BUNSAN_IDENTITY`.
//!
//! Exit codes: 0 success; 77 (EX_NOPERM) when the nodes refused this identity the operation
//! (its role may not do it), with one line per node; 1 for every other failure.
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
use bunsan_protocol::audit::report::{self, ReportFilter};
use bunsan_protocol::audit::verify;
use bunsan_protocol::manifest::Manifest;
use bunsan_protocol::{Purpose, RecordKey};
use clap::{CommandFactory, Parser, Subcommand};
use clap_complete::Shell;
use tokio::io::AsyncWriteExt;

use crate::chunked::{ChunkOptions, Chunked};
use crate::logging::{self, LogFormat};
use crate::{audit, Client, ClientOptions, Identity};

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
    /// Log line format (logs go to standard error; RUST_LOG filters, default warn).
    #[arg(long, value_enum, global = true, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
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
    /// Audit the cluster: fetch every node's log, verify it offline, report who read what.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Print a shell completion script to standard output (needs no cluster or identity).
    ///
    /// bash: `bunsan completions bash > ~/.local/share/bash-completion/completions/bunsan`;
    /// zsh: write it as `_bunsan` into a directory on $fpath;
    /// fish: `bunsan completions fish > ~/.config/fish/completions/bunsan.fish`.
    Completions {
        /// The shell to complete for.
        shell: Shell,
    },
}

/// Exit code when the cluster refused the identity (sysexits' EX_NOPERM), so scripts can tell
/// "not allowed" from "not working".
const EXIT_REFUSED: u8 = 77;

#[derive(Subcommand)]
enum AuditCommand {
    /// Pull entries, checkpoints, cosignatures and consistency proofs from every reachable node
    /// into DIR (auditor role). Re-running fetches only what is new.
    Fetch {
        /// The audit directory (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Do not ask the nodes to sign and cosign fresh checkpoints first.
        #[arg(long)]
        no_cosign: bool,
    },
    /// Verify a fetched directory offline with only the CA certificate: hash chains, Merkle
    /// roots, checkpoint signatures, consistency, cosignatures. Exits 1 if any node fails.
    Verify {
        /// The audit directory.
        dir: PathBuf,
        /// The CA certificate to trust (default: DIR/ca.pem, copied there by fetch).
        #[arg(long, value_name = "FILE")]
        ca: Option<PathBuf>,
    },
    /// Report every reconstruction (who, what, when, why), refused attempts and anomalies.
    Report {
        /// The audit directory.
        dir: PathBuf,
        /// Only this record, with its whole access history.
        #[arg(long, value_name = "KEY")]
        record: Option<String>,
        /// Only this actor: certificate name, or fingerprint prefix (8+ hex digits).
        #[arg(long, value_name = "NAME|FP")]
        actor: Option<String>,
        /// Only events since T: YYYY-MM-DD, YYYY-MM-DDTHH:MM:SSZ or Unix seconds.
        #[arg(long, value_name = "T")]
        since: Option<String>,
        /// k, if DIR/cluster.toml is missing.
        #[arg(long)]
        threshold: Option<u8>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
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
    logging::init(cli.log_format, "warn");
    if let Command::Completions { shell } = cli.command {
        clap_complete::generate(shell, &mut Cli::command(), "bunsan", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("bunsan: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(main(cli)) {
        Ok(code) => code,
        Err(error) => report_error(&error),
    }
}

/// Prints why the command failed. A refusal names each node's typed answer on its own line
/// ("node-1 refused: Forbidden: role collector may not get ..."), so the operator sees at once
/// that the identity, not the cluster, is the problem.
fn report_error(error: &anyhow::Error) -> ExitCode {
    if let Some(client_error) = error.downcast_ref::<crate::Error>() {
        if client_error.is_forbidden() {
            eprintln!("bunsan: refused: this identity's role may not do this");
            for failure in client_error.node_failures() {
                eprintln!("  {failure}");
            }
            return ExitCode::from(EXIT_REFUSED);
        }
    }
    eprintln!("bunsan: error: {error:#}");
    ExitCode::FAILURE
}

async fn main(cli: Cli) -> anyhow::Result<ExitCode> {
    // Verifying and reporting are offline: no cluster, no identity, only the directory.
    match cli.command {
        Command::Audit {
            command: AuditCommand::Verify { dir, ca },
        } => return verify_dir(&dir, ca.as_deref()),
        Command::Audit {
            command:
                AuditCommand::Report {
                    dir,
                    record,
                    actor,
                    since,
                    threshold,
                    json,
                },
        } => {
            let since_micros = since
                .map(|t| {
                    report::parse_time(&t).with_context(|| {
                        format!("--since {t:?}: use YYYY-MM-DD, YYYY-MM-DDTHH:MM:SSZ or seconds")
                    })
                })
                .transpose()?;
            let filter = ReportFilter {
                record,
                actor,
                since_micros,
            };
            return report_dir(&dir, &filter, threshold, json);
        }
        _ => {}
    }
    let (client, ca) = connect(&cli)?;
    let options = ChunkOptions {
        chunk_size: cli.chunk_size,
        ..ChunkOptions::default()
    };
    let result = execute(&client, &ca, options, cli.command).await;
    client.close().await;
    result.map(|()| ExitCode::SUCCESS)
}

fn verify_dir(dir: &std::path::Path, ca: Option<&std::path::Path>) -> anyhow::Result<ExitCode> {
    let loaded = audit::load(dir, ca)
        .with_context(|| format!("cannot read the audit directory {}", dir.display()))?;
    if loaded.nodes.is_empty() {
        bail!(
            "{} holds no node logs: run `bunsan audit fetch` first",
            dir.display()
        );
    }
    let mut failed = false;
    let mut stdout = std::io::stdout().lock();
    for verdict in verify::verify_logs(&loaded.ca, &loaded.nodes) {
        match verdict.first() {
            None => writeln!(
                stdout,
                "{}: ok ({} entries, {} checkpoints up to size {}, {} cosignatures by {})",
                verdict.node_id,
                verdict.entries,
                verdict.checkpoints,
                verdict.verified_size,
                verdict.cosignatures,
                if verdict.cosigners.is_empty() {
                    "nobody".to_owned()
                } else {
                    verdict
                        .cosigners
                        .iter()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(",")
                }
            )?,
            Some(first) => {
                failed = true;
                writeln!(stdout, "{}: FAILED {first}", verdict.node_id)?;
                for more in &verdict.findings[1..] {
                    writeln!(stdout, "  also {more}")?;
                }
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn report_dir(
    dir: &std::path::Path,
    filter: &ReportFilter,
    threshold: Option<u8>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let loaded = audit::load(dir, None)
        .with_context(|| format!("cannot read the audit directory {}", dir.display()))?;
    let Some(k) = threshold.or(loaded.manifest.as_ref().map(|m| m.threshold)) else {
        bail!("no {}/cluster.toml: pass --threshold K", dir.display());
    };
    let report = report::build(k, &audit::entries_of(&loaded.nodes), filter);
    let mut stdout = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut stdout, &report)?;
        writeln!(stdout)?;
    } else {
        stdout.write_all(report.to_text().as_bytes())?;
    }
    Ok(ExitCode::SUCCESS)
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

/// The client, and the CA certificate (DER) its identity trusts.
fn connect(cli: &Cli) -> anyhow::Result<(Client, Vec<u8>)> {
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
    let ca = identity.ca().to_vec();
    Ok((Client::new(manifest, identity, options)?, ca))
}

async fn execute(
    client: &Client,
    ca: &[u8],
    options: ChunkOptions,
    command: Command,
) -> anyhow::Result<()> {
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
        Command::Audit {
            command: AuditCommand::Fetch { out, no_cosign },
        } => {
            for node in audit::fetch(client, ca, &out, !no_cosign).await? {
                match &node.problem {
                    None => eprintln!(
                        "{}: {} new entries, {} in all, latest checkpoint {}",
                        node.node,
                        node.new_entries,
                        node.entries,
                        node.checkpoint.map_or("none".to_owned(), |s| s.to_string())
                    ),
                    Some(problem) => eprintln!("{}: incomplete: {problem}", node.node),
                }
            }
        }
        Command::Audit { .. } => unreachable_offline()?,
        // Answered in `main`, before a cluster and identity are needed.
        Command::Completions { .. } => {}
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
///
/// A path that exists and is not a regular file (`/dev/null`, a FIFO, a terminal) is written
/// directly: renaming over it would replace the device with a plain file, and as root that
/// breaks `/dev/null` for every process on the machine.
async fn get_to_file(
    chunked: &Chunked<'_>,
    key: &RecordKey,
    purpose: &Purpose,
    path: &Path,
    range: Option<Range<u64>>,
) -> anyhow::Result<()> {
    if let Ok(metadata) = tokio::fs::metadata(path).await {
        if !metadata.is_file() && !metadata.is_dir() {
            let file = tokio::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .await
                .with_context(|| format!("cannot open {}", path.display()))?;
            let mut sink = tokio::io::BufWriter::with_capacity(1 << 20, file);
            chunked.get_to(key, purpose, &mut sink, range).await?;
            sink.flush().await?;
            return Ok(());
        }
    }
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

/// Verify and report are dispatched before connecting; reaching here is a bug in `main`.
fn unreachable_offline() -> anyhow::Result<()> {
    bail!("internal error: an offline audit command reached the online dispatcher")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn completions_cover_every_subcommand() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "bunsan", &mut script);
            let script = String::from_utf8(script).expect("utf-8");
            for subcommand in ["put", "get", "rm", "ls", "audit", "completions"] {
                assert!(script.contains(subcommand), "{shell}: {subcommand}");
            }
        }
    }
}
