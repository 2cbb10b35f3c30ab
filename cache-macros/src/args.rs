//! The attribute's arguments: `#[cached(maxsize = 1000, ttl = 60, ...)]`.

use proc_macro2::Span;
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::{Error, Expr, Ident, Lit, LitStr, Path, Result, Token, Type};

const KNOWN: &str = "maxsize, unbounded, ttl, name, skip(...), key, key_type, crate";

/// A TTL in whole or fractional seconds, checked positive and finite.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Ttl {
    Secs(u64),
    SecsF64(f64),
}

#[derive(Default)]
pub(crate) struct Args {
    /// `None`: the default, 128.
    pub(crate) max_size: Option<usize>,
    pub(crate) unbounded: bool,
    pub(crate) ttl: Option<Ttl>,
    pub(crate) name: Option<LitStr>,
    /// `self` appears as an identifier named `self`.
    pub(crate) skip: Vec<Ident>,
    pub(crate) key: Option<(Expr, Type)>,
    pub(crate) krate: Option<Path>,
}

impl Parse for Args {
    fn parse(input: ParseStream<'_>) -> Result<Self> {
        let mut args = Args::default();
        let mut seen: Vec<String> = Vec::new();
        let mut maxsize_at = None;
        let mut unbounded_at = None;
        let mut key = None;
        let mut key_type: Option<(Ident, Type)> = None;
        while !input.is_empty() {
            // `crate` is a keyword, the others plain identifiers.
            let name = if input.peek(Token![crate]) {
                let token: Token![crate] = input.parse()?;
                Ident::new("crate", token.span)
            } else {
                input.call(Ident::parse_any)?
            };
            let label = name.to_string();
            if seen.contains(&label) {
                return Err(Error::new_spanned(&name, format!("`{label}` is given twice: keep one")));
            }
            seen.push(label.clone());
            match label.as_str() {
                "maxsize" => {
                    input.parse::<Token![=]>()?;
                    let lit: syn::LitInt = input.parse()?;
                    args.max_size = Some(lit.base10_parse().map_err(|_| {
                        Error::new_spanned(&lit, "`maxsize` is a whole number of entries, such as `maxsize = 1000`")
                    })?);
                    maxsize_at = Some(name);
                }
                "unbounded" => {
                    args.unbounded = true;
                    unbounded_at = Some(name);
                }
                "ttl" => {
                    input.parse::<Token![=]>()?;
                    args.ttl = Some(parse_ttl(input)?);
                }
                "name" => {
                    input.parse::<Token![=]>()?;
                    args.name = Some(input.parse()?);
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
                    args.skip.extend(names);
                }
                "key" => {
                    input.parse::<Token![=]>()?;
                    key = Some((name, input.parse::<Expr>()?));
                }
                "key_type" => {
                    input.parse::<Token![=]>()?;
                    key_type = Some((name, input.parse()?));
                }
                "crate" => {
                    input.parse::<Token![=]>()?;
                    args.krate = Some(input.call(Path::parse_mod_style)?);
                }
                _ => {
                    return Err(Error::new_spanned(
                        &name,
                        format!("unknown argument `{label}`: #[cached] takes {KNOWN}"),
                    ));
                }
            }
            if !input.is_empty() {
                input.parse::<Token![,]>()?;
            }
        }
        if let (Some(_), Some(unbounded)) = (&maxsize_at, &unbounded_at) {
            return Err(Error::new_spanned(unbounded, "`unbounded` and `maxsize` contradict each other: keep one"));
        }
        args.key = match (key, key_type) {
            (Some((_, expr)), Some((_, ty))) => Some((expr, ty)),
            (None, None) => None,
            (Some((name, _)), None) => {
                return Err(Error::new_spanned(
                    name,
                    "`key = ...` needs `key_type = <type>` too: the cache's key type is written out, as in `key = id.to_string(), key_type = String`",
                ));
            }
            (None, Some((name, _))) => {
                return Err(Error::new_spanned(
                    name,
                    "`key_type` needs `key = <expr>` too: the expression that makes the key",
                ));
            }
        };
        Ok(args)
    }
}

fn parse_ttl(input: ParseStream<'_>) -> Result<Ttl> {
    let lit: Lit = input.parse()?;
    let ttl = match &lit {
        Lit::Int(int) => Ttl::Secs(int.base10_parse()?),
        Lit::Float(float) => Ttl::SecsF64(float.base10_parse()?),
        _ => {
            return Err(Error::new_spanned(&lit, "`ttl` is in seconds: a number, such as `ttl = 60` or `ttl = 0.5`"));
        }
    };
    let ok = match ttl {
        Ttl::Secs(secs) => secs > 0,
        Ttl::SecsF64(secs) => secs.is_finite() && secs > 0.0 && secs < u64::MAX as f64,
    };
    if !ok {
        return Err(Error::new_spanned(
            &lit,
            "`ttl` must be a positive number of seconds (a zero TTL would cache nothing)",
        ));
    }
    Ok(ttl)
}

impl Args {
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
        assert_eq!(args.max_size, Some(1000));
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
        assert!(error(quote!(ttl = "60")).contains("in seconds"));
        assert!(error(quote!(skip())).contains("names no argument"));
    }
}
