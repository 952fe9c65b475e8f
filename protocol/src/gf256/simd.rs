//! x86-64 SIMD row kernels: the one module of the crate that uses `unsafe`.
//!
//! Each kernel multiplies secret bytes by public coefficients without data-dependent branches,
//! memory addresses or table lookups in memory:
//! - SSSE3 and AVX2 use PSHUFB with two 16-entry nibble tables per coefficient. PSHUFB selects
//!   from a register, in constant time; the tables depend only on the public coefficient.
//! - GFNI uses `gf2p8affineqb` with the 8×8 bit matrix of "multiply by c" in our field (0x11d).
//!   (`gf2p8mulb` would be simpler but is fixed to the AES polynomial 0x11b.)
//!
//! The safe entry points check the CPU feature themselves before entering `unsafe`, so they are
//! sound whatever the caller does; [`super::Multipliers`] only picks them when the feature is
//! present, so the checks never fire in practice. Rows are processed a whole vector at a time;
//! a partial vector (the tail, and with streaming stores the bytes before the first aligned
//! address) goes through a zero-padded stack buffer with the same instructions, and the buffer
//! is wiped afterwards.

#![allow(unsafe_code)]

use std::arch::x86_64::*;

use zeroize::Zeroize;

/// The PSHUFB tables of `c`: `c·n` and `c·(n << 4)` for each nibble n, built by linearity from
/// the eight products c·x^i (cheap enough to prepare per call even for tiny records).
pub(super) fn tables(c: u8) -> [u8; 32] {
    let m = super::multiples_of_x(c);
    let mut t = [0u8; 32];
    for n in 0..16 {
        for bit in 0..4 {
            let mask = 0u8.wrapping_sub((n as u8 >> bit) & 1);
            t[n] ^= m[bit] & mask;
            t[16 + n] ^= m[4 + bit] & mask;
        }
    }
    t
}

/// The `gf2p8affineqb` matrix of "multiply by c": byte 7 − i holds row i, whose bit j is bit i
/// of c·x^j (because c·s = Σ_j s_j · c·x^j, output bit i is the parity of row i AND s).
pub(super) fn matrix(c: u8) -> u64 {
    // Byte j of `x` is c·x^j; transpose the 8×8 bit matrix (Hacker's Delight, "transpose8") so
    // that byte i holds bit i of every column, then reverse the bytes.
    let mut x = u64::from_le_bytes(super::multiples_of_x(c));
    let t = (x ^ (x >> 7)) & 0x00AA_00AA_00AA_00AA;
    x ^= t ^ (t << 7);
    let t = (x ^ (x >> 14)) & 0x0000_CCCC_0000_CCCC;
    x ^= t ^ (t << 14);
    let t = (x ^ (x >> 28)) & 0x0000_0000_F0F0_F0F0;
    x ^= t ^ (t << 28);
    x.swap_bytes()
}

/// Whether the CPU runs the SSSE3 kernel (`is_x86_feature_detected!` caches its answer).
pub(super) fn ssse3_detected() -> bool {
    is_x86_feature_detected!("ssse3")
}

/// Whether the CPU runs the AVX2 kernel.
pub(super) fn avx2_detected() -> bool {
    is_x86_feature_detected!("avx2")
}

/// Whether the CPU runs the AVX2 + GFNI kernel.
pub(super) fn avx2_gfni_detected() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("gfni")
}

/// Whether the CPU runs the AVX-512 + GFNI kernel.
pub(super) fn avx512_gfni_detected() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("gfni")
}

/// Generates, for one instruction set, the safe `dot_*` (dst ^= Σ c_j·src_j) and `scale_*`
/// (buf = c·buf) entry points around the generic loops below.
macro_rules! entry_points {
    ($isa:ty, $prep:ty, $features:literal, $detected:ident, $dot:ident, $scale:ident) => {
        pub(super) fn $dot(dst: &mut [u8], srcs: &[&[u8]], coeffs: &[$prep], mode: Mode) {
            assert!($detected(), concat!("CPU lacks ", $features));
            assert_eq!(srcs.len(), coeffs.len(), "one coefficient per row");
            assert!(
                srcs.iter().all(|s| s.len() == dst.len()),
                "rows of equal length"
            );
            #[target_feature(enable = $features)]
            unsafe fn run(dst: &mut [u8], srcs: &[&[u8]], coeffs: &[$prep], mode: Mode) {
                dot::<$isa>(dst, srcs, coeffs, mode)
            }
            // SAFETY: the CPU has the features (checked above) and every row is as long as
            // `dst` (checked above), which is all the loops rely on.
            unsafe { run(dst, srcs, coeffs, mode) }
        }

        pub(super) fn $scale(buf: &mut [u8], coeff: &$prep) {
            assert!($detected(), concat!("CPU lacks ", $features));
            #[target_feature(enable = $features)]
            unsafe fn run(buf: &mut [u8], coeff: &$prep) {
                scale::<$isa>(buf, coeff)
            }
            // SAFETY: the CPU has the features (checked above).
            unsafe { run(buf, coeff) }
        }
    };
}

entry_points!(
    Ssse3,
    [u8; 32],
    "ssse3",
    ssse3_detected,
    dot_ssse3,
    scale_ssse3
);
entry_points!(Avx2, [u8; 32], "avx2", avx2_detected, dot_avx2, scale_avx2);
entry_points!(
    Avx2Gfni,
    u64,
    "avx2,gfni",
    avx2_gfni_detected,
    dot_avx2_gfni,
    scale_avx2_gfni
);
entry_points!(
    Avx512Gfni,
    u64,
    "avx512f,avx512bw,gfni",
    avx512_gfni_detected,
    dot_avx512_gfni,
    scale_avx512_gfni
);

/// The vector operations one instruction set provides. Every method is `#[inline(always)]` so
/// it is compiled inside the `#[target_feature]` entry point that calls the generic loops.
///
/// Safety contract of every method: the CPU has the instruction set's features, and pointers
/// are valid for `LANES` bytes (`stream` also needs them aligned to `LANES`).
trait Isa {
    /// One vector of bytes.
    type V: Copy;
    /// A coefficient prepared for `mul` (tables or a matrix in registers).
    type C: Copy;
    /// The coefficient as stored in [`super::Multipliers`].
    type Prep;
    /// Bytes per vector; at most 64 (the tail buffer size).
    const LANES: usize;
    unsafe fn prepare(prep: &Self::Prep) -> Self::C;
    unsafe fn zero() -> Self::V;
    unsafe fn load(p: *const u8) -> Self::V;
    unsafe fn store(p: *mut u8, v: Self::V);
    /// A non-temporal store; `p` must be aligned to `LANES`.
    unsafe fn stream(p: *mut u8, v: Self::V);
    unsafe fn xor(a: Self::V, b: Self::V) -> Self::V;
    unsafe fn mul(x: Self::V, c: Self::C) -> Self::V;
}

/// How many source rows one pass over `dst` handles: enough to amortise the load and store of
/// `dst`, few enough that the prepared coefficients stay in registers.
const GROUP: usize = 8;

/// How a dot product writes its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Mode {
    /// Add to the old contents of `dst` (else overwrite them, saving a pass to clear or copy).
    pub(super) accumulate: bool,
    /// Write with non-temporal stores, which skip reading each output line into the cache
    /// first; pays off only for output far larger than the cache that nobody reads soon.
    pub(super) stream: bool,
}

/// `dst ^= Σ_j c_j · srcs[j]` (or `=`, see [`Mode`]) in passes of up to [`GROUP`] rows.
#[inline(always)]
unsafe fn dot<I: Isa>(dst: &mut [u8], srcs: &[&[u8]], coeffs: &[I::Prep], mode: Mode) {
    if srcs.is_empty() && !mode.accumulate {
        dst.fill(0);
    }
    let groups = srcs.len().div_ceil(GROUP);
    for (g, (srcs, coeffs)) in srcs.chunks(GROUP).zip(coeffs.chunks(GROUP)).enumerate() {
        // Only the first pass may overwrite and only the last may bypass the cache (the
        // passes in between read `dst` back).
        let mode = Mode {
            accumulate: mode.accumulate || g > 0,
            stream: mode.stream && g + 1 == groups,
        };
        // A constant row count lets the compiler unroll the inner loop and keep every
        // coefficient in a register.
        match srcs.len() {
            1 => dot_group::<I, 1>(dst, srcs, coeffs, mode),
            2 => dot_group::<I, 2>(dst, srcs, coeffs, mode),
            3 => dot_group::<I, 3>(dst, srcs, coeffs, mode),
            4 => dot_group::<I, 4>(dst, srcs, coeffs, mode),
            5 => dot_group::<I, 5>(dst, srcs, coeffs, mode),
            6 => dot_group::<I, 6>(dst, srcs, coeffs, mode),
            7 => dot_group::<I, 7>(dst, srcs, coeffs, mode),
            _ => dot_group::<I, 8>(dst, srcs, coeffs, mode),
        }
    }
    if mode.stream {
        // Non-temporal stores are weakly ordered: fence them before the caller reads or
        // hands the buffer to another thread.
        _mm_sfence();
    }
}

/// One pass of exactly `N` rows; the caller guarantees `srcs.len() == coeffs.len() == N` and
/// that every row is as long as `dst`.
#[inline(always)]
unsafe fn dot_group<I: Isa, const N: usize>(
    dst: &mut [u8],
    srcs: &[&[u8]],
    coeffs: &[I::Prep],
    mode: Mode,
) {
    let mut c = [I::prepare(&coeffs[0]); N];
    let mut rows = [std::ptr::null::<u8>(); N];
    for (j, (row, src)) in rows.iter_mut().zip(srcs).enumerate() {
        *row = src.as_ptr();
        c[j] = I::prepare(&coeffs[j]);
    }
    let len = dst.len();
    let d = dst.as_mut_ptr();
    // Streaming stores need aligned addresses: the bytes before the first aligned vector go
    // through the partial path, like the tail.
    let head = if mode.stream {
        d.align_offset(I::LANES).min(len)
    } else {
        0
    };
    let full = head + (len - head) / I::LANES * I::LANES;
    if head > 0 {
        dot_partial::<I, N>(dst, srcs, &c, 0..head, mode.accumulate);
    }
    let mut offset = head;
    while offset < full {
        let mut acc = if mode.accumulate {
            I::load(d.add(offset))
        } else {
            I::zero()
        };
        for j in 0..N {
            acc = I::xor(acc, I::mul(I::load(rows[j].add(offset)), c[j]));
        }
        if mode.stream {
            I::stream(d.add(offset), acc);
        } else {
            I::store(d.add(offset), acc);
        }
        offset += I::LANES;
    }
    if full < len {
        dot_partial::<I, N>(dst, srcs, &c, full..len, mode.accumulate);
    }
}

/// The dot product over `range` (shorter than a vector), through zero-padded stack buffers.
#[inline(always)]
unsafe fn dot_partial<I: Isa, const N: usize>(
    dst: &mut [u8],
    srcs: &[&[u8]],
    c: &[I::C; N],
    range: std::ops::Range<usize>,
    accumulate: bool,
) {
    let width = range.len();
    let (mut acc_bytes, mut src_bytes) = ([0u8; 64], [0u8; 64]);
    if accumulate {
        acc_bytes[..width].copy_from_slice(&dst[range.clone()]);
    }
    let mut acc = I::load(acc_bytes.as_ptr());
    for (src, &c) in srcs.iter().zip(c) {
        src_bytes[..width].copy_from_slice(&src[range.clone()]);
        acc = I::xor(acc, I::mul(I::load(src_bytes.as_ptr()), c));
    }
    I::store(acc_bytes.as_mut_ptr(), acc);
    dst[range].copy_from_slice(&acc_bytes[..width]);
    // The buffers held secret bytes; do not leave them on the stack.
    acc_bytes.zeroize();
    src_bytes.zeroize();
}

/// `buf = c · buf`.
#[inline(always)]
unsafe fn scale<I: Isa>(buf: &mut [u8], coeff: &I::Prep) {
    let c = I::prepare(coeff);
    let len = buf.len();
    let full = len - len % I::LANES;
    let p = buf.as_mut_ptr();
    let mut offset = 0;
    while offset < full {
        I::store(p.add(offset), I::mul(I::load(p.add(offset)), c));
        offset += I::LANES;
    }
    if full < len {
        let tail = len - full;
        let mut bytes = [0u8; 64];
        bytes[..tail].copy_from_slice(&buf[full..]);
        I::store(bytes.as_mut_ptr(), I::mul(I::load(bytes.as_ptr()), c));
        buf[full..].copy_from_slice(&bytes[..tail]);
        bytes.zeroize();
    }
}

struct Ssse3;

impl Isa for Ssse3 {
    type V = __m128i;
    type C = (__m128i, __m128i);
    type Prep = [u8; 32];
    const LANES: usize = 16;

    #[inline(always)]
    unsafe fn prepare(prep: &[u8; 32]) -> Self::C {
        let p = prep.as_ptr();
        (_mm_loadu_si128(p.cast()), _mm_loadu_si128(p.add(16).cast()))
    }
    #[inline(always)]
    unsafe fn zero() -> __m128i {
        _mm_setzero_si128()
    }
    #[inline(always)]
    unsafe fn load(p: *const u8) -> __m128i {
        _mm_loadu_si128(p.cast())
    }
    #[inline(always)]
    unsafe fn store(p: *mut u8, v: __m128i) {
        _mm_storeu_si128(p.cast(), v)
    }
    #[inline(always)]
    unsafe fn stream(p: *mut u8, v: __m128i) {
        _mm_stream_si128(p.cast(), v)
    }
    #[inline(always)]
    unsafe fn xor(a: __m128i, b: __m128i) -> __m128i {
        _mm_xor_si128(a, b)
    }
    #[inline(always)]
    unsafe fn mul(x: __m128i, (lo, hi): Self::C) -> __m128i {
        let nibble = _mm_set1_epi8(0x0f);
        let low = _mm_and_si128(x, nibble);
        let high = _mm_and_si128(_mm_srli_epi64::<4>(x), nibble);
        _mm_xor_si128(_mm_shuffle_epi8(lo, low), _mm_shuffle_epi8(hi, high))
    }
}

struct Avx2;

impl Isa for Avx2 {
    type V = __m256i;
    type C = (__m256i, __m256i);
    type Prep = [u8; 32];
    const LANES: usize = 32;

    #[inline(always)]
    unsafe fn prepare(prep: &[u8; 32]) -> Self::C {
        // VPSHUFB looks up within each 128-bit lane, so both lanes get the same table.
        let p = prep.as_ptr();
        (
            _mm256_broadcastsi128_si256(_mm_loadu_si128(p.cast())),
            _mm256_broadcastsi128_si256(_mm_loadu_si128(p.add(16).cast())),
        )
    }
    #[inline(always)]
    unsafe fn zero() -> __m256i {
        _mm256_setzero_si256()
    }
    #[inline(always)]
    unsafe fn load(p: *const u8) -> __m256i {
        _mm256_loadu_si256(p.cast())
    }
    #[inline(always)]
    unsafe fn store(p: *mut u8, v: __m256i) {
        _mm256_storeu_si256(p.cast(), v)
    }
    #[inline(always)]
    unsafe fn stream(p: *mut u8, v: __m256i) {
        _mm256_stream_si256(p.cast(), v)
    }
    #[inline(always)]
    unsafe fn xor(a: __m256i, b: __m256i) -> __m256i {
        _mm256_xor_si256(a, b)
    }
    #[inline(always)]
    unsafe fn mul(x: __m256i, (lo, hi): Self::C) -> __m256i {
        let nibble = _mm256_set1_epi8(0x0f);
        let low = _mm256_and_si256(x, nibble);
        let high = _mm256_and_si256(_mm256_srli_epi64::<4>(x), nibble);
        _mm256_xor_si256(_mm256_shuffle_epi8(lo, low), _mm256_shuffle_epi8(hi, high))
    }
}

struct Avx2Gfni;

impl Isa for Avx2Gfni {
    type V = __m256i;
    type C = __m256i;
    type Prep = u64;
    const LANES: usize = 32;

    #[inline(always)]
    unsafe fn prepare(prep: &u64) -> __m256i {
        _mm256_set1_epi64x(*prep as i64)
    }
    #[inline(always)]
    unsafe fn zero() -> __m256i {
        _mm256_setzero_si256()
    }
    #[inline(always)]
    unsafe fn load(p: *const u8) -> __m256i {
        _mm256_loadu_si256(p.cast())
    }
    #[inline(always)]
    unsafe fn store(p: *mut u8, v: __m256i) {
        _mm256_storeu_si256(p.cast(), v)
    }
    #[inline(always)]
    unsafe fn stream(p: *mut u8, v: __m256i) {
        _mm256_stream_si256(p.cast(), v)
    }
    #[inline(always)]
    unsafe fn xor(a: __m256i, b: __m256i) -> __m256i {
        _mm256_xor_si256(a, b)
    }
    #[inline(always)]
    unsafe fn mul(x: __m256i, c: __m256i) -> __m256i {
        _mm256_gf2p8affine_epi64_epi8::<0>(x, c)
    }
}

struct Avx512Gfni;

impl Isa for Avx512Gfni {
    type V = __m512i;
    type C = __m512i;
    type Prep = u64;
    const LANES: usize = 64;

    #[inline(always)]
    unsafe fn prepare(prep: &u64) -> __m512i {
        _mm512_set1_epi64(*prep as i64)
    }
    #[inline(always)]
    unsafe fn zero() -> __m512i {
        _mm512_setzero_si512()
    }
    #[inline(always)]
    unsafe fn load(p: *const u8) -> __m512i {
        _mm512_loadu_si512(p.cast())
    }
    #[inline(always)]
    unsafe fn store(p: *mut u8, v: __m512i) {
        _mm512_storeu_si512(p.cast(), v)
    }
    #[inline(always)]
    unsafe fn stream(p: *mut u8, v: __m512i) {
        _mm512_stream_si512(p.cast(), v)
    }
    #[inline(always)]
    unsafe fn xor(a: __m512i, b: __m512i) -> __m512i {
        _mm512_xor_si512(a, b)
    }
    #[inline(always)]
    unsafe fn mul(x: __m512i, c: __m512i) -> __m512i {
        _mm512_gf2p8affine_epi64_epi8::<0>(x, c)
    }
}
