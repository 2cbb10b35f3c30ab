//! The `#[cached]` attribute of async-cache. Not intended to be used
//! directly: use `async_cache::cached`, documented there.

mod args;
mod expand;

use proc_macro::TokenStream;

/// Caches an async function's results; see `async_cache::cached`.
#[proc_macro_attribute]
pub fn cached(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::cached(args.into(), item.into()).into()
}
