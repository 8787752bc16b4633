//! Behaviours: log.

#[doc(hidden)]
#[macro_export]
macro_rules! __log_tests {
    ($factory:expr) => {
        $crate::__tests!($factory, log, []);
    };
}
