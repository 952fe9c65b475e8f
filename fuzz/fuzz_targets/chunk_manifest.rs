//! Any bytes a reader rebuilds at a record's key: decoding a chunk manifest must never panic,
//! and whatever decodes is self-consistent and re-encodes to itself.
#![no_main]
use bunsan_protocol::chunk::ChunkManifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(manifest) = ChunkManifest::decode(data) {
        assert!(manifest.validate().is_ok());
        let covering = manifest.chunks_covering(0..u64::MAX);
        assert_eq!(covering.len(), manifest.chunks.len());
        let again = manifest.encode().expect("a decoded manifest re-encodes");
        assert_eq!(ChunkManifest::decode(&again).ok(), Some(manifest));
    }
});
