//! `bunsan-bench`: the end-to-end benchmark of a Bunsan cluster against the floors.
//!
//! ```text
//! cargo run --release -p bunsan-benches --bin bunsan-bench -- [--quick]
//!     [--cluster cluster.toml --identity-dir DIR/clients]   an existing cluster instead
//!     [--json-out FILE] [--svg-out FILE]                     results and plot
//! bunsan-bench plot RESULTS.json PLOT.svg                    redraw a plot from results
//! ```
//!
//! Without `--cluster` it starts five nodes (3-of-5, W = 5) as child processes of itself
//! (`bunsan-bench node --config FILE` is the node daemon) on loopback with their data in a
//! temporary directory. It measures 1 KiB put and get at concurrency 1 and 64, 1 MiB put and
//! get at concurrency 4, and a large record (1 GiB; 256 MiB with `--quick`) streamed through
//! the chunked layer by a child process whose peak RSS is read from /proc. Beside each, the
//! floor of the same bytes over quinn and into sled (see `bunsan_benches::floors`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use bunsan_benches::floors::{echo_request, sled_floor, sled_read_floor, EchoFloor};
use bunsan_benches::large;
use bunsan_benches::measure::{self, Sample};
use bunsan_benches::report::{self, Floor, Report, Row};
use bunsan_client::{Client, ClientOptions, Identity};
use bunsan_cluster::init::InitOptions;
use bunsan_cluster::local::{LocalCluster, LocalOptions};
use bunsan_protocol::manifest::Manifest;
use bunsan_protocol::{Purpose, RecordKey};
use clap::Parser;

/// Bytes a put frame carries beyond the share, and a get request (key, ids, purpose): the
/// floors move the same bytes as Bunsan does.
const FRAME_OVERHEAD_BYTES: usize = 128;
/// Concurrency of the 1 MiB cells: enough to keep both cores busy.
const MIB_CONCURRENCY: usize = 4;
/// Records the get cells read (written once before): few, so they stay in the nodes' caches.
const GET_KEYS: u64 = 64;
/// Keys the put cells cycle through, so the nodes' disks do not fill up over a run.
const PUT_KEYS: u64 = 4096;

/// Benchmark a Bunsan cluster end to end against the quinn and sled floors.
#[derive(Parser)]
#[command(name = "bunsan-bench")]
struct Args {
    /// Short cells and a 256 MiB large record: about a minute.
    #[arg(long)]
    quick: bool,
    /// Use this running cluster (its cluster.toml) instead of starting one.
    #[arg(long, value_name = "FILE", requires = "identity_dir")]
    cluster: Option<PathBuf>,
    /// With --cluster: the directory holding the collector/, reader/ (and admin/) identities.
    #[arg(long, value_name = "DIR")]
    identity_dir: Option<PathBuf>,
    /// Write the results as JSON here.
    #[arg(long, value_name = "FILE")]
    json_out: Option<PathBuf>,
    /// Write the plot (SVG) here.
    #[arg(long, value_name = "FILE")]
    svg_out: Option<PathBuf>,
    /// Only the cells of this record size ("1 KiB" or "1 MiB"), for profiling one path.
    #[arg(long, value_name = "SIZE")]
    only: Option<String>,
    /// Only the cells at this concurrency, for profiling one path.
    #[arg(long, value_name = "N")]
    concurrency: Option<usize>,
    /// Where the large record's cluster keeps its data (default: the temporary directory). The
    /// nodes need about 5.5 × the record size there, and up to 1 GiB of sled cache each in RAM,
    /// so a tmpfs such as /dev/shm needs that much memory free on top.
    #[arg(long, value_name = "DIR")]
    large_dir: Option<PathBuf>,
    /// The large record's size in bytes (default 1 GiB; 256 MiB with --quick; 0 skips it).
    #[arg(long, value_name = "BYTES")]
    large_bytes: Option<u64>,
}

/// The hidden child mode that streams the large record.
#[derive(Parser)]
#[command(name = "bunsan-bench large-client")]
struct LargeArgs {
    /// The cluster manifest.
    #[arg(long)]
    cluster: PathBuf,
    /// The directory holding collector/, reader/ (and admin/).
    #[arg(long)]
    identity_dir: PathBuf,
    /// The record's size.
    #[arg(long)]
    bytes: u64,
}

fn main() -> anyhow::Result<()> {
    let args: Vec<OsString> = std::env::args_os().collect();
    match args.get(1).and_then(|arg| arg.to_str()) {
        // The node daemon, so that the benchmark needs no other binary.
        Some("node") => {
            let node_args =
                std::iter::once(OsString::from("bunsan-node")).chain(args[2..].iter().cloned());
            let code = bunsan_node::cli::run_cli(node_args);
            std::process::exit(i32::from(code != std::process::ExitCode::SUCCESS));
        }
        // Redraws the plot from a results file: `bunsan-bench plot RESULTS.json PLOT.svg`.
        Some("plot") => {
            let (Some(json), Some(svg)) = (args.get(2), args.get(3)) else {
                anyhow::bail!("usage: bunsan-bench plot RESULTS.json PLOT.svg");
            };
            let report: Report = serde_json::from_str(&std::fs::read_to_string(json)?)?;
            std::fs::write(svg, report::svg(&report))?;
            Ok(())
        }
        Some("large-client") => {
            let large = LargeArgs::parse_from(&args[1..]);
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(large::run_child(
                &large.cluster,
                &large.identity_dir,
                large.bytes,
            ))
        }
        _ => {
            let args = Args::parse();
            tokio::runtime::Runtime::new()?.block_on(bench(args))
        }
    }
}

/// How long each kind of cell runs.
struct Budgets {
    cell: Duration,
    warm_up: Duration,
    floor: Duration,
}

/// The clients and floors every cell uses.
struct Bench {
    collector: Client,
    reader: Client,
    purpose: Purpose,
    echo: EchoFloor,
    scratch: tempfile::TempDir,
    budgets: Budgets,
    read_quorum: usize,
    write_quorum: usize,
    /// n: how many nodes write each put (the sled floor writes that many databases).
    nodes: usize,
    /// The nodes' process ids, when this run started them (for CPU per operation).
    node_pids: Option<Vec<u32>>,
}

async fn bench(args: Args) -> anyhow::Result<()> {
    // Before minutes of small cells, not after them.
    let large_bytes = args
        .large_bytes
        .unwrap_or(if args.quick { 256 << 20 } else { 1 << 30 });
    if large_bytes > 0 && args.cluster.is_none() {
        let dir = args.large_dir.clone().unwrap_or_else(std::env::temp_dir);
        check_room(&dir, large_bytes)?;
    }
    let budgets = if args.quick {
        Budgets {
            cell: Duration::from_secs(3),
            warm_up: Duration::from_millis(300),
            floor: Duration::from_millis(1500),
        }
    } else {
        Budgets {
            cell: Duration::from_secs(10),
            warm_up: Duration::from_secs(1),
            floor: Duration::from_secs(5),
        }
    };
    let exe = std::env::current_exe()?;
    let init = InitOptions {
        name: "bunsan-bench".to_owned(),
        nodes: 5,
        threshold: 3,
        write_quorum: None,
        base_port: 0,
    };
    let node_options = LocalOptions {
        node_binary: Some(exe.clone()),
        node_args: vec![OsString::from("node")],
        ..LocalOptions::default()
    };
    // The floor's endpoints need certificates for node-1..5: a throwaway cluster directory.
    let pki = tempfile::tempdir()?;
    bunsan_cluster::init::init(pki.path(), &init)?;

    let started_cluster = match &args.cluster {
        Some(_) => None,
        None => Some(LocalCluster::start_temporary(&init, node_options.clone()).await?),
    };
    let (manifest_path, clients) = match (&started_cluster, &args.cluster, &args.identity_dir) {
        (Some(cluster), _, _) => (
            cluster.layout().manifest_path(),
            large::clients_dir(cluster.dir()),
        ),
        (None, Some(file), Some(dir)) => (file.clone(), dir.clone()),
        _ => anyhow::bail!("--cluster needs --identity-dir"),
    };
    let manifest = Manifest::from_toml(&std::fs::read_to_string(&manifest_path)?)?;
    let cluster_text = format!(
        "{}-of-{}, W={}, {}",
        manifest.scheme.threshold().get(),
        manifest.nodes.len(),
        manifest.write_quorum,
        if started_cluster.is_some() {
            "5 node processes on 127.0.0.1, sled on local disk"
        } else {
            "existing cluster"
        }
    );
    let options = ClientOptions {
        timeout: Duration::from_secs(30),
        ..ClientOptions::default()
    };
    let bench = Bench {
        collector: Client::new(
            manifest.clone(),
            Identity::load(&clients.join("collector")).context("collector identity")?,
            options.clone(),
        )?,
        reader: Client::new(
            manifest.clone(),
            Identity::load(&clients.join("reader")).context("reader identity")?,
            options,
        )?,
        purpose: Purpose::new("drill", "bunsan-bench")?,
        echo: EchoFloor::start(pki.path(), 5).await?,
        scratch: tempfile::tempdir()?,
        budgets,
        read_quorum: manifest.read_quorum(),
        write_quorum: usize::from(manifest.write_quorum),
        nodes: manifest.nodes.len(),
        node_pids: started_cluster
            .as_ref()
            .map(|cluster| cluster.nodes().iter().filter_map(|node| node.pid).collect()),
    };

    println!("{}", report::header());
    let mut rows = Vec::new();
    for (size, concurrencies) in [
        (1024usize, vec![1usize, 64]),
        (1 << 20, vec![MIB_CONCURRENCY]),
    ] {
        if args
            .only
            .as_ref()
            .is_some_and(|only| *only != size_name(size as u64))
        {
            continue;
        }
        let record = vec![0x42u8; size];
        for key in 0..GET_KEYS {
            bench.collector.put(&get_key(size, key), &record).await?;
        }
        for &concurrency in &concurrencies {
            if args.concurrency.is_some_and(|only| only != concurrency) {
                continue;
            }
            for row in bench.cells(&record, concurrency).await? {
                println!("{}", report::line(&row));
                rows.push(row);
            }
        }
    }
    bench.echo.close().await;
    bench.collector.close().await;
    bench.reader.close().await;
    drop(bench);
    if let Some(cluster) = started_cluster {
        cluster.stop().await?;
    }

    let mut large_note = String::new();
    if large_bytes > 0 {
        let (result, note) = match &args.cluster {
            Some(_) => (
                large::spawn_child(&exe, &manifest_path, &clients, large_bytes).await?,
                "the existing cluster",
            ),
            None => {
                let dir = args.large_dir.clone().unwrap_or_else(std::env::temp_dir);
                let result = large_cluster(&exe, &init, node_options, &dir, large_bytes).await?;
                (
                    result,
                    "a fresh cluster of the same shape, data on local disk",
                )
            }
        };
        large_note = format!("; large record: {note}");
        for (op, secs, rss) in [
            ("put", result.put_secs, result.put_peak_rss),
            ("get", result.get_secs, result.get_peak_rss),
        ] {
            let row = Row {
                name: format!("{} {op} (streamed)", size_name(large_bytes)),
                record_bytes: large_bytes,
                concurrency: 1,
                ops: 1,
                p50_ms: secs * 1000.0,
                p99_ms: secs * 1000.0,
                ops_per_s: 1.0 / secs,
                mb_per_s: large_bytes as f64 / secs / 1e6,
                floor: None,
                peak_rss_mib: Some(rss as f64 / f64::from(1 << 20)),
                cpu_ms_per_op: None,
            };
            println!("{}", report::line(&row));
            rows.push(row);
        }
        if !result.peak_reset {
            println!(
                "(the peak RSS could not be reset between put and get: the get's covers both)"
            );
        }
    }

    let targets = report::targets(&rows);
    println!();
    for target in &targets {
        let mark = if target.met { "met    " } else { "NOT met" };
        println!("{mark} {:<52} {}", target.target, target.measured);
    }
    let report = Report {
        mode: if args.quick { "quick" } else { "full" }.to_owned(),
        cluster: cluster_text + &large_note,
        cpus: std::thread::available_parallelism().map_or(0, usize::from),
        unix_time: SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs(),
        rows,
        targets,
    };
    if let Some(path) = &args.json_out {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &args.svg_out {
        std::fs::write(path, report::svg(&report))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

impl Bench {
    /// The put and the get of `record` at `concurrency`, each with its floor.
    async fn cells(&self, record: &[u8], concurrency: usize) -> anyhow::Result<[Row; 2]> {
        let size = record.len();
        let size_text = size_name(size as u64);
        let budgets = &self.budgets;

        let put = |i: u64| async move {
            let key = RecordKey::new(format!("bench/put/{size}/{}", i % PUT_KEYS))?;
            self.collector.put(&key, record).await?;
            Ok(())
        };
        measure::run(concurrency, budgets.warm_up, u64::MAX, put).await?;
        let cpu = self.cpu();
        let ours = measure::run(concurrency, budgets.cell, u64::MAX, put).await?;
        let put_cpu = self.cpu_per_op(cpu, &ours);
        let request = echo_request(size + FRAME_OVERHEAD_BYTES, 16);
        let quinn = measure::run(concurrency, budgets.floor, u64::MAX, |_| {
            self.echo.round_trip(&request, self.write_quorum)
        })
        .await?;
        let sled = sled_floor(
            &self
                .scratch
                .path()
                .join(format!("put-{size}-{concurrency}")),
            self.nodes,
            size + FRAME_OVERHEAD_BYTES,
            concurrency,
            budgets.floor,
        )
        .await?;
        let mut put_row = with_floor(
            Row::from_sample(&format!("{size_text} put"), size as u64, concurrency, &ours),
            &quinn,
            &sled,
        );
        put_row.cpu_ms_per_op = put_cpu;

        let get = |i: u64| async move {
            let record = self
                .reader
                .get(&get_key(size, i % GET_KEYS), &self.purpose)
                .await?;
            anyhow::ensure!(
                record.len() == size,
                "a get returned {} bytes",
                record.len()
            );
            Ok(())
        };
        measure::run(concurrency, budgets.warm_up, u64::MAX, get).await?;
        let cpu = self.cpu();
        let ours = measure::run(concurrency, budgets.cell, u64::MAX, get).await?;
        let get_cpu = self.cpu_per_op(cpu, &ours);
        let request = echo_request(FRAME_OVERHEAD_BYTES, size + FRAME_OVERHEAD_BYTES);
        let quinn = measure::run(concurrency, budgets.floor, u64::MAX, |_| {
            self.echo.round_trip(&request, self.read_quorum)
        })
        .await?;
        let sled = sled_read_floor(
            &self
                .scratch
                .path()
                .join(format!("get-{size}-{concurrency}")),
            size + FRAME_OVERHEAD_BYTES,
            budgets.floor,
        )
        .await?;
        let mut get_row = with_floor(
            Row::from_sample(&format!("{size_text} get"), size as u64, concurrency, &ours),
            &quinn,
            &sled,
        );
        get_row.cpu_ms_per_op = get_cpu;
        Ok([put_row, get_row])
    }
}

impl Bench {
    /// CPU seconds of this process and the nodes so far (`None` without the nodes' pids).
    fn cpu(&self) -> Option<f64> {
        measure::cpu_secs(self.node_pids.as_deref()?)
    }

    /// CPU milliseconds per operation of `sample`, from a [`Bench::cpu`] taken before it.
    fn cpu_per_op(&self, before: Option<f64>, sample: &Sample) -> Option<f64> {
        let used = self.cpu()? - before?;
        (sample.ops() > 0).then(|| used * 1000.0 / sample.ops() as f64)
    }
}

fn get_key(size: usize, i: u64) -> RecordKey {
    // Printable ASCII of a few dozen bytes outside the reserved namespace: always a valid key.
    RecordKey::new(format!("bench/get/{size}/{i}")).unwrap_or_else(|_| unreachable!())
}

fn with_floor(mut row: Row, quinn: &Sample, sled: &Sample) -> Row {
    row.floor = Some(Floor::compose(quinn, sled, row.record_bytes));
    row
}

fn size_name(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 && b % (1 << 30) == 0 => format!("{} GiB", b >> 30),
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}

/// Fails, saying why, unless `dir` has room for the large record's cluster: five nodes keep
/// about 5.5 times the record on disk, and a disk that fills mid-run fails the cell with errors
/// that do not name the cause.
fn check_room(dir: &Path, bytes: u64) -> anyhow::Result<()> {
    let stat = nix::sys::statvfs::statvfs(dir)
        .with_context(|| format!("cannot read the free space of {}", dir.display()))?;
    let free = stat.blocks_available() as u64 * stat.fragment_size() as u64;
    let needed = bytes / 2 * 11;
    anyhow::ensure!(
        free >= needed,
        "the {} record's cluster needs about {} MiB free in {}, and {} MiB are: free some \
         space, pass --large-dir DIR elsewhere, or skip the cell with --large-bytes 0",
        size_name(bytes),
        needed >> 20,
        dir.display(),
        free >> 20
    );
    Ok(())
}

/// Runs the large record against a fresh cluster with its data under `dir` (the cluster of
/// the small cells is stopped by then, so the two never compete).
async fn large_cluster(
    exe: &Path,
    init: &InitOptions,
    options: LocalOptions,
    dir: &Path,
    bytes: u64,
) -> anyhow::Result<large::LargeResult> {
    check_room(dir, bytes)?;
    let dir = tempfile::Builder::new()
        .prefix("bunsan-bench-large-")
        .tempdir_in(dir)?;
    bunsan_cluster::init::init(dir.path(), init)?;
    let cluster = LocalCluster::start_with(dir.path(), options).await?;
    let result = large::spawn_child(
        exe,
        &cluster.layout().manifest_path(),
        &large::clients_dir(cluster.dir()),
        bytes,
    )
    .await;
    cluster.stop().await?;
    result
}
