use async_cache::cached;

#[cached(key = id.to_string())]
async fn keyed(id: u64) -> u64 {
    id
}

fn main() {}
