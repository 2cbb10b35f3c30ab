//! What `#[cached]` turns a function into; see the facade's `cached.md` for
//! the expansion of a typical function.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Error, FnArg, Ident, ItemFn, Pat, ReturnType, Type};

use crate::args::{Args, MaxSize, Policy, Ttl};

/// Expands the attribute; on error, the function is emitted unchanged next
/// to the `compile_error!`, so IDEs and the rest of the crate keep working.
pub(crate) fn cached(args: TokenStream, item: TokenStream) -> TokenStream {
    match expand(args, item.clone()) {
        Ok(expanded) => expanded,
        Err(error) => {
            let mut out = item;
            out.extend(error.into_compile_error());
            out
        }
    }
}

/// How the return type is cached.
enum Mode {
    /// `Result<T, E>` (or an alias): `Ok` only.
    Result,
    /// `Option<T>`: `Some` only.
    Option,
    /// Anything else: the value.
    Value,
}

fn mode(ret: &Type) -> Mode {
    if let Type::Path(path) = ret
        && let Some(last) = path.path.segments.last()
    {
        match last.ident.to_string().as_str() {
            "Result" => return Mode::Result,
            "Option" => return Mode::Option,
            _ => {}
        }
    }
    Mode::Value
}

/// One argument of the function.
struct Arg {
    name: Ident,
    ty: Type,
}

fn expand(args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let args: Args = syn::parse2(args)?;
    let func: ItemFn = syn::parse2(item)?;
    check_signature(&func.sig)?;
    let key_args = key_arguments(&func.sig, &args)?;
    let krate = args.krate();
    let private = quote!(#krate::__private);
    let key = key(&args, &key_args);
    let returns = Returns::of(&func.sig, &private);
    check_options(&args, &func.sig, &returns)?;
    let id = expansion_id(&func.sig.ident);
    let name = cache_name(&args, &func.sig.ident);
    let find_cache = site(&args, &id, &name, &key.ty, &returns.value_type, &private);
    let kept = kept(&args, &id, &name, &key.ty, &returns, &private);
    let checks = checks(&args, &key_args, &returns, &private);
    Ok(items(&func, &args, &returns, &private, key, find_cache, kept, checks))
}

/// Which options fit the function: `cache_none` needs an `Option`,
/// `cache_err_for` a `Result`; `refresh_after`, `stale_for` and
/// `load_timeout_ms` run the body as a task of its own (`fetch`), so they
/// need every argument owned, and a value or `Result` to return.
fn check_options(args: &Args, sig: &syn::Signature, returns: &Returns) -> syn::Result<()> {
    if let (Some(name), false) = (&args.cache_none, matches!(returns.mode, Mode::Option)) {
        return Err(Error::new_spanned(
            name,
            "`cache_none` caches `None` results: the function must return an `Option`",
        ));
    }
    if let (Some((name, _)), false) = (&args.cache_err_for, matches!(returns.mode, Mode::Result)) {
        return Err(Error::new_spanned(
            name,
            "`cache_err_for` caches `Err` results: the function must return a `Result`",
        ));
    }
    let Some(option) = args.resilient() else { return Ok(()) };
    if matches!(returns.mode, Mode::Option) {
        return Err(Error::new_spanned(
            option,
            format!(
                "`{option}` needs a function returning a `Result` (a failed load can then be answered with a stale value) or a plain value, not an `Option`: return `Result<T, NotFound>`"
            ),
        ));
    }
    let why = format!(
        "`{option}` runs the function's body as a task of its own, which cannot borrow: every argument must be owned"
    );
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(receiver)
                if matches!(&receiver.kind, syn::ReceiverKind::Reference(..))
                    || matches!(&receiver.kind, syn::ReceiverKind::Typed(_, ty) if matches!(**ty, Type::Reference(_))) =>
            {
                return Err(Error::new_spanned(
                    receiver,
                    format!(
                        "{why}: take `self` by value (`self: Arc<Self>`), or pass what the body needs as owned arguments"
                    ),
                ));
            }
            FnArg::Typed(typed) if matches!(&*typed.ty, Type::Reference(_)) => {
                return Err(Error::new_spanned(
                    &typed.ty,
                    format!("{why}: take an owned type (`String` for `&str`, `T` or `Arc<T>` for `&T`)"),
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// What `#[cached]` cannot cache: a function that is not async, generic or
/// variadic.
fn check_signature(sig: &syn::Signature) -> syn::Result<()> {
    if sig.asyncness.is_none() {
        return Err(Error::new_spanned(
            sig.fn_token,
            "#[cached] caches async functions: make it `async fn`, or use a `Cache` directly",
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(Error::new_spanned(
            &sig.generics,
            "#[cached] cannot cache a generic function: it has one cache, of one key and value type. Make the function concrete, or use a `Cache` directly",
        ));
    }
    if let Some(variadic) = &sig.variadic {
        return Err(Error::new_spanned(variadic, "#[cached] cannot cache a variadic function"));
    }
    Ok(())
}

/// The arguments that make up the key: all but those in `skip(...)`, which
/// must each name an argument (`self` included).
fn key_arguments(sig: &syn::Signature, args: &Args) -> syn::Result<Vec<Arg>> {
    let mut key_args = Vec::new();
    let mut names = Vec::new();
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(receiver) => {
                if !args.skips("self") {
                    return Err(Error::new_spanned(
                        receiver.self_token,
                        "`self` cannot be part of the cache key: add `skip(self)` to share one cache between all instances, or key by a field with `key = ..., key_type = ...`",
                    ));
                }
                names.push("self".to_string());
            }
            FnArg::Typed(typed) => {
                let Pat::Ident(pat) = &*typed.pat else {
                    return Err(Error::new_spanned(
                        &typed.pat,
                        "#[cached] needs a plain name for each argument: bind it to a name and destructure inside the function",
                    ));
                };
                if pat.by_ref.is_some() || pat.subpat.is_some() {
                    return Err(Error::new_spanned(pat, "#[cached] needs a plain name for each argument"));
                }
                if let Type::ImplTrait(impl_trait) = &*typed.ty {
                    return Err(Error::new_spanned(
                        impl_trait,
                        "#[cached] cannot cache a generic function, and `impl Trait` arguments are generic: name a concrete type",
                    ));
                }
                names.push(pat.ident.to_string());
                if !args.skips(&pat.ident.to_string()) {
                    key_args.push(Arg { name: pat.ident.clone(), ty: (*typed.ty).clone() });
                }
            }
        }
    }
    if let Some(unknown) = args.skip.iter().find(|s| !names.contains(&s.to_string())) {
        return Err(Error::new_spanned(
            unknown,
            format!("`skip({unknown})`: the function has no argument `{unknown}`"),
        ));
    }
    Ok(key_args)
}

/// The key's type and the expression that makes it: `key = ..., key_type =
/// ...` if given, else the key arguments, owned, in a tuple.
fn key(args: &Args, key_args: &[Arg]) -> Key {
    match &args.key {
        Some((expr, ty)) => Key { ty: quote!(#ty), expr: quote!(#expr) },
        None => {
            let types = key_args.iter().map(|arg| owned_type(&arg.ty));
            let values = key_args.iter().map(|arg| {
                let name = &arg.name;
                match &arg.ty {
                    Type::Reference(_) => quote!(::std::borrow::ToOwned::to_owned(#name)),
                    _ => quote!(::std::clone::Clone::clone(&#name)),
                }
            });
            Key { ty: quote!((#(#types,)*)), expr: quote!((#(#values,)*)) }
        }
    }
}

/// The key's type and the expression that makes it from the arguments.
struct Key {
    ty: TokenStream,
    expr: TokenStream,
}

/// The function's return type and what the cache makes of it.
struct Returns {
    ret: Type,
    mode: Mode,
    /// What the cache stores: `T` itself when the return type spells it
    /// out, else a projection (for aliases such as `io::Result<T>`).
    value_type: TokenStream,
    error_type: TokenStream,
}

impl Returns {
    fn of(sig: &syn::Signature, private: &TokenStream) -> Self {
        let ret: Type = match &sig.output {
            ReturnType::Default => syn::parse_quote!(()),
            ReturnType::Type(_, ty) => (**ty).clone(),
        };
        let mode = mode(&ret);
        let spelled = generic_args(&ret);
        let value_type = match (&mode, spelled.as_slice()) {
            (Mode::Result, [ok, _]) | (Mode::Option, [ok]) => quote!(#ok),
            (Mode::Result, _) => quote_spanned!(ret.span()=> <#ret as #private::ResultParts>::Ok),
            (Mode::Option, _) => quote_spanned!(ret.span()=> <#ret as #private::OptionParts>::Some),
            (Mode::Value, _) => quote!(#ret),
        };
        let error_type = match spelled.as_slice() {
            [_, err] => quote!(#err),
            _ => quote!(<#ret as #private::ResultParts>::Err),
        };
        Returns { ret, mode, value_type, error_type }
    }
}

/// One id per expansion, shared by the function and its companions only:
/// two functions that one `macro_rules!` macro writes have the same span,
/// so the span cannot tell their caches apart; a counter of this
/// proc-macro process can (and `module_path!()` tells crates apart).
fn expansion_id(ident: &Ident) -> String {
    static EXPANSIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = EXPANSIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("::{ident}#{n}")
}

/// The cache's metrics name: `name = ".."`, else the function's path.
fn cache_name(args: &Args, ident: &Ident) -> TokenStream {
    match &args.name {
        Some(name) => quote!(#name),
        None => {
            let fn_name = ident.to_string();
            quote!(::std::concat!(::std::module_path!(), "::", #fn_name))
        }
    }
}

/// A setting in seconds (or milliseconds, through `millis`) as an
/// `Option<Duration>`, spanned where an expression is written.
fn duration(setting: Option<&Ttl>, convert: TokenStream) -> TokenStream {
    match setting {
        None => quote!(::core::option::Option::None),
        Some(Ttl::Secs(n)) => quote!(#convert(#n)),
        Some(Ttl::SecsF64(n)) => quote!(#convert(#n)),
        Some(Ttl::Expr(expr)) => quote_spanned!(expr.span()=> #convert(#expr)),
    }
}

/// `maxsize` as a `usize` expression. Expressions go in a closure the
/// cache's first use calls: evaluated once, spanned where they are written
/// so type errors point there.
fn max_size(args: &Args, private: &TokenStream) -> TokenStream {
    match &args.max_size {
        _ if args.unbounded => quote!(usize::MAX),
        None => quote!(128usize),
        Some(MaxSize::Lit(n)) => quote!(#n),
        Some(MaxSize::Expr(expr)) => quote_spanned!(expr.span()=> #private::max_size(#expr)),
    }
}

/// The expression that finds this function's cache, made on first use with
/// the attribute's settings.
fn site(
    args: &Args,
    id: &str,
    name: &TokenStream,
    key_type: &TokenStream,
    value_type: &TokenStream,
    private: &TokenStream,
) -> TokenStream {
    let max_size = max_size(args, private);
    let secs = quote!(#private::ttl);
    let ttl = duration(args.ttl.as_ref(), secs.clone());
    let refresh_after = duration(args.refresh_after.as_ref().map(|(_, t)| t), secs.clone());
    let stale_for = duration(args.stale_for.as_ref().map(|(_, t)| t), secs);
    let load_timeout = duration(args.load_timeout_ms.as_ref().map(|(_, t)| t), quote!(#private::millis));
    let policy = match args.policy {
        Policy::Lru => quote!(#private::Policy::Lru),
        Policy::TinyLfu => quote!(#private::Policy::TinyLfu),
    };
    let settings = quote! {
        #private::Settings {
            max_size: #max_size,
            ttl: #ttl,
            policy: #policy,
            refresh_after: #refresh_after,
            stale_for: #stale_for,
            load_timeout: #load_timeout,
        }
    };
    let id = quote!(::std::concat!(::std::module_path!(), #id));
    match &args.tier {
        Some(tier) => quote!(#private::site!(#id, #key_type, #value_type, #name, #settings, tier = #tier)),
        None => quote!(#private::site!(#id, #key_type, #value_type, #name, #settings)),
    }
}

/// With `cache_none` or `cache_err_for`: the expression that finds the
/// companion cache keeping `None`s (values `()`, the function's TTL) or
/// `Err`s (values `E`, `cache_err_for`'s TTL), and which of the two.
fn kept(
    args: &Args,
    id: &str,
    name: &TokenStream,
    key_type: &TokenStream,
    returns: &Returns,
    private: &TokenStream,
) -> Option<(TokenStream, Kept)> {
    let (value_type, ttl, kind) = if args.cache_none.is_some() {
        (quote!(()), duration(args.ttl.as_ref(), quote!(#private::ttl)), Kept::Nones)
    } else {
        let (_, secs) = args.cache_err_for.as_ref()?;
        let error_type = &returns.error_type;
        (quote!(#error_type), duration(Some(secs), quote!(#private::ttl)), Kept::Errors)
    };
    let max_size = max_size(args, private);
    let id = format!("{id}!kept");
    let settings = quote! {
        #private::Settings { max_size: #max_size, ttl: #ttl, ..::core::default::Default::default() }
    };
    let site = quote!(#private::site!(
        ::std::concat!(::std::module_path!(), #id), #key_type, #value_type, ::std::concat!(#name, ".kept"), #settings
    ));
    Some((site, kind))
}

/// What a companion cache keeps: see [`kept`].
#[derive(Clone, Copy)]
enum Kept {
    Nones,
    Errors,
}

/// Trait checks of the key and value types, spanned where the types are
/// written, so errors point at them.
fn checks(args: &Args, key_args: &[Arg], returns: &Returns, private: &TokenStream) -> TokenStream {
    let key_checks: Vec<TokenStream> = match &args.key {
        Some((_, ty)) => vec![quote_spanned!(ty.span()=> #private::key::<#ty>();)],
        None => key_args
            .iter()
            .map(|arg| {
                let owned = owned_type(&arg.ty);
                quote_spanned!(arg.ty.span()=> #private::key::<#owned>();)
            })
            .collect(),
    };
    let (ret, value_type) = (&returns.ret, &returns.value_type);
    let value_check = quote_spanned!(ret.span()=> #private::value::<#value_type>(););
    quote!(#(#key_checks)* #value_check)
}

/// The function, rewritten to load through its cache, and its companions
/// `_cache`, `_invalidate` and `_refresh`.
#[allow(clippy::too_many_arguments)]
fn items(
    func: &ItemFn,
    args: &Args,
    returns: &Returns,
    private: &TokenStream,
    key: Key,
    find_cache: TokenStream,
    kept: Option<(TokenStream, Kept)>,
    checks: TokenStream,
) -> TokenStream {
    let sig = &func.sig;
    let ret = &returns.ret;
    // The body, run as a loader. `let __ret: Ret` fixes the block's type, so
    // `?` and `return` inside it work as in the function.
    let block = &func.block;
    let body = quote! {
        async move {
            let __ret: #ret = #block;
            #[allow(unreachable_code)]
            __ret
        }
    };
    let error_type = &returns.error_type;
    let load = match (&returns.mode, args.resilient().is_some()) {
        (Mode::Value, false) => quote!(#private::load_value(__cache, __key, move || #body)),
        (Mode::Option, _) => quote!(#private::load_option(__cache, __key, move || #body)),
        (Mode::Result, false) => quote! {
            // Shared by cloning when the error type is `Clone`, else each
            // waiter of a failed load makes its own attempt.
            #private::load_result(__cache, __key, #private::sharer!(#error_type), move || #body)
        },
        // Through `fetch`: the body runs as a task of its own.
        (Mode::Value, true) => quote!(#private::fetch_value(__cache, __key, move || #body)),
        (Mode::Result, true) => quote!(#private::fetch_result(__cache, __key, move || #body)),
    };
    // Kept `None`s or `Err`s answer before the cache is asked.
    let (load, keep_on_refresh, forget) = match &kept {
        None => (quote!(#load.await), quote!(), quote!(false)),
        Some((site, kind)) => {
            let (with, keep) = match kind {
                Kept::Nones => (quote!(#private::with_kept_nones), quote!(#private::keep_none)),
                Kept::Errors => (quote!(#private::with_kept_errors), quote!(#private::keep_error)),
            };
            (
                quote!(#with(#site, ::std::clone::Clone::clone(&__key), #load).await),
                quote!(#keep(#site, ::std::clone::Clone::clone(&__key), &__ret);),
                quote!(#site.remove(&__key).is_some()),
            )
        }
    };
    let store = match returns.mode {
        Mode::Value => quote!(#private::store_value),
        Mode::Option => quote!(#private::store_option),
        Mode::Result => quote!(#private::store_result),
    };

    let Key { ty: key_type, expr: key_expr } = key;
    let value_type = &returns.value_type;
    let cache_type = quote!(#private::Cache<#key_type, #value_type>);
    let attrs = &func.attrs;
    let vis = &func.vis;
    let inputs = &sig.inputs;
    let ident = &sig.ident;
    let cache_fn = format_ident!("{}_cache", ident);
    let invalidate_fn = format_ident!("{}_invalidate", ident);
    let refresh_fn = format_ident!("{}_refresh", ident);
    let fn_name = ident.to_string();
    let cache_doc =
        format!("The cache of `{fn_name}` (generated by `#[cached]`), for `metrics()`, `clear()` and the like.");
    let invalidate_doc = format!(
        "Removes what `{fn_name}` cached for these arguments; returns whether there was anything (generated by `#[cached]`)."
    );
    let refresh_doc = format!(
        "Runs `{fn_name}` afresh, bypassing its cache, stores what it returns (`Ok`/`Some` only) and returns it (generated by `#[cached]`)."
    );

    quote! {
        #(#attrs)*
        #vis #sig {
            #checks
            let __cache = #find_cache;
            #[allow(clippy::clone_on_copy, clippy::redundant_clone)]
            let __key: #key_type = #key_expr;
            #load
        }

        #[doc = #cache_doc]
        #vis fn #cache_fn() -> &'static #cache_type {
            #find_cache
        }

        #[doc = #invalidate_doc]
        #[allow(unused_variables)]
        #vis fn #invalidate_fn(#inputs) -> bool {
            #[allow(clippy::clone_on_copy, clippy::redundant_clone)]
            let __key: #key_type = #key_expr;
            #private::invalidate(#find_cache, &__key) | #forget
        }

        #[doc = #refresh_doc]
        #vis async fn #refresh_fn(#inputs) -> #ret {
            #[allow(clippy::clone_on_copy, clippy::redundant_clone)]
            let __key: #key_type = #key_expr;
            let __ret: #ret = #body.await;
            #keep_on_refresh
            #store(#find_cache, __key, &__ret);
            __ret
        }
    }
}

/// The generic arguments of a path type's last segment (`T, E` of
/// `Result<T, E>`), if it has exactly types there.
fn generic_args(ty: &Type) -> Vec<Type> {
    let Type::Path(path) = ty else {
        return Vec::new();
    };
    let Some(last) = path.path.segments.last() else {
        return Vec::new();
    };
    let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
        return Vec::new();
    };
    args.args
        .iter()
        .map(|arg| match arg {
            syn::GenericArgument::Type(ty) => Some(ty.clone()),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()
        .unwrap_or_default()
}

/// The owned type an argument's key part has: `&T` becomes `T::Owned`,
/// written as `String` for `&str` and `Vec<T>` for `&[T]`.
fn owned_type(ty: &Type) -> TokenStream {
    match ty {
        Type::Reference(reference) => match &*reference.elem {
            Type::Path(path) if path.path.is_ident("str") => quote!(::std::string::String),
            Type::Slice(slice) => {
                let elem = &slice.elem;
                quote!(::std::vec::Vec<#elem>)
            }
            elem => quote!(<#elem as ::std::borrow::ToOwned>::Owned),
        },
        Type::Paren(paren) => owned_type(&paren.elem),
        Type::Group(group) => owned_type(&group.elem),
        other => quote!(#other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand_str(args: TokenStream, item: TokenStream) -> String {
        cached(args, item).to_string()
    }

    #[test]
    fn a_typical_function_keeps_its_signature_and_gets_three_companions() {
        let out = expand_str(
            quote!(maxsize = 1000, ttl = 60),
            quote!(
                pub async fn get_user(id: u64, name: &str) -> Result<User, DbError> {
                    db(id).await
                }
            ),
        );
        for expected in [
            "pub async fn get_user (id : u64 , name : & str) -> Result < User , DbError >",
            "pub fn get_user_cache ()",
            "pub fn get_user_invalidate (id : u64 , name : & str) -> bool",
            "pub async fn get_user_refresh (id : u64 , name : & str) -> Result < User , DbError >",
            "load_result",
            "\"::get_user#",
            ") , (u64 , :: std :: string :: String ,) , User ,",
            "max_size : 1000usize , ttl : :: async_cache :: __private :: ttl (60u64) , policy : :: async_cache :: __private :: Policy :: Lru ,",
            "sharer ! (DbError)",
        ] {
            assert!(out.contains(expected), "missing `{expected}` in\n{out}");
        }
    }

    #[test]
    fn the_mode_follows_the_return_type() {
        let option = expand_str(
            quote!(),
            quote!(
                async fn f(id: u64) -> Option<u8> {
                    None
                }
            ),
        );
        assert!(option.contains("load_option") && option.contains("store_option"));
        let value = expand_str(
            quote!(unbounded),
            quote!(
                async fn f() -> u8 {
                    1
                }
            ),
        );
        assert!(
            value.contains("load_value")
                && value.contains("max_size : usize :: MAX , ttl : :: core :: option :: Option :: None ,"),
            "{value}"
        );
        assert!(value.contains("let __key : () = ()"), "no argument: the key is ()\n{value}");
    }

    #[test]
    fn errors_keep_the_function_and_say_what_to_do() {
        let out = expand_str(
            quote!(),
            quote!(
                fn not_async() -> u8 {
                    1
                }
            ),
        );
        assert!(out.contains("fn not_async"), "the item is still emitted");
        assert!(out.contains("make it `async fn`"));
        let out = expand_str(
            quote!(),
            quote!(
                async fn generic<T>(t: T) -> u8 {
                    1
                }
            ),
        );
        assert!(out.contains("generic function"));
        let out = expand_str(
            quote!(),
            quote!(
                async fn method(&self, id: u64) -> u8 {
                    1
                }
            ),
        );
        assert!(out.contains("skip(self)"));
        let out = expand_str(
            quote!(skip(db)),
            quote!(
                async fn f(id: u64) -> u8 {
                    1
                }
            ),
        );
        assert!(out.contains("no argument `db`"));
        let out = expand_str(
            quote!(),
            quote!(
                async fn f((a, b): (u8, u8)) -> u8 {
                    a
                }
            ),
        );
        assert!(out.contains("plain name"));
        let out = expand_str(
            quote!(),
            quote!(
                async fn f(x: impl Into<u8>) -> u8 {
                    1
                }
            ),
        );
        assert!(out.contains("impl Trait"));
    }
}

#[cfg(test)]
mod show {
    /// `SHOW_EXPANSION=1 cargo test -p cache-macros show -- --nocapture` prints the
    /// expansion pasted in the facade's `cached.md`.
    #[test]
    fn print_expansion() {
        let out = super::cached(
            quote::quote!(maxsize = 1000, ttl = 60),
            quote::quote!(
                pub async fn get_user(id: u64) -> Result<User, DbError> {
                    db::load_user(id).await
                }
            ),
        );
        if std::env::var_os("SHOW_EXPANSION").is_some() {
            println!("{out}");
        }
        let out = out.to_string();
        assert!(!out.contains("compile_error"), "{out}");
        // What the docs' expansion shows: the function and its three
        // companions, each finding the cache through `site!`.
        for item in
            ["async fn get_user (", "fn get_user_cache (", "fn get_user_invalidate (", "async fn get_user_refresh ("]
        {
            assert_eq!(out.matches(item).count(), 1, "`{item}` once in\n{out}");
        }
        assert_eq!(out.matches("site !").count(), 4, "{out}");
    }
}
