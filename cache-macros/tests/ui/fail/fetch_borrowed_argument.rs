use async_cache::cached;

#[cached(ttl = 60, stale_for = 600)]
async fn price(item: &str) -> Result<u64, String> {
    Ok(item.len() as u64)
}

fn main() {}
