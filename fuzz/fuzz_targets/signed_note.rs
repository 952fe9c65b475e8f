//! Any text offered as a checkpoint (by a peer, or in a fetched directory): parsing a signed
//! note or checkpoint must never panic, and a parsed note writes back to the same text.
#![no_main]
use bunsan_protocol::checkpoint::Checkpoint;
use bunsan_protocol::note::SignedNote;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(note) = SignedNote::parse(text) {
        assert_eq!(SignedNote::parse(&note.to_text()).ok(), Some(note.clone()));
        if let Ok(checkpoint) = Checkpoint::parse_text(&note.text) {
            assert_eq!(checkpoint.text(), note.text);
        }
    }
});
