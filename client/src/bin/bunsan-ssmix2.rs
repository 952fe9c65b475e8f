//! `bunsan-ssmix2`: the SS-MIX2 collector (see `bunsan_client::ssmix2`).
//!
//! ```text
//! bunsan-ssmix2 keygen FILE                         create a pseudonym key (mode 0600)
//! bunsan-ssmix2 import ROOT --state FILE --pseudonym-key FILE [--prefix P]
//! bunsan-ssmix2 pseudonym --pseudonym-key FILE PATIENT_ID
//! bunsan-ssmix2 completions bash|zsh|fish
//! ```
//!
//! Exit status: 0 when every document was uploaded or skipped, 1 when any failed (they are
//! retried by the next run) or the run could not start.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use bunsan_client::logging::{self, LogFormat};
use bunsan_client::ssmix2::synthetic::{self, SyntheticOptions};
use bunsan_client::ssmix2::{self, ImportOptions, PseudonymKey};
use bunsan_client::{Client, ClientOptions, Identity};
use bunsan_protocol::manifest::Manifest;
use bunsan_protocol::role::Role;
use clap::{CommandFactory, Parser, Subcommand};
use clap_complete::Shell;

/// Upload an SS-MIX2 standardized storage tree into a Bunsan cluster, with patient ids
/// replaced by keyed pseudonyms in every record key.
#[derive(Parser)]
#[command(
    name = "bunsan-ssmix2",
    version,
    after_help = "Layout, pseudonyms and the state file: docs/OPERATIONS.md, \"SS-MIX2 collector\"."
)]
struct Cli {
    /// Log line format (logs go to standard error; RUST_LOG filters, default warn).
    #[arg(long, value_enum, global = true, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Upload every document not uploaded before, with a progress bar, and report counts.
    ///
    /// Documents already recorded in the state file with the same size and modification
    /// time, or the same content, are skipped; nothing is ever read back from the cluster
    /// (collectors cannot read). Files that do not follow the SS-MIX2 layout are counted as
    /// ignored and logged.
    Import {
        /// The standardized storage root (holding the 3-character hash directories).
        root: PathBuf,
        /// The state file recording what this collector uploaded (created if missing). Keep
        /// one per storage tree and cluster, beside the tree, not inside it.
        #[arg(long, value_name = "FILE")]
        state: PathBuf,
        /// The pseudonym key (64 hex digits, mode 0600), created with `keygen`.
        #[arg(long, env = "BUNSAN_PSEUDONYM_KEY", value_name = "FILE")]
        pseudonym_key: PathBuf,
        /// Put before every record key, e.g. ssmix2/clinic-7.
        #[arg(long, default_value = "ssmix2")]
        prefix: String,
        /// The cluster manifest (cluster.toml).
        #[arg(long, env = "BUNSAN_CLUSTER", value_name = "FILE")]
        cluster: PathBuf,
        /// A collector identity directory (cert.pem, key.pem, ca.pem).
        #[arg(long, env = "BUNSAN_IDENTITY", value_name = "DIR")]
        identity: PathBuf,
        /// Documents uploaded at once.
        #[arg(long, default_value_t = 8)]
        jobs: usize,
        /// Deadline of one upload across all nodes, in seconds.
        #[arg(long, default_value_t = 30, value_name = "SECONDS")]
        timeout: u64,
        /// Never draw a progress bar (it is drawn only on a terminal anyway).
        #[arg(long)]
        no_progress: bool,
    },
    /// Create a new random pseudonym key in FILE (mode 0600; never overwrites).
    ///
    /// Every collector whose records must get the same pseudonym for the same patient needs
    /// the same key; back it up like the CA key. Losing it does not lose records, but new
    /// uploads would get new pseudonyms.
    Keygen {
        /// Where to write the key.
        file: PathBuf,
    },
    /// Print the pseudonym of a patient id (to find a patient's records with `bunsan ls`).
    Pseudonym {
        /// The pseudonym key.
        #[arg(long, env = "BUNSAN_PSEUDONYM_KEY", value_name = "FILE")]
        pseudonym_key: PathBuf,
        /// The patient id as it appears in the SS-MIX2 tree.
        patient_id: String,
    },
    /// Print a shell completion script to standard output.
    Completions {
        /// The shell to complete for.
        shell: Shell,
    },
    /// Write a synthetic SS-MIX2 tree (made-up patients) for tests and demos.
    #[command(hide = true)]
    GenerateSynthetic {
        /// The directory to write it into.
        root: PathBuf,
        /// How many patients.
        #[arg(long, default_value_t = 20)]
        patients: usize,
        /// Documents per patient.
        #[arg(long, default_value_t = 10)]
        documents: usize,
        /// The seed of every random choice.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    logging::init(cli.log_format, "warn");
    match cli.command {
        Command::Import {
            root,
            state,
            pseudonym_key,
            prefix,
            cluster,
            identity,
            jobs,
            timeout,
            no_progress,
        } => {
            let key = PseudonymKey::load(&pseudonym_key)?;
            let client = Arc::new(connect(&cluster, &identity, timeout)?);
            let options = ImportOptions {
                root,
                prefix,
                state,
                jobs,
                progress: !no_progress,
            };
            let report = ssmix2::import(Arc::clone(&client), &key, &options).await;
            client.close().await;
            let report = report.context("the import stopped")?;
            for (path, reason) in &report.failures {
                eprintln!("failed: {}: {reason}", path.display());
            }
            println!(
                "found {}  uploaded {}  skipped {}  failed {}  (ignored {} other files; {} bytes uploaded; {} under-replicated)",
                report.found,
                report.uploaded,
                report.skipped,
                report.failed,
                report.ignored,
                report.bytes_uploaded,
                report.under_replicated
            );
            if report.failed > 0 {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Keygen { file } => {
            PseudonymKey::generate(&file)?;
            println!("wrote a new pseudonym key to {}", file.display());
        }
        Command::Pseudonym {
            pseudonym_key,
            patient_id,
        } => println!(
            "{}",
            PseudonymKey::load(&pseudonym_key)?.pseudonym(&patient_id)
        ),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "bunsan-ssmix2",
                &mut std::io::stdout(),
            );
        }
        Command::GenerateSynthetic {
            root,
            patients,
            documents,
            seed,
        } => {
            let options = SyntheticOptions {
                patients,
                documents_per_patient: documents,
                seed,
            };
            let written = synthetic::generate(&root, &options)?;
            println!("wrote {} documents under {}", written.len(), root.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A client for `cluster` with the collector identity in `identity`; any other role is
/// refused here, before a single document is read.
fn connect(cluster: &Path, identity: &Path, timeout_secs: u64) -> anyhow::Result<Client> {
    let text = std::fs::read_to_string(cluster)
        .with_context(|| format!("cannot read the manifest {}", cluster.display()))?;
    let manifest = Manifest::from_toml(&text)
        .with_context(|| format!("bad manifest {}", cluster.display()))?;
    let identity = Identity::load(identity)
        .with_context(|| format!("cannot load the identity in {}", identity.display()))?;
    if identity.role() != Role::Collector {
        bail!(
            "the identity has role {}; importing needs a collector identity",
            identity.role()
        );
    }
    let options = ClientOptions {
        timeout: Duration::from_secs(timeout_secs),
        ..ClientOptions::default()
    };
    Ok(Client::new(manifest, identity, options)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
