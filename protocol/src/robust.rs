//! Robust decoding: rebuild a record from m shares of which up to ⌊(m − k)/2⌋ are wrong, and
//! say which ones.
//!
//! Shamir shares are a Reed–Solomon codeword (the share polynomial evaluated at x_1..x_m, one
//! codeword per byte column), so wrong shares are errors at unknown positions. Decoding every
//! byte column with Berlekamp–Welch would cost O(L·m³); instead the bad shares are located
//! once and the good ones are combined at full speed:
//!
//! 1. Pick a basis: k shares not yet suspected.
//! 2. Predict every other share from the basis at full speed (interpolation at x_i, which is
//!    [`shamir::combine`] with every x shifted by x_i: in characteristic 2,
//!    (x_m + a)/(x_m + x_j) = ((x_m + a) + 0)/((x_m + a) + (x_j + a))), and compare.
//! 3. In a column where the basis is right, only the bad shares disagree, at most e of them.
//!    In a column where a basis share is wrong, the interpolated polynomial differs from the
//!    true one, agrees with it at no more than k − 1 points, and so more than e other shares
//!    disagree (m − k − e + 1 > e because 2e ≤ m − k). So if no column has more than e
//!    disagreements, the basis is good everywhere and the disagreeing shares are the bad ones.
//! 4. Otherwise run Berlekamp–Welch on one column where more than e shares disagree; it names
//!    the wrong shares of that column, at least one of which is in the basis. Suspect them and
//!    go back to 1. Each round suspects a new share, so there are at most e + 1 rounds.
//!
//! Berlekamp–Welch runs on single public-size columns with data-dependent pivoting: it is not
//! constant-time, which is acceptable because it runs only on the reader, which holds the
//! record anyway, and only for a few columns.
//!
//! The result is correct whenever at most ⌊(m − k)/2⌋ shares are wrong. With more, decoding
//! may fail ([`Error::TooManyBadShares`]) or produce a wrong record, which is why the caller
//! checks the end-to-end hash afterwards (see [`crate::dealing::reassemble`]).

use std::collections::BTreeSet;

use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::gf256;
use crate::shamir::{self, Share};
use crate::types::{ShareIndex, Threshold};

/// A record rebuilt by [`decode`], and the shares found wrong on the way. No `Debug`: it holds
/// the secret.
pub struct Decoded {
    /// The secret, wiped from memory when dropped.
    pub secret: Zeroizing<Vec<u8>>,
    /// The x-coordinates of the shares that do not lie on the decoded polynomial.
    pub bad: Vec<ShareIndex>,
}

/// How many wrong shares m shares of threshold k can locate: ⌊(m − k)/2⌋ (0 if m < k).
pub fn correctable(shares: usize, threshold: Threshold) -> usize {
    shares.saturating_sub(threshold.as_usize()) / 2
}

/// Rebuilds the secret from `shares`, correcting up to [`correctable`] wrong ones.
///
/// Rejects fewer than k shares, unequal lengths and repeated x with the same typed errors as
/// [`shamir::combine`]; more wrong shares than it can locate give
/// [`Error::TooManyBadShares`] (or, undetectably here, a wrong secret: check it).
pub fn decode(shares: &[Share], threshold: Threshold) -> Result<Decoded> {
    let k = threshold.as_usize();
    if shares.len() < k {
        return Err(Error::NotEnoughShares {
            found: shares.len(),
            needed: k,
        });
    }
    let len = shares[0].data().len();
    if let Some(odd) = shares.iter().find(|s| s.data().len() != len) {
        return Err(Error::ShareLengthMismatch {
            index: odd.index().get(),
            len: odd.data().len(),
            expected: len,
        });
    }
    // Also rejects repeated x before any arithmetic.
    shamir::lagrange_weights(&shares.iter().map(Share::index).collect::<Vec<_>>(), 0)?;
    let m = shares.len();
    let e = correctable(m, threshold);
    let too_many = || Error::TooManyBadShares {
        shares: m,
        threshold: k,
        correctable: e,
    };
    let mut suspects: BTreeSet<usize> = BTreeSet::new();
    // Column 0 usually names whole-share damage at once; the loop finds the rest.
    if len > 0 {
        suspects.extend(berlekamp_welch(&column(shares, 0), k)?);
    }
    for _round in 0..=e + 1 {
        if suspects.len() > e {
            return Err(too_many());
        }
        let basis: Vec<usize> = (0..m).filter(|i| !suspects.contains(i)).take(k).collect();
        let basis_shares: Vec<Share> = basis.iter().map(|&i| shares[i].clone()).collect();
        let mut disagreeing = Vec::new();
        // Per column: how many non-basis shares disagree with the basis there.
        let mut per_column = vec![0u8; len];
        for (i, share) in shares.iter().enumerate() {
            if basis.contains(&i) {
                continue;
            }
            let predicted = interpolate_at(&basis_shares, share.index(), threshold)?;
            let mut differs = false;
            for ((count, p), y) in per_column
                .iter_mut()
                .zip(predicted.iter())
                .zip(share.data())
            {
                if p != y {
                    *count += 1;
                    differs = true;
                }
            }
            if differs {
                disagreeing.push(i);
            }
        }
        match per_column.iter().position(|&count| usize::from(count) > e) {
            None => {
                let secret = shamir::combine(&basis_shares, threshold)?;
                let bad = disagreeing.iter().map(|&i| shares[i].index()).collect();
                return Ok(Decoded { secret, bad });
            }
            Some(col) => {
                let wrong = berlekamp_welch(&column(shares, col), k)?;
                if !wrong.iter().any(|i| basis.contains(i)) {
                    // Within the radius, BW must find the basis share that broke this column.
                    return Err(too_many());
                }
                suspects.extend(wrong);
            }
        }
    }
    Err(too_many())
}

/// The shares among `shares[k..]` that do not lie on the polynomial through the first k,
/// compared whole at full speed.
///
/// For a reader that rebuilt the record from the first k shares (and checked it end to end)
/// and wants to know whether the shares it did not need are consistent with it: a writer that
/// dealt one bad share is then reported even when no decoding needed that share.
pub fn disagreeing(shares: &[Share], threshold: Threshold) -> Result<Vec<ShareIndex>> {
    let k = threshold.as_usize();
    if shares.len() < k {
        return Err(Error::NotEnoughShares {
            found: shares.len(),
            needed: k,
        });
    }
    let (basis, rest) = shares.split_at(k);
    let mut bad = Vec::new();
    for share in rest {
        if basis.iter().any(|b| b.index() == share.index()) {
            return Err(Error::DuplicateShareIndex {
                index: share.index().get(),
            });
        }
        let predicted = interpolate_at(basis, share.index(), threshold)?;
        if predicted.as_slice() != share.data() {
            bad.push(share.index());
        }
    }
    Ok(bad)
}

/// The share bytes at position `col`, as points (x, y).
fn column(shares: &[Share], col: usize) -> Vec<(u8, u8)> {
    shares
        .iter()
        .map(|s| (s.index().get(), s.data()[col]))
        .collect()
}

/// The share at `at` predicted from the polynomial through `basis` (k shares, none at `at`),
/// at full speed: combine with every x shifted by `at`.
fn interpolate_at(
    basis: &[Share],
    at: ShareIndex,
    threshold: Threshold,
) -> Result<Zeroizing<Vec<u8>>> {
    let shifted = basis
        .iter()
        .map(|s| {
            let x = ShareIndex::new(s.index().get() ^ at.get())?;
            Ok(Share::new(x, s.data().to_vec()))
        })
        .collect::<Result<Vec<_>>>()?;
    shamir::combine(&shifted, threshold)
}

/// Berlekamp–Welch on one column: the positions (into `points`) of the values that do not lie
/// on the unique polynomial of degree < `k` through all but at most ⌊(m − k)/2⌋ of them, or
/// [`Error::TooManyBadShares`] if no such polynomial exists.
///
/// Solves Q(x_i) = y_i·E(x_i) for a monic error locator E of degree e = ⌊(m − k)/2⌋ and Q of
/// degree < k + e, then P = Q / E. The points' x must be distinct and non-zero.
pub fn berlekamp_welch(points: &[(u8, u8)], k: usize) -> Result<Vec<usize>> {
    let m = points.len();
    let e = m.saturating_sub(k) / 2;
    let too_many = || Error::TooManyBadShares {
        shares: m,
        threshold: k,
        correctable: e,
    };
    if m < k {
        return Err(Error::NotEnoughShares {
            found: m,
            needed: k,
        });
    }
    // Unknowns: q_0..q_{k+e−1}, then e_0..e_{e−1}. Row i:
    //   Σ_j q_j x_i^j + y_i Σ_l e_l x_i^l = y_i x_i^e   (minus is plus in GF(2^8)).
    let unknowns = k + 2 * e;
    let mut rows: Vec<Vec<u8>> = points
        .iter()
        .map(|&(x, y)| {
            let mut row = Vec::with_capacity(unknowns + 1);
            row.extend((0..k + e).map(|j| power(x, j)));
            row.extend((0..e).map(|l| gf256::mul(y, power(x, l))));
            row.push(gf256::mul(y, power(x, e)));
            row
        })
        .collect();
    let solution = solve(&mut rows, unknowns).ok_or_else(too_many)?;
    let q = &solution[..k + e];
    let mut locator = solution[k + e..].to_vec();
    locator.push(1);
    let p = divide_exact(q, &locator).ok_or_else(too_many)?;
    let wrong: Vec<usize> = points
        .iter()
        .enumerate()
        .filter(|(_, &(x, y))| evaluate(&p, x) != y)
        .map(|(i, _)| i)
        .collect();
    if wrong.len() > e {
        return Err(too_many());
    }
    Ok(wrong)
}

/// Gaussian elimination over GF(2^8) on an augmented matrix; any solution (free variables 0),
/// or `None` if the system is inconsistent.
fn solve(rows: &mut [Vec<u8>], unknowns: usize) -> Option<Vec<u8>> {
    let mut pivots = Vec::new();
    let mut r = 0;
    for c in 0..unknowns {
        let Some(p) = (r..rows.len()).find(|&i| rows[i][c] != 0) else {
            continue;
        };
        rows.swap(r, p);
        let scale = gf256::inv(rows[r][c]);
        for v in rows[r].iter_mut() {
            *v = gf256::mul(*v, scale);
        }
        let pivot = rows[r].clone();
        for (i, row) in rows.iter_mut().enumerate() {
            let factor = row[c];
            if i != r && factor != 0 {
                for (v, &p) in row.iter_mut().zip(&pivot) {
                    *v ^= gf256::mul(factor, p);
                }
            }
        }
        pivots.push(c);
        r += 1;
    }
    // A row of zeros with a non-zero right-hand side: no solution.
    if rows[r..].iter().any(|row| row[unknowns] != 0) {
        return None;
    }
    let mut solution = vec![0u8; unknowns];
    for (row, &c) in pivots.iter().enumerate() {
        solution[c] = rows[row][unknowns];
    }
    Some(solution)
}

/// `numerator / denominator` for a monic denominator, or `None` if it leaves a remainder.
/// Coefficients are lowest degree first.
fn divide_exact(numerator: &[u8], denominator: &[u8]) -> Option<Vec<u8>> {
    let d = denominator.len() - 1;
    let mut rest = numerator.to_vec();
    if rest.len() <= d {
        return rest.iter().all(|&c| c == 0).then(Vec::new);
    }
    let mut quotient = vec![0u8; rest.len() - d];
    for i in (0..quotient.len()).rev() {
        let coefficient = rest[i + d];
        quotient[i] = coefficient;
        for (j, &dj) in denominator.iter().enumerate() {
            rest[i + j] ^= gf256::mul(coefficient, dj);
        }
    }
    rest.iter().all(|&c| c == 0).then_some(quotient)
}

/// x^n by repeated multiplication (n < 256 here; x is public to this column).
fn power(x: u8, n: usize) -> u8 {
    (0..n).fold(1u8, |acc, _| gf256::mul(acc, x))
}

/// Horner evaluation; coefficients lowest degree first.
fn evaluate(polynomial: &[u8], x: u8) -> u8 {
    polynomial
        .iter()
        .rev()
        .fold(0u8, |acc, &c| gf256::mul(acc, x) ^ c)
}

#[cfg(test)]
#[path = "robust_tests.rs"]
mod tests;
