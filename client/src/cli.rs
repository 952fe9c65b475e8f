//! `bunsan`: the command line over the client SDK.
//!
//! ```text
//! bunsan put KEY [FILE|-]                 store a record (collector)
//! bunsan get KEY --purpose TEXT [-o FILE]  rebuild a record (reader)
//! bunsan rm KEY                            delete a record (admin)
//! bunsan ls [PREFIX]                       list records (admin)
//! ```
//! The cluster manifest comes from `--cluster FILE` or `BUNSAN_CLUSTER`, the identity
//! (a directory with cert.pem, key.pem, ca.pem) from `--identity DIR` or `BUNSAN_IDENTITY`.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use bunsan_client::{Client, ClientOptions, Identity};
use bunsan_protocol::manifest::Manifest;
use bunsan_protocol::{Purpose, RecordKey};
use clap::{Parser, Subcommand};

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
        /// Write the record here instead of standard output.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
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
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let client = connect(&cli)?;
    let result = run(&client, cli.command).await;
    client.close().await;
    result
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

async fn run(client: &Client, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Put { key, file } => {
            let key = RecordKey::new(key)?;
            let data = match file {
                Some(path) if path.as_os_str() != "-" => std::fs::read(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?,
                _ => {
                    let mut data = Vec::new();
                    std::io::stdin()
                        .read_to_end(&mut data)
                        .context("cannot read standard input")?;
                    data
                }
            };
            let receipt = client.put(&key, &data).await?;
            eprintln!(
                "stored {key} ({} bytes) version {} on {} of {} nodes",
                data.len(),
                receipt.version,
                receipt.acked.len(),
                client.manifest().nodes.len()
            );
            for failure in &receipt.failures {
                eprintln!("warning: under-replicated: {failure}");
            }
        }
        Command::Get {
            key,
            purpose,
            purpose_code,
            output,
        } => {
            let key = RecordKey::new(key)?;
            let purpose = Purpose::new(purpose_code, purpose)?;
            let record = client.get(&key, &purpose).await?;
            match output {
                Some(path) => std::fs::write(&path, record.as_slice())
                    .with_context(|| format!("cannot write {}", path.display()))?,
                None => {
                    let mut stdout = std::io::stdout().lock();
                    stdout.write_all(&record)?;
                    stdout.flush()?;
                }
            }
        }
        Command::Rm { key } => {
            let key = RecordKey::new(key)?;
            let receipt = client.delete(&key).await?;
            eprintln!(
                "deleted {key} (tombstone version {}) on {} nodes",
                receipt.version,
                receipt.acked.len()
            );
        }
        Command::Ls { prefix } => {
            let mut stdout = std::io::stdout().lock();
            for record in client.list(&prefix).await? {
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
