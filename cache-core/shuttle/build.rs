//! Compiles cache-core's sources with `cfg(shuttle)`.
fn main() {
    println!("cargo::rustc-cfg=shuttle");
    // cache-core's features, never enabled in this build.
    println!("cargo::rustc-check-cfg=cfg(feature, values(\"persist\", \"tier\"))");
}
