//! Predicates for `skip_serializing_if`, so that zero counts and `false` flags are omitted as
//! Velero omits them (`omitempty`) and objects round-trip unchanged.

pub(crate) fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

pub(crate) fn is_false(b: &bool) -> bool {
    !*b
}
