//! The fencing rules of leases and checkpoints, as pure logic every backend calls.
//!
//! The current epoch of a name is the epoch of its lease record (0 if it was never
//! leased). A write carrying an older epoch comes from a former leader and is refused with
//! [`Error::Fenced`]; a newer one was never handed out and is [`Error::InvalidInput`]. A
//! checkpoint never moves backwards.

use crate::{Checkpoint, Error, Result};

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
