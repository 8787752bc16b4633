//! Given/when/then test fixtures, with readable failure output.
//!
//! - [`AggregateFixture`]: given events, when a command, then the events it produces or the
//!   error it is refused with. Pure: no store, no runtime (modelled on cqrs-es
//!   `TestFramework` and eventcore `TestScenario`).
//! - [`ProjectionFixture`] (feature `memory`): given events, then the documents a
//!   [`Projection`](crate::runtime::Projection) writes, run by the real
//!   [`ProjectionRunner`](crate::runtime::ProjectionRunner) over in-memory stores.
//!
//! A mismatch panics (as `assert_eq!` does) with a message naming the aggregate or
//! projection and listing expected and actual events or documents side by side.

mod aggregate;
#[cfg(feature = "memory")]
mod projection;

pub use aggregate::{AggregateFixture, AggregateOutcome};
#[cfg(feature = "memory")]
#[cfg_attr(docsrs, doc(cfg(feature = "memory")))]
pub use projection::ProjectionFixture;
