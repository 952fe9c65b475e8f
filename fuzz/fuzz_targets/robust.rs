//! Any set of shares: robust decoding and reassembly must return a value or a typed error,
//! never panic; whatever `decode` returns lies on one polynomial with all but the named shares.
#![no_main]
use bunsan_protocol::robust::{berlekamp_welch, decode, disagreeing};
use bunsan_protocol::shamir::Share;
use bunsan_protocol::Threshold;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&k, rest)) = data.split_first() else { return };
    let Ok(threshold) = Threshold::new(k % 8) else { return };
    // Shares are separated by 0xff, each in the [x, y...] layout.
    let shares: Vec<Share> = rest
        .split(|&b| b == 0xff)
        .filter_map(|bytes| Share::from_sharks_bytes(bytes).ok())
        .take(32)
        .collect();
    if let Ok(decoded) = decode(&shares, threshold) {
        let good: Vec<Share> = shares
            .iter()
            .filter(|s| !decoded.bad.contains(&s.index()))
            .cloned()
            .collect();
        assert_eq!(disagreeing(&good, threshold).ok(), Some(Vec::new()));
    }
    let _ = disagreeing(&shares, threshold);
    let mut seen = [false; 256];
    let points: Vec<(u8, u8)> = rest
        .chunks_exact(2)
        .filter(|p| p[0] != 0 && !std::mem::replace(&mut seen[usize::from(p[0])], true))
        .map(|p| (p[0], p[1]))
        .take(24)
        .collect();
    let _ = berlekamp_welch(&points, usize::from(k % 8).max(1));
});
