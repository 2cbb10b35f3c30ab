//! Compiles cache-core's sources with `cfg(shuttle)`.
fn main() {
    println!("cargo::rustc-cfg=shuttle");
}
