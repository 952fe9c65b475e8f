//! Any text given as cluster.toml: parsing must never panic.
#![no_main]
use bunsan_protocol::manifest::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Manifest::from_toml(text);
    }
});
