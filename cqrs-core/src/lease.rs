//! The fencing rules of leases and checkpoints, as pure logic every backend calls.
//!
//! The current epoch of a name is the epoch of its lease record (0 if it was never
//! leased). A write carrying an older epoch comes from a former leader and is refused with
//! [`Error::Fenced`]; a newer one was never handed out and is [`Error::InvalidInput`]. A
//! checkpoint never moves backwards.

use std::time::Duration;

use crate::{Checkpoint, Error, Result};

/// The longest lease TTL any backend grants: one day.
///
/// A TTL only bounds how long a crashed holder keeps the others out, and holders renew long
/// before it lapses, so a day is already past any use. One bound for every backend means one
/// answer for one input: before it, `u64::MAX` seconds was clamped on memory and Redis but
/// overflowed PostgreSQL's `bigint` milliseconds.
pub const MAX_LEASE_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Checks a lease TTL before any I/O: from 1 ms (the precision every backend keeps, so a
/// shorter lease would lapse as it is granted) to [`MAX_LEASE_TTL`].
///
/// # Errors
/// [`Error::InvalidInput`] naming the TTL and the bound it breaks.
pub fn check_ttl(ttl: Duration) -> Result<()> {
    if ttl < Duration::from_millis(1) {
        return Err(Error::invalid(format!(
            "lease ttl {ttl:?} is shorter than 1 ms, the precision leases are kept in"
        )));
    }
    if ttl > MAX_LEASE_TTL {
        return Err(Error::invalid(format!(
            "lease ttl {ttl:?} is longer than the limit of {MAX_LEASE_TTL:?} (cqrs_core::lease::MAX_LEASE_TTL)"
        )));
    }
    Ok(())
}

/// Checks a write's lease epoch against the name's current epoch.
///
/// # Errors
/// [`Error::Fenced`] for an older epoch, [`Error::InvalidInput`] for a newer one.
pub fn check_epoch(name: &str, lease_epoch: u64, current: u64) -> Result<()> {
    if lease_epoch < current {
        return Err(Error::Fenced {
            name: name.to_owned(),
            epoch: lease_epoch,
            current,
        });
    }
    if lease_epoch > current {
        return Err(Error::invalid(format!(
            "lease epoch {lease_epoch} of {name:?} was never handed out (the current epoch is {current})"
        )));
    }
    Ok(())
}

/// Checks that saving `new` over `stored` does not move the checkpoint backwards in any
/// partition (saving the same checkpoint again is fine).
///
/// # Errors
/// [`Error::InvalidInput`] naming the checkpoint.
pub fn check_forward(name: &str, stored: Option<&Checkpoint>, new: &Checkpoint) -> Result<()> {
    match stored {
        Some(stored) if !new.is_at_or_after(stored) => Err(Error::invalid(format!(
            "checkpoint {name:?} would move backwards: {new:?} is behind the stored {stored:?}"
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Position;

    #[test]
    fn lease_ttls_from_a_millisecond_to_a_day() {
        assert!(check_ttl(Duration::from_millis(1)).is_ok());
        assert!(check_ttl(MAX_LEASE_TTL).is_ok());
        for bad in [
            Duration::ZERO,
            Duration::from_micros(999),
            MAX_LEASE_TTL + Duration::from_millis(1),
            Duration::from_secs(u64::MAX),
        ] {
            assert!(
                matches!(check_ttl(bad), Err(Error::InvalidInput { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn epochs_fence_older_and_refuse_unissued() {
        assert!(check_epoch("p", 3, 3).is_ok());
        assert!(matches!(
            check_epoch("p", 2, 3),
            Err(Error::Fenced {
                epoch: 2,
                current: 3,
                ..
            })
        ));
        assert!(matches!(check_epoch("p", 4, 3), Err(Error::InvalidInput { .. })));
        assert!(check_epoch("p", 0, 0).is_ok(), "unleased writes use epoch 0");
    }

    #[test]
    fn checkpoints_only_move_forward() {
        let mut a = Checkpoint::origin();
        a.advance(&Position::new(0, [5, 0, 0]));
        let mut b = a.clone();
        b.advance(&Position::new(0, [6, 0, 0]));
        assert!(check_forward("p", None, &a).is_ok());
        assert!(check_forward("p", Some(&a), &a).is_ok());
        assert!(check_forward("p", Some(&a), &b).is_ok());
        assert!(check_forward("p", Some(&b), &a).is_err());
        assert!(
            check_forward("p", Some(&a), &Checkpoint::origin()).is_err(),
            "the origin is behind"
        );
    }
}
