//! Behaviours: checkpoint_store (consumer checkpoints and leases with fencing epochs),
//! `docs/CONFORMANCE.md` items 64-68 (store parts).
//!
//! The current epoch of a name is the epoch of its lease record (0 if never leased); writes
//! carrying an older epoch are Fenced, writes carrying a newer one are InvalidInput.

use std::{sync::Arc, time::Duration};

use cqrs_core::{Checkpoint, Error, Lease, StoreIdentity};
use tokio::sync::Barrier;

use crate::{ensure, ensure_eq, ensure_err, poll_pause, Ctx, Deadline, Failure, Harness, Outcome, Verdict};

/// A lease long enough never to lapse during a test.
const LONG: Duration = Duration::from_secs(300);

/// A checkpoint with the given partitions and a made-up store identity.
fn cp(partitions: &[(u32, [u64; 3])]) -> Checkpoint {
    Checkpoint {
        store: Some(StoreIdentity {
            id: "checkpoint-conformance".into(),
            epoch: 2,
        }),
        partitions: partitions.iter().copied().collect(),
    }
}

/// Fails unless `r` is Fenced reporting `current`.
fn ensure_fenced<T: std::fmt::Debug>(
    r: cqrs_core::Result<T>,
    current: u64,
    what: &str,
) -> Result<(), Failure> {
    match r {
        Err(Error::Fenced { current: c, .. }) if c == current => Ok(()),
        other => Err(Failure(format!(
            "{what}: expected Fenced with current epoch {current}, got {other:?}"
        ))),
    }
}

/// A lease TTL outside 1 ms ..= `MAX_LEASE_TTL` is InvalidInput on acquire and renew, on
/// every backend, before any I/O: nothing is leased (another owner can still acquire), and
/// the bounds themselves are accepted.
pub async fn lease_ttl_bounds_are_the_same_everywhere(h: Arc<dyn Harness>) -> Outcome {
    use cqrs_core::lease::MAX_LEASE_TTL;
    let store = h.stores().checkpoints.clone();
    let ns = h.namespace();
    let (name, a, b) = (ns.name("ttl"), ns.name("owner-a"), ns.name("owner-b"));
    let refused = [
        Duration::ZERO,
        Duration::from_micros(999),
        MAX_LEASE_TTL + Duration::from_millis(1),
        Duration::from_secs(u64::MAX),
    ];
    for ttl in refused {
        ensure_err!(
            store.acquire(&name, &a, ttl).await,
            Error::InvalidInput { .. },
            "acquire with a ttl of {ttl:?}"
        );
    }
    let lease = store
        .acquire(&name, &b, MAX_LEASE_TTL)
        .await
        .ctx("acquire with the longest ttl, after refused acquires by another owner")?;
    ensure_eq!(lease.epoch, 1, "epoch of the first lease granted");
    for ttl in refused {
        ensure_err!(
            store.renew(&lease, ttl).await,
            Error::InvalidInput { .. },
            "renew with a ttl of {ttl:?}"
        );
    }
    store
        .renew(&lease, Duration::from_millis(1))
        .await
        .ctx("renew with the shortest ttl")?;
    Ok(Verdict::Passed)
}

/// Loading a checkpoint never saved returns None (item 66).
pub async fn load_missing_is_none(h: Arc<dyn Harness>) -> Outcome {
    let store = h.stores().checkpoints.clone();
    ensure_eq!(
        store.load(&h.namespace().name("never")).await.ctx("load")?,
        None,
        "checkpoint never saved"
    );
    Ok(Verdict::Passed)
}

/// A saved multi-partition checkpoint with its store identity loads back equal, moves forward,
/// can be saved again unchanged, and names are independent (item 66).
pub async fn save_and_load_round_trip(h: Arc<dyn Harness>) -> Outcome {
    let store = h.stores().checkpoints.clone();
    let ns = h.namespace();
    let (name, other) = (ns.name("rt"), ns.name("rt-other"));
    let first = cp(&[(0, [5, 0, 0]), (7, [u64::try_from(i64::MAX).unwrap_or(0), 3, 1])]);
    store.save(&name, &first, 0).await.ctx("save")?;
    ensure_eq!(
        store.load(&name).await.ctx("load")?,
        Some(first.clone()),
        "checkpoint after save"
    );
    store
        .save(&name, &first, 0)
        .await
        .ctx("save the same checkpoint again")?;
    let second = cp(&[
        (0, [6, 0, 0]),
        (2, [1, 0, 0]),
        (7, [u64::try_from(i64::MAX).unwrap_or(0), 3, 1]),
    ]);
    store.save(&name, &second, 0).await.ctx("save forward")?;
    ensure_eq!(
        store.load(&name).await.ctx("load")?,
        Some(second),
        "checkpoint after moving forward"
    );
    ensure_eq!(store.load(&other).await.ctx("load")?, None, "another name");
    Ok(Verdict::Passed)
}

/// A save that would move the checkpoint backwards in any partition (or drop a partition) is
/// InvalidInput and the stored checkpoint is unchanged (item 68).
pub async fn never_moves_backwards(h: Arc<dyn Harness>) -> Outcome {
    let store = h.stores().checkpoints.clone();
    let name = h.namespace().name("back");
    let stored = cp(&[(0, [5, 0, 0]), (1, [3, 2, 0])]);
    store.save(&name, &stored, 0).await.ctx("save")?;
    for (what, c) in [
        ("one partition behind", cp(&[(0, [6, 0, 0]), (1, [3, 1, 9])])),
        ("every partition behind", cp(&[(0, [4, 0, 0]), (1, [2, 0, 0])])),
        ("a partition dropped", cp(&[(0, [9, 0, 0])])),
        ("the origin", Checkpoint::origin()),
    ] {
        ensure_err!(
            store.save(&name, &c, 0).await,
            Error::InvalidInput { .. },
            "save of a checkpoint with {what}"
        );
        ensure_eq!(
            store.load(&name).await.ctx("load")?,
            Some(stored.clone()),
            "checkpoint after {what}"
        );
    }
    Ok(Verdict::Passed)
}

/// While a lease is live another owner gets LeaseHeld; the holder re-acquiring or renewing
/// keeps the epoch and does not shorten the lease (items 65, 68 via leases; `docs/DESIGN.md` section 2).
pub async fn lease_is_exclusive_while_live(h: Arc<dyn Harness>) -> Outcome {
    let store = h.stores().checkpoints.clone();
    let ns = h.namespace();
    let (name, a, b) = (ns.name("lease"), ns.name("owner-a"), ns.name("owner-b"));
    let lease = store.acquire(&name, &a, LONG).await.ctx("acquire")?;
    ensure_eq!(lease.epoch, 1, "epoch of the first lease of a name");
    ensure_eq!((&lease.name, &lease.owner), (&name, &a), "lease name and owner");
    match store.acquire(&name, &b, LONG).await {
        Err(Error::LeaseHeld { owner, .. }) => ensure_eq!(owner, a, "owner named by LeaseHeld"),
        other => {
            return Err(Failure(format!(
                "acquire of a live lease by another owner: expected LeaseHeld, got {other:?}"
            )))
        }
    }
    let again = store
        .acquire(&name, &a, LONG)
        .await
        .ctx("re-acquire by the holder")?;
    ensure_eq!(again.epoch, lease.epoch, "epoch after the holder re-acquires");
    ensure!(
        again.expires_at >= lease.expires_at,
        "re-acquiring moved the expiry back from {} to {}",
        lease.expires_at,
        again.expires_at
    );
    let renewed = store.renew(&again, LONG).await.ctx("renew")?;
    ensure_eq!(renewed.epoch, lease.epoch, "epoch after renew");
    ensure_eq!(&renewed.owner, &a, "owner after renew");
    ensure!(
        renewed.expires_at >= again.expires_at,
        "renew moved the expiry back from {} to {}",
        again.expires_at,
        renewed.expires_at
    );
    ensure_err!(
        store.acquire(&name, &b, LONG).await,
        Error::LeaseHeld { .. },
        "acquire after renew"
    );
    Ok(Verdict::Passed)
}

/// After release another owner takes the lease with epoch + 1, and the old holder's save,
/// reset and renew are Fenced, leaving the checkpoint as the new holder wrote it (items 65, 68).
pub async fn takeover_fences_the_old_holder(h: Arc<dyn Harness>) -> Outcome {
    let store = h.stores().checkpoints.clone();
    let ns = h.namespace();
    let (name, a, b) = (ns.name("takeover"), ns.name("owner-a"), ns.name("owner-b"));
    let old = store.acquire(&name, &a, LONG).await.ctx("acquire")?;
    store
        .save(&name, &cp(&[(0, [1, 0, 0])]), old.epoch)
        .await
        .ctx("save by the holder")?;
    store.release(&old).await.ctx("release")?;
    let new = store
        .acquire(&name, &b, LONG)
        .await
        .ctx("acquire after release")?;
    ensure_eq!(new.epoch, old.epoch + 1, "epoch of the new holder");
    let current = new.epoch;
    ensure_fenced(
        store.save(&name, &cp(&[(0, [9, 0, 0])]), old.epoch).await,
        current,
        "save by the old holder",
    )?;
    ensure_fenced(
        store.reset(&name, old.epoch).await,
        current,
        "reset by the old holder",
    )?;
    ensure_fenced(store.renew(&old, LONG).await, current, "renew by the old holder")?;
    ensure_err!(
        store.acquire(&name, &a, LONG).await,
        Error::LeaseHeld { .. },
        "acquire by the old holder"
    );
    ensure_eq!(
        store.load(&name).await.ctx("load")?,
        Some(cp(&[(0, [1, 0, 0])])),
        "checkpoint after the fenced writes"
    );
    store
        .save(&name, &cp(&[(0, [2, 0, 0])]), new.epoch)
        .await
        .ctx("save by the new holder")?;
    ensure_eq!(
        store.load(&name).await.ctx("load")?,
        Some(cp(&[(0, [2, 0, 0])])),
        "checkpoint"
    );
    store.release(&new).await.ctx("release")?;
    let back = store
        .acquire(&name, &b, LONG)
        .await
        .ctx("re-acquire after release")?;
    ensure_eq!(
        back.epoch,
        new.epoch + 1,
        "epoch when the same owner re-acquires after release"
    );
    Ok(Verdict::Passed)
}

/// A lease with a 1 ms ttl lapses: another owner acquires it once it has expired (awaited by
/// polling, no sleep) with epoch + 1, and the lapsed holder is fenced (item 65; `docs/DESIGN.md` section 2).
pub async fn expired_lease_can_be_taken_over(h: Arc<dyn Harness>) -> Outcome {
    let store = h.stores().checkpoints.clone();
    let ns = h.namespace();
    let (name, a, b) = (ns.name("lapse"), ns.name("owner-a"), ns.name("owner-b"));
    let old = store
        .acquire(&name, &a, Duration::from_millis(1))
        .await
        .ctx("acquire")?;
    let deadline = Deadline::after(Duration::from_secs(20));
    let new = loop {
        deadline.check("a 1 ms lease to lapse")?;
        match store.acquire(&name, &b, LONG).await {
            Ok(lease) => break lease,
            Err(Error::LeaseHeld { .. }) => poll_pause().await,
            Err(e) => return Err(Failure(format!("acquire of a lapsing lease: {e:?}"))),
        }
    };
    ensure_eq!(new.epoch, old.epoch + 1, "epoch after taking over a lapsed lease");
    ensure_fenced(
        store.renew(&old, LONG).await,
        new.epoch,
        "renew of the lapsed lease",
    )?;
    ensure_fenced(
        store.save(&name, &cp(&[(0, [1, 0, 0])]), old.epoch).await,
        new.epoch,
        "save by the lapsed holder",
    )?;
    ensure_eq!(
        store.load(&name).await.ctx("load")?,
        None,
        "checkpoint after the fenced save"
    );
    Ok(Verdict::Passed)
}

/// An epoch never handed out is InvalidInput for save and reset, both before any lease and
/// above the current one; nothing is written (item 65; `docs/DESIGN.md` section 2).
pub async fn unissued_epoch_is_refused(h: Arc<dyn Harness>) -> Outcome {
    let store = h.stores().checkpoints.clone();
    let ns = h.namespace();
    let name = ns.name("unissued");
    let c = cp(&[(0, [1, 0, 0])]);
    ensure_err!(
        store.save(&name, &c, 1).await,
        Error::InvalidInput { .. },
        "save under epoch 1 before any lease"
    );
    ensure_err!(
        store.reset(&name, 1).await,
        Error::InvalidInput { .. },
        "reset under epoch 1 before any lease"
    );
    ensure_eq!(
        store.load(&name).await.ctx("load")?,
        None,
        "checkpoint after refused saves"
    );
    let lease = store
        .acquire(&name, &ns.name("owner"), LONG)
        .await
        .ctx("acquire")?;
    ensure_err!(
        store.save(&name, &c, lease.epoch + 1).await,
        Error::InvalidInput { .. },
        "save under the epoch after the current one"
    );
    ensure_eq!(
        store.load(&name).await.ctx("load")?,
        None,
        "checkpoint after refused saves"
    );
    store
        .save(&name, &c, lease.epoch)
        .await
        .ctx("save under the current epoch")?;
    ensure_eq!(store.load(&name).await.ctx("load")?, Some(c), "checkpoint");
    Ok(Verdict::Passed)
}

/// Eight owners acquiring one lease at once: exactly one gets it (epoch 1), the others get
/// LeaseHeld naming the winner (items 65, 68 via leases; `docs/DESIGN.md` section 2).
pub async fn concurrent_acquire_has_one_holder(h: Arc<dyn Harness>) -> Outcome {
    const OWNERS: usize = 8;
    let store = h.stores().checkpoints.clone();
    let ns = h.namespace();
    let name = ns.name("race");
    let barrier = Arc::new(Barrier::new(OWNERS));
    let mut tasks = Vec::new();
    for i in 0..OWNERS {
        let (store, name, barrier) = (store.clone(), name.clone(), barrier.clone());
        let owner = ns.name(&format!("owner-{i}"));
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            store.acquire(&name, &owner, LONG).await
        }));
    }
    let mut winners: Vec<Lease> = Vec::new();
    let mut named = Vec::new();
    for t in tasks {
        match t.await.map_err(|e| Failure(format!("acquirer panicked: {e}")))? {
            Ok(lease) => winners.push(lease),
            Err(Error::LeaseHeld { owner, .. }) => named.push(owner),
            Err(e) => {
                return Err(Failure(format!(
                    "a concurrent acquire failed with {e:?}, not LeaseHeld"
                )))
            }
        }
    }
    ensure_eq!(
        winners.len(),
        1,
        "owners holding the lease after a concurrent acquire"
    );
    let winner = &winners[0];
    ensure_eq!(winner.epoch, 1, "epoch of the winner");
    ensure!(
        named.iter().all(|o| o == &winner.owner),
        "LeaseHeld named {named:?}, but {} holds the lease",
        winner.owner
    );
    Ok(Verdict::Passed)
}

/// `reset` under the current epoch deletes the checkpoint, after which any checkpoint (even
/// one behind the deleted one) may be saved: a rebuild starts over (item 70).
pub async fn reset_deletes_the_checkpoint(h: Arc<dyn Harness>) -> Outcome {
    let store = h.stores().checkpoints.clone();
    let ns = h.namespace();
    let (plain, leased) = (ns.name("reset-plain"), ns.name("reset-leased"));
    store.save(&plain, &cp(&[(0, [50, 0, 0])]), 0).await.ctx("save")?;
    store.reset(&plain, 0).await.ctx("reset")?;
    ensure_eq!(
        store.load(&plain).await.ctx("load")?,
        None,
        "checkpoint after reset"
    );
    store
        .reset(&plain, 0)
        .await
        .ctx("reset of a missing checkpoint")?;
    store
        .save(&plain, &cp(&[(0, [2, 0, 0])]), 0)
        .await
        .ctx("save behind the deleted checkpoint")?;
    ensure_eq!(
        store.load(&plain).await.ctx("load")?,
        Some(cp(&[(0, [2, 0, 0])])),
        "checkpoint after restart"
    );
    let lease = store
        .acquire(&leased, &ns.name("owner"), LONG)
        .await
        .ctx("acquire")?;
    store
        .save(&leased, &cp(&[(0, [50, 0, 0])]), lease.epoch)
        .await
        .ctx("save")?;
    store
        .reset(&leased, lease.epoch)
        .await
        .ctx("reset under the lease")?;
    ensure_eq!(
        store.load(&leased).await.ctx("load")?,
        None,
        "checkpoint after reset under the lease"
    );
    Ok(Verdict::Passed)
}

/// Releasing a lease one does not hold does nothing: the holder keeps it, with its epoch
/// (`docs/DESIGN.md` section 2, leases).
pub async fn release_by_another_owner_does_nothing(h: Arc<dyn Harness>) -> Outcome {
    let store = h.stores().checkpoints.clone();
    let ns = h.namespace();
    let (name, a, b) = (ns.name("foreign-release"), ns.name("owner-a"), ns.name("owner-b"));
    let lease = store.acquire(&name, &a, LONG).await.ctx("acquire")?;
    let forged = Lease {
        owner: b.clone(),
        ..lease.clone()
    };
    store.release(&forged).await.ctx("release by a non-holder")?;
    ensure_err!(
        store.acquire(&name, &b, LONG).await,
        Error::LeaseHeld { .. },
        "acquire after a non-holder's release"
    );
    let renewed = store.renew(&lease, LONG).await.ctx("renew by the holder")?;
    ensure_eq!(renewed.epoch, lease.epoch, "epoch after a non-holder's release");
    Ok(Verdict::Passed)
}

/// Saving without a lease (epoch 0) works until the name is leased; from then on epoch 0 is
/// Fenced, also after the lease is released (the epoch stays) (items 65, 68).
pub async fn unleased_writes_are_fenced_once_leased(h: Arc<dyn Harness>) -> Outcome {
    let store = h.stores().checkpoints.clone();
    let ns = h.namespace();
    let name = ns.name("unleased");
    store
        .save(&name, &cp(&[(0, [1, 0, 0])]), 0)
        .await
        .ctx("save without a lease")?;
    let lease = store
        .acquire(&name, &ns.name("owner"), LONG)
        .await
        .ctx("acquire")?;
    ensure_fenced(
        store.save(&name, &cp(&[(0, [2, 0, 0])]), 0).await,
        lease.epoch,
        "save under epoch 0 while leased",
    )?;
    store.release(&lease).await.ctx("release")?;
    ensure_fenced(
        store.save(&name, &cp(&[(0, [3, 0, 0])]), 0).await,
        lease.epoch,
        "save under epoch 0 after release",
    )?;
    ensure_fenced(
        store.reset(&name, 0).await,
        lease.epoch,
        "reset under epoch 0 after release",
    )?;
    ensure_eq!(
        store.load(&name).await.ctx("load")?,
        Some(cp(&[(0, [1, 0, 0])])),
        "checkpoint after fenced writes"
    );
    Ok(Verdict::Passed)
}

#[doc(hidden)]
#[macro_export]
macro_rules! __checkpoint_store_tests {
    ($factory:expr) => {
        $crate::__tests!(
            $factory,
            checkpoint_store,
            [
                load_missing_is_none,
                save_and_load_round_trip,
                lease_ttl_bounds_are_the_same_everywhere,
                never_moves_backwards,
                lease_is_exclusive_while_live,
                takeover_fences_the_old_holder,
                expired_lease_can_be_taken_over,
                unissued_epoch_is_refused,
                concurrent_acquire_has_one_holder,
                reset_deletes_the_checkpoint,
                release_by_another_owner_does_nothing,
                unleased_writes_are_fenced_once_leased,
            ]
        );
    };
}
