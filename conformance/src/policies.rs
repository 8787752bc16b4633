//! Behaviours: policies.

#[doc(hidden)]
#[macro_export]
macro_rules! __policies_tests {
    ($factory:expr) => {
        $crate::__tests!($factory, policies, []);
    };
}
