//! The shapes #[cached] is for, all compiling without warnings.
#![deny(warnings, missing_docs)]

use std::sync::Arc;

use async_cache::cached;

/// A user.
#[derive(Clone)]
pub struct User;

/// A database error.
#[derive(Debug)]
pub struct DbError;

/// A free function returning a `Result`.
#[cached(maxsize = 1000, ttl = 60)]
pub async fn get_user(id: u64) -> Result<User, DbError> {
    let _ = id;
    Ok(User)
}

/// `Option`, borrowed arguments, no TTL.
#[cached(unbounded)]
pub async fn find(name: &str, tags: &[u8]) -> Option<Arc<String>> {
    Some(Arc::new(format!("{name}{}", tags.len())))
}

/// A plain value and no arguments.
#[cached]
pub async fn config() -> u32 {
    7
}

/// A service.
pub struct Service;

impl Service {
    /// A method, `self` skipped.
    #[cached(skip(self), key = id.to_string(), key_type = String, name = "service.lookup")]
    pub async fn lookup(&self, id: u64) -> Result<u64, std::io::Error> {
        Ok(id)
    }
}

fn main() {
    let _ = (get_user_cache(), find_cache(), config_cache(), Service::lookup_cache());
}
