//! The collector's state file: what it already uploaded, so a re-run uploads only what is new.
//!
//! Why a local file and not a question to the cluster: a collector may write but never read,
//! and an "is this stored?" request would give every collector certificate (the credential
//! most exposed, at clinics) an oracle for which patients have records of which kind on which
//! day, because the collector also holds the pseudonym key. The state file tells the collector
//! only what it did itself. docs/OPERATIONS.md ("SS-MIX2 collector") explains what to do when
//! it is lost (a re-run uploads every document again as a new version; nothing is lost).
//!
//! Format (text, append-only while a run goes on, rewritten compacted at the end):
//!
//! ```text
//! bunsan-ssmix2-state 1
//! RECORD KEY <TAB> SIZE <TAB> MTIME_NS <TAB> BLAKE3 HEX <TAB> VERSION
//! ```
//!
//! One line per upload; a later line for the same key replaces an earlier one. Entries are
//! keyed by the *record key*, which carries the pseudonym, so the file holds no patient id.
//! Record keys contain no control characters, so a tab or newline cannot appear inside one.
//! A last line without its newline (a crash mid-append) is ignored: that upload is repeated,
//! which stores the same bytes as a newer version.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The first line of a state file: names the format and its version.
const HEADER: &str = "bunsan-ssmix2-state 1";

/// What the collector knows about one uploaded document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The file size in bytes.
    pub size: u64,
    /// The file's modification time, in nanoseconds since the Unix epoch.
    pub mtime_ns: u128,
    /// BLAKE3 of the uploaded content.
    pub blake3: [u8; 32],
    /// The version the cluster stored (for the operator; not used to decide anything).
    pub version: String,
}

/// The loaded state and the open file new entries are appended to.
#[derive(Debug)]
pub struct State {
    path: PathBuf,
    entries: HashMap<String, Entry>,
    file: File,
    /// Entry lines in the file (loaded and appended): more than `entries` means compacting
    /// would shrink it.
    lines: usize,
}

impl State {
    /// Opens (or creates) the state file at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let io = |action| {
            move |source| Error::Io {
                action,
                path: path.to_owned(),
                source,
            }
        };
        let (entries, lines) = match std::fs::read_to_string(path) {
            Ok(text) => parse(path, &text)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::write(path, format!("{HEADER}\n")).map_err(io("create"))?;
                (HashMap::new(), 0)
            }
            Err(e) => return Err(io("read")(e)),
        };
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(io("open"))?;
        Ok(Self {
            path: path.to_owned(),
            entries,
            file,
            lines,
        })
    }

    /// The entry for a record key, if it was uploaded before.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.get(key)
    }

    /// How many documents the state knows.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the state knows no document.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Records an upload (or a newly seen size and time of known content), appending it to
    /// the file at once so that a crash loses at most the line being written.
    pub fn record(&mut self, key: &str, entry: Entry) -> Result<()> {
        let line = format!(
            "{key}\t{}\t{}\t{}\t{}\n",
            entry.size,
            entry.mtime_ns,
            hex::encode(entry.blake3),
            entry.version
        );
        self.file
            .write_all(line.as_bytes())
            .map_err(|source| Error::Io {
                action: "append to",
                path: self.path.clone(),
                source,
            })?;
        self.entries.insert(key.to_owned(), entry);
        self.lines += 1;
        Ok(())
    }

    /// Rewrites the file with one line per key (write a temporary file, sync, rename) if it
    /// holds superseded lines, so it does not grow by a line per changed file forever.
    pub fn compact(self) -> Result<()> {
        if self.lines == self.entries.len() {
            return Ok(());
        }
        let io = |action, path: &Path| {
            let path = path.to_owned();
            move |source| Error::Io {
                action,
                path,
                source,
            }
        };
        let temporary = self.path.with_extension("compacting");
        let mut keys: Vec<&String> = self.entries.keys().collect();
        keys.sort();
        let mut text = format!("{HEADER}\n");
        for key in keys {
            let entry = &self.entries[key];
            text.push_str(&format!(
                "{key}\t{}\t{}\t{}\t{}\n",
                entry.size,
                entry.mtime_ns,
                hex::encode(entry.blake3),
                entry.version
            ));
        }
        let mut file = File::create(&temporary).map_err(io("create", &temporary))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(io("write", &temporary))?;
        std::fs::rename(&temporary, &self.path).map_err(io("rename", &temporary))?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // The rename is durable once the directory is; failing to sync only risks the
            // old (still valid) file coming back after a crash.
            if let Ok(dir) = File::open(dir) {
                let _ = dir.sync_all();
            }
        }
        Ok(())
    }
}

/// The entries of a state file's text, and how many entry lines it holds.
fn parse(path: &Path, text: &str) -> Result<(HashMap<String, Entry>, usize)> {
    let bad = |line: usize, reason: &str| Error::StateFile {
        path: path.to_owned(),
        line,
        reason: reason.to_owned(),
    };
    let mut lines = text.split_inclusive('\n').enumerate();
    match lines.next() {
        Some((_, first)) if first.trim_end_matches('\n') == HEADER => {}
        _ => return Err(bad(1, &format!("expected the header {HEADER:?}"))),
    }
    let mut entries = HashMap::new();
    let mut count = 0;
    for (index, line) in lines {
        let Some(line) = line.strip_suffix('\n') else {
            // Cut short by a crash while appending: that upload will simply be repeated.
            break;
        };
        let number = index + 1;
        let fields: Vec<&str> = line.split('\t').collect();
        let [key, size, mtime_ns, hash, version] = fields[..] else {
            return Err(bad(number, "expected 5 tab-separated fields"));
        };
        let mut blake3 = [0u8; 32];
        hex::decode_to_slice(hash, &mut blake3)
            .map_err(|_| bad(number, "the hash is not 64 hex digits"))?;
        let entry = Entry {
            size: size.parse().map_err(|_| bad(number, "bad size"))?,
            mtime_ns: mtime_ns
                .parse()
                .map_err(|_| bad(number, "bad modification time"))?,
            blake3,
            version: version.to_owned(),
        };
        entries.insert(key.to_owned(), entry);
        count += 1;
    }
    Ok((entries, count))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(size: u64) -> Entry {
        Entry {
            size,
            mtime_ns: 1_700_000_000_123_456_789,
            blake3: *blake3::hash(&size.to_be_bytes()).as_bytes(),
            version: "1795578976587234.b91b7f41eec83890".to_owned(),
        }
    }

    #[test]
    fn entries_survive_reopening_and_compaction() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state");
        let mut state = State::open(&path).expect("create");
        assert!(state.is_empty());
        state.record("a/1", entry(1)).expect("record");
        state.record("a/2", entry(2)).expect("record");
        state.record("a/1", entry(3)).expect("record");
        drop(state);

        let state = State::open(&path).expect("reopen");
        assert_eq!(state.len(), 2);
        assert_eq!(state.get("a/1"), Some(&entry(3)), "the later line wins");
        state.compact().expect("compact");
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.lines().count(), 3, "header + one line per key");
        let state = State::open(&path).expect("reopen");
        assert_eq!(state.get("a/2"), Some(&entry(2)));
    }

    #[test]
    fn a_torn_last_line_is_ignored_and_damage_elsewhere_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state");
        let mut state = State::open(&path).expect("create");
        state.record("a/1", entry(1)).expect("record");
        drop(state);
        let mut text = std::fs::read_to_string(&path).expect("read");
        text.push_str("a/2\t12\t34");
        std::fs::write(&path, &text).expect("write");
        let state = State::open(&path).expect("torn tail tolerated");
        assert_eq!(state.len(), 1);

        std::fs::write(&path, text.replace("\t1\t", "\tone\t") + "\n").expect("write");
        match State::open(&path) {
            Err(Error::StateFile { line, .. }) => assert_eq!(line, 2),
            other => panic!("expected a StateFile error, got {other:?}"),
        }
        std::fs::write(&path, "something else\n").expect("write");
        assert!(matches!(
            State::open(&path),
            Err(Error::StateFile { line: 1, .. })
        ));
    }
}
