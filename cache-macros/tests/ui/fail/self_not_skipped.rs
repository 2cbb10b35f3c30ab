use async_cache::cached;

struct Service;

impl Service {
    #[cached]
    async fn lookup(&self, id: u64) -> u64 {
        id
    }
}

fn main() {}
