//! Compiles the MongoDB conformance suite in only where it can run: when `MONGODB_URL` is
//! set at build time (as `cargo test` / `cargo nextest run` see it) or the
//! `testcontainers` feature is on. Otherwise the test binary holds one test that says the
//! suite did not run and why.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(mongodb_suite)");
    println!("cargo::rerun-if-env-changed=MONGODB_URL");
    println!("cargo::rerun-if-changed=build.rs");
    let url = std::env::var_os("MONGODB_URL").is_some_and(|v| !v.is_empty());
    let containers = std::env::var_os("CARGO_FEATURE_TESTCONTAINERS").is_some();
    if url || containers {
        println!("cargo::rustc-cfg=mongodb_suite");
    }
}
