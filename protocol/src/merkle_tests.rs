//! Tests of [`super`]: the published RFC 6962 vectors, then properties over every small tree.

use proptest::prelude::*;

use super::*;

fn unhex(s: &str) -> Hash {
    let bytes = hex::decode(s).expect("hex");
    bytes.try_into().expect("32 bytes")
}

/// The Certificate Transparency reference leaves (data only, from RFC 6962 test suites).
fn reference_leaves() -> Vec<Vec<u8>> {
    [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
    .iter()
    .map(|h| hex::decode(h).expect("hex"))
    .collect()
}

/// The published root for every size 0..=8 of the reference tree.
const REFERENCE_ROOTS: [&str; 9] = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

fn reference_tree() -> MerkleTree {
    let mut tree = MerkleTree::new();
    for leaf in reference_leaves() {
        tree.push(leaf_hash(&leaf));
    }
    tree
}

#[test]
fn roots_match_the_published_rfc6962_vectors() {
    let tree = reference_tree();
    for (size, expected) in REFERENCE_ROOTS.iter().enumerate() {
        assert_eq!(
            tree.root(size as u64).expect("root"),
            unhex(expected),
            "size {size}"
        );
    }
}

#[test]
fn proofs_match_the_published_rfc6962_vectors() {
    let tree = reference_tree();
    let inclusion: [(u64, &[&str]); 2] = [
        (
            0,
            &[
                "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            5,
            &[
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
    ];
    for (index, expected) in inclusion {
        let proof = tree.inclusion_proof(index, 8).expect("proof");
        let expected: Vec<Hash> = expected.iter().map(|h| unhex(h)).collect();
        assert_eq!(proof, expected, "inclusion of {index} in 8");
    }
    let consistency: [(u64, u64, &[&str]); 3] = [
        (
            2,
            8,
            &[
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
            ],
        ),
        (
            6,
            8,
            &[
                "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            ],
        ),
        (
            2,
            5,
            &[
                "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            ],
        ),
    ];
    for (old, new, expected) in consistency {
        let proof = tree.consistency_proof(old, new).expect("proof");
        let expected: Vec<Hash> = expected.iter().map(|h| unhex(h)).collect();
        assert_eq!(proof, expected, "consistency {old} -> {new}");
        let (old_root, new_root) = (tree.root(old).expect("old"), tree.root(new).expect("new"));
        verify_consistency(old, new, &old_root, &new_root, &proof).expect("verifies");
    }
}

/// Leaves 0..n, distinct and cheap.
fn leaves(n: usize) -> Vec<Hash> {
    (0..n)
        .map(|i| leaf_hash(&(i as u64).to_be_bytes()))
        .collect()
}

fn tree_of(leaves: &[Hash]) -> MerkleTree {
    let mut tree = MerkleTree::new();
    for leaf in leaves {
        tree.push(*leaf);
    }
    tree
}

#[test]
fn every_proof_of_every_small_tree_verifies_and_its_neighbours_do_not() {
    let all = leaves(33);
    let tree = tree_of(&all);
    for size in 1..=all.len() as u64 {
        let root = tree.root(size).expect("root");
        assert_eq!(root, root_of(&all[..size as usize]), "root {size}");
        for index in 0..size {
            let leaf = all[index as usize];
            let proof = tree.inclusion_proof(index, size).expect("proof");
            verify_inclusion(&leaf, index, size, &proof, &root).expect("inclusion verifies");
            if size > 1 {
                let other = (index + 1) % size;
                assert!(verify_inclusion(&leaf, other, size, &proof, &root).is_err());
            }
            let mut wrong_root = root;
            wrong_root[0] ^= 1;
            assert!(verify_inclusion(&leaf, index, size, &proof, &wrong_root).is_err());
        }
        for old in 0..=size {
            let old_root = tree.root(old).expect("old root");
            let proof = tree.consistency_proof(old, size).expect("proof");
            verify_consistency(old, size, &old_root, &root, &proof).expect("consistency");
            if old > 0 && old < size {
                assert!(verify_consistency(old, size, &root, &old_root, &proof).is_err());
                assert!(verify_consistency(old - 1, size, &old_root, &root, &proof).is_err());
            }
        }
    }
}

#[test]
fn sizes_beyond_the_log_are_refused() {
    let tree = tree_of(&leaves(5));
    assert!(tree.root(6).is_err());
    assert!(tree.inclusion_proof(5, 5).is_err());
    assert!(tree.consistency_proof(3, 6).is_err());
    assert!(tree.consistency_proof(4, 3).is_err());
    assert_eq!(tree.size(), 5);
    assert_eq!(tree.leaf(4), Some(leaves(5)[4]));
    assert_eq!(tree.leaf(5), None);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn a_tampered_inclusion_proof_never_verifies(
        size in 1u64..200,
        index_seed in any::<u64>(),
        which in any::<usize>(),
        bit in 0u8..8,
    ) {
        let all = leaves(size as usize);
        let tree = tree_of(&all);
        let index = index_seed % size;
        let root = tree.root(size).expect("root");
        let mut proof = tree.inclusion_proof(index, size).expect("proof");
        prop_assert!(verify_inclusion(&all[index as usize], index, size, &proof, &root).is_ok());
        if proof.is_empty() {
            // A one-leaf tree: tamper with the leaf instead.
            let mut leaf = all[0];
            leaf[0] ^= 1 << bit;
            prop_assert!(verify_inclusion(&leaf, 0, 1, &proof, &root).is_err());
        } else {
            let at = which % proof.len();
            proof[at][which % 32] ^= 1 << bit;
            prop_assert!(verify_inclusion(&all[index as usize], index, size, &proof, &root).is_err());
            proof[at][which % 32] ^= 1 << bit;
            proof.pop();
            prop_assert!(verify_inclusion(&all[index as usize], index, size, &proof, &root).is_err());
        }
    }

    #[test]
    fn a_tampered_consistency_proof_never_verifies(
        new in 2u64..200,
        old_seed in any::<u64>(),
        which in any::<usize>(),
        bit in 0u8..8,
    ) {
        let tree = tree_of(&leaves(new as usize));
        let old = 1 + old_seed % (new - 1);
        let (old_root, new_root) = (tree.root(old).expect("old"), tree.root(new).expect("new"));
        let mut proof = tree.consistency_proof(old, new).expect("proof");
        prop_assert!(verify_consistency(old, new, &old_root, &new_root, &proof).is_ok());
        let at = which % proof.len();
        proof[at][which % 32] ^= 1 << bit;
        prop_assert!(verify_consistency(old, new, &old_root, &new_root, &proof).is_err());
        proof[at][which % 32] ^= 1 << bit;
        let mut forked = new_root;
        forked[which % 32] ^= 1 << bit;
        prop_assert!(verify_consistency(old, new, &old_root, &forked, &proof).is_err());
        let mut longer = proof.clone();
        longer.push(new_root);
        prop_assert!(verify_consistency(old, new, &old_root, &new_root, &longer).is_err());
    }

    #[test]
    fn garbage_proofs_never_panic(
        size in 0u64..1_000_000,
        other in 0u64..1_000_000,
        proof in proptest::collection::vec(any::<[u8; 32]>(), 0..140),
    ) {
        let root = [7u8; 32];
        let _ = verify_inclusion(&root, other, size, &proof, &root);
        let _ = verify_consistency(other, size, &root, &root, &proof);
    }
}
