//! A content fingerprint (64-bit FNV-1a) for versioning what a node builds
//! or embeds: the Redis Function library's version and the ETags of the
//! embedded browser files. Not for anything an attacker chooses.

pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
