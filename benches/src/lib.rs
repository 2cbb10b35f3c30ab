//! Benchmarks of async-cache beside moka and quick_cache.

/// DESIGN.md's benchmark keys: `key_of(i)`, never sequential.
pub fn key_of(i: u64) -> u64 {
    i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5555_5555
}

/// DESIGN.md's memory workload: 1,000,000 `u64 -> u64` entries
/// `key_of(i) -> i` in a cache of capacity 1,000,000, measured as the peak
/// RSS growth of a process that holds one cache. Shared by the `compare`
/// bench's child processes and the `bench-memory` binary, which builds
/// async-cache with its default features (`compare` turns on `file`, which
/// adds a recency stamp to each entry): one loop, measured in both builds.
pub mod memory {
    use std::any::Any;
    use std::hint::black_box;
    use std::time::Duration;

    use async_cache::{Cache, Policy};

    use super::key_of;

    /// Entries the workload inserts, and the caches' capacity.
    pub const ENTRIES: u64 = 1_000_000;

    /// Bytes an entry: the peak RSS of this process while `fill` builds
    /// and returns a cache, over its RSS before. Linux only (reads
    /// `/proc/self/status`); one cache per process, as the peak is never
    /// lowered.
    pub fn bytes_per_entry(fill: impl FnOnce() -> Box<dyn Any>) -> f64 {
        let before = rss_kb("VmRSS:");
        let held = fill();
        let peak = rss_kb("VmHWM:");
        black_box(&held);
        (peak - before) as f64 * 1024.0 / ENTRIES as f64
    }

    /// async-cache on the workload: with a one-hour default TTL if `ttl`,
    /// under `policy`.
    pub fn ours(ttl: bool, policy: Policy) -> Box<dyn Any> {
        let mut builder = Cache::<u64, u64>::builder().max_size(ENTRIES as usize).policy(policy);
        if ttl {
            builder = builder.default_ttl(Duration::from_secs(3_600));
        }
        let cache = builder.build();
        for k in 0..ENTRIES {
            cache.insert(key_of(k), k);
        }
        assert_eq!(cache.len(), ENTRIES as usize, "every entry stays");
        Box::new(cache)
    }

    fn rss_kb(field: &str) -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
        let line = status.lines().find(|l| l.starts_with(field)).expect("the field");
        line.split_whitespace().nth(1).and_then(|kb| kb.parse().ok()).expect("a size in kB")
    }
}

/// The sections of BENCHMARKS.md that the `compare` bench does not write
/// (the `tier` bench's, the persistence figures): each between
/// `<!-- section NAME -->` and `<!-- /section NAME -->`, kept when
/// `compare` rewrites the rest of the file.
pub fn sections(doc: &str) -> String {
    let mut kept = String::new();
    let mut rest = doc;
    while let Some(begin) = rest.find("<!-- section ") {
        let name_end = rest[begin..].find(" -->").map_or(rest.len(), |i| begin + i);
        let end_marker = format!("<!-- /section {} -->", &rest[begin + "<!-- section ".len()..name_end]);
        let Some(end) = rest[begin..].find(&end_marker).map(|i| begin + i + end_marker.len()) else { break };
        kept.push_str(&rest[begin..end]);
        kept.push_str("\n\n");
        rest = &rest[end..];
    }
    kept
}

/// `doc` with the section `name` (see [`sections`]) replaced by `body`, or
/// `body` appended as that section.
pub fn with_section(doc: &str, name: &str, body: &str) -> String {
    let (begin, end) = (format!("<!-- section {name} -->"), format!("<!-- /section {name} -->"));
    let section = format!("{begin}\n{}\n{end}", body.trim_end());
    match (doc.find(&begin), doc.find(&end)) {
        (Some(b), Some(e)) if b < e => format!("{}{section}{}", &doc[..b], &doc[e + end.len()..]),
        _ => format!("{}\n\n{section}\n", doc.trim_end()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The memory workload's measure counts memory the filler touched
    /// (pages allocated but never written would not count, so each byte
    /// is written).
    #[test]
    fn bytes_per_entry_counts_what_the_fill_touched() {
        let bytes = memory::bytes_per_entry(|| Box::new(vec![1u8; memory::ENTRIES as usize * 64]));
        assert!(bytes >= 63.0, "64 bytes an entry touched, {bytes} measured");
    }

    #[test]
    fn sections_are_kept_and_replaced() {
        let doc = with_section("# Benchmarks\n", "tier", "old");
        let doc = with_section(&doc, "persistence", "saves");
        let doc = with_section(&doc, "tier", "new");
        assert_eq!(doc.matches("<!-- section tier -->").count(), 1);
        assert!(doc.contains("new") && !doc.contains("old"));
        let kept = sections(&doc);
        assert!(kept.contains("new") && kept.contains("saves") && !kept.contains("# Benchmarks"));
    }
}
