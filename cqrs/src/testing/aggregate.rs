//! Given events, when a command, then events or an error: an aggregate's decisions without
//! a store.

use std::fmt::{self, Debug, Write as _};

use crate::aggregate::Aggregate;

/// An aggregate rebuilt from given events, about to be handed one command. No store, no
/// codec, no runtime: the events are applied directly, as a repository applies loaded ones.
///
/// ```
/// use cqrs::{aggregate::Aggregate, testing::AggregateFixture};
///
/// #[derive(Default, serde::Serialize, serde::Deserialize)]
/// struct Account { balance: i64 }
/// #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
/// enum AccountEvent { Deposited { amount: i64 }, Withdrawn { amount: i64 } }
/// #[derive(Debug, thiserror::Error)]
/// #[error("insufficient funds: balance {0}")]
/// struct Insufficient(i64);
///
/// impl Aggregate for Account {
///     type Command = i64; // positive: deposit, negative: withdraw
///     type Event = AccountEvent;
///     type Error = Insufficient;
///     const KIND: &'static str = "account";
///     fn handle(&self, amount: i64) -> Result<Vec<AccountEvent>, Insufficient> {
///         match amount {
///             a if a >= 0 => Ok(vec![AccountEvent::Deposited { amount: a }]),
///             a if self.balance + a < 0 => Err(Insufficient(self.balance)),
///             a => Ok(vec![AccountEvent::Withdrawn { amount: -a }]),
///         }
///     }
///     fn apply(&mut self, e: &AccountEvent) {
///         match e {
///             AccountEvent::Deposited { amount } => self.balance += amount,
///             AccountEvent::Withdrawn { amount } => self.balance -= amount,
///         }
///     }
/// }
///
/// let after = AggregateFixture::<Account>::given([AccountEvent::Deposited { amount: 50 }])
///     .when(-20)
///     .then_expect_events([AccountEvent::Withdrawn { amount: 20 }]);
/// assert_eq!(after.balance, 30);
///
/// AggregateFixture::<Account>::given_no_events()
///     .when(-1)
///     .then_expect_error_message("insufficient funds: balance 0");
/// ```
#[derive(Debug)]
pub struct AggregateFixture<A> {
    state: A,
    given: usize,
}

impl<A: Aggregate> AggregateFixture<A> {
    /// A new aggregate: no event happened yet.
    pub fn given_no_events() -> Self {
        AggregateFixture {
            state: A::default(),
            given: 0,
        }
    }

    /// The aggregate after `events`, applied in order.
    pub fn given(events: impl IntoIterator<Item = A::Event>) -> Self {
        let mut fixture = Self::given_no_events();
        for event in events {
            fixture.state.apply(&event);
            fixture.given += 1;
        }
        fixture
    }

    /// Hands the aggregate `command`: what it decides is checked by the `then_*` calls.
    pub fn when(self, command: A::Command) -> AggregateOutcome<A> {
        let result = self.state.handle(command);
        AggregateOutcome {
            state: self.state,
            given: self.given,
            result,
        }
    }
}

/// What the aggregate decided on the command of [`AggregateFixture::when`]. Each `then_*`
/// call panics with a message naming the expected and the actual outcome when they differ.
pub struct AggregateOutcome<A: Aggregate> {
    state: A,
    given: usize,
    result: Result<Vec<A::Event>, A::Error>,
}

impl<A: Aggregate> Debug for AggregateOutcome<A>
where
    A::Event: Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AggregateOutcome")
            .field("kind", &A::KIND)
            .field("given", &self.given)
            .field("result", &self.result)
            .finish_non_exhaustive()
    }
}

impl<A: Aggregate> AggregateOutcome<A>
where
    A::Event: PartialEq + Debug,
{
    /// Checks the command produced exactly `expected`, in order; returns the state with
    /// them applied, for checks of its own.
    ///
    /// # Panics
    /// When the command was refused or produced other events; the message lists expected
    /// and actual events side by side.
    #[track_caller]
    pub fn then_expect_events(self, expected: impl IntoIterator<Item = A::Event>) -> A {
        let expected: Vec<A::Event> = expected.into_iter().collect();
        let context = self.context();
        let actual = match self.result {
            Ok(actual) => actual,
            Err(e) => panic!(
                "{context}: expected {}, but the command was refused: {e} ({e:?})",
                count(expected.len())
            ),
        };
        if actual != expected {
            panic!(
                "{context}: the command produced other events than expected\n{}",
                event_diff(&expected, &actual)
            );
        }
        let mut state = self.state;
        actual.iter().for_each(|e| state.apply(e));
        state
    }

    /// Checks the command was refused with an error whose `Display` is `expected`.
    ///
    /// # Panics
    /// When the command succeeded or was refused for another reason.
    #[track_caller]
    pub fn then_expect_error_message(self, expected: &str) {
        let context = self.context();
        match self.result {
            Ok(events) => panic!(
                "{context}: expected the command to be refused with {expected:?}, but it produced {}:\n{}",
                count(events.len()),
                event_diff(&[], &events)
            ),
            Err(e) if e.to_string() == expected => {}
            Err(e) => panic!(
                "{context}: the command was refused for another reason\n  - expected: {expected}\n  + actual:   {e} ({e:?})"
            ),
        }
    }

    /// Checks the command was refused with `expected`.
    ///
    /// # Panics
    /// When the command succeeded or was refused with another error.
    #[track_caller]
    pub fn then_expect_error(self, expected: A::Error)
    where
        A::Error: PartialEq,
    {
        let context = self.context();
        match self.result {
            Ok(events) => panic!(
                "{context}: expected the command to be refused with {expected:?}, but it produced {}:\n{}",
                count(events.len()),
                event_diff(&[], &events)
            ),
            Err(e) if e == expected => {}
            Err(e) => panic!(
                "{context}: the command was refused with another error\n  - expected: {expected:?}\n  + actual:   {e:?}"
            ),
        }
    }

    /// The raw decision, for checks the `then_*` calls do not cover.
    pub fn into_result(self) -> Result<Vec<A::Event>, A::Error> {
        self.result
    }

    fn context(&self) -> String {
        format!("aggregate {:?} after {} given", A::KIND, count(self.given))
    }
}

fn count(n: usize) -> String {
    if n == 1 {
        "1 event".to_owned()
    } else {
        format!("{n} events")
    }
}

/// One line per position: `=` where both lists agree, `-`/`+` lines where they differ.
fn event_diff<E: PartialEq + Debug>(expected: &[E], actual: &[E]) -> String {
    let mut out = format!("  expected {}, got {}\n", count(expected.len()), actual.len());
    for i in 0..expected.len().max(actual.len()) {
        let _ = match (expected.get(i), actual.get(i)) {
            (Some(e), Some(a)) if e == a => writeln!(out, "  [{i}] = {a:?}"),
            (e, a) => {
                let show = |x: Option<&E>| x.map_or_else(|| "(none)".to_owned(), |x| format!("{x:?}"));
                writeln!(
                    out,
                    "  [{i}] - expected: {}\n      + actual:   {}",
                    show(e),
                    show(a)
                )
            }
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Default, Serialize, Deserialize)]
    struct Tally(i64);

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Counted {
        Added(i64),
        Reset,
    }

    #[derive(Debug, PartialEq, thiserror::Error)]
    #[error("too big: {0}")]
    struct TooBig(i64);

    impl Aggregate for Tally {
        type Command = i64;
        type Event = Counted;
        type Error = TooBig;
        const KIND: &'static str = "tally";
        fn handle(&self, n: i64) -> Result<Vec<Counted>, TooBig> {
            match n {
                n if self.0 + n > 10 => Err(TooBig(self.0 + n)),
                0 => Ok(vec![Counted::Reset]),
                n => Ok(vec![Counted::Added(n)]),
            }
        }
        fn apply(&mut self, e: &Counted) {
            match e {
                Counted::Added(n) => self.0 += n,
                Counted::Reset => self.0 = 0,
            }
        }
    }

    fn panic_text(f: impl FnOnce() + std::panic::UnwindSafe) -> String {
        let err = std::panic::catch_unwind(f).err();
        err.and_then(|e| e.downcast_ref::<String>().cloned())
            .unwrap_or_default()
    }

    #[test]
    fn given_events_decide_the_command() {
        let state = AggregateFixture::<Tally>::given([Counted::Added(4)])
            .when(3)
            .then_expect_events([Counted::Added(3)]);
        assert_eq!(state.0, 7);
        AggregateFixture::<Tally>::given([Counted::Added(8)])
            .when(3)
            .then_expect_error(TooBig(11));
        AggregateFixture::<Tally>::given_no_events()
            .when(11)
            .then_expect_error_message("too big: 11");
    }

    #[test]
    fn other_events_name_expected_and_actual() {
        let text = panic_text(|| {
            AggregateFixture::<Tally>::given([Counted::Added(1)])
                .when(2)
                .then_expect_events([Counted::Added(2), Counted::Reset]);
        });
        assert!(text.contains("aggregate \"tally\" after 1 event"), "{text}");
        assert!(text.contains("expected 2 events, got 1"), "{text}");
        assert!(text.contains("[0] = Added(2)"), "{text}");
        assert!(
            text.contains("[1] - expected: Reset\n      + actual:   (none)"),
            "{text}"
        );
    }

    #[test]
    fn a_refusal_where_events_were_expected_says_why() {
        let text = panic_text(|| {
            AggregateFixture::<Tally>::given_no_events()
                .when(20)
                .then_expect_events([Counted::Added(20)]);
        });
        assert!(text.contains("refused: too big: 20 (TooBig(20))"), "{text}");
        let text = panic_text(|| {
            AggregateFixture::<Tally>::given_no_events()
                .when(0)
                .then_expect_error_message("too big: 0");
        });
        assert!(text.contains("but it produced 1 event"), "{text}");
        assert!(text.contains("+ actual:   Reset"), "{text}");
        let text = panic_text(|| {
            AggregateFixture::<Tally>::given([Counted::Added(5)])
                .when(9)
                .then_expect_error(TooBig(9));
        });
        assert!(
            text.contains("- expected: TooBig(9)\n  + actual:   TooBig(14)"),
            "{text}"
        );
    }
}
