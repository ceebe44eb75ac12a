//! Comparing secrets (passwords, keys, token digests) without leaking where they differ.

use subtle::ConstantTimeEq as _;

/// True when `a` and `b` are equal, in a time that does not depend on where they differ (only
/// on their lengths, which are not secret here).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_only_when_equal() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
