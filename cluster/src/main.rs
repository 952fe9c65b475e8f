//! `bunsan-cluster`: create, run and inspect a Bunsan cluster on this machine.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use bunsan_client::logging::{self, LogFormat};
use bunsan_cluster::crl::{PublishedCrl, CRL_VALIDITY_DAYS};
use bunsan_cluster::drill::{DrillOptions, NodeControl};
use bunsan_cluster::local::{LocalOptions, STOP_GRACE};
use bunsan_cluster::ops::{self, DownOutcome};
use bunsan_cluster::refresh::RefreshOptions;
use bunsan_cluster::repair::{RepairOptions, RepairSummary};
use bunsan_cluster::{init::DEFAULT_BASE_PORT, DemoOptions, InitOptions, LocalCluster};
use bunsan_cluster::{CrlWindow, RevocationReason};
use bunsan_protocol::role::Role;
use clap::builder::PossibleValuesParser;
use clap::{CommandFactory, Parser, Subcommand};
use clap_complete::Shell;
use tokio::signal::unix::{signal, SignalKind};

/// Create, run and inspect Bunsan clusters: k-of-n secret-shared record stores.
///
/// A cluster directory (DIR) holds the manifest (cluster.toml), the CA, one directory per
/// node and the client identities; every command takes it as its first argument.
#[derive(Debug, Parser)]
#[command(
    name = "bunsan-cluster",
    version,
    after_help = "Run `bunsan-cluster demo` for a narrated tour. \
                  Operations guide: docs/OPERATIONS.md; configuration: docs/CONFIGURATION.md."
)]
struct Cli {
    /// Log line format (logs go to standard error; RUST_LOG filters, default warn).
    #[arg(long, value_enum, global = true, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a cluster directory: CA, node identities and configs, client identities, manifest.
    ///
    /// Writes DIR/cluster.toml, DIR/ca/, DIR/nodes/node-I/ and DIR/clients/{collector,reader,
    /// auditor,admin}/. Private keys are written with mode 0600. Refuses to touch a directory
    /// that already holds a cluster.
    Init {
        /// The cluster directory to create (may exist, but must not hold a cluster).
        dir: PathBuf,
        /// n: how many nodes, each holding one share of every record.
        #[arg(long, default_value_t = 5)]
        nodes: usize,
        /// k: how many shares rebuild a record (fewer reveal nothing).
        #[arg(long, default_value_t = 3)]
        threshold: u8,
        /// UDP port of node 1 on 127.0.0.1; node I listens on BASE_PORT + I - 1 and serves
        /// metrics on TCP port BASE_PORT + 2000 + I - 1. 0 picks free ports.
        #[arg(long, default_value_t = DEFAULT_BASE_PORT)]
        base_port: u16,
        /// W: nodes that must store a write before it succeeds, k+1..=n [default: n].
        #[arg(long)]
        write_quorum: Option<u8>,
        /// A name for the cluster, shown in its CA certificate and in logs.
        #[arg(long, default_value = "bunsan-local")]
        name: String,
    },
    /// Issue a new identity from the cluster CA into DIR/clients/NAME/.
    Issue {
        /// The cluster directory.
        dir: PathBuf,
        /// The role the certificate grants.
        #[arg(long, value_parser = PossibleValuesParser::new(Role::ALL.map(Role::as_str)))]
        role: String,
        /// The identity's name: its certificate common name and its directory name.
        #[arg(long)]
        name: String,
        /// How many days the certificate is valid.
        #[arg(long, default_value_t = bunsan_cluster::pki::LEAF_VALIDITY_DAYS,
              value_parser = clap::value_parser!(i64).range(1..=bunsan_cluster::pki::CA_VALIDITY_DAYS))]
        days: i64,
    },
    /// Revoke identity NAME (DIR/clients/NAME or DIR/nodes/NAME): add its certificate to the
    /// cluster CRL and publish the CRL to DIR/ca/crl.pem and every DIR/nodes/node-I/crl.pem.
    ///
    /// Running nodes reload the CRL within a second of the file changing (and on SIGHUP, which
    /// this sends to nodes started here by `up`); they close the revoked identity's live
    /// connections and refuse its new ones. Nodes on other hosts need the new crl.pem copied
    /// into their directory.
    Revoke {
        /// The cluster directory.
        dir: PathBuf,
        /// The identity to revoke.
        name: String,
        /// Why (recorded in the CRL and in DIR/ca/revoked.toml).
        #[arg(long, default_value = "unspecified",
              value_parser = PossibleValuesParser::new(RevocationReason::ALL.map(RevocationReason::as_str)))]
        reason: String,
        /// Days until the new CRL expires; nodes refuse every client once it has.
        #[arg(long, default_value_t = CRL_VALIDITY_DAYS, value_parser = clap::value_parser!(i64).range(1..=366))]
        crl_days: i64,
    },
    /// Show the cluster CRL (number, expiry, revoked identities), or renew it with --renew.
    ///
    /// A node whose CRL has expired refuses every client (fails closed): renew well before the
    /// expiry shown here, e.g. weekly from cron.
    Crl {
        /// The cluster directory.
        dir: PathBuf,
        /// Sign the CRL again with a fresh expiry and a higher number, and publish it.
        #[arg(long)]
        renew: bool,
        /// Days until the renewed CRL expires.
        #[arg(long, default_value_t = CRL_VALIDITY_DAYS, value_parser = clap::value_parser!(i64).range(1..=366))]
        days: i64,
    },
    /// Start every node and wait until each answers a health request.
    ///
    /// Logs go to DIR/run/node-I.log and pids to DIR/run/node-I.pid. Without --detach, stays in
    /// the foreground and stops the nodes on Ctrl-C or SIGTERM.
    Up {
        /// The cluster directory.
        dir: PathBuf,
        /// Return once the nodes are healthy and leave them running; stop them with `down`.
        #[arg(long)]
        detach: bool,
    },
    /// Stop the nodes started by `up --detach`: SIGTERM, then SIGKILL after 10 seconds.
    Down {
        /// The cluster directory.
        dir: PathBuf,
    },
    /// Show every node: up or down, software version, records, tombstones, bytes, audit
    /// head and lag.
    ///
    /// LAG is how many record versions a node holds fewer than the most complete node (a
    /// count, not a key-by-key comparison). AUDIT HEAD shows "-" until nodes keep an audit
    /// log. Asks with the admin identity in DIR/clients/admin. Exits with status 1 if any node
    /// does not answer.
    Status {
        /// The cluster directory.
        dir: PathBuf,
        /// Print JSON (one object with a "nodes" array) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Find missing, stale and damaged shares on every node and regenerate them.
    ///
    /// Each share is regenerated at its node from k other nodes' masked contributions: no
    /// node, and not this tool, ever holds k shares or the record. Tombstones are re-sent.
    /// Resumes an interrupted run from DIR/run/repair-state.json. Exits with status 1 if any
    /// share could not be repaired.
    Repair {
        /// The cluster directory.
        dir: PathBuf,
        /// Repairs in flight at once.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Only repair this node (e.g. a replaced one).
        #[arg(long)]
        node: Option<String>,
        /// Scrub every node again instead of resuming an interrupted run's plan.
        #[arg(long)]
        fresh: bool,
    },
    /// Re-randomise every record's shares (a new epoch per record), keeping the records.
    ///
    /// After a refresh, shares taken before it are useless together with shares taken after
    /// it. Each record is staged on every node holding it, then committed; a failed stage
    /// changes nothing. Exits with status 1 if any record could not be refreshed.
    Refresh {
        /// The cluster directory.
        dir: PathBuf,
        /// Records refreshed at once.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Only records whose key starts with this.
        #[arg(long, default_value = "")]
        prefix: String,
    },
    /// A disaster-recovery drill on a running cluster (started with `up --detach`).
    ///
    /// Writes canary records, stops the --lose nodes, checks that every record (or a sample)
    /// reconstructs (canaries bit-exact) as a reader with purpose "drill", wipes the --wipe
    /// nodes, restarts them, rebuilds them through repair, and reports each step's duration.
    /// Exits 0 only if everything verified.
    Drill {
        /// The cluster directory.
        dir: PathBuf,
        /// Nodes to lose, comma-separated (e.g. node-2,node-4).
        #[arg(long, value_delimiter = ',', required = true)]
        lose: Vec<String>,
        /// Lost nodes whose data is wiped and rebuilt, comma-separated.
        #[arg(long, value_delimiter = ',')]
        wipe: Vec<String>,
        /// Check only this many records (at random) besides the canaries.
        #[arg(long)]
        sample: Option<usize>,
        /// Write the report as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Write the report as Markdown to this file (default: stdout).
        #[arg(long)]
        markdown: Option<PathBuf>,
    },
    /// Run a narrated demonstration: init, up, put, get, inspect disks, lose nodes, get again.
    ///
    /// Exits with status 0 only if every record comes back bit-exact.
    Demo {
        /// n: how many nodes.
        #[arg(long, default_value_t = 5)]
        nodes: usize,
        /// k: how many shares rebuild a record.
        #[arg(long, default_value_t = 3)]
        threshold: u8,
        /// Create the cluster here and keep it, instead of in a temporary directory.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Print a shell completion script to standard output.
    ///
    /// bash: `bunsan-cluster completions bash > ~/.local/share/bash-completion/completions/bunsan-cluster`;
    /// zsh: write it as `_bunsan-cluster` into a directory on $fpath;
    /// fish: `bunsan-cluster completions fish > ~/.config/fish/completions/bunsan-cluster.fish`.
    Completions {
        /// The shell to complete for.
        shell: Shell,
    },
}

fn main() -> Result<ExitCode> {
    // `bunsan-cluster node ...` is the node daemon itself (see `embedded_nodes`). It runs its
    // own runtime, so it is dispatched before ours starts.
    let args: Vec<OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|arg| arg == "node") {
        let node_args =
            std::iter::once(OsString::from("bunsan-node")).chain(args[2..].iter().cloned());
        return Ok(bunsan_node::cli::run_cli(node_args));
    }
    tokio::runtime::Runtime::new()
        .context("cannot start the async runtime")?
        .block_on(async_main())
}

/// How this executable runs nodes: as itself (`bunsan-cluster node --config ...`), so that one
/// `cargo run -p bunsan-cluster` build is a whole cluster; or the binary named in
/// `BUNSAN_NODE_BIN` when set.
fn embedded_nodes(options: LocalOptions) -> LocalOptions {
    if std::env::var_os(bunsan_cluster::local::NODE_BIN_ENV).is_some() {
        return options;
    }
    match std::env::current_exe() {
        Ok(exe) => LocalOptions {
            node_binary: Some(exe),
            node_args: vec![OsString::from("node")],
            ..options
        },
        Err(_) => options,
    }
}

async fn async_main() -> Result<ExitCode> {
    let cli = Cli::parse();
    logging::init(cli.log_format, "warn");
    match cli.command {
        Command::Init {
            dir,
            nodes,
            threshold,
            base_port,
            write_quorum,
            name,
        } => {
            let options = InitOptions {
                name,
                nodes,
                threshold,
                write_quorum,
                base_port,
            };
            let manifest = bunsan_cluster::init(&dir, &options)
                .with_context(|| format!("cannot create a cluster in {}", dir.display()))?;
            println!(
                "created {}-of-{} cluster {:?} in {} (write quorum {})",
                manifest.threshold,
                manifest.nodes.len(),
                manifest.name,
                dir.display(),
                manifest.write_quorum
            );
            for node in &manifest.nodes {
                println!("  {}  {}", node.id, node.addresses[0]);
            }
            println!("start it with: bunsan-cluster up {}", dir.display());
        }
        Command::Issue {
            dir,
            role,
            name,
            days,
        } => {
            let role: Role = role.parse()?;
            let validity = bunsan_cluster::Validity::days_from_now(days);
            let written = bunsan_cluster::init::issue_with_validity(&dir, role, &name, validity)
                .with_context(|| format!("cannot issue {role} identity {name:?}"))?;
            println!(
                "issued {role} identity {name:?} in {} (valid for {days} days)",
                written.display()
            );
        }
        Command::Revoke {
            dir,
            name,
            reason,
            crl_days,
        } => {
            let reason: RevocationReason = reason.parse()?;
            let (entry, published) =
                bunsan_cluster::revoke(&dir, &name, reason, CrlWindow::days_from_now(crl_days))
                    .with_context(|| format!("cannot revoke {name:?}"))?;
            println!(
                "revoked {} identity {:?} (serial {}, {})",
                entry.role, entry.name, entry.serial, entry.reason
            );
            report_published(&dir, &published)?;
        }
        Command::Crl { dir, renew, days } => {
            if renew {
                let published = bunsan_cluster::renew_crl(&dir, CrlWindow::days_from_now(days))
                    .context("cannot renew the CRL")?;
                report_published(&dir, &published)?;
            } else {
                let (record, next_update) = bunsan_cluster::crl::status(&dir)?;
                println!(
                    "CRL number {}, expires {next_update}, {} revoked",
                    record.crl_number,
                    record.revoked.len()
                );
                for entry in &record.revoked {
                    println!(
                        "  {}  {}  serial {}  {}  {}",
                        entry.name, entry.role, entry.serial, entry.revoked_at, entry.reason
                    );
                }
                if next_update <= time::OffsetDateTime::now_utc() {
                    eprintln!(
                        "the CRL has EXPIRED: nodes refuse every client; run: bunsan-cluster crl {} --renew",
                        dir.display()
                    );
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        Command::Up { dir, detach } => up(dir, detach).await?,
        Command::Down { dir } => {
            for node in ops::down(&dir, STOP_GRACE).await? {
                let pid = node
                    .pid
                    .map_or_else(|| "-".to_owned(), |pid| pid.to_string());
                let outcome = match node.outcome {
                    DownOutcome::NotRunning => "not running",
                    DownOutcome::Stopped => "stopped",
                    DownOutcome::Killed => "killed after the grace period",
                };
                println!("{}  pid {pid}  {outcome}", node.id);
            }
        }
        Command::Status { dir, json } => {
            let status = bunsan_cluster::status::collect(&dir).await?;
            if json {
                println!("{}", status.to_json());
            } else {
                print!("{}", status.render_table());
            }
            if !status.all_up() {
                let down = status.nodes.iter().filter(|node| !node.up).count();
                eprintln!("{down} of {} nodes down", status.nodes.len());
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Repair {
            dir,
            concurrency,
            node,
            fresh,
        } => {
            let options = RepairOptions {
                concurrency,
                fresh,
                only: node,
                progress: std::io::stderr().is_terminal(),
            };
            let summary = bunsan_cluster::repair::repair(&dir, &options)
                .await
                .with_context(|| format!("cannot repair the cluster in {}", dir.display()))?;
            print_repair_summary(&summary);
            if !summary.is_clean() {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Refresh {
            dir,
            concurrency,
            prefix,
        } => {
            let options = RefreshOptions {
                concurrency,
                prefix,
                progress: std::io::stderr().is_terminal(),
            };
            let summary = bunsan_cluster::refresh::refresh(&dir, &options)
                .await
                .with_context(|| format!("cannot refresh the cluster in {}", dir.display()))?;
            println!(
                "refresh: {} records, {} refreshed, {} failed in {:.1} s",
                summary.records,
                summary.refreshed,
                summary.failed.len(),
                summary.duration.as_secs_f64()
            );
            for (node, reason) in &summary.unreachable {
                println!("  unreachable {node}: {reason} (keeps the old epoch; run repair)");
            }
            for (key, reason) in &summary.failed {
                println!("  failed {key}: {reason}");
            }
            if !summary.failed.is_empty() {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Drill {
            dir,
            lose,
            wipe,
            sample,
            json,
            markdown,
        } => {
            let options = DrillOptions {
                lose,
                wipe,
                sample,
                ..DrillOptions::default()
            };
            let control = NodeControl::Detached(embedded_nodes(LocalOptions::default()));
            let report = bunsan_cluster::drill::drill(&dir, control, &options)
                .await
                .with_context(|| format!("the drill on {} could not run", dir.display()))?;
            if let Some(path) = json {
                std::fs::write(&path, report.to_json()?)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            match markdown {
                Some(path) => std::fs::write(&path, report.to_markdown())
                    .with_context(|| format!("cannot write {}", path.display()))?,
                None => print!("{}", report.to_markdown()),
            }
            if !report.ok {
                return Ok(ExitCode::FAILURE);
            }
        }
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "bunsan-cluster",
                &mut std::io::stdout(),
            );
        }
        Command::Demo {
            nodes,
            threshold,
            dir,
        } => {
            let options = DemoOptions {
                nodes,
                threshold,
                dir,
                local: embedded_nodes(LocalOptions::default()),
            };
            bunsan_cluster::demo(&options, &mut std::io::stdout())
                .await
                .context("the demo failed")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_repair_summary(summary: &RepairSummary) {
    println!(
        "repair{}: {} keys, {} jobs: {} repaired, {} tombstones re-sent, {} skipped, {} failed in {:.1} s",
        if summary.resumed { " (resumed)" } else { "" },
        summary.keys,
        summary.planned,
        summary.repaired,
        summary.resent,
        summary.skipped,
        summary.failed.len(),
        summary.duration.as_secs_f64()
    );
    for (node, reason) in &summary.unreachable {
        println!("  unreachable {node}: {reason} (not repaired, not used as a helper)");
    }
    for (key, reason) in &summary.unrecoverable {
        println!("  unrecoverable {key}: {reason}");
    }
    for (key, reason) in &summary.incomplete {
        println!("  left to readers {key}: {reason}");
    }
    for (node, key, reason) in &summary.failed {
        println!("  failed {node} {key}: {reason}");
    }
}

/// Prints where a new CRL went, and asks the nodes running here to reload it at once.
fn report_published(dir: &std::path::Path, published: &PublishedCrl) -> Result<()> {
    println!(
        "CRL number {} ({} revoked, valid until {}) written to:",
        published.number, published.revoked, published.window.next_update
    );
    for path in &published.written {
        println!("  {}", path.display());
    }
    for node_dir in &published.not_enforced {
        eprintln!(
            "warning: {} has no `crl` key in node.toml: that node does not enforce the CRL \
             (add crl = \"crl.pem\" and restart it)",
            node_dir.display()
        );
    }
    for (node, pid) in ops::reload(dir)? {
        match pid {
            Some(pid) => println!("{node}: running here as pid {pid}, told to reload (SIGHUP)"),
            None => println!(
                "{node}: not running here; a running node reloads its crl.pem when it changes \
                 (copy it to nodes on other hosts)"
            ),
        }
    }
    Ok(())
}

/// `up`: start, report, then either detach or wait for Ctrl-C / SIGTERM and stop.
async fn up(dir: PathBuf, detach: bool) -> Result<()> {
    let options = embedded_nodes(LocalOptions {
        detachable: detach,
        ..LocalOptions::default()
    });
    let mut cluster = LocalCluster::start_with(&dir, options)
        .await
        .with_context(|| format!("cannot start the cluster in {}", dir.display()))?;
    for node in cluster.nodes() {
        let pid = node
            .pid
            .map_or_else(|| "-".to_owned(), |pid| pid.to_string());
        println!(
            "{}  index {}  {}  pid {pid}  healthy",
            node.id, node.index, node.address
        );
    }
    let manifest = cluster.manifest();
    let summary = format!(
        "cluster {:?} is up: {}-of-{}, write quorum {}",
        manifest.name,
        manifest.threshold,
        manifest.nodes.len(),
        manifest.write_quorum
    );
    if detach {
        cluster.detach();
        println!(
            "{summary}; stop it with: bunsan-cluster down {}",
            dir.display()
        );
        return Ok(());
    }
    println!("{summary}; press Ctrl-C to stop");
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch for SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch for SIGTERM")?;
    let mut check = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
            _ = check.tick() => {
                for (node, status) in cluster.poll_exited() {
                    eprintln!(
                        "warning: {} exited on its own ({status}); see {}",
                        node.id,
                        cluster.node_log(node.index).display()
                    );
                }
            }
        }
    }
    println!("stopping...");
    cluster.stop().await.context("cannot stop every node")?;
    println!("all nodes stopped");
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
            clap_complete::generate(shell, &mut Cli::command(), "bunsan-cluster", &mut script);
            let script = String::from_utf8(script).expect("utf-8");
            for subcommand in [
                "init",
                "issue",
                "up",
                "down",
                "status",
                "demo",
                "completions",
            ] {
                assert!(script.contains(subcommand), "{shell}: {subcommand}");
            }
        }
    }
}
