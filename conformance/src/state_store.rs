//! Behaviours: state_store.

#[doc(hidden)]
#[macro_export]
macro_rules! __state_store_tests {
    ($factory:expr) => {
        $crate::__tests!($factory, state_store, []);
    };
}
