//! Behaviours: idempotency.

#[doc(hidden)]
#[macro_export]
macro_rules! __idempotency_tests {
    ($factory:expr) => {
        $crate::__tests!($factory, idempotency, []);
    };
}
