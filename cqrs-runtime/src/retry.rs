//! Retry with backoff: the one policy type of the SDK, defined in core
//! ([`cqrs_core::bus::RetryPolicy`]) and shared by the projection runner, the handler
//! middleware and the bus transports, so there is one backoff computation.

pub use cqrs_core::bus::RetryPolicy;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn backoff_is_exponential_and_capped() {
        let p = RetryPolicy::exponential(10, Duration::from_millis(10), Duration::from_millis(50));
        let waits: Vec<u128> = (1..=6).map(|a| p.backoff(a).as_millis()).collect();
        assert_eq!(waits, vec![0, 10, 20, 40, 50, 50]);
        assert_eq!(RetryPolicy::none().max_attempts, 1);
        assert_eq!(p.backoff(u32::MAX), Duration::from_millis(50), "no overflow");
    }
}
