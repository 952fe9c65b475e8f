//! docs/RECOVERY.md, executed: a record comes back from k share files exported with
//! `bunsan-node export` and combined by the plain `sharks` crate, without any Bunsan code.

use std::collections::HashMap;
use std::process::Command;

use bunsan_tests::{client, key, pattern, start_cluster};

const NODE: &str = env!("CARGO_BIN_EXE_bunsan-test-node");

/// The `name = value` lines of an export's `.txt` file.
fn facts(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|line| line.split_once(" = "))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_recovers_from_k_exported_files_with_sharks_alone() {
    let mut cluster = start_cluster(NODE, 5, 3).await;
    let record = pattern(10_000, 11);
    let k = key("clinic-9/patient-3/discharge.hl7");
    client(&cluster, "collector")
        .put(&k, &record)
        .await
        .expect("put");
    let out = tempfile::tempdir().expect("tempdir");
    let mut files = Vec::new();
    for node in [1u8, 3, 5] {
        // The store is read directly, so the node is stopped first (sled is single-process).
        cluster.stop_node(node).await.expect("stop");
        let file = out.path().join(format!("share-{node}"));
        let config = cluster.layout().node_config_path(node);
        let status = Command::new(NODE)
            .arg("export")
            .arg("--config")
            .arg(&config)
            .arg(k.as_str())
            .arg("--out")
            .arg(&file)
            .status()
            .expect("run bunsan-node export");
        assert!(status.success(), "export from node {node}");
        files.push(file);
    }

    // From here on, only `sharks`, `blake3` and the files, as RECOVERY.md describes.
    let shares: Vec<sharks::Share> = files
        .iter()
        .map(|file| {
            let bytes = std::fs::read(file).expect("share file");
            sharks::Share::try_from(bytes.as_slice()).expect("a sharks share")
        })
        .collect();
    let mut description = files[0].clone().into_os_string();
    description.push(".txt");
    let facts = facts(&std::fs::read_to_string(description).expect("FILE.txt beside FILE"));
    let threshold: u8 = facts["threshold"].parse().expect("threshold");
    let record_len: usize = facts["record_len"].parse().expect("record length");
    let expected = hex_decode(&facts["record_check_blake3_salt_then_record"]);
    let sharks = sharks::Sharks(threshold);
    let salted = sharks.recover(&shares).expect("sharks recovers");
    let (recovered, salt) = salted.split_at(record_len);
    assert_eq!(salt.len(), 32, "the last 32 bytes are the salt");
    let mut check = blake3::Hasher::new();
    check.update(salt);
    check.update(recovered);
    assert_eq!(check.finalize().as_bytes().as_slice(), expected.as_slice());
    assert!(recovered == record.as_slice());

    // Two files are not enough, and a damaged file fails the check instead of passing.
    assert!(sharks.recover(&shares[..2]).is_err());
    let mut damaged = std::fs::read(&files[1]).expect("share file");
    damaged[50] ^= 1;
    let mut altered = shares.clone();
    altered[1] = sharks::Share::try_from(damaged.as_slice()).expect("a sharks share");
    let wrong = sharks.recover(&altered).expect("combines");
    let (record_part, salt) = wrong.split_at(record_len);
    let mut check = blake3::Hasher::new();
    check.update(salt);
    check.update(record_part);
    assert_ne!(check.finalize().as_bytes().as_slice(), expected.as_slice());
}

fn hex_decode(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}
