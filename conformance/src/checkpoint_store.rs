//! Behaviours: checkpoint_store.

#[doc(hidden)]
#[macro_export]
macro_rules! __checkpoint_store_tests {
    ($factory:expr) => {
        $crate::__tests!($factory, checkpoint_store, []);
    };
}
