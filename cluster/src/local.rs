//! Running a cluster as child processes on this machine: `up`.
//!
//! [`LocalCluster`] starts one `bunsan-node --config DIR/nodes/node-I/node.toml` per node, sends
//! each one's stdout and stderr to `DIR/run/node-I.log`, writes `DIR/run/node-I.pid`, and waits
//! until every node answers a health request over its real QUIC + mTLS API (with the admin
//! identity). It can stop, kill and restart single nodes, which is what fault-tolerance tests
//! and the demo need, and it kills every node it still owns when dropped, so a failing test
//! leaves no processes behind.
//!
//! [`crate::ops`] stops and inspects a cluster that another process started (`up --detach`).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bunsan_client::{Client, ClientOptions, Identity};
use bunsan_protocol::manifest::{Manifest, NodeEntry};
use bunsan_protocol::message::NodeHealth;
use bunsan_protocol::role::Role;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use crate::error::{io_err, Error, Result};
use crate::init::InitOptions;
use crate::layout::{create_private_dir, ClusterLayout};

/// The environment variable naming the `bunsan-node` executable to run.
pub const NODE_BIN_ENV: &str = "BUNSAN_NODE_BIN";

/// The node executable's file name.
const NODE_BIN_NAME: &str = "bunsan-node";

/// How long a node may take from spawn to its first healthy answer. Generous: a debug build
/// under a loaded CI machine opens its store and binds its socket in well under a second, but
/// a node on a cold disk may take longer.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a node may take to exit after SIGTERM before it is killed: enough to finish
/// in-flight writes and flush its store.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// The pause between two health probes of a starting node.
const HEALTH_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// One health probe's time limit: loopback answers in milliseconds, and a short limit lets the
/// wait notice quickly when a node has died.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The most log lines quoted in an error about a node that did not start.
const LOG_TAIL_LINES: usize = 20;

/// The most log bytes read to find those lines.
const LOG_TAIL_BYTES: u64 = 16 * 1024;

/// How often [`LocalCluster::start_temporary`] tries when a node finds its port taken.
pub const TEMPORARY_START_ATTEMPTS: u32 = 3;

/// How a [`LocalCluster`] runs its nodes.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// The `bunsan-node` executable; `None` looks it up with [`find_node_binary`].
    pub node_binary: Option<PathBuf>,
    /// Arguments placed before `--config FILE`: `["node"]` when the executable is
    /// `bunsan-cluster` itself, which embeds the node daemon as its `node` subcommand.
    pub node_args: Vec<std::ffi::OsString>,
    /// How long each node may take to answer its first health request.
    pub health_timeout: Duration,
    /// How long a stopped node may take to exit before it is killed.
    pub stop_grace: Duration,
    /// Start every node in its own process group, so that it outlives this process and a
    /// Ctrl-C in this terminal (for `up --detach`). Otherwise nodes share this process's group
    /// and a Ctrl-C of a test run reaches them too.
    pub detachable: bool,
}

impl Default for LocalOptions {
    fn default() -> Self {
        Self {
            node_binary: None,
            node_args: Vec::new(),
            health_timeout: HEALTH_TIMEOUT,
            stop_grace: STOP_GRACE,
            detachable: false,
        }
    }
}

/// A node as a [`LocalCluster`] knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalNode {
    /// The node id.
    pub id: String,
    /// The share index.
    pub index: u8,
    /// The address it listens on.
    pub address: SocketAddr,
    /// Its process id, while it runs.
    pub pid: Option<u32>,
}

/// A cluster running as child processes of this process. Dropping it kills every node it
/// still runs (SIGKILL); call [`LocalCluster::stop`] for a graceful stop.
pub struct LocalCluster {
    layout: ClusterLayout,
    manifest: Manifest,
    binary: PathBuf,
    options: LocalOptions,
    children: BTreeMap<u8, Child>,
    /// The directory of a [`LocalCluster::start_temporary`] cluster; a field, so it is removed
    /// only after `Drop::drop` has killed the nodes using it.
    temporary: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for LocalCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCluster")
            .field("dir", &self.layout.root())
            .field("running", &self.children.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl LocalCluster {
    /// Starts every node of the cluster at `dir` with default options and waits until all are
    /// healthy. Must be called inside a tokio runtime.
    pub async fn start(dir: &Path) -> Result<Self> {
        Self::start_with(dir, LocalOptions::default()).await
    }

    /// Starts every node of the cluster at `dir` and waits until all are healthy. If one dies
    /// or stays silent, the others are stopped and the error quotes its log.
    pub async fn start_with(dir: &Path, options: LocalOptions) -> Result<Self> {
        let mut cluster = Self::open(dir, options)?;
        let indices: Vec<u8> = cluster
            .manifest
            .nodes
            .iter()
            .map(|n| n.index.get())
            .collect();
        let started = async {
            for &index in &indices {
                cluster.spawn(index)?;
            }
            let probe = cluster.probe()?;
            for &index in &indices {
                cluster.wait_healthy(index, &probe).await?;
            }
            Ok::<_, Error>(())
        }
        .await;
        if let Err(error) = started {
            // Best effort: the start failed, and its error is the one worth reporting.
            let _ = cluster.stop_all().await;
            return Err(error);
        }
        Ok(cluster)
    }

    /// Creates a cluster in a new temporary directory (forcing `base_port` 0, so parallel
    /// tests never share a port), starts it, and removes the directory when the cluster is
    /// dropped, after its nodes are killed.
    ///
    /// A free port can be taken by another process between `init` choosing it and the node
    /// binding it; when a node fails that way, the whole cluster is created again on new ports
    /// (at most [`TEMPORARY_START_ATTEMPTS`] times).
    pub async fn start_temporary(init: &InitOptions, options: LocalOptions) -> Result<Self> {
        let init = InitOptions {
            base_port: 0,
            ..init.clone()
        };
        let mut attempt = 1;
        loop {
            let temporary = tempfile::Builder::new()
                .prefix("bunsan-cluster-")
                .tempdir()
                .map_err(io_err("create a directory in", std::env::temp_dir()))?;
            crate::init::init(temporary.path(), &init)?;
            match Self::start_with(temporary.path(), options.clone()).await {
                Ok(mut cluster) => {
                    cluster.temporary = Some(temporary);
                    return Ok(cluster);
                }
                Err(Error::NodeExited { tail, .. })
                    if attempt < TEMPORARY_START_ATTEMPTS && lost_port_race(&tail) =>
                {
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Prepares to run the cluster at `dir` without starting anything: every node is stopped
    /// until [`LocalCluster::start_node`] starts it.
    pub fn open(dir: &Path, options: LocalOptions) -> Result<Self> {
        let layout = ClusterLayout::new(dir);
        let manifest = layout.read_manifest()?;
        let binary = match &options.node_binary {
            Some(path) => path.clone(),
            None => find_node_binary()?,
        };
        Ok(Self {
            layout,
            manifest,
            binary,
            options,
            children: BTreeMap::new(),
            temporary: None,
        })
    }

    /// The cluster's manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The cluster directory's layout.
    pub fn layout(&self) -> &ClusterLayout {
        &self.layout
    }

    /// The cluster directory.
    pub fn dir(&self) -> &Path {
        self.layout.root()
    }

    /// The executable the nodes run.
    pub fn node_binary(&self) -> &Path {
        &self.binary
    }

    /// Node `index`'s share store directory (`DIR/nodes/node-I/data`).
    pub fn node_data_dir(&self, index: u8) -> PathBuf {
        self.layout.node_data_dir(index)
    }

    /// Node `index`'s log file (`DIR/run/node-I.log`).
    pub fn node_log(&self, index: u8) -> PathBuf {
        self.layout.log_file(index)
    }

    /// Every node, with its pid while it runs.
    pub fn nodes(&self) -> Vec<LocalNode> {
        self.manifest
            .nodes
            .iter()
            .map(|node| {
                let index = node.index.get();
                LocalNode {
                    id: node.id.clone(),
                    index,
                    address: node.addresses[0],
                    pid: self.children.get(&index).and_then(Child::id),
                }
            })
            .collect()
    }

    /// Whether node `index` is a running child of this cluster (as of its last reaping).
    pub fn is_running(&self, index: u8) -> bool {
        self.children.contains_key(&index)
    }

    /// A client with the standard identity of `role` (`DIR/clients/<role>`) and default
    /// options. Must be called inside a tokio runtime.
    pub fn client(&self, role: Role) -> Result<Client> {
        self.client_for(role.as_str(), ClientOptions::default())
    }

    /// A client with the identity in `DIR/clients/<name>` and the given options. Must be
    /// called inside a tokio runtime.
    pub fn client_for(&self, name: &str, options: ClientOptions) -> Result<Client> {
        let identity = Identity::load(&self.layout.client_dir(name))?;
        Ok(Client::new(self.manifest.clone(), identity, options)?)
    }

    /// Starts node `index` and waits until it is healthy; if it does not become healthy it is
    /// killed and the error quotes its log.
    pub async fn start_node(&mut self, index: u8) -> Result<()> {
        self.spawn(index)?;
        // A fresh probe: a cached connection to the node's previous process would hold each
        // probe until it timed out.
        let probe = self.probe()?;
        if let Err(error) = self.wait_healthy(index, &probe).await {
            // Best effort: the node is already failing, and that error is the one to report.
            let _ = self.kill_node(index).await;
            return Err(error);
        }
        Ok(())
    }

    /// Stops node `index` gracefully: SIGTERM, then SIGKILL after the grace period. Returns how
    /// it exited, or `None` (doing nothing) if it was not running.
    pub async fn stop_node(&mut self, index: u8) -> Result<Option<ExitStatus>> {
        self.entry(index)?;
        let Some(mut child) = self.children.remove(&index) else {
            return Ok(None);
        };
        let status = terminate(&mut child, self.options.stop_grace).await;
        self.remove_pid_file(index);
        status.map(Some)
    }

    /// Stops node `index` gracefully, then starts it again and waits until it is healthy.
    pub async fn restart_node(&mut self, index: u8) -> Result<()> {
        self.stop_node(index).await?;
        self.start_node(index).await
    }

    /// Kills node `index` at once (SIGKILL), as a crash would. Returns how it exited, or `None`
    /// (doing nothing) if it was not running.
    pub async fn kill_node(&mut self, index: u8) -> Result<Option<ExitStatus>> {
        self.entry(index)?;
        let Some(mut child) = self.children.remove(&index) else {
            return Ok(None);
        };
        child.start_kill().map_err(io_err("kill", "node process"))?;
        let status = child
            .wait()
            .await
            .map_err(io_err("wait for", "node process"))?;
        self.remove_pid_file(index);
        Ok(Some(status))
    }

    /// Sends SIGHUP to node `index`, which makes it reload its CRL. Returns whether it was
    /// running.
    pub fn reload_node(&self, index: u8) -> Result<bool> {
        self.entry(index)?;
        match self.children.get(&index).and_then(Child::id) {
            Some(pid) => send_signal(pid, Signal::SIGHUP).map(|()| true),
            None => Ok(false),
        }
    }

    /// Reaps nodes that exited on their own and returns them with how they exited.
    pub fn poll_exited(&mut self) -> Vec<(LocalNode, ExitStatus)> {
        let mut exited = Vec::new();
        for (&index, child) in &mut self.children {
            if let Ok(Some(status)) = child.try_wait() {
                exited.push((index, status));
            }
        }
        exited
            .into_iter()
            .filter_map(|(index, status)| {
                self.children.remove(&index);
                self.remove_pid_file(index);
                let node = self.nodes().into_iter().find(|n| n.index == index)?;
                Some((node, status))
            })
            .collect()
    }

    /// Stops every node gracefully (all at once) and waits for them.
    pub async fn stop(mut self) -> Result<()> {
        self.stop_all().await
    }

    /// Lets the nodes run on after this value is gone, leaving their pid files for
    /// `bunsan-cluster down` (a temporary directory is kept). Start the cluster with
    /// [`LocalOptions::detachable`] so that they also survive a Ctrl-C in this terminal.
    pub fn detach(mut self) -> Vec<LocalNode> {
        let nodes = self.nodes();
        // Dropping a tokio `Child` (spawned without kill_on_drop) leaves the process running.
        self.children.clear();
        // The nodes still use a temporary directory: it must outlive this value.
        if let Some(temporary) = self.temporary.take() {
            let _kept: PathBuf = temporary.keep();
        }
        nodes
    }

    async fn stop_all(&mut self) -> Result<()> {
        for child in self.children.values() {
            if let Some(pid) = child.id() {
                // A node that already exited cannot be signalled; terminate() below reaps it.
                let _ = send_signal(pid, Signal::SIGTERM);
            }
        }
        let mut first_error = None;
        let children = std::mem::take(&mut self.children);
        for (index, mut child) in children {
            if let Err(error) = terminate(&mut child, self.options.stop_grace).await {
                first_error.get_or_insert(error);
            }
            self.remove_pid_file(index);
        }
        first_error.map_or(Ok(()), Err)
    }

    fn entry(&self, index: u8) -> Result<&NodeEntry> {
        self.manifest
            .nodes
            .iter()
            .find(|node| node.index.get() == index)
            .ok_or(Error::UnknownNode { index })
    }

    /// Spawns node `index` with its log and pid file, without waiting for it.
    fn spawn(&mut self, index: u8) -> Result<()> {
        let id = self.entry(index)?.id.clone();
        if let Some(child) = self.children.get_mut(&index) {
            if let (Ok(None), Some(pid)) = (child.try_wait(), child.id()) {
                return Err(Error::AlreadyRunning { node: id, pid });
            }
        }
        let pid_path = self.layout.pid_file(index);
        if let Some(pid) = running_pid(&pid_path)? {
            return Err(Error::AlreadyRunning { node: id, pid });
        }
        let run_dir = self.layout.run_dir();
        create_private_dir(&run_dir)?;
        let log_path = self.layout.log_file(index);
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io_err("open", &log_path))?;
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        writeln!(
            log,
            "--- bunsan-cluster: starting {id} (unix time {since_epoch}) ---"
        )
        .map_err(io_err("write", &log_path))?;
        let stderr = log.try_clone().map_err(io_err("open", &log_path))?;
        let mut command = Command::new(&self.binary);
        command
            .args(&self.options.node_args)
            .arg("--config")
            .arg(self.layout.node_config_path(index))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr);
        if self.options.detachable {
            command.process_group(0);
        }
        let child = command
            .spawn()
            .map_err(io_err("start", self.binary.clone()))?;
        let pid = child.id();
        // Tracked before anything else can fail, so the child is never left unowned.
        self.children.insert(index, child);
        if let Some(pid) = pid {
            std::fs::write(&pid_path, format!("{pid}\n")).map_err(io_err("write", &pid_path))?;
        }
        Ok(())
    }

    /// Probes node `index` until it answers a health request as itself, it exits, or the
    /// health timeout passes.
    async fn wait_healthy(&mut self, index: u8, probe: &Client) -> Result<NodeHealth> {
        let id = self.entry(index)?.id.clone();
        let started = Instant::now();
        loop {
            let exited = match self.children.get_mut(&index) {
                Some(child) => child
                    .try_wait()
                    .map_err(io_err("wait for", self.binary.clone()))?
                    .map(|status| status.to_string()),
                None => Some("not running".to_owned()),
            };
            if let Some(status) = exited {
                self.children.remove(&index);
                self.remove_pid_file(index);
                let log = self.layout.log_file(index);
                return Err(Error::NodeExited {
                    node: id,
                    status,
                    tail: log_tail(&log),
                    log,
                });
            }
            let last_error = match tokio::time::timeout(PROBE_TIMEOUT, probe.health(&id)).await {
                Ok(Ok(health)) if health.node_id == id && health.index.get() == index => {
                    return Ok(health);
                }
                Ok(Ok(health)) => {
                    return Err(Error::WrongNodeAnswered {
                        expected: id,
                        found: health.node_id,
                        index: health.index.get(),
                    })
                }
                Ok(Err(error)) => error.to_string(),
                Err(_) => format!("no answer within {PROBE_TIMEOUT:?}"),
            };
            if started.elapsed() >= self.options.health_timeout {
                let log = self.layout.log_file(index);
                return Err(Error::NodeUnhealthy {
                    node: id,
                    waited_ms: started.elapsed().as_millis(),
                    last_error,
                    tail: log_tail(&log),
                    log,
                });
            }
            tokio::time::sleep(HEALTH_POLL_INTERVAL).await;
        }
    }

    /// The admin client that health probes use, with short time limits. It is dropped rather
    /// than closed: a graceful close waits for the peers' acknowledgement (up to a second),
    /// and dropping a connection still tells the node it is closed.
    fn probe(&self) -> Result<Client> {
        self.client_for(
            Role::Admin.as_str(),
            ClientOptions {
                timeout: PROBE_TIMEOUT,
                connect_timeout: PROBE_TIMEOUT,
                ..ClientOptions::default()
            },
        )
    }

    fn remove_pid_file(&self, index: u8) {
        // A missing pid file is what we want; any other failure leaves a stale file that the
        // next start recognises as stale.
        let _ = std::fs::remove_file(self.layout.pid_file(index));
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for (&index, child) in &mut self.children {
            // SIGKILL; tokio reaps the process in the background.
            let _ = child.start_kill();
            let _ = std::fs::remove_file(self.layout.pid_file(index));
        }
    }
}

/// Finds the `bunsan-node` executable: `$BUNSAN_NODE_BIN` if set; else next to the current
/// executable, or one directory up from it (cargo puts test binaries in `target/<profile>/deps`
/// and the node binary in `target/<profile>`); else on `PATH`.
pub fn find_node_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(NODE_BIN_ENV) {
        let path = PathBuf::from(path);
        if path.is_file() {
            return Ok(path);
        }
        return Err(Error::NodeBinaryNotFound {
            searched: vec![path],
        });
    }
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            candidates.push(dir.join(NODE_BIN_NAME));
            if dir.file_name() == Some(OsStr::new("deps")) {
                if let Some(parent) = dir.parent() {
                    candidates.push(parent.join(NODE_BIN_NAME));
                }
            }
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|dir| dir.join(NODE_BIN_NAME)));
    }
    let mut seen = std::collections::HashSet::new();
    candidates.retain(|path| seen.insert(path.clone()));
    match candidates.iter().find(|path| path.is_file()) {
        Some(found) => Ok(found.clone()),
        None => Err(Error::NodeBinaryNotFound {
            searched: candidates,
        }),
    }
}

/// Sends SIGTERM, waits up to `grace` for the exit, then kills; returns how the node exited.
async fn terminate(child: &mut Child, grace: Duration) -> Result<ExitStatus> {
    if let Some(pid) = child.id() {
        // Already exited (and so unsignallable) is fine: wait() below collects it.
        let _ = send_signal(pid, Signal::SIGTERM);
    }
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(waited) => waited.map_err(io_err("wait for", "node process")),
        Err(_) => {
            child.kill().await.map_err(io_err("kill", "node process"))?;
            child
                .wait()
                .await
                .map_err(io_err("wait for", "node process"))
        }
    }
}

/// Sends `signal` to process `pid`; refuses pids that would address a process group.
pub(crate) fn send_signal(pid: u32, signal: Signal) -> Result<()> {
    let raw = i32::try_from(pid).ok().filter(|&raw| raw > 1);
    let Some(raw) = raw else {
        return Err(Error::Signal {
            signal: signal.as_str(),
            pid,
            source: nix::Error::EINVAL,
        });
    };
    kill(Pid::from_raw(raw), signal).map_err(|source| Error::Signal {
        signal: signal.as_str(),
        pid,
        source,
    })
}

/// The pid in a pid file if it names a live `bunsan-node` process; `None` for no file or a
/// stale one.
pub(crate) fn running_pid(pid_path: &Path) -> Result<Option<u32>> {
    let text = match std::fs::read_to_string(pid_path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("read", pid_path)(e)),
    };
    let pid = text
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|&pid| pid > 1 && i32::try_from(pid).is_ok())
        .ok_or_else(|| Error::InvalidPidFile {
            path: pid_path.to_owned(),
            content: text.chars().take(32).collect(),
        })?;
    Ok((process_alive(pid) && is_node_process(pid)).then_some(pid))
}

/// Whether `pid` names a live process (not a zombie).
pub(crate) fn process_alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    match kill(Pid::from_raw(raw), None) {
        Ok(()) | Err(nix::Error::EPERM) => {}
        Err(_) => return false,
    }
    // On Linux a zombie still accepts signal 0; its state in /proc says it is gone.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => true,
    }
}

/// Whether `pid` runs a Bunsan node (`bunsan-node --config ...`, or a Bunsan executable
/// embedding it, such as `bunsan-cluster node --config ...`), so a recycled pid is never
/// signalled. Where `/proc` is not available the pid file is trusted.
fn is_node_process(pid: u32) -> bool {
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmdline) => {
            let mut args = cmdline.split(|&b| b == 0);
            let program_is_bunsan = args.next().is_some_and(|argv0| {
                let name = argv0.rsplit(|&b| b == b'/').next().unwrap_or(argv0);
                name.starts_with(b"bunsan")
            });
            program_is_bunsan && args.any(|arg| arg == b"--config")
        }
        Err(_) => !Path::new("/proc/self").exists(),
    }
}

/// Whether a node's log says it could not bind its port because another process had it.
fn lost_port_race(log_tail: &str) -> bool {
    log_tail.contains("Address already in use") || log_tail.contains("os error 98")
}

/// The last lines of a log file, for error messages.
fn log_tail(path: &Path) -> String {
    let mut bytes = Vec::new();
    let read = OpenOptions::new()
        .read(true)
        .open(path)
        .and_then(|mut file| {
            let len = file.metadata()?.len();
            file.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)))?;
            file.read_to_end(&mut bytes)
        });
    if let Err(error) = read {
        return format!("(cannot read the log: {error})");
    }
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(LOG_TAIL_LINES);
    lines[start..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_files_are_parsed_strictly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node-1.pid");
        assert_eq!(running_pid(&path).expect("missing is fine"), None);
        for bad in ["", "abc", "0", "1", "-5", "4294967295"] {
            std::fs::write(&path, bad).expect("write");
            assert!(
                matches!(running_pid(&path), Err(Error::InvalidPidFile { .. })),
                "{bad:?}"
            );
        }
        // This test process is alive but is not a node.
        std::fs::write(&path, std::process::id().to_string()).expect("write");
        assert_eq!(running_pid(&path).expect("parse"), None);
    }

    #[test]
    fn group_pids_are_never_signalled() {
        for pid in [0, 1, u32::MAX] {
            assert!(send_signal(pid, Signal::SIGTERM).is_err());
        }
    }
}
