//! The user's hooks into the engine, one binary (each test binary links
//! and instantiates the engine again: fewer build faster): load observers
//! and the counters' identities, the removal listener, idle expiry, `iter`/`retain`, the
//! weigher, and a custom hasher.

mod hasher;
mod idle;
mod iter;
mod listener;
mod observe;
mod weight;
