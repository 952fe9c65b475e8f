//! Operating a cluster this process did not start: `down` and `reload` (by pid file) and
//! `status` (over the network, with the admin identity).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bunsan_client::{Client, ClientOptions, Identity};
use bunsan_protocol::message::NodeStatus;
use bunsan_protocol::role::Role;
use nix::sys::signal::Signal;

use crate::error::Result;
use crate::layout::ClusterLayout;
use crate::local::{process_alive, running_pid, send_signal};

/// How long `status` waits for one node's answer before calling it down.
const STATUS_TIMEOUT: Duration = Duration::from_secs(3);

/// The pause between two checks whether a stopped node has exited.
const EXIT_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// What `down` did to one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownOutcome {
    /// There was no pid file, or it named a process that is gone or is not a node.
    NotRunning,
    /// The node exited after SIGTERM.
    Stopped,
    /// The node did not exit within the grace period and was killed.
    Killed,
}

/// What `down` did to one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeDown {
    /// The node id.
    pub id: String,
    /// The process id from its pid file, if it named a running node.
    pub pid: Option<u32>,
    /// What happened to it.
    pub outcome: DownOutcome,
}

/// Stops the nodes of the cluster at `dir` that a detached `up` started, by their pid files:
/// SIGTERM to all, up to `grace` for them to exit, then SIGKILL. Removes the pid files and
/// returns one entry per node, in index order.
pub async fn down(dir: &Path, grace: Duration) -> Result<Vec<NodeDown>> {
    let layout = ClusterLayout::new(dir);
    let manifest = layout.read_manifest()?;
    let mut nodes = Vec::new();
    for node in &manifest.nodes {
        let pid = running_pid(&layout.pid_file(node.index.get()))?;
        if let Some(pid) = pid {
            send_signal(pid, Signal::SIGTERM)?;
        }
        nodes.push(NodeDown {
            id: node.id.clone(),
            pid,
            outcome: if pid.is_some() {
                DownOutcome::Stopped
            } else {
                DownOutcome::NotRunning
            },
        });
    }
    let deadline = Instant::now() + grace;
    for (node, entry) in nodes.iter_mut().zip(&manifest.nodes) {
        if let Some(pid) = node.pid {
            while process_alive(pid) {
                if Instant::now() >= deadline {
                    // It may have exited since the check; either way it is gone afterwards.
                    let _ = send_signal(pid, Signal::SIGKILL);
                    node.outcome = DownOutcome::Killed;
                    break;
                }
                tokio::time::sleep(EXIT_POLL_INTERVAL).await;
            }
        }
        // Stale or now obsolete; a missing file is what we want.
        let _ = std::fs::remove_file(layout.pid_file(entry.index.get()));
    }
    Ok(nodes)
}

/// Sends SIGHUP to every node of the cluster at `dir` that a detached `up` started (by pid
/// file), so each reloads its CRL now rather than at its next poll. Returns each node's id and
/// the pid signalled, or `None` for a node that is not running here.
pub fn reload(dir: &Path) -> Result<Vec<(String, Option<u32>)>> {
    let layout = ClusterLayout::new(dir);
    let manifest = layout.read_manifest()?;
    let mut nodes = Vec::new();
    for node in &manifest.nodes {
        let pid = running_pid(&layout.pid_file(node.index.get()))?;
        if let Some(pid) = pid {
            send_signal(pid, Signal::SIGHUP)?;
        }
        nodes.push((node.id.clone(), pid));
    }
    Ok(nodes)
}

/// One node's answer to `status`.
#[derive(Debug, Clone)]
pub struct NodeReport {
    /// The node id.
    pub id: String,
    /// The address it was asked at.
    pub address: SocketAddr,
    /// Its status, or why it could not be had.
    pub status: std::result::Result<NodeStatus, String>,
}

/// Asks every node of the cluster at `dir` for its status, with the admin identity, all at
/// once. A node that does not answer is reported with the error, not as a failure of the
/// whole call. Must be called inside a tokio runtime.
pub async fn status(dir: &Path) -> Result<Vec<NodeReport>> {
    let layout = ClusterLayout::new(dir);
    let manifest = layout.read_manifest()?;
    let identity = Identity::load(&layout.client_dir(Role::Admin.as_str()))?;
    let client = Arc::new(Client::new(
        manifest.clone(),
        identity,
        ClientOptions {
            timeout: STATUS_TIMEOUT,
            connect_timeout: STATUS_TIMEOUT,
            ..ClientOptions::default()
        },
    )?);
    let mut tasks = tokio::task::JoinSet::new();
    for (position, node) in manifest.nodes.iter().enumerate() {
        let client = Arc::clone(&client);
        let id = node.id.clone();
        tasks.spawn(async move {
            let status = match tokio::time::timeout(STATUS_TIMEOUT, client.status(&id)).await {
                Ok(Ok(status)) => Ok(status),
                Ok(Err(error)) => Err(error.to_string()),
                Err(_) => Err(format!("no answer within {STATUS_TIMEOUT:?}")),
            };
            (position, status)
        });
    }
    let mut statuses: Vec<_> = manifest
        .nodes
        .iter()
        .map(|node| NodeReport {
            id: node.id.clone(),
            address: node.addresses[0],
            status: Err("no answer".to_owned()),
        })
        .collect();
    while let Some(joined) = tasks.join_next().await {
        if let Ok((position, status)) = joined {
            statuses[position].status = status;
        }
    }
    // Dropped rather than closed: see `LocalCluster::probe`.
    Ok(statuses)
}
