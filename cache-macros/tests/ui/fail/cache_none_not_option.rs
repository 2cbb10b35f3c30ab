use async_cache::cached;

#[cached(cache_none = true)]
async fn lookup(id: u64) -> Result<u64, String> {
    Ok(id)
}

fn main() {}
