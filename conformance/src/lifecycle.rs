//! Behaviours: lifecycle.

#[doc(hidden)]
#[macro_export]
macro_rules! __lifecycle_tests {
    ($factory:expr) => {
        $crate::__tests!($factory, lifecycle, []);
    };
}
