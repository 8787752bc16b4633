//! Command and query dispatchers: one handler per message type, looked up by type.

use std::{
    any::{type_name, Any, TypeId},
    collections::HashMap,
    fmt,
    future::Future,
    marker::PhantomData,
};

use futures::future::BoxFuture;

use crate::{Error, Result};

type Erased = Box<dyn Any + Send>;
type Handler = Box<dyn Fn(Erased) -> BoxFuture<'static, Result<Erased>> + Send + Sync>;

/// Marks what a [`Dispatcher`] routes, for its error messages.
pub trait MessageKind: Send + Sync + 'static {
    /// `"command"` or `"query"`.
    const NAME: &'static str;
}

/// Routes commands.
#[derive(Debug)]
pub enum Commands {}
impl MessageKind for Commands {
    const NAME: &'static str = "command";
}

/// Routes queries.
#[derive(Debug)]
pub enum Queries {}
impl MessageKind for Queries {
    const NAME: &'static str = "query";
}

/// Routes each message type to the one handler registered for it.
///
/// ```
/// use cqrs_core::dispatch::CommandDispatcher;
/// struct Greet(String);
/// # futures::executor::block_on(async {
/// let mut d = CommandDispatcher::new();
/// d.register(|Greet(name): Greet| async move { Ok(format!("hello {name}")) });
/// assert_eq!(d.dispatch::<_, String>(Greet("ada".into())).await?, "hello ada");
/// assert!(d.dispatch::<_, String>(42u8).await.is_err()); // no handler for u8
/// # Ok::<(), cqrs_core::Error>(()) }).unwrap();
/// ```
pub struct Dispatcher<K: MessageKind> {
    handlers: HashMap<TypeId, (TypeId, Handler)>,
    kind: PhantomData<K>,
}

/// Dispatches commands.
pub type CommandDispatcher = Dispatcher<Commands>;
/// Dispatches queries.
pub type QueryDispatcher = Dispatcher<Queries>;

impl<K: MessageKind> Default for Dispatcher<K> {
    fn default() -> Self {
        Dispatcher {
            handlers: HashMap::new(),
            kind: PhantomData,
        }
    }
}

impl<K: MessageKind> fmt::Debug for Dispatcher<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dispatcher")
            .field("kind", &K::NAME)
            .field("handlers", &self.handlers.len())
            .finish()
    }
}

impl<K: MessageKind> Dispatcher<K> {
    /// An empty dispatcher.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the handler for messages of type `M`, replacing any earlier one.
    pub fn register<M, R, F, Fut>(&mut self, handler: F) -> &mut Self
    where
        M: Send + 'static,
        R: Send + 'static,
        F: Fn(M) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R>> + Send + 'static,
    {
        let erased: Handler = Box::new(move |msg: Erased| match msg.downcast::<M>() {
            Ok(m) => {
                let fut = handler(*m);
                Box::pin(async move { fut.await.map(|r| Box::new(r) as Erased) })
            }
            Err(_) => {
                Box::pin(async { Err(Error::invalid("dispatcher routed a message to the wrong handler")) })
            }
        });
        self.handlers
            .insert(TypeId::of::<M>(), (TypeId::of::<R>(), erased));
        self
    }

    /// True if a handler for `M` is registered.
    pub fn handles<M: 'static>(&self) -> bool {
        self.handlers.contains_key(&TypeId::of::<M>())
    }

    /// Sends `message` to its handler and returns the handler's result.
    ///
    /// # Errors
    /// [`Error::NotRegistered`] naming the type when no handler is registered;
    /// [`Error::InvalidInput`] when the handler returns another type than `R`; the
    /// handler's own errors.
    pub async fn dispatch<M: Send + 'static, R: 'static>(&self, message: M) -> Result<R> {
        let Some((returns, handler)) = self.handlers.get(&TypeId::of::<M>()) else {
            return Err(Error::NotRegistered {
                kind: K::NAME,
                type_name: type_name::<M>(),
            });
        };
        if *returns != TypeId::of::<R>() {
            return Err(Error::invalid(format!(
                "the {} handler for {} does not return {}",
                K::NAME,
                type_name::<M>(),
                type_name::<R>()
            )));
        }
        let out = handler(Box::new(message)).await?;
        out.downcast::<R>()
            .map(|r| *r)
            .map_err(|_| Error::invalid("handler returned an unexpected type"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;

    struct Add(i64, i64);
    struct Fail;

    #[test]
    fn routes_by_type_and_names_unregistered_types() {
        let mut q = QueryDispatcher::new();
        q.register(|Add(a, b): Add| async move { Ok(a + b) });
        q.register(|_: Fail| async { Err::<(), _>(Error::invalid("nope")) });
        assert_eq!(block_on(q.dispatch::<_, i64>(Add(2, 3))).unwrap(), 5);
        assert!(matches!(
            block_on(q.dispatch::<_, ()>(Fail)),
            Err(Error::InvalidInput { .. })
        ));
        let err = block_on(q.dispatch::<_, i64>("text")).unwrap_err();
        assert!(
            matches!(err, Error::NotRegistered { kind: "query", type_name } if type_name.contains("str")),
            "{err}"
        );
        assert!(
            block_on(q.dispatch::<_, String>(Add(1, 1))).is_err(),
            "wrong return type is refused"
        );
        assert!(q.handles::<Add>() && !q.handles::<u8>());
    }
}
