//! RFC 6962 Merkle trees over audit entries: roots, inclusion and consistency proofs.
//!
//! Hashing is exactly RFC 6962 / RFC 9162 with SHA-256: a leaf is `SHA-256(0x00 ‖ entry)`, an
//! interior node `SHA-256(0x01 ‖ left ‖ right)`, the empty tree `SHA-256("")`, and a tree of n
//! leaves splits at the largest power of two below n. SHA-256 (not BLAKE3) so that checkpoints
//! of a Bunsan log are checkable by the C2SP / transparency-dev tooling (see docs/AUDIT.md).
//!
//! [`MerkleTree`] keeps every complete aligned subtree hash in memory (about two hashes per
//! leaf), so a root or a proof for any earlier size costs O(log² n) hashes, not O(n). The
//! verification functions are the iterative algorithms of RFC 9162 §2.1.3.2 and §2.1.4.2; they
//! never panic on hostile input and return [`Error::ProofInvalid`] naming what failed.

use aws_lc_rs::digest;

use crate::error::{Error, Result};

/// A SHA-256 hash: a leaf hash, an interior node hash or a root.
pub type Hash = [u8; 32];

/// The most hashes a proof may hold: a tree of 2^64 leaves needs at most 64 for inclusion and
/// about 2·64 for consistency. Bounds the work a hostile proof can cause.
pub const PROOF_HASHES_MAX: usize = 130;

/// The hash of a leaf: `SHA-256(0x00 ‖ data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut context = digest::Context::new(&digest::SHA256);
    context.update(&[0x00]);
    context.update(data);
    finish(context)
}

/// The hash of an interior node: `SHA-256(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut context = digest::Context::new(&digest::SHA256);
    context.update(&[0x01]);
    context.update(left);
    context.update(right);
    finish(context)
}

/// The root of the empty tree: `SHA-256("")`.
pub fn empty_root() -> Hash {
    finish(digest::Context::new(&digest::SHA256))
}

fn finish(context: digest::Context) -> Hash {
    let mut out = [0u8; 32];
    out.copy_from_slice(context.finish().as_ref());
    out
}

/// The RFC 6962 split point of a tree of `n` ≥ 2 leaves: the largest power of two below n.
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// The root over `leaves` computed directly by the RFC 6962 recursion: the reference the
/// incremental [`MerkleTree`] is tested against, and handy for small trees.
pub fn root_of(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n as u64) as usize;
            node_hash(&root_of(&leaves[..k]), &root_of(&leaves[k..]))
        }
    }
}

/// An append-only Merkle tree of leaf hashes that can answer for every size it ever had.
#[derive(Debug, Clone, Default)]
pub struct MerkleTree {
    /// `levels[h][i]` is the hash of the complete subtree of leaves `i·2^h .. (i+1)·2^h`.
    levels: Vec<Vec<Hash>>,
}

impl MerkleTree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |leaves| leaves.len() as u64)
    }

    /// The leaf hash at `index`, if the tree has it.
    pub fn leaf(&self, index: u64) -> Option<Hash> {
        self.levels
            .first()?
            .get(usize::try_from(index).ok()?)
            .copied()
    }

    /// Appends a leaf hash (not the entry: hash it with [`leaf_hash`] first).
    pub fn push(&mut self, leaf: Hash) {
        let mut hash = leaf;
        let mut height = 0;
        loop {
            if self.levels.len() == height {
                self.levels.push(Vec::new());
            }
            let level = &mut self.levels[height];
            level.push(hash);
            // A level with an even count just completed a pair: its parent is now complete.
            if level.len() % 2 == 1 {
                return;
            }
            let right = level[level.len() - 1];
            let left = level[level.len() - 2];
            hash = node_hash(&left, &right);
            height += 1;
        }
    }

    /// The root of the tree as it was at `size` leaves.
    pub fn root(&self, size: u64) -> Result<Hash> {
        self.check_size(size, "root")?;
        Ok(if size == 0 {
            empty_root()
        } else {
            self.subtree(0, size)
        })
    }

    /// The RFC 6962 audit path of leaf `index` in the tree of `size` leaves.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>> {
        self.check_size(size, "inclusion proof")?;
        if index >= size {
            return Err(Error::ProofInvalid {
                proof: "inclusion proof",
                reason: "the leaf index is not below the tree size",
            });
        }
        let mut proof = Vec::new();
        self.path(index, 0, size, &mut proof);
        Ok(proof)
    }

    /// The RFC 6962 consistency proof from the tree of `old` leaves to the tree of `new`
    /// leaves (empty when `old` is 0 or equals `new`).
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>> {
        self.check_size(new, "consistency proof")?;
        if old > new {
            return Err(Error::ProofInvalid {
                proof: "consistency proof",
                reason: "the old size exceeds the new size",
            });
        }
        let mut proof = Vec::new();
        if old > 0 && old < new {
            self.subproof(old, 0, new, true, &mut proof);
        }
        Ok(proof)
    }

    fn check_size(&self, size: u64, proof: &'static str) -> Result<()> {
        if size > self.size() {
            return Err(Error::ProofInvalid {
                proof,
                reason: "the tree size exceeds the log",
            });
        }
        Ok(())
    }

    /// MTH(D[start..end]) for 0 ≤ start < end ≤ size.
    fn subtree(&self, start: u64, end: u64) -> Hash {
        let n = end - start;
        if n.is_power_of_two() && start.is_multiple_of(n) {
            let height = n.trailing_zeros() as usize;
            // Complete aligned subtrees below the current size are always stored.
            if let Some(hash) = self
                .levels
                .get(height)
                .and_then(|level| level.get((start / n) as usize))
            {
                return *hash;
            }
        }
        let k = split(n);
        node_hash(
            &self.subtree(start, start + k),
            &self.subtree(start + k, end),
        )
    }

    /// PATH(m, D[start..end]) of RFC 6962 §2.1.1, appended to `out` bottom-up.
    fn path(&self, m: u64, start: u64, end: u64, out: &mut Vec<Hash>) {
        let n = end - start;
        if n == 1 {
            return;
        }
        let k = split(n);
        if m < k {
            self.path(m, start, start + k, out);
            out.push(self.subtree(start + k, end));
        } else {
            self.path(m - k, start + k, end, out);
            out.push(self.subtree(start, start + k));
        }
    }

    /// SUBPROOF(m, D[start..end], b) of RFC 6962 §2.1.2, appended to `out` bottom-up.
    fn subproof(&self, m: u64, start: u64, end: u64, complete: bool, out: &mut Vec<Hash>) {
        let n = end - start;
        if m == n {
            if !complete {
                out.push(self.subtree(start, end));
            }
            return;
        }
        let k = split(n);
        if m <= k {
            self.subproof(m, start, start + k, complete, out);
            out.push(self.subtree(start + k, end));
        } else {
            self.subproof(m - k, start + k, end, false, out);
            out.push(self.subtree(start, start + k));
        }
    }
}

/// Checks that `leaf` is leaf `index` of the tree of `size` leaves with root `root`
/// (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<()> {
    if root_from_inclusion(leaf, index, size, proof)? != *root {
        return Err(Error::ProofInvalid {
            proof: "inclusion proof",
            reason: "the proof does not lead to the root",
        });
    }
    Ok(())
}

/// The root that `proof` leads to from `leaf` as leaf `index` of a tree of `size` leaves
/// (RFC 9162 §2.1.3.2 without the final comparison): what a signature over a root must then
/// cover. Fails if the proof's length does not fit the tree's shape.
pub fn root_from_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash]) -> Result<Hash> {
    let fail = |reason| Error::ProofInvalid {
        proof: "inclusion proof",
        reason,
    };
    if index >= size {
        return Err(fail("the leaf index is not below the tree size"));
    }
    if proof.len() > PROOF_HASHES_MAX {
        return Err(fail("the proof is longer than any tree needs"));
    }
    let (mut f_n, mut s_n) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s_n == 0 {
            return Err(fail("the proof is longer than the tree is deep"));
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(fail("the proof is shorter than the tree is deep"));
    }
    Ok(r)
}

/// Checks that the tree of `old_size` leaves with root `old_root` is a prefix of the tree of
/// `new_size` leaves with root `new_root` (RFC 9162 §2.1.4.2). An empty old tree is a prefix of
/// every tree; equal sizes need equal roots and an empty proof.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<()> {
    let fail = |reason| Error::ProofInvalid {
        proof: "consistency proof",
        reason,
    };
    if old_size > new_size {
        return Err(fail("the old size exceeds the new size"));
    }
    if proof.len() > PROOF_HASHES_MAX {
        return Err(fail("the proof is longer than any tree needs"));
    }
    if old_size == 0 {
        return if proof.is_empty() {
            Ok(())
        } else {
            Err(fail("a proof from the empty tree must be empty"))
        };
    }
    if old_size == new_size {
        if !proof.is_empty() {
            return Err(fail("a proof between equal sizes must be empty"));
        }
        return if old_root == new_root {
            Ok(())
        } else {
            Err(fail("two trees of the same size have different roots"))
        };
    }
    let Some((first, rest)) = proof.split_first() else {
        return Err(fail("the proof is empty"));
    };
    // When the old tree is a complete subtree, its root is the proof's implicit first node.
    let (seed, path) = if old_size.is_power_of_two() {
        (*old_root, proof)
    } else {
        (*first, rest)
    };
    let (mut f_n, mut s_n) = (old_size - 1, new_size - 1);
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let (mut f_r, mut s_r) = (seed, seed);
    for c in path {
        if s_n == 0 {
            return Err(fail("the proof is longer than the tree is deep"));
        }
        if f_n & 1 == 1 || f_n == s_n {
            f_r = node_hash(c, &f_r);
            s_r = node_hash(c, &s_r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            s_r = node_hash(&s_r, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(fail("the proof is shorter than the tree is deep"));
    }
    if f_r != *old_root {
        return Err(fail("the proof does not lead to the old root"));
    }
    if s_r != *new_root {
        return Err(fail("the proof does not lead to the new root"));
    }
    Ok(())
}

#[cfg(test)]
#[path = "merkle_tests.rs"]
mod tests;
