//! Tells crates that depend on `hatchery-guest` where its sources are: `links = "hatchery_guest"`
//! turns `manifest_dir` into `DEP_HATCHERY_GUEST_MANIFEST_DIR` in their build scripts. The host
//! crate's build script builds the `hatchery-shim` binary from there and embeds it (see
//! `host/build.rs`), for a workspace path dependency and a crates.io dependency alike.

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo::metadata=manifest_dir={dir}");
    println!("cargo::rerun-if-changed=build.rs");
}
