use super::*;
use proptest::prelude::*;

fn payload(seq: u64, len: usize) -> Vec<u8> {
    let mut bytes = vec![1u8];
    bytes.extend((0..len).map(|i| (seq as usize * 31 + i) as u8));
    bytes
}

fn payloads(from: u64, n: u64, len: usize) -> Vec<Vec<u8>> {
    (from..from + n).map(|seq| payload(seq, len)).collect()
}

/// A new journal in a new directory (kept alive by the returned guard).
fn fresh() -> (tempfile::TempDir, PathBuf, Journal) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("entries.journal");
    let journal = Journal::open(&path).expect("open");
    (dir, path, journal)
}

fn fill(journal: &Journal, batches: u64, per_batch: u64, len: usize) -> Vec<Vec<u8>> {
    let mut all = Vec::new();
    for b in 0..batches {
        let batch = payloads(b * per_batch, per_batch, len);
        journal.append(b * per_batch, &batch).expect("append");
        all.extend(batch);
    }
    all
}

#[test]
fn entries_read_back_from_any_point_and_after_a_reopen() {
    let (_dir, path, journal) = fresh();
    // Past several index slots and one growth of the file.
    let all = fill(&journal, 40, 50, 2100);
    assert_eq!(journal.count(), 2000);
    for from in [0, 1, 63, 64, 65, 1000, 1999] {
        assert_eq!(
            journal.read(from, 7).expect("read"),
            all[from as usize..(from as usize + 7).min(2000)]
        );
    }
    assert!(journal.read(2000, 5).expect("read").is_empty());
    drop(journal);
    let journal = Journal::open(&path).expect("reopen");
    assert_eq!(journal.count(), 2000);
    assert_eq!(journal.read(0, 5000).expect("read"), all);
    journal.append(2000, &[payload(2000, 3)]).expect("append");
    assert_eq!(journal.read(2000, 1).expect("read"), [payload(2000, 3)]);
}

#[test]
fn appends_are_conditional_and_bounded() {
    let (_dir, _, journal) = fresh();
    journal.append(0, &payloads(0, 3, 10)).expect("append");
    for wrong in [0, 2, 4] {
        match journal.append(wrong, &payloads(wrong, 1, 10)) {
            Err(Error::AuditConflict { seq, len }) => assert_eq!((seq, len), (wrong, 3)),
            other => panic!("append at {wrong}: {other:?}"),
        }
    }
    for bad in [Vec::new(), vec![1; PAYLOAD_MAX + 1]] {
        assert!(matches!(
            journal.append(3, &[payload(3, 5), bad]),
            Err(Error::AuditCorrupt { seq: 4, .. })
        ));
    }
    assert!(matches!(
        journal.append(3, &payloads(3, BATCH_MAX as u64 + 1, 1)),
        Err(Error::AuditUnavailable { .. })
    ));
    // Nothing of the refused batches landed.
    assert_eq!(journal.count(), 3);
    journal.append(3, &payloads(3, 1, 10)).expect("append");
    assert_eq!(journal.read(0, 10).expect("read"), payloads(0, 4, 10));
}

/// Writes `bytes` at `offset` of the file behind the journal's back, as a crash or rot would.
fn scribble(path: &Path, offset: u64, bytes: &[u8]) {
    let file = OpenOptions::new().write(true).open(path).expect("open");
    file.write_all_at(bytes, offset).expect("write");
}

/// Where the data of `entries` ends in the file.
fn end_of(entries: &[Vec<u8>]) -> u64 {
    entries
        .iter()
        .map(|p| (p.len() + FRAME_OVERHEAD) as u64)
        .sum()
}

#[test]
fn a_torn_last_batch_is_cut_off_and_the_log_goes_on() {
    let (_dir, path, journal) = fresh();
    let all = fill(&journal, 3, 4, 100);
    drop(journal);
    let end = end_of(&all);
    // The first frame of a two-frame batch landed whole, the second did not.
    let mut torn = Vec::new();
    frame_into(&mut torn, &payload(12, 100), 1);
    frame_into(&mut torn, &payload(13, 100), 0);
    let cut = torn.len() - 20;
    scribble(&path, end, &torn[..cut]);
    let journal = Journal::open(&path).expect("a torn tail opens");
    assert_eq!(journal.count(), 12);
    assert_eq!(journal.read(0, 100).expect("read"), all);
    // Garbage in place of a frame, as a write that reached the disk only in part.
    drop(journal);
    scribble(&path, end, &[0xa5; 300]);
    let journal = Journal::open(&path).expect("a torn tail opens");
    assert_eq!(journal.count(), 12);
    let next = payloads(12, 2, 50);
    journal.append(12, &next).expect("append after the cut");
    drop(journal);
    let journal = Journal::open(&path).expect("reopen");
    assert_eq!(journal.count(), 14);
    assert_eq!(journal.read(12, 2).expect("read"), next);
}

#[test]
fn damage_to_acknowledged_entries_refuses_to_open() {
    let (_dir, path, journal) = fresh();
    // More than one batch's worth of entries after the damaged one.
    let all = fill(&journal, 20, 100, PAYLOAD_MAX - 1);
    assert!(end_of(&all) > 2 * TORN_WINDOW);
    drop(journal);
    scribble(&path, 100, &[0xff]);
    match Journal::open(&path) {
        Err(Error::AuditCorrupt { seq: 0, reason }) => {
            assert!(
                reason.contains("acknowledged entries are damaged"),
                "{reason}"
            )
        }
        Err(other) => panic!("expected AuditCorrupt, got {other}"),
        Ok(journal) => panic!("opened over damage with {} entries", journal.count()),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever bytes follow the data, opening never panics, keeps every complete batch that
    /// precedes them, and cuts the rest when it fits in one batch.
    #[test]
    fn any_tail_keeps_the_complete_batches(
        sizes in proptest::collection::vec(1usize..300, 1..20),
        tail in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        let (_dir, path, journal) = fresh();
        let entries: Vec<Vec<u8>> =
            sizes.iter().enumerate().map(|(i, &len)| payload(i as u64, len)).collect();
        for (seq, entry) in entries.iter().enumerate() {
            journal.append(seq as u64, std::slice::from_ref(entry)).expect("append");
        }
        drop(journal);
        scribble(&path, end_of(&entries), &tail);
        let journal = Journal::open(&path).expect("open over a tail");
        prop_assert_eq!(journal.count(), entries.len() as u64);
        prop_assert_eq!(journal.read(0, 100).expect("read"), entries);
    }
}
