//! Any set of shares in the sharks byte layout: combine must return a value or a typed error,
//! never panic.
#![no_main]
use bunsan_protocol::shamir::{combine, Share};
use bunsan_protocol::Threshold;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&k, rest)) = data.split_first() else { return };
    let Ok(threshold) = Threshold::new(k) else { return };
    // Shares are separated by 0xff 0xff, each in the [x, y...] layout.
    let shares: Vec<Share> = rest
        .split(|&b| b == 0xff)
        .filter_map(|bytes| Share::from_sharks_bytes(bytes).ok())
        .collect();
    let _ = combine(&shares, threshold);
});
