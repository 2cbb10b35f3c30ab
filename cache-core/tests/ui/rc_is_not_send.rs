// `Cache<K, V>` is `Send`/`Sync` only when `K` and `V` are.
use std::rc::Rc;

use cache_core::Cache;

fn assert_send<T: Send>() {}

fn main() {
    assert_send::<Cache<Rc<u8>, u8>>();
}
