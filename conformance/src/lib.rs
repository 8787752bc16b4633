//! # conformance
//!
//! The shared harness that defines "correct" for every backend. One macro call expands to
//! one named `#[test]` per behaviour, each on a multi-threaded tokio runtime (so concurrency
//! behaviours really run concurrently) and in a fresh [`Namespace`]:
//!
//! ```ignore
//! conformance::suite!(memory, |ns| async move {
//!     Ok(conformance::StoresHarness::new(ns, backend_memory::MemoryBackend::new().stores()))
//! });
//! // cargo nextest run -E 'test(memory::event_store::)'
//! ```
//!
//! Each behaviour is also a public `async fn(Arc<dyn Harness>) -> Outcome`, so a backend
//! author can call one directly while debugging. Behaviours that need to provoke a
//! backend-specific situation go through [`ConformanceHooks`]; where a hook (or a claimed
//! [`cqrs_core::Capabilities`] flag) is missing the behaviour reports itself as NOT RUN by
//! name, on stderr and in `target/conformance-not-run.txt`.
//!
//! Only this crate, being test support, may panic: a failing behaviour panics with its name
//! and the reason.

#![allow(clippy::missing_panics_doc)]

mod harness;
mod support;

pub mod bus;
pub mod checkpoint_store;
pub mod event_store;
pub mod idempotency;
pub mod lifecycle;
pub mod log;
pub mod policies;
pub mod projections;
pub mod read_store;
pub mod relay;
pub mod snapshot_store;
pub mod state_store;

pub use harness::{
    run, ConformanceHooks, Failure, Harness, HeldAppend, Namespace, Outcome, StoresHarness, Verdict,
};
pub use support::*;

/// Expands to a module `$name` with one submodule per store and one `#[test]` per
/// behaviour. `$factory` is `FnOnce(Namespace) -> impl Future<Output = Result<impl Harness,
/// BoxError>>`; it is evaluated once per test.
#[macro_export]
macro_rules! suite {
    ($name:ident, $factory:expr $(,)?) => {
        #[allow(unused_imports)]
        mod $name {
            use super::*;
            $crate::__event_store_tests!($factory);
            $crate::__idempotency_tests!($factory);
            $crate::__log_tests!($factory);
            $crate::__snapshot_store_tests!($factory);
            $crate::__state_store_tests!($factory);
            $crate::__read_store_tests!($factory);
            $crate::__checkpoint_store_tests!($factory);
            $crate::__policies_tests!($factory);
            $crate::__projections_tests!($factory);
            $crate::__lifecycle_tests!($factory);
        }
    };
}

/// Expands to a module `$name` with one submodule per bus group and one `#[test]` per bus
/// behaviour (see [`bus`]). `$factory` is `FnOnce(Namespace) -> impl Future<Output =
/// Result<impl bus::BusHarness, BoxError>>`; it is evaluated once per test.
#[macro_export]
macro_rules! bus_suite {
    ($name:ident, $factory:expr $(,)?) => {
        #[allow(unused_imports)]
        mod $name {
            use super::*;
            $crate::__bus_delivery_tests!($factory);
            $crate::__bus_ordering_tests!($factory);
            $crate::__bus_failure_tests!($factory);
            $crate::__bus_lifecycle_tests!($factory);
            $crate::__bus_retention_tests!($factory);
        }
    };
}

/// Emits one test module for a group of behaviours. Used by the group macros.
#[doc(hidden)]
#[macro_export]
macro_rules! __tests {
    ($factory:expr, $group:ident, [$($behaviour:ident),* $(,)?]) => {
        pub mod $group {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[test]
                fn $behaviour() {
                    $crate::run(
                        concat!(module_path!(), "::", stringify!($behaviour)),
                        $factory,
                        $crate::$group::$behaviour,
                    );
                }
            )*
        }
    };
}
