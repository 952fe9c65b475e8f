//! Berlekamp–Welch and robust decoding: any ⌊(m − k)/2⌋ errors are corrected and named.

use proptest::prelude::*;
use rand::{Rng, SeedableRng};

use super::*;
use crate::types::Scheme;

fn dealt(secret: &[u8], k: u8, m: usize, seed: u64) -> Vec<Share> {
    let mut rng = rand_chacha::ChaCha12Rng::seed_from_u64(seed);
    shamir::split(secret, Scheme::new(k, m).expect("scheme"), &mut rng)
}

#[test]
fn berlekamp_welch_finds_errors_in_one_column() {
    // 2-of-6: the line y = 5 + 3x, with errors at positions 1 and 4.
    let mut points: Vec<(u8, u8)> = (1..=6u8).map(|x| (x, 5 ^ gf256::mul(3, x))).collect();
    points[1].1 ^= 0x40;
    points[4].1 ^= 0x01;
    assert_eq!(berlekamp_welch(&points, 2), Ok(vec![1, 4]));
    // Three errors are beyond the radius of 2: never reported as the three.
    points[0].1 ^= 0x07;
    assert_ne!(berlekamp_welch(&points, 2), Ok(vec![0, 1, 4]));
}

#[test]
fn whole_share_damage_and_shifts_are_located() {
    let secret: Vec<u8> = (0..200u8).collect();
    let mut shares = dealt(&secret, 3, 7, 1);
    // A shifted share (one byte rotated in), and a share with one flipped bit near the end.
    let mut shifted = shares[0].data().to_vec();
    shifted.rotate_right(1);
    shares[0] = Share::new(shares[0].index(), shifted);
    let mut flipped = shares[5].data().to_vec();
    flipped[190] ^= 0x10;
    shares[5] = Share::new(shares[5].index(), flipped);
    let decoded = decode(&shares, Threshold::new(3).expect("k")).expect("decodes");
    assert_eq!(decoded.secret.as_slice(), secret.as_slice());
    let bad: Vec<u8> = decoded.bad.iter().map(|x| x.get()).collect();
    assert_eq!(bad, vec![1, 6]);
}

#[test]
fn one_error_too_many_is_refused() {
    let secret = vec![0xab; 64];
    let mut shares = dealt(&secret, 3, 5, 2);
    for s in shares.iter_mut().take(2) {
        let mut data = s.data().to_vec();
        data[3] ^= 0xff;
        *s = Share::new(s.index(), data);
    }
    // Two errors with m − k = 2: beyond the radius of 1. (In general decoding beyond the
    // radius may also give a wrong secret; `dealing::reassemble` checks it end to end.)
    assert!(matches!(
        decode(&shares, Threshold::new(3).expect("k")),
        Err(Error::TooManyBadShares { .. })
    ));
}

#[test]
fn shares_beyond_the_basis_are_checked_whole() {
    let secret = vec![7u8; 50];
    let mut shares = dealt(&secret, 3, 6, 5);
    let k = Threshold::new(3).expect("k");
    assert_eq!(disagreeing(&shares, k), Ok(vec![]));
    let mut data = shares[4].data().to_vec();
    data[49] ^= 1;
    shares[4] = Share::new(shares[4].index(), data);
    assert_eq!(disagreeing(&shares, k), Ok(vec![shares[4].index()]));
}

#[test]
fn exact_and_short_sets_behave() {
    let secret = b"abc".to_vec();
    let shares = dealt(&secret, 2, 2, 3);
    let decoded = decode(&shares, Threshold::new(2).expect("k")).expect("decodes");
    assert_eq!(decoded.secret.as_slice(), secret.as_slice());
    assert!(decoded.bad.is_empty());
    assert!(matches!(
        decode(&shares[..1], Threshold::new(2).expect("k")),
        Err(Error::NotEnoughShares { .. })
    ));
    let empty = dealt(&[], 2, 4, 4);
    assert!(decode(&empty, Threshold::new(2).expect("k")).is_ok());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// For random k and m, any ⌊(m − k)/2⌋ shares corrupted anywhere (whole or a few bytes)
    /// are named and the secret comes back.
    #[test]
    fn corrects_any_errors_within_the_radius(
        k in 2u8..6,
        extra in 0usize..7,
        len in 1usize..48,
        seed in any::<u64>(),
    ) {
        let m = usize::from(k) + extra;
        let mut rng = rand_chacha::ChaCha12Rng::seed_from_u64(seed);
        let secret: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        let mut shares = dealt(&secret, k, m, seed);
        let e = correctable(m, Threshold::new(k).expect("k"));
        let mut bad: Vec<usize> = rand::seq::index::sample(&mut rng, m, e).into_vec();
        bad.sort_unstable();
        for &i in &bad {
            let original = shares[i].data().to_vec();
            let mut data = original.clone();
            if rng.random_bool(0.5) {
                rng.fill(data.as_mut_slice());
            }
            if data == original {
                let at = rng.random_range(0..len);
                data[at] ^= rng.random_range(1..=255u8);
            }
            shares[i] = Share::new(shares[i].index(), data);
        }
        let decoded = decode(&shares, Threshold::new(k).expect("k")).expect("decodes");
        prop_assert_eq!(decoded.secret.as_slice(), secret.as_slice());
        let expected: Vec<ShareIndex> = bad.iter().map(|&i| shares[i].index()).collect();
        prop_assert_eq!(decoded.bad, expected);
    }
}
