//! The `#[sluice_sdk::function]` attribute. Use it through the `sluice-sdk` crate, which
//! documents it; the code it generates refers only to `::sluice_sdk::__private`.

use proc_macro::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, GenericParam, Item, ItemFn};

const SIGNATURE: &str = "fn(&sluice_sdk::Record, &mut sluice_sdk::Outputs) -> sluice_sdk::Result<()>";

/// Marks the crate's stream function; see `sluice_sdk::function` for the documentation.
#[proc_macro_attribute]
pub fn function(attr: TokenStream, item: TokenStream) -> TokenStream {
    match expand(attr.into(), item.into()) {
        Ok(tokens) => tokens.into(),
        Err(error) => error.to_compile_error().into(),
    }
}

fn expand(attr: proc_macro2::TokenStream, item: proc_macro2::TokenStream) -> syn::Result<proc_macro2::TokenStream> {
    if !attr.is_empty() {
        return Err(syn::Error::new(attr.span(), "#[sluice_sdk::function] takes no arguments"));
    }
    let function = match syn::parse2::<Item>(item)? {
        Item::Fn(function) => function,
        other => {
            return Err(syn::Error::new(
                other.span(),
                format!("#[sluice_sdk::function] must be placed on a function with the signature `{SIGNATURE}`"),
            ));
        }
    };
    check_signature(&function)?;

    let name = &function.sig.ident;
    // Type-checks the signature on every target and counts as a use of the function, so a
    // native build does not warn that it is dead code.
    let signature_check = quote_spanned! {function.sig.span()=>
        const _: ::sluice_sdk::__private::ProcessFn = #name;
    };
    Ok(quote! {
        #function

        #signature_check

        #[cfg(target_arch = "wasm32")]
        #[allow(unsafe_code)]
        const _: () = {
            struct __SluiceFunction;

            impl ::sluice_sdk::__private::Guest for __SluiceFunction {
                fn process(batch: ::sluice_sdk::__private::Batch) -> ::sluice_sdk::__private::BatchResults {
                    ::sluice_sdk::__private::process_batch(batch, #name)
                }
            }

            ::sluice_sdk::__private::bindings::export!(__SluiceFunction);
        };
    })
}

fn check_signature(function: &ItemFn) -> syn::Result<()> {
    let sig = &function.sig;
    if let Some(asyncness) = &sig.asyncness {
        return Err(syn::Error::new(asyncness.span(), "a Sluice function cannot be async"));
    }
    if let Some(param) = sig.generics.params.iter().find(|p| !matches!(p, GenericParam::Lifetime(_))) {
        return Err(syn::Error::new(param.span(), "a Sluice function cannot have type or const parameters"));
    }
    if let Some(receiver) = sig.inputs.iter().find(|arg| matches!(arg, FnArg::Receiver(_))) {
        return Err(syn::Error::new(receiver.span(), "a Sluice function is a free function, not a method"));
    }
    if sig.inputs.len() != 2 {
        let span = if sig.inputs.is_empty() { sig.span() } else { sig.inputs.span() };
        return Err(syn::Error::new(
            span,
            format!(
                "a Sluice function takes two arguments, the record and the outputs, not {}: `{SIGNATURE}`",
                sig.inputs.len()
            ),
        ));
    }
    Ok(())
}
