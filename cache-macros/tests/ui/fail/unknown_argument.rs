use async_cache::cached;

#[cached(max_size = 10)]
async fn typo(id: u64) -> u64 {
    id
}

fn main() {}
