//! Unit tests of the pure bus rules.

use std::time::Duration;

use super::*;
use crate::{ContentType, Error, Timestamp};

#[test]
fn partition_is_stable_and_spreads() {
    // Pinned values: every transport and process must agree.
    assert_eq!(partition_for("", 16), partition_for("", 16));
    assert_eq!(partition_for("a", 1), 0);
    assert_eq!(partition_for("a", 0), 0, "0 partitions counts as 1");
    let fnv_a: u64 = 0xaf63_dc4c_8601_ec8c; // FNV-1a 64 of "a"
    assert_eq!(u64::from(partition_for("a", 1000)), fnv_a % 1000);
    let mut seen = [0u32; 8];
    for i in 0..8000 {
        seen[partition_for(&format!("key-{i}"), 8) as usize] += 1;
    }
    assert!(seen.iter().all(|n| (700..1300).contains(n)), "{seen:?}");
}

#[test]
fn retry_delays_per_kind() {
    let ms = |d: Duration| d.as_millis();
    let fixed = RetryPolicy::fixed(4, Duration::from_millis(7));
    assert_eq!(
        (1..=4).map(|n| ms(fixed.backoff(n))).collect::<Vec<_>>(),
        [0, 7, 7, 7]
    );
    let linear = RetryPolicy::linear(6, Duration::from_millis(10), Duration::from_millis(35));
    assert_eq!(
        (1..=6).map(|n| ms(linear.backoff(n))).collect::<Vec<_>>(),
        [0, 10, 20, 30, 35, 35]
    );
    let exp = RetryPolicy::exponential(10, Duration::from_millis(10), Duration::from_millis(50));
    assert_eq!(
        (1..=6).map(|n| ms(exp.backoff(n))).collect::<Vec<_>>(),
        [0, 10, 20, 40, 50, 50]
    );
    assert_eq!(exp.backoff(u32::MAX), Duration::from_millis(50), "no overflow");
    assert_eq!(RetryPolicy::none().max_attempts, 1);
    assert_eq!(
        RetryPolicy::default(),
        RetryPolicy::exponential(5, Duration::from_millis(50), Duration::from_secs(5))
    );
}

#[test]
fn next_delay_stops_at_max_attempts_and_max_elapsed() {
    let p = RetryPolicy::fixed(3, Duration::from_millis(100));
    assert_eq!(p.next_delay(1, Duration::ZERO), Some(Duration::from_millis(100)));
    assert_eq!(p.next_delay(2, Duration::ZERO), Some(Duration::from_millis(100)));
    assert_eq!(p.next_delay(3, Duration::ZERO), None, "3 attempts made");
    let p = p.with_max_elapsed(Duration::from_millis(150));
    assert_eq!(
        p.next_delay(1, Duration::from_millis(50)),
        Some(Duration::from_millis(100))
    );
    assert_eq!(
        p.next_delay(1, Duration::from_millis(60)),
        None,
        "would end past 150 ms"
    );
    assert_eq!(RetryPolicy::none().next_delay(1, Duration::ZERO), None);
}

#[test]
fn priority_drains_urgent_first_and_oldest_within_a_priority() {
    let mut s = PriorityScheduler::new(0);
    assert_eq!(s.pick([]), None);
    let ready = [(Priority::Low, 1), (Priority::High, 4), (Priority::High, 3)];
    assert_eq!(s.pick(ready), Some(3));
    let mut sorted = Priority::ALL;
    sorted.reverse();
    sorted.sort();
    assert_eq!(sorted, Priority::ALL);
    for p in Priority::ALL {
        assert_eq!(p.as_str().parse::<Priority>().unwrap(), p);
        assert_eq!(Priority::ALL[p.rank()], p);
    }
}

#[test]
fn priority_bypass_limit_serves_the_oldest_eventually() {
    let mut s = PriorityScheduler::new(2);
    let ready = [(Priority::Low, 1), (Priority::Critical, 2)];
    assert_eq!(s.pick(ready), Some(2));
    assert_eq!(s.pick(ready), Some(2));
    assert_eq!(s.pick(ready), Some(1), "third pick: the low one is not starved");
    assert_eq!(s.pick(ready), Some(2));
    let mut strict = PriorityScheduler::new(0);
    assert!((0..100).all(|_| strict.pick(ready) == Some(2)));
}

#[test]
fn breaker_opens_half_opens_and_closes() {
    let t = Timestamp::from_millis;
    let mut b = Breaker::new(CircuitBreakerSettings::new(3, Duration::from_millis(100)));
    b.on_failure(t(0));
    b.on_failure(t(1));
    assert_eq!(b.state(t(1)), BreakerState::Closed);
    b.on_success();
    b.on_failure(t(2));
    b.on_failure(t(3));
    assert_eq!(b.state(t(3)), BreakerState::Closed, "success reset the count");
    b.on_failure(t(4));
    assert_eq!(b.state(t(4)), BreakerState::Open);
    assert_eq!(b.try_acquire(t(54)), Err(Duration::from_millis(50)));
    assert_eq!(b.state(t(104)), BreakerState::HalfOpen);
    assert_eq!(b.try_acquire(t(104)), Ok(()));
    assert!(b.try_acquire(t(105)).is_err(), "one trial at a time");
    b.on_failure(t(110));
    assert_eq!(b.state(t(150)), BreakerState::Open, "failed trial reopens");
    assert_eq!(b.try_acquire(t(210)), Ok(()));
    b.on_success();
    assert_eq!(b.state(t(211)), BreakerState::Closed);
    assert_eq!(b.try_acquire(t(211)), Ok(()));
}

#[test]
fn latency_percentiles_nearest_rank_and_window() {
    let mut w = LatencyWindow::new(10);
    assert_eq!(w.percentiles(), LatencyPercentiles::default());
    w.record(Duration::from_millis(5));
    assert_eq!(w.percentiles().p99, Duration::from_millis(5));
    for ms in 100..120 {
        w.record(Duration::from_millis(ms));
    }
    assert_eq!(w.len(), 10);
    let p = w.percentiles();
    assert_eq!(p.p50, Duration::from_millis(114));
    assert_eq!(p.p99, Duration::from_millis(119));
}

#[test]
fn spec_validation_and_handler_error_kinds() {
    assert!(SubscriptionSpec::new("t", "g").validate().is_ok());
    assert!(SubscriptionSpec::new("", "g").validate().is_err());
    assert!(SubscriptionSpec::new("t", "g").concurrency(0).validate().is_err());
    assert!(SubscriptionSpec::new("t", "g")
        .retry(RetryPolicy::fixed(0, Duration::ZERO))
        .validate()
        .is_err());
    assert!(SubscriptionSpec::new("t", "g")
        .ack_timeout(Duration::ZERO)
        .validate()
        .is_err());
    assert_ne!(
        SubscriptionSpec::new("t", "g").consumer_name(),
        SubscriptionSpec::new("t", "g").consumer_name()
    );
    assert!(HandlerError::from(Error::corrupt("x")).kind() == HandlerErrorKind::Undecodable);
    assert!(HandlerError::from(Error::invalid("x")).kind() == HandlerErrorKind::Permanent);
    assert!(HandlerError::from(Error::Closed).is_retryable());
    assert!(Message::new("", ContentType::Json, "{}").validate().is_err());
    let id = MessageId::new();
    assert_eq!(id.to_string().parse::<MessageId>().unwrap(), id);
}

/// Transports hold `LatencyWindow::default()`: it must keep a real window, not one sample.
#[test]
fn default_latency_window_keeps_many_samples() {
    let mut w = LatencyWindow::default();
    for ms in 1..=100 {
        w.record(Duration::from_millis(ms));
    }
    assert_eq!(w.len(), 100);
    let p = w.percentiles();
    assert_eq!((p.p50.as_millis(), p.p99.as_millis()), (50, 99));
}
