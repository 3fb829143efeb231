//! The open-files limit: raised from soft to hard at start, because every
//! socket is a file and the default soft limit (often 1024) is far below
//! what a load test holds.

/// Raise the soft `RLIMIT_NOFILE` to the hard limit; returns the new soft
/// limit (or a conservative 1024 if it cannot be read).
pub fn raise_to_hard() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_soft_limit_ends_at_the_hard_limit() {
        let soft = super::raise_to_hard();
        let (now_soft, hard) = rlimit::Resource::NOFILE.get().unwrap();
        assert_eq!(soft, now_soft);
        assert_eq!(now_soft, hard);
    }
}
