//! The `#[cached]` attribute of async-cache. Not intended to be used
//! directly: use `async_cache::cached`.

use proc_macro::TokenStream;

/// Caches an async function's results; documented in `async_cache`.
#[proc_macro_attribute]
pub fn cached(_args: TokenStream, item: TokenStream) -> TokenStream {
    item
}
