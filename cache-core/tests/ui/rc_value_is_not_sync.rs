// A value that is not `Sync` (shared between every reader) makes the cache
// neither `Send` nor `Sync`.
use std::cell::Cell;

use cache_core::Cache;

fn assert_sync<T: Sync>() {}

fn main() {
    assert_sync::<Cache<u8, Cell<u8>>>();
}
