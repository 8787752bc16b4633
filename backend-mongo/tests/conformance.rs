//! The conformance suite against MongoDB: a fresh database per behaviour, dropped when it
//! passes.
//!
//! ```text
//! MONGODB_URL='mongodb://127.0.0.1:27017/?replicaSet=rs0' cargo nextest run -p backend-mongo
//! cargo nextest run -p backend-mongo --features testcontainers   # needs a Docker engine
//! ```
//!
//! Without either, the suite is not compiled in (see `build.rs`) and the one test below
//! prints `SKIPPED: MongoDB suite: ...`, so the rest of the workspace's tests still pass
//! and nobody mistakes this for a MongoDB run.

#[cfg(not(mongodb_suite))]
const SKIPPED: &str = "SKIPPED: MongoDB suite: set MONGODB_URL to run it (no MongoDB server here)";

#[cfg(not(mongodb_suite))]
#[test]
fn mongodb_suite_skipped_set_mongodb_url_to_run_it() {
    use std::io::Write;
    assert!(
        std::env::var_os("MONGODB_URL").is_none_or(|v| v.is_empty()),
        "MONGODB_URL is set but this test binary was built without it: rebuild so build.rs sees it"
    );
    println!("{SKIPPED}");
    eprintln!("{SKIPPED}");
    // Recorded next to the harness's NOT RUN lines, so a summary shows it too.
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("conformance-not-run.txt"))
    {
        let _ = writeln!(f, "backend-mongo: {SKIPPED}");
    }
}

#[cfg(mongodb_suite)]
mod live {
    use async_trait::async_trait;
    use backend_mongo::{MongoBackend, MongoStoreOptions};
    use conformance::{ConformanceHooks, Harness, Namespace};
    use cqrs_core::{BoxError, Result, Stores};

    /// One test's backend (its own database) and hooks.
    pub(crate) struct MongoHarness {
        ns: Namespace,
        backend: MongoBackend,
        stores: Stores,
    }

    async fn options(ns: &Namespace) -> std::result::Result<MongoStoreOptions, BoxError> {
        let url = match std::env::var("MONGODB_URL") {
            Ok(url) if !url.is_empty() => url,
            _ => container_url().await?,
        };
        Ok(MongoStoreOptions::from_url(&url)?.with_database(ns.as_str())?)
    }

    #[cfg(not(feature = "testcontainers"))]
    async fn container_url() -> std::result::Result<String, BoxError> {
        Err("MONGODB_URL is not set".into())
    }

    /// Starts (once per test process) a one-node replica set in a container and returns
    /// a direct-connection URL to it.
    #[cfg(feature = "testcontainers")]
    async fn container_url() -> std::result::Result<String, BoxError> {
        use testcontainers::{
            core::{IntoContainerPort, WaitFor},
            runners::AsyncRunner,
            ContainerAsync, GenericImage, ImageExt,
        };
        static CONTAINER: tokio::sync::OnceCell<(ContainerAsync<GenericImage>, String)> =
            tokio::sync::OnceCell::const_new();
        let (_, url) = CONTAINER
            .get_or_try_init(|| async {
                let container = GenericImage::new("mongo", "7.0")
                    .with_exposed_port(27017.tcp())
                    .with_wait_for(WaitFor::message_on_stdout("Waiting for connections"))
                    .with_cmd(["--replSet", "rs0", "--bind_ip_all"])
                    .start()
                    .await?;
                let host = container.get_host().await?;
                let port = container.get_host_port_ipv4(27017).await?;
                let url = format!("mongodb://{host}:{port}/?directConnection=true");
                let client = mongodb::Client::with_uri_str(&url).await?;
                let admin = client.database("admin");
                admin
                    .run_command(bson::doc! { "replSetInitiate": {
                        "_id": "rs0", "members": [ { "_id": 0, "host": "localhost:27017" } ]
                    } })
                    .await?;
                // Await the election: poll `hello` until the node is writable.
                for _ in 0..600 {
                    let hello = admin.run_command(bson::doc! { "hello": 1 }).await?;
                    if hello.get_bool("isWritablePrimary").unwrap_or(false) {
                        return Ok::<_, BoxError>((container, url));
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err("the MongoDB container never became primary".into())
            })
            .await?;
        Ok(url.clone())
    }

    impl MongoHarness {
        pub(crate) async fn fresh(ns: Namespace) -> std::result::Result<Self, BoxError> {
            let backend = MongoBackend::connect(&options(&ns).await?).await?;
            backend.init().await?;
            let stores = backend.stores();
            Ok(MongoHarness { ns, backend, stores })
        }
    }

    #[async_trait]
    impl ConformanceHooks for MongoHarness {
        fn round_trips(&self) -> Option<u64> {
            Some(self.backend.round_trips())
        }

        async fn reconnect(&self) -> Option<Result<Stores>> {
            let second = match options(&self.ns).await {
                Ok(o) => MongoBackend::connect(&o).await,
                Err(e) => Err(cqrs_core::Error::invalid(e.to_string())),
            };
            Some(match second {
                Ok(b) => b.init().await.map(|()| b.stores()),
                Err(e) => Err(e),
            })
        }
    }

    #[async_trait]
    impl Harness for MongoHarness {
        fn stores(&self) -> &Stores {
            &self.stores
        }

        fn namespace(&self) -> &Namespace {
            &self.ns
        }

        fn hooks(&self) -> Option<&dyn ConformanceHooks> {
            Some(self)
        }

        async fn teardown(&self) -> std::result::Result<(), BoxError> {
            Ok(self.backend.drop_database().await?)
        }
    }
}

#[cfg(mongodb_suite)]
use live::MongoHarness;

#[cfg(mongodb_suite)]
conformance::suite!(mongo, MongoHarness::fresh);
