//! `bunsan`: the command line over the client SDK.
//!
//! ```text
//! bunsan put KEY [FILE|-]                 store a record (collector)
//! bunsan get KEY --purpose TEXT [-o FILE]  rebuild a record (reader)
//! bunsan rm KEY                            delete a record (admin)
//! bunsan ls [PREFIX]                       list records (admin)
//! bunsan completions bash|zsh|fish         print a shell completion script
//! ```
//! The cluster manifest comes from `--cluster FILE` or `BUNSAN_CLUSTER`, the identity
//! (a directory with cert.pem, key.pem, ca.pem) from `--identity DIR` or `BUNSAN_IDENTITY`.
//!
//! Exit codes: 0 success; 77 (EX_NOPERM) when the nodes refused this identity the operation
//! (its role may not do it), with one line per node; 1 for every other failure.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use bunsan_client::logging::{self, LogFormat};
use bunsan_client::{Client, ClientOptions, Identity};
use bunsan_protocol::manifest::Manifest;
use bunsan_protocol::{Purpose, RecordKey};
use clap::{CommandFactory, Parser, Subcommand};
use clap_complete::Shell;

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
    /// Log line format (logs go to standard error; RUST_LOG filters, default warn).
    #[arg(long, value_enum, global = true, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
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

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format, "warn");
    if let Command::Completions { shell } = cli.command {
        clap_complete::generate(shell, &mut Cli::command(), "bunsan", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    let client = match connect(&cli) {
        Ok(client) => client,
        Err(error) => return report(&error),
    };
    let result = run(&client, cli.command).await;
    client.close().await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => report(&error),
    }
}

/// Prints why the command failed. A refusal names each node's typed answer on its own line
/// ("node-1 refused: Forbidden: role collector may not get ..."), so the operator sees at once
/// that the identity, not the cluster, is the problem.
fn report(error: &anyhow::Error) -> ExitCode {
    if let Some(client_error) = error.downcast_ref::<bunsan_client::Error>() {
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
        // Answered in `main`, before a cluster and identity are needed.
        Command::Completions { .. } => {}
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
            for subcommand in ["put", "get", "rm", "ls", "completions"] {
                assert!(script.contains(subcommand), "{shell}: {subcommand}");
            }
        }
    }
}
