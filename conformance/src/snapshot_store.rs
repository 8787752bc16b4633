//! Behaviours: snapshot_store.

#[doc(hidden)]
#[macro_export]
macro_rules! __snapshot_store_tests {
    ($factory:expr) => {
        $crate::__tests!($factory, snapshot_store, []);
    };
}
