use async_cache::cached;

#[cached]
fn not_async(id: u64) -> u64 {
    id
}

fn main() {}
