//! k-of-n Shamir secret sharing over GF(2^8), whole rows at a time.
//!
//! A record s of L bytes is split by drawing k − 1 random rows r_1..r_{k−1} (L bytes each,
//! every byte uniform over all 256 values) and giving the node at x_j the row
//! share_j = s + Σ_i x_j^i · r_i. Any k shares rebuild s = Σ_j λ_j · share_j with Lagrange weights
//! λ_j that depend only on the x-set; k − 1 shares are independent of s.
//!
//! The field (0x11d) and the share byte layout (x, then y) are those of the `sharks` crate, so
//! `sharks` can recover Bunsan shares ([`Share::to_sharks_bytes`]). Unlike `sharks` 0.5, the
//! coefficients here include 0: drawing them from 1..=255 makes a share byte never equal the
//! secret byte for k = 2 and leaks information (RUSTSEC-2024-0398).
//!
//! All multipliers (powers of x_j, Lagrange weights) are public; the secret and the random rows
//! only pass through the constant-time row kernels of [`crate::gf256`].
//!
//! Speed: split treats the secret as one more row (times 1) and writes each share in a single
//! pass of [`Multipliers::dot_assign`], block by block so the random rows of a block are drawn
//! (in bulk, from the caller's RNG) and used while they are in L2. Combine computes the weights
//! once, then one pass over the k rows. Allocation can cost more than the arithmetic: a fresh
//! megabyte share is paid for in page faults, and a returned `Zeroizing<Vec<u8>>` is zeroed one
//! byte at a time on drop. [`split_into`] and [`combine_into`] reuse the caller's buffers.

use std::fmt;

use rand::{CryptoRng, RngCore};
use zeroize::{Zeroize, Zeroizing};

use crate::error::{Error, Result};
use crate::gf256::{self, Kernel, Multipliers};
use crate::types::{Scheme, ShareIndex, Threshold};

/// One share: the x-coordinate and the y bytes (as many as the secret has).
///
/// The bytes are zeroed when the share is dropped, `Debug` shows only the index and the length,
/// and equality is decided without an early exit on the first differing byte.
#[derive(Clone)]
pub struct Share {
    index: ShareIndex,
    /// Zeroed by `Drop for Share` rather than held in `Zeroizing`: see there.
    data: Vec<u8>,
}

impl Share {
    /// Wraps the y bytes of the share at `index`.
    pub fn new(index: ShareIndex, data: Vec<u8>) -> Share {
        Share { index, data }
    }

    /// The x-coordinate.
    pub fn index(&self) -> ShareIndex {
        self.index
    }

    /// The y bytes.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Takes the y bytes out, still wrapped so they are zeroed when dropped.
    pub fn into_data(mut self) -> Zeroizing<Vec<u8>> {
        // `Share` implements `Drop`, so the bytes are moved out rather than the field.
        Zeroizing::new(std::mem::take(&mut self.data))
    }

    /// The layout `sharks` reads with `Share::try_from(&[u8])`: the x byte, then the y bytes.
    ///
    /// `sharks` 0.5 refuses byte strings shorter than 2, i.e. shares of an empty secret.
    pub fn to_sharks_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(1 + self.data.len());
        bytes.push(self.index.get());
        bytes.extend_from_slice(&self.data);
        bytes
    }

    /// Parses the `sharks` layout, rejecting empty input and x = 0 with typed errors.
    pub fn from_sharks_bytes(bytes: &[u8]) -> Result<Share> {
        let (&x, y) = bytes.split_first().ok_or(Error::EmptyShareBytes)?;
        Ok(Share::new(ShareIndex::new(x)?, y.to_vec()))
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        // Not `Zeroizing<Vec<u8>>`: it zeroes a vector one volatile byte write at a time (the
        // generic path of `zeroize` for `Vec`), which costs more than splitting a megabyte
        // record, and still calls memset on an emptied vector. `wipe` is a memset behind an
        // optimisation barrier, over the bytes and any spare capacity.
        wipe(std::mem::take(&mut self.data));
    }
}

impl fmt::Debug for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the y bytes: they are secret material and logs are not.
        f.debug_struct("Share")
            .field("index", &self.index.get())
            .field("len", &self.data.len())
            .finish()
    }
}

impl PartialEq for Share {
    fn eq(&self, other: &Share) -> bool {
        // Lengths and indices are public; the bytes are compared without a data-dependent exit.
        self.index == other.index
            && self.data.len() == other.data.len()
            && self
                .data
                .iter()
                .zip(other.data.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

impl Eq for Share {}

/// Splits `secret` into `scheme.shares()` shares at x = 1..=n; any `scheme.threshold()` of them
/// rebuild it, and fewer reveal nothing about it (beyond its length).
///
/// The randomness comes from `rng` in bulk; pass a cryptographic generator such as
/// `rand::rng()` or a `rand_chacha::ChaCha12Rng` seeded from it.
pub fn split<R: RngCore + CryptoRng + ?Sized>(
    secret: &[u8],
    scheme: Scheme,
    rng: &mut R,
) -> Vec<Share> {
    split_with(Kernel::best(), secret, scheme, rng)
}

/// [`split`] with a chosen row kernel (for benchmarks and tests); every kernel gives the same
/// shares for the same random bytes.
pub fn split_with<R: RngCore + CryptoRng + ?Sized>(
    kernel: Kernel,
    secret: &[u8],
    scheme: Scheme,
    rng: &mut R,
) -> Vec<Share> {
    let mut shares = Vec::new();
    split_into(kernel, secret, scheme, rng, &mut shares);
    shares
}

/// [`split_with`] into `shares`, reusing the allocations of the shares already there.
///
/// `shares` ends with exactly n shares at x = 1..=n. For callers that split many records in a
/// row (and benchmarks): fresh megabyte allocations cost page faults that can exceed the
/// arithmetic. Bytes of a longer earlier share may remain in spare capacity until the share is
/// dropped, when they are zeroed.
pub fn split_into<R: RngCore + CryptoRng + ?Sized>(
    kernel: Kernel,
    secret: &[u8],
    scheme: Scheme,
    rng: &mut R,
    shares: &mut Vec<Share>,
) {
    let n = usize::from(scheme.shares());
    shares.truncate(n);
    // 1..=n never contains 0, so every constructor succeeds; `filter_map` avoids an unwrap.
    for x in (1..=scheme.shares()).filter_map(|x| ShareIndex::new(x).ok()) {
        match shares.get_mut(usize::from(x.get()) - 1) {
            Some(share) => share.index = x,
            None => shares.push(Share::new(x, Vec::new())),
        }
    }
    deal(kernel, secret, scheme.threshold(), shares, rng);
}

/// Like [`split`], but deals only the shares at the given x-coordinates (for repair and tests).
///
/// Any `threshold` of the dealt shares rebuild the secret. Rejects a repeated x with
/// [`Error::DuplicateShareIndex`]; dealing fewer than `threshold` shares is allowed (they are
/// then useless on their own, exactly like any k − 1 shares).
pub fn split_at<R: RngCore + CryptoRng + ?Sized>(
    secret: &[u8],
    threshold: Threshold,
    xs: &[ShareIndex],
    rng: &mut R,
) -> Result<Vec<Share>> {
    reject_duplicates(xs.iter().copied())?;
    let mut shares: Vec<Share> = xs.iter().map(|&x| Share::new(x, Vec::new())).collect();
    deal(Kernel::best(), secret, threshold, &mut shares, rng);
    Ok(shares)
}

/// Rebuilds the secret from at least `threshold` shares.
///
/// All shares are validated (equal lengths, distinct x), then exactly the first `threshold` are
/// used. Fewer than `threshold` shares give [`Error::NotEnoughShares`], a repeated x
/// [`Error::DuplicateShareIndex`], unequal lengths [`Error::ShareLengthMismatch`]. Shares of
/// different records or a wrong threshold are not detected here: they give a wrong secret, which
/// is what the commitments and the end-to-end hash are for.
pub fn combine(shares: &[Share], threshold: Threshold) -> Result<Zeroizing<Vec<u8>>> {
    combine_with(Kernel::best(), shares, threshold)
}

/// [`combine`] with a chosen row kernel (for benchmarks and tests).
pub fn combine_with(
    kernel: Kernel,
    shares: &[Share],
    threshold: Threshold,
) -> Result<Zeroizing<Vec<u8>>> {
    let mut secret = Zeroizing::new(Vec::new());
    combine_into(kernel, shares, threshold, &mut secret)?;
    Ok(secret)
}

/// [`combine_with`] into `secret`, reusing its allocation; on error `secret` is unchanged.
///
/// For callers that rebuild many records in a row or that zero the result themselves: a
/// `Zeroizing<Vec<u8>>` is zeroed on drop one volatile byte write at a time, which costs more
/// than the combine itself for large records (wipe a buffer you own with
/// `zeroize::Zeroize::zeroize` on the slice, `buf.as_mut_slice().zeroize()`, which is a memset).
pub fn combine_into(
    kernel: Kernel,
    shares: &[Share],
    threshold: Threshold,
    secret: &mut Vec<u8>,
) -> Result<()> {
    let needed = threshold.as_usize();
    if shares.len() < needed {
        return Err(Error::NotEnoughShares {
            found: shares.len(),
            needed,
        });
    }
    let expected = shares[0].data.len();
    if let Some(odd) = shares.iter().find(|s| s.data.len() != expected) {
        return Err(Error::ShareLengthMismatch {
            index: odd.index.get(),
            len: odd.data.len(),
            expected,
        });
    }
    reject_duplicates(shares.iter().map(|s| s.index))?;

    let used = &shares[..needed];
    let xs: Vec<ShareIndex> = used.iter().map(|s| s.index).collect();
    let weights = Multipliers::new(kernel, &lagrange_weights(&xs, 0)?);
    fit(secret, expected);
    let stream = expected >= STREAM_MIN_OUTPUT_BYTES;
    // Blocks keep the output in cache while the k rows stream through it.
    let mut rows: Vec<&[u8]> = Vec::with_capacity(needed);
    for (block, start) in secret
        .chunks_mut(COMBINE_BLOCK_BYTES)
        .zip((0..).step_by(COMBINE_BLOCK_BYTES))
    {
        rows.clear();
        rows.extend(used.iter().map(|s| &s.data[start..start + block.len()]));
        if stream {
            weights.dot_assign_streaming(block, &rows);
        } else {
            weights.dot_assign(block, &rows);
        }
    }
    Ok(())
}

/// The Lagrange weights λ_j = Π_{m≠j} (x_m + at) / (x_m + x_j) that evaluate at `at` the
/// polynomial through the points at `xs`: f(at) = Σ_j λ_j · f(x_j). `at = 0` gives the secret;
/// another `at` gives the share there (repair). Computed once per x-set.
///
/// Rejects an empty set ([`Error::NotEnoughShares`]) and a repeated x
/// ([`Error::DuplicateShareIndex`]), where the weights do not exist.
pub fn lagrange_weights(xs: &[ShareIndex], at: u8) -> Result<Vec<u8>> {
    if xs.is_empty() {
        return Err(Error::NotEnoughShares {
            found: 0,
            needed: 1,
        });
    }
    reject_duplicates(xs.iter().copied())?;
    Ok(xs
        .iter()
        .enumerate()
        .map(|(j, xj)| {
            let (mut numerator, mut denominator) = (1u8, 1u8);
            for (m, xm) in xs.iter().enumerate() {
                if m != j {
                    numerator = gf256::mul(numerator, xm.get() ^ at);
                    denominator = gf256::mul(denominator, xm.get() ^ xj.get());
                }
            }
            // The x are distinct, so the denominator is a product of non-zero elements.
            gf256::mul(numerator, gf256::inv(denominator))
        })
        .collect())
}

/// Rows of output per block in combine: 64 KiB of output plus k source slices stay in L2.
const COMBINE_BLOCK_BYTES: usize = 64 * 1024;

/// Output at least this large is written with non-temporal stores: it cannot stay in the cache
/// anyway, and skipping the read-for-ownership of every output line saves memory bandwidth.
/// Below it the output is left in the (L3) cache, because the next step reads it at once
/// (commitments hash every share, readers hash the record). Measured on a 32 MiB-L3 EPYC, 3-of-5
/// at 1 MiB: streaming makes the split alone ~15% faster but split + BLAKE3 of every share ~7%
/// slower; at 64 MiB streaming wins both ways.
const STREAM_MIN_OUTPUT_BYTES: usize = 32 << 20;

/// The cache budget for one block of split: the random rows, the secret and all output rows of
/// a block should fit in L2 together, so each byte of randomness is read while still hot.
const SPLIT_BLOCK_BUDGET_BYTES: usize = 256 * 1024;

/// Overwrites the bytes of `shares` (whose indices are assumed distinct) with fresh shares of
/// `secret`, block by block.
fn deal<R: RngCore + CryptoRng + ?Sized>(
    kernel: Kernel,
    secret: &[u8],
    threshold: Threshold,
    shares: &mut [Share],
    rng: &mut R,
) {
    let degree = threshold.as_usize() - 1;
    // powers[j] = [1, x_j, x_j^2, ..., x_j^(k-1)]: the public multipliers of the secret and
    // the random rows, prepared once for the kernel rather than once per block. Treating the
    // secret as one more row (times 1) lets the kernel write each share in a single pass.
    let powers: Vec<Multipliers> = shares
        .iter()
        .map(|share| {
            let x = share.index.get();
            let row: Vec<u8> = std::iter::successors(Some(1u8), |&p| Some(gf256::mul(p, x)))
                .take(degree + 1)
                .collect();
            Multipliers::new(kernel, &row)
        })
        .collect();
    for share in shares.iter_mut() {
        fit(&mut share.data, secret.len());
    }

    let stream = shares.len() * secret.len() >= STREAM_MIN_OUTPUT_BYTES;
    let block = (SPLIT_BLOCK_BUDGET_BYTES / (degree + 1 + shares.len()))
        .clamp(1024, 64 * 1024)
        .next_multiple_of(64);
    let mut random = Scratch(vec![0u8; degree * block.min(secret.len())]);
    for (secret_block, start) in secret.chunks(block).zip((0..).step_by(block)) {
        let block_len = secret_block.len();
        let random = &mut random.0[..degree * block_len];
        // Every byte uniform over all 256 values, zero included (see the module docs).
        rng.fill_bytes(random);
        let rows: Vec<&[u8]> = std::iter::once(secret_block)
            .chain(random.chunks_exact(block_len))
            .collect();
        for (share, powers) in shares.iter_mut().zip(&powers) {
            let dst = &mut share.data[start..start + block_len];
            if stream {
                powers.dot_assign_streaming(dst, &rows);
            } else {
                powers.dot_assign(dst, &rows);
            }
        }
    }
}

/// Makes `buf` exactly `len` bytes long, reusing its allocation when it is large enough (the
/// caller overwrites every byte). Bytes cut off or left behind by a reallocation are wiped.
fn fit(buf: &mut Vec<u8>, len: usize) {
    if buf.capacity() < len {
        // `vec!` of zeros comes from `calloc`: fresh pages are zero already, nothing is written.
        wipe(std::mem::replace(buf, vec![0u8; len]));
    } else {
        if buf.len() > len {
            buf[len..].zeroize();
        }
        buf.resize(len, 0);
    }
}

/// A scratch buffer of secret bytes (the random rows), wiped by [`wipe`] when dropped, which
/// is much faster than the byte-by-byte zeroing of `Zeroizing<Vec<u8>>`.
struct Scratch(Vec<u8>);

impl Drop for Scratch {
    fn drop(&mut self) {
        wipe(std::mem::take(&mut self.0));
    }
}

/// Zeroes and frees a buffer with a memset (the slice path of `zeroize`), not byte by byte.
fn wipe(mut buf: Vec<u8>) {
    // The length checks skip empty zeroings: each is still a memset call, and those cost far
    // more than nothing when split runs on small records.
    if !buf.is_empty() {
        buf.as_mut_slice().zeroize();
    }
    if buf.capacity() > buf.len() {
        buf.spare_capacity_mut().zeroize();
    }
}

fn reject_duplicates(xs: impl Iterator<Item = ShareIndex>) -> Result<()> {
    let mut seen = [false; 256];
    for x in xs {
        let slot = &mut seen[usize::from(x.get())];
        if *slot {
            return Err(Error::DuplicateShareIndex { index: x.get() });
        }
        *slot = true;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::seq::SliceRandom;
    use rand::{RngCore, SeedableRng};
    use rand_chacha::ChaCha20Rng;

    fn rng(seed: u64) -> ChaCha20Rng {
        ChaCha20Rng::seed_from_u64(seed)
    }

    fn secret(len: usize, seed: u64) -> Vec<u8> {
        let mut bytes = vec![0u8; len];
        rng(seed ^ 0x5eed).fill_bytes(&mut bytes);
        bytes
    }

    fn threshold(k: u8) -> Threshold {
        Threshold::new(k).expect("valid threshold")
    }

    fn scheme(k: u8, n: usize) -> Scheme {
        Scheme::new(k, n).expect("valid scheme")
    }

    fn index(x: u8) -> ShareIndex {
        ShareIndex::new(x).expect("non-zero index")
    }

    /// (k, n, len) with 2 ≤ k ≤ n ≤ 255, len ≤ 4096 and n · len bounded so a case stays cheap.
    fn shapes() -> impl Strategy<Value = (u8, usize, usize)> {
        (2usize..=255).prop_flat_map(|n| (2..=n as u8, Just(n), 0..=4096.min(256 * 1024 / n)))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn any_k_shares_in_any_order_recover_the_secret(
            (k, n, len) in shapes(),
            seed in any::<u64>(),
        ) {
            let secret = secret(len, seed);
            let mut shares = split(&secret, scheme(k, n), &mut rng(seed));
            prop_assert_eq!(shares.len(), n);
            prop_assert!(shares.iter().all(|s| s.data().len() == len));
            shares.shuffle(&mut rng(seed.wrapping_add(1)));
            let recovered = combine(&shares[..usize::from(k)], threshold(k))?;
            prop_assert_eq!(&recovered[..], &secret[..]);
            // Extra shares are validated and ignored.
            let recovered = combine(&shares, threshold(k))?;
            prop_assert_eq!(&recovered[..], &secret[..]);
        }

        #[test]
        fn every_kernel_deals_and_combines_identically(
            (k, n, len) in shapes(),
            seed in any::<u64>(),
        ) {
            let secret = secret(len, seed);
            let reference = split_with(Kernel::Portable, &secret, scheme(k, n), &mut rng(seed));
            for kernel in Kernel::available() {
                let shares = split_with(kernel, &secret, scheme(k, n), &mut rng(seed));
                prop_assert!(shares == reference, "{:?} dealt different shares", kernel);
                let used = &shares[n - usize::from(k)..];
                let recovered = combine_with(kernel, used, threshold(k))?;
                prop_assert_eq!(&recovered[..], &secret[..]);
            }
        }

        #[test]
        fn k_minus_one_shares_are_not_enough((k, n, len) in shapes(), seed in any::<u64>()) {
            let shares = split(&secret(len, seed), scheme(k, n), &mut rng(seed));
            let few = &shares[..usize::from(k) - 1];
            prop_assert_eq!(
                combine(few, threshold(k)),
                Err(Error::NotEnoughShares { found: usize::from(k) - 1, needed: usize::from(k) })
            );
        }

        #[test]
        fn sharks_recovers_our_shares(
            k in 2u8..=12,
            extra in 0usize..=4,
            len in 1usize..=512,
            seed in any::<u64>(),
        ) {
            let n = usize::from(k) + extra;
            let secret = secret(len, seed);
            let shares = split(&secret, scheme(k, n), &mut rng(seed));
            let theirs: Vec<sharks::Share> = shares
                .iter()
                .rev()
                .take(usize::from(k))
                .map(|s| sharks::Share::try_from(s.to_sharks_bytes().as_slice()))
                .collect::<std::result::Result<_, _>>()
                .map_err(TestCaseError::fail)?;
            let dealer = sharks::Sharks(k);
            let recovered = dealer
                .recover(&theirs)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(recovered, secret);
        }

        #[test]
        fn shares_survive_the_sharks_layout(len in 0usize..=64, x in 1u8..=255, seed in any::<u64>()) {
            let share = Share::new(index(x), secret(len, seed));
            let bytes = share.to_sharks_bytes();
            prop_assert_eq!(bytes.len(), len + 1);
            prop_assert_eq!(bytes[0], x);
            prop_assert_eq!(Share::from_sharks_bytes(&bytes)?, share);
        }

        #[test]
        fn lagrange_weights_evaluate_anywhere((k, n, len) in shapes(), at in any::<u8>(), seed in any::<u64>()) {
            // Weights at `at` applied to k shares give the share at `at` (the repair identity).
            let secret = secret(len, seed);
            let mut xs: Vec<ShareIndex> = (1..=n as u8).map(index).collect();
            if usize::from(at) > n {
                xs.push(index(at));
            }
            let shares = split_at(&secret, threshold(k), &xs, &mut rng(seed))?;
            let used = &shares[n - usize::from(k)..n];
            let weights = lagrange_weights(&used.iter().map(Share::index).collect::<Vec<_>>(), at)?;
            let mut value = vec![0u8; len];
            for (share, &w) in used.iter().zip(&weights) {
                gf256::mul_add_assign(&mut value, share.data(), w);
            }
            let expected = match shares.iter().find(|s| s.index().get() == at) {
                Some(share) => share.data(),
                None => &secret[..],
            };
            prop_assert_eq!(&value[..], expected);
        }
    }

    #[test]
    fn sharks_shares_combine_with_ours() {
        let secret = secret(300, 7);
        let dealer = sharks::Sharks(3).dealer(&secret);
        let shares: Vec<Share> = dealer
            .take(5)
            .map(|s| Share::from_sharks_bytes(&Vec::from(&s)))
            .collect::<Result<_>>()
            .expect("sharks shares parse");
        let recovered = combine(&shares[2..], threshold(3)).expect("combine");
        assert_eq!(&recovered[..], &secret[..]);
    }

    #[test]
    fn bad_inputs_get_typed_errors() {
        let shares = split(&secret(10, 1), scheme(2, 3), &mut rng(1));
        let duplicate = [shares[0].clone(), shares[1].clone(), shares[0].clone()];
        assert_eq!(
            combine(&duplicate, threshold(2)),
            Err(Error::DuplicateShareIndex { index: 1 })
        );
        let short = Share::new(index(3), vec![0u8; 9]);
        assert_eq!(
            combine(&[shares[0].clone(), short], threshold(2)),
            Err(Error::ShareLengthMismatch {
                index: 3,
                len: 9,
                expected: 10
            })
        );
        assert_eq!(
            combine(&[], threshold(2)),
            Err(Error::NotEnoughShares {
                found: 0,
                needed: 2
            })
        );
        assert_eq!(Share::from_sharks_bytes(&[]), Err(Error::EmptyShareBytes));
        assert_eq!(
            Share::from_sharks_bytes(&[0, 1, 2]),
            Err(Error::ZeroShareIndex)
        );
        assert_eq!(
            lagrange_weights(&[], 0),
            Err(Error::NotEnoughShares {
                found: 0,
                needed: 1
            })
        );
        assert_eq!(
            lagrange_weights(&[index(4), index(4)], 0),
            Err(Error::DuplicateShareIndex { index: 4 })
        );
        assert_eq!(
            split_at(
                b"s",
                threshold(2),
                &[index(9), index(2), index(9)],
                &mut rng(1)
            ),
            Err(Error::DuplicateShareIndex { index: 9 })
        );
    }

    #[test]
    fn long_secrets_cross_block_boundaries() {
        // Several split and combine blocks plus an odd tail, at a wide scheme.
        for (k, n) in [(2, 2), (3, 5), (17, 40)] {
            let secret = secret(3 * COMBINE_BLOCK_BYTES + 77, 3);
            let shares = split(&secret, scheme(k, n), &mut rng(3));
            let recovered = combine(&shares[n - usize::from(k)..], threshold(k)).expect("combine");
            assert!(recovered[..] == secret[..], "{k}-of-{n}");
        }
    }

    #[test]
    fn into_variants_reuse_buffers_of_any_previous_shape() {
        let mut shares = Vec::new();
        let mut out = vec![0xee; 5000];
        for (k, n, len) in [
            (3, 5, 3000),
            (2, 3, 100),
            (4, 7, 70_000),
            (2, 2, 0),
            (5, 5, 999),
        ] {
            let secret = secret(len, len as u64);
            split_into(
                Kernel::best(),
                &secret,
                scheme(k, n),
                &mut rng(1),
                &mut shares,
            );
            assert_eq!(shares.len(), n);
            for (i, share) in shares.iter().enumerate() {
                assert_eq!(usize::from(share.index().get()), i + 1);
                assert_eq!(share.data().len(), len);
            }
            let fresh = split_with(Kernel::best(), &secret, scheme(k, n), &mut rng(1));
            assert!(fresh == shares, "reused buffers change nothing");
            combine_into(
                Kernel::best(),
                &shares[n - usize::from(k)..],
                threshold(k),
                &mut out,
            )
            .expect("combine");
            assert!(out == secret, "{k}-of-{n} len {len}");
        }
        let before = out.clone();
        assert!(combine_into(Kernel::best(), &shares[..1], threshold(2), &mut out).is_err());
        assert_eq!(out, before, "an error leaves the buffer alone");
    }

    #[test]
    fn streamed_output_matches_portable() {
        // Large enough that split and combine both write with non-temporal stores.
        let len = STREAM_MIN_OUTPUT_BYTES + 13;
        let secret = secret(len, 5);
        let best = split_with(Kernel::best(), &secret, scheme(2, 2), &mut rng(5));
        let portable = split_with(Kernel::Portable, &secret, scheme(2, 2), &mut rng(5));
        assert!(
            best == portable,
            "streamed shares differ from portable ones"
        );
        let recovered = combine(&best, threshold(2)).expect("combine");
        assert!(recovered[..] == secret[..]);
    }

    #[test]
    fn empty_secret_gives_empty_shares() {
        let shares = split(&[], scheme(2, 3), &mut rng(0));
        assert!(shares.iter().all(|s| s.data().is_empty()));
        assert_eq!(combine(&shares, threshold(2)).expect("combine").len(), 0);
    }

    #[test]
    fn debug_shows_no_share_bytes() {
        let share = Share::new(index(5), vec![0xab; 3]);
        assert_eq!(format!("{share:?}"), "Share { index: 5, len: 3 }");
    }

    /// Catches RUSTSEC-2024-0398: with k = 2, y = s + r·x equals s exactly when r = 0. Uniform
    /// coefficients make that happen with probability 1/256; `sharks` 0.5 draws r from 1..=255,
    /// so there it never happens.
    #[test]
    fn coefficients_include_zero_with_probability_one_in_256() {
        const SAMPLES: usize = 1 << 20;
        let secret = secret(SAMPLES, 11);
        let shares = split(&secret, scheme(2, 2), &mut rng(11));
        // Only one share is counted: the shares of one byte position share their r.
        let equal = shares[0]
            .data()
            .iter()
            .zip(&secret)
            .filter(|(y, s)| y == s)
            .count();
        // Binomial(2^20, 1/256): mean 4096, sigma ≈ 63.9; 7 sigma is 447.
        let (mean, bound) = (4096.0, 447.0);
        assert!(
            (equal as f64 - mean).abs() < bound,
            "{equal} share bytes equal the secret byte, expected {mean} ± {bound}"
        );
    }

    /// With k = 2 and a zero secret each share byte is r·x, which must be uniform: a chi-squared
    /// test over the 256 byte values.
    #[test]
    fn share_bytes_are_uniform() {
        const SAMPLES: usize = 1 << 20;
        let shares = split(&vec![0u8; SAMPLES], scheme(2, 3), &mut rng(12));
        let mut counts = [0u64; 256];
        for &y in shares[2].data() {
            counts[usize::from(y)] += 1;
        }
        let expected = SAMPLES as f64 / 256.0;
        let chi2: f64 = counts
            .iter()
            .map(|&c| (c as f64 - expected).powi(2) / expected)
            .sum();
        // 255 degrees of freedom: mean 255, sigma ≈ 22.6; 7 sigma above the mean is 413.
        assert!(chi2 < 413.0, "chi-squared {chi2}");
    }
}
