//! Records larger than a chunk: streamed through the real `bunsan` command in bounded memory,
//! and every way a chunk or its manifest can be wrong ends in a typed error, never in wrong
//! bytes.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use bunsan_client::chunked::{ChunkOptions, Chunked};
use bunsan_client::Error;
use bunsan_cluster::local::LocalCluster;
use bunsan_protocol::chunk::{
    chunk_key, chunk_prefix, ChunkManifest, MANIFEST_FORMAT, MANIFEST_MAGIC,
};
use bunsan_tests::{client, key, pattern, purpose, start_cluster};

const NODE: &str = env!("CARGO_BIN_EXE_bunsan-test-node");
const CLI: &str = env!("CARGO_BIN_EXE_bunsan-test-cli");

/// The CLI's peak RSS must stay far below the 64 MiB record plus its five shares (~384 MiB
/// if held whole): chunks of 4 MiB, three in flight, are about 100 MiB. Generous on purpose:
/// this guards against holding the record, not against a few MiB of growth.
const CLI_PEAK_RSS_MAX_BYTES: u64 = 200 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_record_streams_through_the_cli_in_bounded_memory() {
    let cluster = start_cluster(NODE, 5, 3).await;
    let work = tempfile::tempdir().expect("tempdir");
    let input = work.path().join("scan.dcm");
    let record = pattern(64 << 20, 64);
    std::fs::write(&input, &record).expect("write the input");

    let put = run_cli(
        &cluster,
        "collector",
        &["put", "imaging/scan.dcm"],
        Some(&input),
    );
    assert!(put.stderr.contains("in 16 chunks"), "{}", put.stderr);
    assert!(
        put.peak_rss < CLI_PEAK_RSS_MAX_BYTES,
        "put peak RSS {} MiB",
        put.peak_rss >> 20
    );

    let output = work.path().join("back.dcm");
    let out = output.to_str().expect("utf-8 path");
    let get = run_cli(
        &cluster,
        "reader",
        &["get", "imaging/scan.dcm", "--purpose", "test", "-o", out],
        None,
    );
    assert!(
        get.peak_rss < CLI_PEAK_RSS_MAX_BYTES,
        "get peak RSS {} MiB",
        get.peak_rss >> 20
    );
    let back = std::fs::read(&output).expect("the output file exists");
    assert!(back == record, "the record came back different");
    drop(back);

    // A range across a chunk boundary, to standard output.
    let (start, end) = ((4 << 20) - 10, (4 << 20) + 9);
    let range = format!("{start}-{end}");
    let ranged = run_cli(
        &cluster,
        "reader",
        &[
            "get",
            "imaging/scan.dcm",
            "--purpose",
            "test",
            "--range",
            &range,
        ],
        None,
    );
    assert_eq!(ranged.stdout, record[start..=end]);

    // The admin's rm removes the chunks too; the listing of internal keys shows it.
    let rm = run_cli(&cluster, "admin", &["rm", "imaging/scan.dcm"], None);
    assert!(rm.stderr.contains("and 16 chunks"), "{}", rm.stderr);
    let listed = run_cli(&cluster, "admin", &["ls", "--all"], None);
    assert!(
        listed.stdout.is_empty(),
        "left: {}",
        String::from_utf8_lossy(&listed.stdout)
    );
    cluster.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standard_input_and_output_stream_too() {
    let cluster = start_cluster(NODE, 5, 3).await;
    let record = pattern((9 << 20) + 1, 9);
    let work = tempfile::tempdir().expect("tempdir");
    let input = work.path().join("note.hl7");
    std::fs::write(&input, &record).expect("write");
    // `-` reads standard input (fed from the file).
    let put = run_cli(
        &cluster,
        "collector",
        &["put", "notes/a", "-"],
        Some(&input),
    );
    assert!(put.stderr.contains("in 3 chunks"), "{}", put.stderr);
    let get = run_cli(
        &cluster,
        "reader",
        &["get", "notes/a", "--purpose", "t"],
        None,
    );
    assert!(get.stdout == record);

    // `-o` onto something that is not a regular file (here a FIFO; `/dev/null` in the docs'
    // drill) writes into it and leaves it what it was, instead of renaming a file over it.
    let fifo = work.path().join("out.fifo");
    let made = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success());
    let reader_path = fifo.clone();
    let drained = std::thread::spawn(move || std::fs::read(reader_path).expect("read the FIFO"));
    let out = fifo.to_str().expect("utf-8 path");
    run_cli(
        &cluster,
        "reader",
        &["get", "notes/a", "--purpose", "t", "-o", out],
        None,
    );
    assert!(drained.join().expect("FIFO reader") == record);
    let kind = std::fs::symlink_metadata(&fifo).expect("stat").file_type();
    assert!(
        std::os::unix::fs::FileTypeExt::is_fifo(&kind),
        "the FIFO was replaced by {kind:?}"
    );
    cluster.stop().await.expect("clean stop");
}

/// Small chunks keep this test fast: 4 chunks of 64 KiB and a short last one.
fn small_chunks() -> ChunkOptions {
    ChunkOptions {
        chunk_size: 64 << 10,
        ..ChunkOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_or_damaged_chunk_or_manifest_is_a_typed_error() {
    let cluster = start_cluster(NODE, 5, 3).await;
    let collector = client(&cluster, "collector");
    let reader = client(&cluster, "reader");
    let admin = client(&cluster, "admin");
    let writer = Chunked::with_options(&collector, small_chunks());
    let reading = Chunked::with_options(&reader, small_chunks());
    let record_key = key("imaging/forged");
    let record = pattern((4 << 16) + 100, 3);
    let receipt = writer.put(&record_key, &record).await.expect("put");
    assert_eq!(receipt.chunks, 5);
    assert!(*reading.get(&record_key, &purpose()).await.expect("get") == record);
    let manifest_bytes = reader.get(&record_key, &purpose()).await.expect("manifest");
    let manifest = ChunkManifest::decode(&manifest_bytes).expect("a manifest");

    // A manifest whose body does not decode.
    let mut garbage = MANIFEST_MAGIC.to_vec();
    garbage.extend([MANIFEST_FORMAT, 0xff, 0xff, 0xff]);
    collector.put(&record_key, &garbage).await.expect("put");
    let got = reading.get(&record_key, &purpose()).await;
    assert!(matches!(got, Err(Error::ManifestCorrupt { .. })), "{got:?}");

    // A manifest that lies about one chunk's digest.
    let mut lying = manifest.clone();
    lying.chunks[2].digest[0] ^= 1;
    collector
        .put(&record_key, &lying.encode().expect("encode"))
        .await
        .expect("put");
    let got = reading.get(&record_key, &purpose()).await;
    assert!(
        matches!(
            got,
            Err(Error::ChunkMismatch {
                chunk: 2,
                what: "digest",
                ..
            })
        ),
        "{got:?}"
    );

    // A manifest whose chunks all match but whose record digest does not.
    let mut lying = manifest.clone();
    lying.digest[31] ^= 1;
    collector
        .put(&record_key, &lying.encode().expect("encode"))
        .await
        .expect("put");
    let got = reading.get(&record_key, &purpose()).await;
    assert!(
        matches!(got, Err(Error::RecordDigestMismatch { .. })),
        "{got:?}"
    );
    // A ranged read checks the chunks it reads, not the record digest: it still succeeds.
    let mut part = Vec::new();
    reading
        .get_to(&record_key, &purpose(), &mut part, Some(10..70_000))
        .await
        .expect("ranged get");
    assert!(part == record[10..70_000]);

    // The true manifest again, then a chunk replaced by a newer write of other bytes.
    collector
        .put(&record_key, &manifest.encode().expect("encode"))
        .await
        .expect("put");
    let chunk_1 = chunk_key(&record_key, manifest.set, 1);
    collector
        .put(&chunk_1, &vec![0u8; 1 << 16])
        .await
        .expect("overwrite chunk");
    let got = reading.get(&record_key, &purpose()).await;
    assert!(
        matches!(
            got,
            Err(Error::ChunkMismatch {
                chunk: 1,
                what: "version",
                ..
            })
        ),
        "{got:?}"
    );

    // A missing chunk.
    admin
        .delete(&chunk_key(&record_key, manifest.set, 3))
        .await
        .expect("delete chunk");
    let got = reading
        .get_to(
            &record_key,
            &purpose(),
            &mut Vec::new(),
            Some(3 << 16..(3 << 16) + 1),
        )
        .await;
    assert!(
        matches!(got, Err(Error::ChunkUnavailable { chunk: 3, .. })),
        "{got:?}"
    );

    // Deleting the record deletes every chunk under it.
    let deleted = Chunked::new(&admin)
        .delete(&record_key)
        .await
        .expect("delete");
    assert_eq!(deleted.chunks, 4, "chunk 3 was already gone");
    assert!(admin
        .list(&chunk_prefix(&record_key))
        .await
        .expect("list")
        .is_empty());
    assert!(matches!(
        reading.get(&record_key, &purpose()).await,
        Err(Error::Deleted { .. })
    ));
    cluster.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_records_stay_whole_and_overwrites_switch_at_the_manifest() {
    let cluster = start_cluster(NODE, 5, 3).await;
    let collector = client(&cluster, "collector");
    let reader = client(&cluster, "reader");
    let writer = Chunked::with_options(&collector, small_chunks());
    let reading = Chunked::with_options(&reader, small_chunks());
    let k = key("notes/size");
    // At most one chunk: one envelope, readable by the plain SDK as well.
    for len in [0, 1, 1 << 16] {
        let record = pattern(len, len as u64);
        let receipt = writer.put(&k, &record).await.expect("put");
        assert_eq!(receipt.chunks, 0);
        assert!(*reader.get(&k, &purpose()).await.expect("get") == record);
        assert!(*reading.get(&k, &purpose()).await.expect("get") == record);
    }
    // A small record that starts like a manifest is chunked, so it can never be mistaken.
    let mut tricky = MANIFEST_MAGIC.to_vec();
    tricky.extend(b"not a manifest");
    assert_eq!(writer.put(&k, &tricky).await.expect("put").chunks, 1);
    assert!(*reading.get(&k, &purpose()).await.expect("get") == tricky);
    // A chunked record replaced by a larger one, then by a small one.
    for len in [(2 << 16) + 5, (3 << 16) + 7, 10] {
        let record = pattern(len, 100 + len as u64);
        writer.put(&k, &record).await.expect("put");
        assert!(*reading.get(&k, &purpose()).await.expect("get") == record);
    }
    cluster.stop().await.expect("clean stop");
}

/// What one CLI run printed, and its peak RSS.
struct CliRun {
    stdout: Vec<u8>,
    stderr: String,
    peak_rss: u64,
}

/// Runs the CLI as `identity` with `args`, standard input from `stdin` (else empty), and
/// samples its `VmHWM` while it runs. `VmHWM` never decreases, so the last sample is the peak
/// up to a few milliseconds before the exit, after all chunks have moved.
fn run_cli(cluster: &LocalCluster, identity: &str, args: &[&str], stdin: Option<&Path>) -> CliRun {
    let stdin = match stdin {
        Some(path) => Stdio::from(std::fs::File::open(path).expect("open stdin file")),
        None => Stdio::null(),
    };
    let work = tempfile::tempdir().expect("tempdir");
    let (out_path, err_path) = (work.path().join("out"), work.path().join("err"));
    let mut child = Command::new(CLI)
        .arg("--cluster")
        .arg(cluster.layout().manifest_path())
        .arg("--identity")
        .arg(cluster.layout().client_dir(identity))
        .args(args)
        .stdin(stdin)
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("the CLI starts");
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak_rss = 0;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if let Some(hwm) = std::fs::read_to_string(&status_path)
            .ok()
            .and_then(|s| vm_hwm(&s))
        {
            peak_rss = peak_rss.max(hwm);
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stderr = std::fs::read_to_string(&err_path).expect("stderr");
    assert!(status.success(), "bunsan {args:?} failed: {stderr}");
    eprintln!("bunsan {args:?}: peak RSS {} MiB", peak_rss >> 20);
    CliRun {
        stdout: std::fs::read(&out_path).expect("stdout"),
        stderr,
        peak_rss,
    }
}

fn vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}
