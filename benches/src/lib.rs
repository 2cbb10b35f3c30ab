//! Benchmarks of async-cache beside moka and quick_cache.

/// DESIGN.md's benchmark keys: `key_of(i)`, never sequential.
pub fn key_of(i: u64) -> u64 {
    i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5555_5555
}

/// BENCHMARKS.md's section written by the `tier` bench starts here and
/// ends at [`TIER_END`]; the `compare` bench keeps it when it rewrites
/// the rest of the file.
pub const TIER_BEGIN: &str = "<!-- tier bench: begin -->";
/// See [`TIER_BEGIN`].
pub const TIER_END: &str = "<!-- tier bench: end -->";
