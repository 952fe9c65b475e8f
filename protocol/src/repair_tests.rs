use proptest::prelude::*;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

use super::*;
use crate::shamir::{self, Share};
use crate::types::{Threshold, WriterId};

fn index(x: u8) -> ShareIndex {
    ShareIndex::new(x).expect("non-zero index")
}

fn plan(target: u8, helpers: &[u8], seed: u64) -> RepairPlan {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    RepairPlan::new(
        SessionId::random(&mut rng),
        RecordKey::new("clinic/patient/7").expect("key"),
        Version {
            clock_micros: 1_700_000_000_000_000,
            writer: WriterId(42),
        },
        0,
        index(target),
        helpers.iter().map(|&x| index(x)).collect(),
    )
    .expect("valid plan")
}

/// Random pair secrets for every pair of `helpers`, symmetric: (i, j) and (j, i) share one.
fn pair_secrets(
    helpers: &[ShareIndex],
    rng: &mut ChaCha20Rng,
) -> Vec<Vec<(ShareIndex, PairSecret)>> {
    let n = helpers.len();
    // table[i][j] = table[j][i]: one random secret per unordered pair.
    let mut table = vec![vec![[0u8; 32]; n]; n];
    for (i, j) in (0..n).flat_map(|i| (i + 1..n).map(move |j| (i, j))) {
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut secret);
        table[i][j] = secret;
        table[j][i] = secret;
    }
    (0..n)
        .map(|i| {
            (0..n)
                .filter(|&j| j != i)
                .map(|j| (helpers[j], PairSecret::from_bytes(table[i][j])))
                .collect()
        })
        .collect()
}

fn shares_of(secret: &[u8], k: u8, n: u8, seed: u64) -> Vec<Share> {
    let xs: Vec<ShareIndex> = (1..=n).map(index).collect();
    let threshold = Threshold::new(k).expect("threshold");
    shamir::split_at(
        secret,
        threshold,
        &xs,
        &mut ChaCha20Rng::seed_from_u64(seed),
    )
    .expect("deal")
}

/// Runs a whole repair in memory: every helper's contribution, XORed by the target.
fn run(plan: &RepairPlan, shares: &[Share], rng: &mut ChaCha20Rng) -> Vec<Vec<u8>> {
    let secrets = pair_secrets(plan.helpers(), rng);
    plan.helpers()
        .iter()
        .zip(secrets)
        .map(|(&x, secrets)| {
            let share = &shares[usize::from(x.get()) - 1];
            contribution(plan, x, share.data(), &secrets).expect("contribution")
        })
        .collect()
}

/// (k, n, target, helpers, len): a random scheme, a random target and k other helpers.
fn cases() -> impl Strategy<Value = (u8, u8, u8, Vec<u8>, usize)> {
    (3u8..=20).prop_flat_map(|n| {
        (2..n).prop_flat_map(move |k| {
            (
                Just(k),
                Just(n),
                Just((1..=n).collect::<Vec<u8>>()).prop_shuffle(),
                0usize..600,
            )
                .prop_map(|(k, n, order, len)| {
                    let target = order[0];
                    let helpers = order[1..=usize::from(k)].to_vec();
                    (k, n, target, helpers, len)
                })
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn contributions_sum_to_the_target_share(
        (k, n, target, helpers, len) in cases(),
        seed in any::<u64>(),
    ) {
        let mut secret = vec![0u8; len];
        ChaCha20Rng::seed_from_u64(seed).fill_bytes(&mut secret);
        let shares = shares_of(&secret, k, n, seed);
        let plan = plan(target, &helpers, seed);
        let mut acc = Accumulator::new(plan.helpers(), len);
        for (x, piece) in plan.helpers().iter().zip(run(&plan, &shares, &mut ChaCha20Rng::seed_from_u64(!seed))) {
            acc.add(*x, &piece)?;
        }
        let rebuilt = acc.finish()?;
        prop_assert_eq!(&rebuilt[..], shares[usize::from(target) - 1].data());
    }

    #[test]
    fn masks_cancel_and_hide_each_weighted_share(
        (k, n, target, helpers, len) in cases(),
        seed in any::<u64>(),
    ) {
        prop_assume!(len >= 16);
        let mut secret = vec![0u8; len];
        ChaCha20Rng::seed_from_u64(seed).fill_bytes(&mut secret);
        let shares = shares_of(&secret, k, n, seed);
        let plan = plan(target, &helpers, seed);
        let pieces = run(&plan, &shares, &mut ChaCha20Rng::seed_from_u64(!seed));
        let mut masks_sum = vec![0u8; len];
        for (x, piece) in plan.helpers().iter().zip(&pieces) {
            let share = shares[usize::from(x.get()) - 1].data();
            let mut weighted = vec![0u8; len];
            gf256::mul_add_assign(&mut weighted, share, plan.weight(*x)?);
            // What travels is neither the share nor the weighted share.
            prop_assert_ne!(piece, &weighted);
            prop_assert_ne!(&piece[..], share);
            for ((m, p), w) in masks_sum.iter_mut().zip(piece).zip(&weighted) {
                *m ^= p ^ w;
            }
        }
        prop_assert!(masks_sum.iter().all(|&b| b == 0), "the masks do not cancel");
    }
}

/// Each single contribution, and any k − 1 of them together, is uniformly distributed when the
/// pair secrets are unknown: a chi-squared test of the joint distribution of the first byte
/// of k − 1 = 2 contributions (k = 3) over fresh pair secrets, shares held fixed.
#[test]
fn any_k_minus_one_contributions_are_jointly_uniform() {
    const SAMPLES: usize = 1 << 16;
    // A fixed, all-zero record: if the contributions leaked the shares, a fixed record is
    // where a bias would show most.
    let shares = shares_of(&[0u8; 4], 3, 5, 1);
    let plan = plan(5, &[1, 2, 4], 9);
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let mut joint = vec![0u64; 256];
    let mut single = vec![0u64; 256];
    for _ in 0..SAMPLES {
        let pieces = run(&plan, &shares, &mut rng);
        // Low nibble of helper 1's byte and of helper 2's: 256 cells of a joint distribution.
        joint[usize::from((pieces[0][0] & 0x0f) << 4 | (pieces[1][0] & 0x0f))] += 1;
        single[usize::from(pieces[2][1])] += 1;
    }
    for (name, counts) in [("joint", &joint), ("single", &single)] {
        let expected = SAMPLES as f64 / 256.0;
        let chi2: f64 = counts
            .iter()
            .map(|&c| (c as f64 - expected).powi(2) / expected)
            .sum();
        // 255 degrees of freedom: mean 255, sigma ≈ 22.6; 7 sigma above the mean is 413.
        assert!(chi2 < 413.0, "{name}: chi-squared {chi2}");
    }
}

/// The structural half of the same claim: with the pair secrets that involve an honest helper
/// unknown, the other contributions say nothing about its share. Two different records with
/// the same share at every helper but one give the same contributions from the others, and a
/// contribution never depends on another helper's share.
#[test]
fn a_contribution_depends_only_on_its_own_share() {
    let plan = plan(4, &[1, 2, 3], 5);
    let secrets = pair_secrets(plan.helpers(), &mut ChaCha20Rng::seed_from_u64(8));
    let a = shares_of(b"record one", 3, 4, 1);
    let b = shares_of(b"record two", 3, 4, 2);
    for (position, &x) in plan.helpers().iter().enumerate() {
        let own = &a[usize::from(x.get()) - 1];
        let first = contribution(&plan, x, own.data(), &secrets[position]).expect("first");
        // Same own share, other shares from another record: the same bytes.
        let again = contribution(&plan, x, own.data(), &secrets[position]).expect("again");
        assert_eq!(first, again, "a retry of the same plan repeats itself");
        let other = contribution(
            &plan,
            x,
            b[usize::from(x.get()) - 1].data(),
            &secrets[position],
        )
        .expect("other");
        assert_ne!(first, other);
    }
}

#[test]
fn different_plans_use_independent_masks() {
    // A coordinator sending one helper two plans that differ only in the target must not get
    // the same mask twice (XORing the two would strip it).
    let shares = shares_of(b"some record bytes", 3, 5, 4);
    let secrets = pair_secrets(
        &[index(1), index(2), index(3)],
        &mut ChaCha20Rng::seed_from_u64(1),
    );
    let to_four = plan(4, &[1, 2, 3], 7);
    let mut to_five = to_four.clone();
    to_five.target = index(5);
    let share = shares[0].data();
    let c4 = contribution(&to_four, index(1), share, &secrets[0]).expect("c4");
    let c5 = contribution(&to_five, index(1), share, &secrets[0]).expect("c5");
    let mut stripped = vec![0u8; share.len()];
    for ((s, a), b) in stripped.iter_mut().zip(&c4).zip(&c5) {
        *s = a ^ b;
    }
    let mut weights_only = vec![0u8; share.len()];
    let w = to_four.weight(index(1)).expect("w") ^ to_five.weight(index(1)).expect("w");
    gf256::mul_add_assign(&mut weights_only, share, w);
    assert_ne!(stripped, weights_only, "the two masks were equal");
}

#[test]
fn ecdh_pair_secrets_are_symmetric() {
    let a = MaskKey::generate().expect("a");
    let b = MaskKey::generate().expect("b");
    let c = MaskKey::generate().expect("c");
    let ab = a.pair_secret(&b.public_point().expect("b")).expect("ab");
    let ba = b.pair_secret(&a.public_point().expect("a")).expect("ba");
    let ac = a.pair_secret(&c.public_point().expect("c")).expect("ac");
    assert_eq!(*ab.0, *ba.0);
    assert_ne!(*ab.0, *ac.0);
    assert!(a.pair_secret(&[4u8; 65]).is_err(), "not a curve point");
    assert!(MaskKey::from_der(b"not a key").is_err());
}

#[test]
fn bad_plans_and_pieces_are_refused() {
    let id = SessionId([1; 16]);
    let key = RecordKey::new("k").expect("key");
    let version = Version {
        clock_micros: 1,
        writer: WriterId(1),
    };
    let make = |target: u8, helpers: &[u8]| {
        RepairPlan::new(
            id,
            key.clone(),
            version,
            0,
            index(target),
            helpers.iter().map(|&x| index(x)).collect(),
        )
    };
    assert!(matches!(make(1, &[2]), Err(Error::InvalidPlan { .. })));
    assert!(matches!(
        make(1, &[2, 2, 3]),
        Err(Error::InvalidPlan { .. })
    ));
    assert!(matches!(
        make(1, &[1, 2, 3]),
        Err(Error::InvalidPlan { .. })
    ));
    let plan = make(1, &[4, 2, 3]).expect("sorted");
    assert_eq!(plan.helpers(), &[index(2), index(3), index(4)]);
    // Decoding runs the same checks.
    let bytes = postcard::to_allocvec(&plan).expect("encode");
    assert_eq!(
        postcard::from_bytes::<RepairPlan>(&bytes).expect("decode"),
        plan
    );
    let mut bad = plan.clone();
    bad.helpers = vec![index(1), index(2)];
    let bytes = postcard::to_allocvec(&bad).expect("encode");
    assert!(postcard::from_bytes::<RepairPlan>(&bytes).is_err());

    let secrets = pair_secrets(plan.helpers(), &mut ChaCha20Rng::seed_from_u64(2));
    assert!(matches!(
        contribution(&plan, index(5), b"xy", &secrets[0]),
        Err(Error::Contribution { from: 5, .. })
    ));
    assert!(matches!(
        contribution(&plan, index(2), b"xy", &secrets[0][..1]),
        Err(Error::Contribution { from: 2, .. })
    ));

    let mut acc = Accumulator::new(plan.helpers(), 2);
    assert!(acc.add(index(9), b"ab").is_err());
    assert!(acc.add(index(2), b"abc").is_err());
    assert_eq!(acc.add(index(2), b"ab"), Ok(false));
    assert!(acc.add(index(2), b"ab").is_err(), "twice");
    assert!(matches!(
        Accumulator::new(plan.helpers(), 2).finish(),
        Err(Error::NotEnoughShares {
            found: 0,
            needed: 3
        })
    ));
}

#[test]
fn certificate_points_are_read_from_the_key() {
    assert!(certificate_point(b"garbage").is_err());
}
