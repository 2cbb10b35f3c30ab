use async_cache::cached;

fn ttl_from_config() -> String {
    "60".to_string()
}

#[cached(ttl = ttl_from_config())]
async fn f(n: u8) -> u8 {
    n
}

fn main() {}
