//! The one place that owns the host's generated bindings.
//!
//! They come from the WIT shipped inside the pinned spin-sdk crate (linked into
//! `wit/spin-sdk` by build.rs). The inline world names exactly the Spin interfaces
//! Toaster's components may import besides WASI: key-value, variables and
//! PostgreSQL v4. Everything else in the host imports these types from here.
//!
//! This module depends on no other of the host's: the interfaces' resources (a
//! key-value `store`, a PostgreSQL `connection`) are the generated types, and each
//! interface's module keeps what a handle stands for in a table of its own, by the
//! handle's number, as Spin's factors do.

wasmtime::component::bindgen!({
    path: "wit/spin-sdk",
    inline: "
        package toaster:host;

        world host {
            import fermyon:spin/key-value@2.0.0;
            import fermyon:spin/variables@2.0.0;
            import spin:postgres/postgres@4.0.0;
        }
    ",
    world: "toaster:host/host",
    imports: { default: async | trappable },
});

pub use fermyon::spin2_0_0::key_value;
pub use fermyon::spin2_0_0::variables;
pub use spin::postgres4_0_0::postgres;
