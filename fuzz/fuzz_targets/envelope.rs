//! Any bytes read from a node's disk: decoding an envelope must never panic, and whatever
//! decodes is self-consistent.
#![no_main]
use bunsan_protocol::envelope::ShareEnvelope;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(envelope) = ShareEnvelope::decode(data) {
        assert!(envelope.validate().is_ok());
        // Checking a decoded envelope's commitment, or following its batch proof to a root,
        // never panics either.
        let _ = envelope.check_commitment();
        if let Some(proof) = &envelope.batch {
            let _ = proof.root(&envelope.header);
        }
        let again = envelope.encode().expect("a decoded envelope re-encodes");
        assert_eq!(ShareEnvelope::decode(&again).ok(), Some(envelope));
    }
});
