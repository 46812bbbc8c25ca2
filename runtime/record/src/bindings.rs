//! Host bindings generated from `wit/sluice.wit`: the record types, the import traits the
//! engine implements (one host file per capability in `sluice-engine`), and the typed
//! `process` export.

#![allow(missing_docs)]

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "processor",
    imports: { default: async },
    exports: { default: async },
    additional_derives: [PartialEq, Eq],
});
