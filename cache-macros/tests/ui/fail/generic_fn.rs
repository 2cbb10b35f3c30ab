use async_cache::cached;

#[cached]
async fn generic<T: Clone>(value: T) -> T {
    value
}

fn main() {}
