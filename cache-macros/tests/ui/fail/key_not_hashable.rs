use async_cache::cached;

#[derive(Clone, PartialEq)]
struct Query {
    radius: f64,
}

#[cached]
async fn nearby(query: Query) -> u32 {
    query.radius as u32
}

fn main() {}
