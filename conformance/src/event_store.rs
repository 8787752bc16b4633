//! Behaviours: event_store.

#[doc(hidden)]
#[macro_export]
macro_rules! __event_store_tests {
    ($factory:expr) => {
        $crate::__tests!($factory, event_store, []);
    };
}
