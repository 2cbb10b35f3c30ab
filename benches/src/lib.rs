//! Benchmarks of async-cache beside moka and quick_cache.

/// DESIGN.md's benchmark keys: `key_of(i)`, never sequential.
pub fn key_of(i: u64) -> u64 {
    i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5555_5555
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
