//! The `bunsan-node` command line: runs one storage node until SIGINT or SIGTERM.
//!
//! It lives in the library so that other binaries can embed the daemon unchanged:
//! `bunsan-cluster node` (which lets `bunsan-cluster demo` run a cluster from one build) and
//! the integration tests' node binary. SIGHUP reloads the certificate revocation list.
//!
//! ```text
//! bunsan-node --config node.toml [--log-format text|json]
//! bunsan-node export --config node.toml KEY --out FILE     (node stopped; docs/RECOVERY.md)
//! bunsan-node sealing-key --out FILE                         (once per site, for [store.s3])
//! ```
//!
//! Logs go to stderr, filtered by `RUST_LOG` (default `info`). Exit code 0 after a clean
//! shutdown; 1 with a one-line reason if the configuration, identity, store or port is bad.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::{Error, Node, NodeConfig};
use clap::{Parser, Subcommand, ValueEnum};
use std::ffi::OsString;
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::EnvFilter;

/// Bunsan storage node: serves one share of every record over QUIC with mutual TLS.
#[derive(Debug, Parser)]
#[command(name = "bunsan-node", version)]
struct Args {
    /// The node configuration file (node.toml); relative paths in it are relative to it.
    // Optional only because clap cannot require a global argument; checked in `run_cli`.
    #[arg(long, value_name = "PATH", global = true)]
    config: Option<PathBuf>,
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write this node's share of one record to FILE in the `sharks` layout ([x] ++ y), plus
    /// FILE.txt and FILE.envelope, reading the store directly (stop the node first).
    Export {
        /// The record key.
        key: String,
        /// Where to write the share; FILE.txt and FILE.envelope are written beside it.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Create the sealing key of a site whose shares live in an S3-compatible object store
    /// (`[store.s3] sealing_key`): 32 random bytes, hex, mode 0600. Never replaces a file.
    /// Copy it to every process serving the site and back it up with the node key.
    SealingKey {
        /// Where to write it.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Parses `args` (program name first) as `bunsan-node` does, runs the node until SIGINT or
/// SIGTERM, and returns the process exit code: success after a clean shutdown, failure with a
/// one-line reason on standard error otherwise.
pub fn run_cli<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args = match Args::try_parse_from(args) {
        Ok(args) => args,
        Err(e) => e.exit(),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("bunsan-node: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(main_async(args))
}

async fn main_async(args: Args) -> ExitCode {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never into log files.
        .with_ansi(std::io::stderr().is_terminal());
    match args.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    match run(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bunsan-node: error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line. Most of our errors already quote their cause in
/// their own message, so a cause whose text is already there is not repeated.
fn one_line(error: &Error) -> String {
    let mut line = String::new();
    let mut next: Option<&dyn std::error::Error> = Some(error);
    while let Some(cause) = next {
        next = cause.source();
        let text = cause.to_string();
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
    }
    line
}

async fn run(args: &Args) -> Result<(), Error> {
    if let Some(Command::SealingKey { out }) = &args.command {
        crate::objstore::write_sealing_key(out)?;
        println!("{}", out.display());
        return Ok(());
    }
    let Some(config_path) = &args.config else {
        return Err(Error::Config {
            path: PathBuf::from("(command line)"),
            reason: "--config PATH is required".to_owned(),
        });
    };
    if let Some(Command::Export { key, out }) = &args.command {
        let config = NodeConfig::load(config_path)?;
        let key = bunsan_protocol::RecordKey::new(key.as_str())?;
        let share = crate::export::export(&config, &key).await?;
        for path in share.write(out)? {
            println!("{}", path.display());
        }
        return Ok(());
    }
    // Install the handlers before starting, so a signal during start-up is not lost.
    let handler = |source| Error::Io {
        action: "install a signal handler",
        path: PathBuf::from("(signals)"),
        source,
    };
    let mut terminate = signal(SignalKind::terminate()).map_err(handler)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(handler)?;
    // SIGHUP's default action ends the process: with this handler it reloads the CRL instead.
    let mut hangup = signal(SignalKind::hangup()).map_err(handler)?;
    let config = NodeConfig::load(config_path)?;
    let node = Node::start(config).await?;
    loop {
        tokio::select! {
            _ = terminate.recv() => {
                tracing::info!("SIGTERM received, shutting down");
                break;
            }
            _ = interrupt.recv() => {
                tracing::info!("SIGINT received, shutting down");
                break;
            }
            _ = hangup.recv() => {
                tracing::info!("SIGHUP received, reloading the crl");
                // Success and failure are both logged by the reload; a bad file must not stop
                // the node, which keeps the previous CRL.
                let _ = node.reload_crl();
            }
        }
    }
    node.shutdown().await;
    Ok(())
}
