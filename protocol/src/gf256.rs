//! Constant-time arithmetic in GF(2^8) with the reduction polynomial x^8 + x^4 + x^3 + x^2 + 1
//! (0x11d), the field the `sharks` crate uses, so that `sharks` can always recover our shares.
//!
//! Addition is XOR. Multiplication never indexes a table by a secret byte: the scalar functions
//! use shift-and-add with masks, and the row kernels (the functions that do the real work of
//! [`crate::shamir`]) treat the multiplier `c` as public (a power of a share index or a Lagrange
//! weight) and the row bytes as secret. Only data derived from the public `c` may select
//! instructions or table entries; secret bytes only flow through data-independent arithmetic.

use std::sync::OnceLock;

#[cfg(target_arch = "x86_64")]
mod simd;

/// The reduction polynomial x^8 + x^4 + x^3 + x^2 + 1, as a 9-bit constant.
pub const POLYNOMIAL: u16 = 0x11d;

/// The low byte of [`POLYNOMIAL`]: what is XORed in when a product overflows bit 7.
const REDUCTION: u8 = (POLYNOMIAL & 0xff) as u8;

/// Multiplies two field elements in constant time (no branches or table lookups on `a` or `b`).
#[inline]
pub fn mul(a: u8, b: u8) -> u8 {
    let (mut a, mut b, mut product) = (a, b, 0u8);
    for _ in 0..8 {
        // Add `a` when the low bit of `b` is set, using an all-ones/all-zeros mask, not a branch.
        product ^= a & 0u8.wrapping_sub(b & 1);
        // Multiply `a` by x, reducing when bit 7 falls off, again through a mask.
        a = (a << 1) ^ (REDUCTION & 0u8.wrapping_sub(a >> 7));
        b >>= 1;
    }
    product
}

/// c·x^i for i in 0..8: the products that every row kernel derives its tables from.
fn multiples_of_x(c: u8) -> [u8; 8] {
    let mut out = [0u8; 8];
    let mut m = c;
    for slot in &mut out {
        *slot = m;
        // Multiply by x: shift, and reduce through a mask when bit 7 falls off.
        m = (m << 1) ^ (REDUCTION & 0u8.wrapping_sub(m >> 7));
    }
    out
}

/// The multiplicative inverse, in constant time; by convention `inv(0) == 0`.
///
/// Computed as a^254 (= a^-1 because a^255 = 1 for a ≠ 0) with a fixed sequence of squarings and
/// multiplications, so the running time does not depend on `a`. Zero maps to zero, which callers
/// must rule out where it matters (share indices are never zero, see [`crate::types::ShareIndex`]).
pub fn inv(a: u8) -> u8 {
    // 254 = 0b1111_1110: the product of a^(2^i) for i = 1..=7.
    let mut square = mul(a, a);
    let mut result = square;
    for _ in 2..8 {
        square = mul(square, square);
        result = mul(result, square);
    }
    result
}

/// `a` raised to the power `e` (with 0^0 = 1). The exponent is treated as public.
pub fn pow(a: u8, e: u32) -> u8 {
    // Square-and-multiply; branching on the public exponent is fine.
    let (mut base, mut e, mut result) = (a, e, 1u8);
    while e != 0 {
        if e & 1 == 1 {
            result = mul(result, base);
        }
        base = mul(base, base);
        e >>= 1;
    }
    result
}

/// `dst[i] ^= c · src[i]` for every byte: the row kernel behind split and combine.
///
/// `c` is public, the bytes of `src` and `dst` are secret and never select a branch or a table
/// entry. Uses the fastest kernel this CPU supports ([`Kernel::best`]).
///
/// # Panics
/// If `dst` and `src` differ in length (a caller bug, never caused by input data).
pub fn mul_add_assign(dst: &mut [u8], src: &[u8], c: u8) {
    Kernel::best().mul_add_assign(dst, src, c);
}

/// `buf[i] = c · buf[i]` for every byte, with the same constant-time guarantees as
/// [`mul_add_assign`].
pub fn mul_assign(buf: &mut [u8], c: u8) {
    Kernel::best().mul_assign(buf, c);
}

/// `dst[i] ^= Σ_j coeffs[j] · srcs[j][i]`: a whole linear combination of rows in one pass over
/// `dst`, with the same constant-time guarantees as [`mul_add_assign`].
///
/// # Panics
/// If `srcs` and `coeffs` differ in length or a row's length differs from `dst`'s.
pub fn dot_add_assign(dst: &mut [u8], srcs: &[&[u8]], coeffs: &[u8]) {
    Kernel::best().dot_add_assign(dst, srcs, coeffs);
}

/// An implementation of the row kernels. All kernels produce byte-identical results.
///
/// [`Kernel::best`] picks the fastest one this CPU supports; benchmarks and tests may force one
/// with the `*_with` functions of [`crate::shamir`]. Forcing a kernel the CPU lacks is safe: the
/// work then runs on [`Kernel::Portable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Kernel {
    /// Plain Rust, 8 bytes at a time in u64 words (SWAR); runs everywhere.
    Portable,
    /// x86-64 SSSE3: PSHUFB nibble tables, 16 bytes at a time.
    Ssse3,
    /// x86-64 AVX2: PSHUFB nibble tables, 32 bytes at a time.
    Avx2,
    /// x86-64 AVX2 + GFNI: `gf2p8affineqb` bit matrices, 32 bytes at a time.
    Avx2Gfni,
    /// x86-64 AVX-512 (F, BW) + GFNI: `gf2p8affineqb` bit matrices, 64 bytes at a time.
    Avx512Gfni,
}

impl Kernel {
    /// Every kernel, portable first and (on current x86-64 CPUs) fastest last.
    pub const ALL: [Kernel; 5] = [
        Kernel::Portable,
        Kernel::Ssse3,
        Kernel::Avx2,
        Kernel::Avx2Gfni,
        Kernel::Avx512Gfni,
    ];

    /// Every kernel this CPU can run, in the order of [`Kernel::ALL`].
    pub fn available() -> Vec<Kernel> {
        Kernel::ALL
            .into_iter()
            .filter(|k| k.is_supported())
            .collect()
    }

    /// The fastest kernel this CPU can run (detected once, then cached).
    pub fn best() -> Kernel {
        static BEST: OnceLock<Kernel> = OnceLock::new();
        *BEST.get_or_init(|| {
            Kernel::available()
                .last()
                .copied()
                .unwrap_or(Kernel::Portable)
        })
    }

    /// Whether this CPU can run the kernel (feature detection at run time).
    pub fn is_supported(self) -> bool {
        match self {
            Kernel::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Ssse3 => simd::ssse3_detected(),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => simd::avx2_detected(),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2Gfni => simd::avx2_gfni_detected(),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Gfni => simd::avx512_gfni_detected(),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// A short stable name, for benchmark tables and logs.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Portable => "portable",
            Kernel::Ssse3 => "ssse3",
            Kernel::Avx2 => "avx2",
            Kernel::Avx2Gfni => "avx2+gfni",
            Kernel::Avx512Gfni => "avx512+gfni",
        }
    }

    /// [`mul_add_assign`] with this kernel.
    ///
    /// # Panics
    /// If `dst` and `src` differ in length.
    pub fn mul_add_assign(self, dst: &mut [u8], src: &[u8], c: u8) {
        Multipliers::new(self, &[c]).dot_add_assign(dst, &[src]);
    }

    /// [`mul_assign`] with this kernel.
    pub fn mul_assign(self, buf: &mut [u8], c: u8) {
        Multipliers::new(self, &[c]).scale_first(buf);
    }

    /// [`dot_add_assign`] with this kernel.
    ///
    /// # Panics
    /// If `srcs` and `coeffs` differ in length or a row's length differs from `dst`'s.
    pub fn dot_add_assign(self, dst: &mut [u8], srcs: &[&[u8]], coeffs: &[u8]) {
        Multipliers::new(self, coeffs).dot_add_assign(dst, srcs);
    }
}

/// Public coefficients prepared once for one kernel (broadcast multiples, nibble tables or bit
/// matrices), for code that applies the same coefficients to many blocks of rows.
///
/// Preparing costs tens of scalar operations per coefficient and an allocation, so split and
/// combine do it once per call rather than once per block.
#[derive(Debug, Clone)]
pub struct Multipliers {
    prepared: Prepared,
}

/// The per-kernel form of the coefficients; the variant also fixes which kernel runs, and a SIMD
/// variant is only built after the CPU feature was detected.
#[derive(Debug, Clone)]
enum Prepared {
    Portable(Vec<[u64; 8]>),
    #[cfg(target_arch = "x86_64")]
    Ssse3(Vec<[u8; 32]>),
    #[cfg(target_arch = "x86_64")]
    Avx2(Vec<[u8; 32]>),
    #[cfg(target_arch = "x86_64")]
    Avx2Gfni(Vec<u64>),
    #[cfg(target_arch = "x86_64")]
    Avx512Gfni(Vec<u64>),
}

impl Multipliers {
    /// Prepares `coeffs` for `kernel`, or for [`Kernel::Portable`] if this CPU lacks `kernel`.
    pub fn new(kernel: Kernel, coeffs: &[u8]) -> Multipliers {
        let kernel = if kernel.is_supported() {
            kernel
        } else {
            Kernel::Portable
        };
        let prepared = match kernel {
            #[cfg(target_arch = "x86_64")]
            Kernel::Ssse3 => Prepared::Ssse3(coeffs.iter().map(|&c| simd::tables(c)).collect()),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => Prepared::Avx2(coeffs.iter().map(|&c| simd::tables(c)).collect()),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2Gfni => {
                Prepared::Avx2Gfni(coeffs.iter().map(|&c| simd::matrix(c)).collect())
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Gfni => {
                Prepared::Avx512Gfni(coeffs.iter().map(|&c| simd::matrix(c)).collect())
            }
            _ => Prepared::Portable(coeffs.iter().map(|&c| portable::multiples(c)).collect()),
        };
        Multipliers { prepared }
    }

    /// The kernel that runs these multipliers.
    pub fn kernel(&self) -> Kernel {
        match self.prepared {
            Prepared::Portable(_) => Kernel::Portable,
            #[cfg(target_arch = "x86_64")]
            Prepared::Ssse3(_) => Kernel::Ssse3,
            #[cfg(target_arch = "x86_64")]
            Prepared::Avx2(_) => Kernel::Avx2,
            #[cfg(target_arch = "x86_64")]
            Prepared::Avx2Gfni(_) => Kernel::Avx2Gfni,
            #[cfg(target_arch = "x86_64")]
            Prepared::Avx512Gfni(_) => Kernel::Avx512Gfni,
        }
    }

    /// `dst[i] ^= Σ_j c_j · srcs[j][i]` with the prepared coefficients c_j, in one pass per
    /// group of rows; constant time in the bytes of `dst` and `srcs`.
    ///
    /// # Panics
    /// If `srcs` does not have one row per coefficient or a row's length differs from `dst`'s.
    pub fn dot_add_assign(&self, dst: &mut [u8], srcs: &[&[u8]]) {
        self.dot(dst, srcs, true, false);
    }

    /// `dst[i] = Σ_j c_j · srcs[j][i]`: like [`Multipliers::dot_add_assign`] but overwriting
    /// `dst`, which saves a pass to clear or copy it first.
    ///
    /// # Panics
    /// If `srcs` does not have one row per coefficient or a row's length differs from `dst`'s.
    pub fn dot_assign(&self, dst: &mut [u8], srcs: &[&[u8]]) {
        self.dot(dst, srcs, false, false);
    }

    /// [`Multipliers::dot_assign`] with non-temporal stores where the kernel has them: the
    /// same result, written without first reading each output line into the cache (and fenced
    /// before returning). Faster for output much larger than the cache that is not read again
    /// soon, slower otherwise.
    pub fn dot_assign_streaming(&self, dst: &mut [u8], srcs: &[&[u8]]) {
        self.dot(dst, srcs, false, true);
    }

    fn dot(&self, dst: &mut [u8], srcs: &[&[u8]], accumulate: bool, stream: bool) {
        #[cfg(target_arch = "x86_64")]
        let mode = simd::Mode { accumulate, stream };
        #[cfg(not(target_arch = "x86_64"))]
        let _ = stream;
        match &self.prepared {
            Prepared::Portable(m) => portable::dot(dst, srcs, m, accumulate),
            #[cfg(target_arch = "x86_64")]
            Prepared::Ssse3(t) => simd::dot_ssse3(dst, srcs, t, mode),
            #[cfg(target_arch = "x86_64")]
            Prepared::Avx2(t) => simd::dot_avx2(dst, srcs, t, mode),
            #[cfg(target_arch = "x86_64")]
            Prepared::Avx2Gfni(m) => simd::dot_avx2_gfni(dst, srcs, m, mode),
            #[cfg(target_arch = "x86_64")]
            Prepared::Avx512Gfni(m) => simd::dot_avx512_gfni(dst, srcs, m, mode),
        }
    }

    /// `buf = c_0 · buf` with the first coefficient (a no-op without coefficients).
    fn scale_first(&self, buf: &mut [u8]) {
        match &self.prepared {
            Prepared::Portable(m) => m.first().map(|m| portable::scale(buf, m)),
            #[cfg(target_arch = "x86_64")]
            Prepared::Ssse3(t) => t.first().map(|t| simd::scale_ssse3(buf, t)),
            #[cfg(target_arch = "x86_64")]
            Prepared::Avx2(t) => t.first().map(|t| simd::scale_avx2(buf, t)),
            #[cfg(target_arch = "x86_64")]
            Prepared::Avx2Gfni(m) => m.first().map(|m| simd::scale_avx2_gfni(buf, m)),
            #[cfg(target_arch = "x86_64")]
            Prepared::Avx512Gfni(m) => m.first().map(|m| simd::scale_avx512_gfni(buf, m)),
        };
    }
}

/// The portable kernel: SWAR over u64 words.
///
/// For a public `c` we precompute `c · x^i` for the eight bit positions i, broadcast to all eight
/// byte lanes of a word. A product `c · s` is then the XOR, over the bits of `s`, of `c · x^i`
/// masked by bit i of `s`; the mask is built arithmetically (`bit * 0xff`), so the secret bits
/// only ever act as multiplicands of AND masks, never as branch conditions or table indices.
mod portable {
    const LOW_BITS: u64 = 0x0101_0101_0101_0101;

    /// `c · x^i` for i in 0..8, each broadcast to the eight byte lanes of a u64.
    pub(super) fn multiples(c: u8) -> [u64; 8] {
        super::multiples_of_x(c).map(|m| u64::from(m) * LOW_BITS)
    }

    /// Eight products c · w_j at once, one per byte lane of `w`.
    #[inline(always)]
    fn mul_word(w: u64, m: &[u64; 8]) -> u64 {
        let mut acc = 0u64;
        for (i, mi) in m.iter().enumerate() {
            // Each lane of `bits` is 0 or 1, so `* 0xff` widens it to 0x00 or 0xff without
            // carrying into the neighbouring lane.
            let bits = (w >> i) & LOW_BITS;
            acc ^= bits.wrapping_mul(0xff) & mi;
        }
        acc
    }

    fn load(bytes: &[u8]) -> u64 {
        let mut word = [0u8; 8];
        word[..bytes.len()].copy_from_slice(bytes);
        u64::from_le_bytes(word)
    }

    /// `dst ^= Σ c_j · srcs[j]`, or `dst = Σ c_j · srcs[j]` if not `accumulate`.
    pub(super) fn dot(dst: &mut [u8], srcs: &[&[u8]], multiples: &[[u64; 8]], accumulate: bool) {
        assert_eq!(srcs.len(), multiples.len(), "one coefficient per row");
        assert!(
            srcs.iter().all(|s| s.len() == dst.len()),
            "rows of equal length"
        );
        if !accumulate {
            dst.fill(0);
        }
        for (src, m) in srcs.iter().zip(multiples) {
            if m[0] == LOW_BITS {
                // c = 1 (public, so branching on it leaks nothing): a plain XOR. Split gives the
                // secret row this coefficient.
                dst.iter_mut().zip(src.iter()).for_each(|(d, s)| *d ^= s);
                continue;
            }
            let mut d = dst.chunks_exact_mut(8);
            let mut s = src.chunks_exact(8);
            for (d8, s8) in (&mut d).zip(&mut s) {
                let product = mul_word(load(s8), m) ^ load(d8);
                d8.copy_from_slice(&product.to_le_bytes());
            }
            let (d_tail, s_tail) = (d.into_remainder(), s.remainder());
            let product = mul_word(load(s_tail), m) ^ load(d_tail);
            d_tail.copy_from_slice(&product.to_le_bytes()[..d_tail.len()]);
        }
    }

    pub(super) fn scale(buf: &mut [u8], m: &[u64; 8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for b8 in &mut chunks {
            let product = mul_word(load(b8), m);
            b8.copy_from_slice(&product.to_le_bytes());
        }
        let tail = chunks.into_remainder();
        let product = mul_word(load(tail), m);
        tail.copy_from_slice(&product.to_le_bytes()[..tail.len()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Textbook multiplication: carry-less product, then reduce bit by bit (branches are fine
    /// in a reference).
    fn reference_mul(a: u8, b: u8) -> u8 {
        let mut wide = 0u16;
        for i in 0..8 {
            if b >> i & 1 == 1 {
                wide ^= u16::from(a) << i;
            }
        }
        for bit in (8..16).rev() {
            if wide >> bit & 1 == 1 {
                wide ^= POLYNOMIAL << (bit - 8);
            }
        }
        wide as u8
    }

    #[test]
    fn mul_matches_reference_exhaustively() {
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                assert_eq!(mul(a, b), reference_mul(a, b), "{a} * {b}");
            }
        }
    }

    #[test]
    fn field_axioms_hold() {
        for a in 0..=255u8 {
            assert_eq!(mul(a, 1), a);
            assert_eq!(mul(a, 0), 0);
            for b in 0..=255u8 {
                assert_eq!(mul(a, b), mul(b, a));
            }
        }
        // Associativity and distributivity on a deterministic sample of triples.
        for a in (0..=255u8).step_by(7) {
            for b in (0..=255u8).step_by(5) {
                for c in (0..=255u8).step_by(3) {
                    assert_eq!(mul(mul(a, b), c), mul(a, mul(b, c)));
                    assert_eq!(mul(a, b ^ c), mul(a, b) ^ mul(a, c));
                }
            }
        }
    }

    #[test]
    fn every_nonzero_element_has_an_inverse() {
        assert_eq!(inv(0), 0);
        for a in 1..=255u8 {
            assert_eq!(mul(a, inv(a)), 1, "inverse of {a}");
        }
    }

    #[test]
    fn two_generates_the_multiplicative_group() {
        // 0x11d is primitive: x has order 255, as `sharks`' exp/log tables assume.
        let mut seen = [false; 256];
        let mut e = 1u8;
        for _ in 0..255 {
            assert!(!seen[usize::from(e)]);
            seen[usize::from(e)] = true;
            e = mul(e, 2);
        }
        assert_eq!(e, 1);
        assert_eq!(mul(0x80, 2), 0x1d);
    }

    #[test]
    fn pow_matches_repeated_multiplication() {
        for a in [0u8, 1, 2, 3, 0x53, 0xff] {
            let mut expected = 1u8;
            for e in 0..600u32 {
                assert_eq!(pow(a, e), expected, "{a}^{e}");
                expected = mul(expected, a);
            }
        }
    }

    #[test]
    fn row_kernels_match_scalar_mul() {
        let src: Vec<u8> = (0..=255u8).chain(0..=36).collect();
        for c in 0..=255u8 {
            for len in [0, 1, 7, 8, 9, 63, 64, 65, src.len()] {
                let init: Vec<u8> = (0..len).map(|i| (i * 31 + 7) as u8).collect();
                for kernel in Kernel::available() {
                    let mut dst = init.clone();
                    kernel.mul_add_assign(&mut dst, &src[..len], c);
                    let expected: Vec<u8> = (0..len).map(|i| init[i] ^ mul(c, src[i])).collect();
                    assert_eq!(dst, expected, "{kernel:?} mul_add c={c} len={len}");

                    let mut buf = src[..len].to_vec();
                    kernel.mul_assign(&mut buf, c);
                    let expected: Vec<u8> = src[..len].iter().map(|&s| mul(c, s)).collect();
                    assert_eq!(buf, expected, "{kernel:?} mul c={c} len={len}");
                }
            }
        }
    }

    #[test]
    fn every_kernel_the_cpu_has_is_available_and_runs() {
        // /proc/cpuinfo is an independent witness of the CPU features, so this catches a
        // detection mistake that would silently leave a fast path unused (and untested).
        let flags = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let has = |f: &str| {
            flags
                .lines()
                .filter(|l| l.starts_with("flags"))
                .any(|l| l.split_whitespace().any(|w| w == f))
        };
        let expected = [
            (Kernel::Ssse3, has("ssse3")),
            (Kernel::Avx2, has("avx2")),
            (Kernel::Avx2Gfni, has("avx2") && has("gfni")),
            (
                Kernel::Avx512Gfni,
                has("avx512f") && has("avx512bw") && has("gfni"),
            ),
        ];
        let available = Kernel::available();
        assert_eq!(available.first(), Some(&Kernel::Portable));
        for (kernel, present) in expected {
            if cfg!(target_arch = "x86_64") && present {
                assert!(available.contains(&kernel), "{kernel:?} not detected");
            }
        }
        for kernel in Kernel::ALL {
            // A kernel runs as itself exactly when supported, else falls back to portable.
            let runs = Multipliers::new(kernel, &[3]).kernel();
            let expected = if kernel.is_supported() {
                kernel
            } else {
                Kernel::Portable
            };
            assert_eq!(runs, expected);
        }
        assert_eq!(Some(&Kernel::best()), available.last());
        eprintln!(
            "kernels: {:?}",
            available.iter().map(|k| k.name()).collect::<Vec<_>>()
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Every available kernel gives byte-identical results to the portable one, for any
        /// row count (across the SIMD group size of 8), length (across vector tails) and
        /// coefficients.
        #[test]
        fn kernels_agree_with_portable(
            rows in 0usize..=19,
            len in 0usize..=300,
            offset in 0usize..64,
            seed in any::<u64>(),
        ) {
            use rand::{RngCore, SeedableRng};
            let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
            let mut random = |n: usize| {
                let mut v = vec![0u8; n];
                rng.fill_bytes(&mut v);
                v
            };
            let coeffs = random(rows);
            let srcs: Vec<Vec<u8>> = (0..rows).map(|_| random(len)).collect();
            let srcs: Vec<&[u8]> = srcs.iter().map(Vec::as_slice).collect();
            let init = random(len);
            let mut expected = init.clone();
            Kernel::Portable.dot_add_assign(&mut expected, &srcs, &coeffs);
            let c = coeffs.first().copied().unwrap_or(0x8e);
            let mut expected_scaled = init.clone();
            Kernel::Portable.mul_assign(&mut expected_scaled, c);
            let mut expected_overwrite = vec![0u8; len];
            Kernel::Portable.dot_add_assign(&mut expected_overwrite, &srcs, &coeffs);
            for kernel in Kernel::available() {
                let mut dst = init.clone();
                kernel.dot_add_assign(&mut dst, &srcs, &coeffs);
                prop_assert_eq!(&dst, &expected, "{:?} dot", kernel);
                let mut dst = init.clone();
                Multipliers::new(kernel, &coeffs).dot_assign(&mut dst, &srcs);
                prop_assert_eq!(&dst, &expected_overwrite, "{:?} dot_assign", kernel);
                // Streaming stores align the vector part: vary the alignment of `dst`.
                let mut padded = vec![0x5au8; offset + len + 64];
                Multipliers::new(kernel, &coeffs)
                    .dot_assign_streaming(&mut padded[offset..offset + len], &srcs);
                prop_assert_eq!(&padded[offset..offset + len], &expected_overwrite[..]);
                prop_assert!(padded[..offset].iter().chain(&padded[offset + len..]).all(|&b| b == 0x5a));
                let mut buf = init.clone();
                kernel.mul_assign(&mut buf, c);
                prop_assert_eq!(&buf, &expected_scaled, "{:?} scale", kernel);
            }
        }
    }
}
