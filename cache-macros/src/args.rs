//! The attribute's arguments: `#[cached(maxsize = 1000, ttl = 60, ...)]`.

use proc_macro2::Span;
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::{Error, Expr, Ident, Lit, LitStr, Path, Result, Token, Type};

const KNOWN: &str = "maxsize, unbounded, ttl, policy, name, skip(...), key, key_type, refresh_after, stale_for, load_timeout_ms, cache_none, cache_err_for, tier, crate";

/// A TTL in whole or fractional seconds (a literal, checked positive and
/// finite here), or any expression, evaluated once at first use.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Ttl {
    Secs(u64),
    SecsF64(f64),
    Expr(Box<Expr>),
}

/// `maxsize`: a literal, or any expression, evaluated once at first use.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum MaxSize {
    Lit(usize),
    Expr(Box<Expr>),
}

/// `policy = "lru"` (the default) or `policy = "tinylfu"`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) enum Policy {
    #[default]
    Lru,
    TinyLfu,
}

#[derive(Default)]
pub(crate) struct Args {
    /// `None`: the default, 128.
    pub(crate) max_size: Option<MaxSize>,
    pub(crate) unbounded: bool,
    pub(crate) ttl: Option<Ttl>,
    pub(crate) policy: Policy,
    pub(crate) name: Option<LitStr>,
    /// `self` appears as an identifier named `self`.
    pub(crate) skip: Vec<Ident>,
    pub(crate) key: Option<(Expr, Type)>,
    pub(crate) krate: Option<Path>,
    /// `refresh_after`, `stale_for` (seconds) and `load_timeout_ms`, each
    /// with the name it was given by: the function then loads through
    /// `fetch`.
    pub(crate) refresh_after: Option<(Ident, Ttl)>,
    pub(crate) stale_for: Option<(Ident, Ttl)>,
    pub(crate) load_timeout_ms: Option<(Ident, Ttl)>,
    /// `cache_none = true`: `None` results are cached too (`Option` only).
    pub(crate) cache_none: Option<Ident>,
    /// `cache_err_for = <seconds>`: `Err` results are cached that long.
    pub(crate) cache_err_for: Option<(Ident, Ttl)>,
    /// `tier = <expr>`: the cache's shared second level (a `RedisTier`),
    /// evaluated when the cache is first built.
    pub(crate) tier: Option<Expr>,
}

impl Parse for Args {
    fn parse(input: ParseStream<'_>) -> Result<Self> {
        let mut args = Args::default();
        let mut given = Given::default();
        let mut seen: Vec<String> = Vec::new();
        while !input.is_empty() {
            let name = argument_name(input)?;
            let label = name.to_string();
            if seen.contains(&label) {
                return Err(Error::new_spanned(&name, format!("`{label}` is given twice: keep one")));
            }
            seen.push(label);
            args.parse_value(name, input, &mut given)?;
            if !input.is_empty() {
                input.parse::<Token![,]>()?;
            }
        }
        args.key = given.finish()?;
        Ok(args)
    }
}

/// An argument's name: `crate` is a keyword, the others plain identifiers.
fn argument_name(input: ParseStream<'_>) -> Result<Ident> {
    if input.peek(Token![crate]) {
        let token: Token![crate] = input.parse()?;
        Ok(Ident::new("crate", token.span))
    } else {
        input.call(Ident::parse_any)
    }
}

/// Arguments whose combination is checked once all are read, with the
/// names they were given by, for the errors to point at.
#[derive(Default)]
struct Given {
    maxsize: Option<Ident>,
    unbounded: Option<Ident>,
    key: Option<(Ident, Expr)>,
    key_type: Option<(Ident, Type)>,
}

impl Given {
    /// Checks the combinations; returns `key = ..., key_type = ...`.
    fn finish(self) -> Result<Option<(Expr, Type)>> {
        if let (Some(_), Some(unbounded)) = (&self.maxsize, &self.unbounded) {
            return Err(Error::new_spanned(unbounded, "`unbounded` and `maxsize` contradict each other: keep one"));
        }
        match (self.key, self.key_type) {
            (Some((_, expr)), Some((_, ty))) => Ok(Some((expr, ty))),
            (None, None) => Ok(None),
            (Some((name, _)), None) => Err(Error::new_spanned(
                name,
                "`key = ...` needs `key_type = <type>` too: the cache's key type is written out, as in `key = id.to_string(), key_type = String`",
            )),
            (None, Some((name, _))) => {
                Err(Error::new_spanned(name, "`key_type` needs `key = <expr>` too: the expression that makes the key"))
            }
        }
    }
}

impl Args {
    /// Reads the value of argument `name`, if it takes one.
    fn parse_value(&mut self, name: Ident, input: ParseStream<'_>, given: &mut Given) -> Result<()> {
        let label = name.to_string();
        match label.as_str() {
            "maxsize" => {
                input.parse::<Token![=]>()?;
                self.max_size = Some(if input.peek(Lit) {
                    let lit: syn::LitInt = input.parse().map_err(|e| {
                        Error::new(e.span(), "`maxsize` is a whole number of entries, such as `maxsize = 1000`")
                    })?;
                    MaxSize::Lit(lit.base10_parse().map_err(|_| {
                        Error::new_spanned(&lit, "`maxsize` is a whole number of entries, such as `maxsize = 1000`")
                    })?)
                } else {
                    MaxSize::Expr(Box::new(input.parse()?))
                });
                given.maxsize = Some(name);
            }
            "unbounded" => {
                self.unbounded = true;
                given.unbounded = Some(name);
            }
            "ttl" => {
                input.parse::<Token![=]>()?;
                self.ttl = Some(parse_ttl(input, "ttl")?);
            }
            "policy" => {
                input.parse::<Token![=]>()?;
                let lit: LitStr = input.parse()?;
                self.policy = match lit.value().as_str() {
                    "lru" => Policy::Lru,
                    "tinylfu" => Policy::TinyLfu,
                    other => {
                        return Err(Error::new_spanned(
                            &lit,
                            format!(
                                "unknown policy \"{other}\": use `policy = \"lru\"` (the default) or `policy = \"tinylfu\"`"
                            ),
                        ));
                    }
                };
            }
            "name" => {
                input.parse::<Token![=]>()?;
                self.name = Some(input.parse()?);
            }
            "skip" => {
                let content;
                syn::parenthesized!(content in input);
                let names = content.parse_terminated(Ident::parse_any, Token![,])?;
                if names.is_empty() {
                    return Err(Error::new_spanned(
                        &name,
                        "`skip()` names no argument: list them, as in `skip(self, pool)`",
                    ));
                }
                self.skip.extend(names);
            }
            "key" => {
                input.parse::<Token![=]>()?;
                given.key = Some((name, input.parse::<Expr>()?));
            }
            "key_type" => {
                input.parse::<Token![=]>()?;
                given.key_type = Some((name, input.parse()?));
            }
            "tier" => {
                input.parse::<Token![=]>()?;
                self.tier = Some(input.parse()?);
            }
            "crate" => {
                input.parse::<Token![=]>()?;
                self.krate = Some(input.call(Path::parse_mod_style)?);
            }
            "refresh_after" | "stale_for" | "load_timeout_ms" | "cache_err_for" => {
                input.parse::<Token![=]>()?;
                let value = Some((name, parse_ttl(input, &label)?));
                match label.as_str() {
                    "refresh_after" => self.refresh_after = value,
                    "stale_for" => self.stale_for = value,
                    "load_timeout_ms" => self.load_timeout_ms = value,
                    _ => self.cache_err_for = value,
                }
            }
            "cache_none" => {
                input.parse::<Token![=]>()?;
                let on: syn::LitBool = input.parse().map_err(|e| {
                    Error::new(e.span(), "`cache_none` is `true` or `false`, as in `cache_none = true`")
                })?;
                if on.value {
                    self.cache_none = Some(name);
                }
            }
            _ => {
                return Err(Error::new_spanned(&name, format!("unknown argument `{label}`: #[cached] takes {KNOWN}")));
            }
        }
        Ok(())
    }
}

/// A positive number (of seconds; of milliseconds for `load_timeout_ms`)
/// or an expression, for argument `label`.
fn parse_ttl(input: ParseStream<'_>, label: &str) -> Result<Ttl> {
    let unit = if label.ends_with("_ms") { "milliseconds" } else { "seconds" };
    if !input.peek(Lit) {
        return Ok(Ttl::Expr(Box::new(input.parse()?)));
    }
    let lit: Lit = input.parse()?;
    let ttl = match &lit {
        Lit::Int(int) => Ttl::Secs(int.base10_parse()?),
        Lit::Float(float) => Ttl::SecsF64(float.base10_parse()?),
        _ => {
            return Err(Error::new_spanned(
                &lit,
                format!("`{label}` is in {unit}: a number, such as `{label} = 60` or `{label} = 0.5`"),
            ));
        }
    };
    let ok = match ttl {
        Ttl::Secs(secs) => secs > 0,
        Ttl::SecsF64(secs) => secs.is_finite() && secs > 0.0 && secs < u64::MAX as f64,
        Ttl::Expr(_) => true,
    };
    if !ok {
        return Err(Error::new_spanned(
            &lit,
            match label {
                "ttl" => "`ttl` must be a positive number of seconds (a zero TTL would cache nothing)".to_string(),
                _ => format!("`{label}` must be a positive number of {unit}"),
            },
        ));
    }
    Ok(ttl)
}

impl Args {
    /// The first of `refresh_after`, `stale_for` and `load_timeout_ms`
    /// given, if any: the function then loads through `fetch`.
    pub(crate) fn resilient(&self) -> Option<&Ident> {
        [&self.refresh_after, &self.stale_for, &self.load_timeout_ms].into_iter().flatten().map(|(name, _)| name).next()
    }

    pub(crate) fn skips(&self, name: &str) -> bool {
        self.skip.iter().any(|s| s == name)
    }

    /// The path generated code names the facade by.
    pub(crate) fn krate(&self) -> Path {
        self.krate.clone().unwrap_or_else(|| {
            let mut path: Path = Ident::new("async_cache", Span::call_site()).into();
            path.leading_colon = Some(Default::default());
            path
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    fn parse(tokens: proc_macro2::TokenStream) -> Result<Args> {
        syn::parse2(tokens)
    }

    fn error(tokens: proc_macro2::TokenStream) -> String {
        parse(tokens).err().expect("an error").to_string()
    }

    #[test]
    fn every_argument() {
        let args = parse(quote!(
            maxsize = 1000,
            ttl = 60,
            name = "users",
            skip(self, pool),
            key = id.to_string(),
            key_type = String,
            crate = ::my::cache
        ))
        .unwrap();
        assert_eq!(args.max_size, Some(MaxSize::Lit(1000)));
        assert_eq!(args.ttl, Some(Ttl::Secs(60)));
        assert_eq!(args.name.as_ref().unwrap().value(), "users");
        assert_eq!(args.skip.iter().map(ToString::to_string).collect::<Vec<_>>(), ["self", "pool"]);
        assert!(args.key.is_some());
        let krate = args.krate();
        assert_eq!(quote!(#krate).to_string().replace(' ', ""), "::my::cache");
        let args = parse(quote!(unbounded, ttl = 0.25)).unwrap();
        assert!(args.unbounded);
        assert_eq!(args.ttl, Some(Ttl::SecsF64(0.25)));
        let none = parse(quote!()).unwrap();
        assert!(none.max_size.is_none());
        let krate = none.krate();
        assert_eq!(quote!(#krate).to_string().replace(' ', ""), "::async_cache");
    }

    #[test]
    fn misuse_says_what_to_do() {
        assert!(error(quote!(maxsise = 10)).contains("unknown argument `maxsise`"));
        assert!(error(quote!(ttl = 1, ttl = 2)).contains("given twice"));
        assert!(error(quote!(maxsize = 1, unbounded)).contains("contradict"));
        assert!(error(quote!(key = id)).contains("needs `key_type"));
        assert!(error(quote!(key_type = u64)).contains("needs `key = <expr>`"));
        assert!(error(quote!(ttl = 0)).contains("positive"));
        assert!(error(quote!(policy = "lfu")).contains("unknown policy"));
        assert_eq!(parse(quote!(policy = "tinylfu")).unwrap().policy, Policy::TinyLfu);
        assert_eq!(parse(quote!(maxsize = 5)).unwrap().policy, Policy::Lru);
        assert!(error(quote!(ttl = "60")).contains("`ttl` is in seconds"));
        assert!(error(quote!(load_timeout_ms = "1")).contains("in milliseconds"));
        assert!(error(quote!(cache_none = 1)).contains("`true` or `false`"));
        assert!(error(quote!(stale_for = 0)).contains("positive"));
        let resilient = parse(quote!(refresh_after = 60, stale_for = 600, load_timeout_ms = 200)).unwrap();
        assert_eq!(resilient.resilient().unwrap(), "refresh_after");
        assert_eq!(resilient.load_timeout_ms.unwrap().1, Ttl::Secs(200));
        assert!(parse(quote!(ttl = 1)).unwrap().resilient().is_none());
        assert!(parse(quote!(cache_none = false)).unwrap().cache_none.is_none());
        assert!(matches!(parse(quote!(maxsize = MAX, ttl = config::ttl())).unwrap().max_size, Some(MaxSize::Expr(_))));
        assert!(matches!(parse(quote!(ttl = TTL)).unwrap().ttl, Some(Ttl::Expr(_))));
        assert!(error(quote!(skip())).contains("names no argument"));
    }
}
