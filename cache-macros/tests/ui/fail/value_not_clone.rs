use async_cache::cached;

struct User;

#[cached]
async fn get_user(id: u64) -> Option<User> {
    let _ = id;
    Some(User)
}

fn main() {}
