//! Behaviours: read_store.

#[doc(hidden)]
#[macro_export]
macro_rules! __read_store_tests {
    ($factory:expr) => {
        $crate::__tests!($factory, read_store, []);
    };
}
