//! Host bindings generated from `wit/v0.1/sluice.wit` (contract 0.1.0): the record types, the
//! import traits the engine implements (one host file per capability in `sluice-engine`), and
//! the typed `process` export.

#![allow(missing_docs)]

wasmtime::component::bindgen!({
    path: "../../wit/v0.1",
    world: "processor",
    imports: { default: async },
    exports: { default: async },
    additional_derives: [PartialEq, Eq],
});
