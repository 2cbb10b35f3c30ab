use async_cache::cached;

#[cached(maxsize = 10, policy = "lfu")]
async fn f(n: u8) -> u8 {
    n
}

fn main() {}
