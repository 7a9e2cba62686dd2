//! The declared `rust-version` is the true minimum: no locked dependency
//! (for any feature, dev-dependencies included) needs a newer Rust than the
//! workspace declares, and every workspace crate declares the same one.
//! Together with the workspace's MSRV-aware resolver (`resolver = "3"`)
//! and clippy's `incompatible_msrv` lint (CI denies warnings), this is the
//! MSRV check: the CI machine has only the current stable toolchain.

use serde_json::Value;
use std::process::Command;

/// `"1.88"` or `"1.88.0"` as a comparable triple.
fn version(v: &str) -> (u64, u64, u64) {
    let mut parts = v.split('.').map(|p| p.parse::<u64>().unwrap_or(0));
    (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}

#[test]
fn no_locked_dependency_needs_a_newer_rust_than_declared() {
    let declared = env!("CARGO_PKG_RUST_VERSION");
    assert!(!declared.is_empty(), "the resq crate declares no rust-version");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked", "--all-features"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata JSON");
    let resolved: std::collections::HashSet<&str> = meta["resolve"]["nodes"]
        .as_array()
        .expect("resolve nodes")
        .iter()
        .filter_map(|n| n["id"].as_str())
        .collect();
    let members: std::collections::HashSet<&str> = meta["workspace_members"]
        .as_array()
        .expect("workspace members")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let mut too_new = Vec::new();
    let mut newest = ("0".to_owned(), String::new());
    let mut checked = 0;
    for p in meta["packages"].as_array().expect("packages") {
        let id = p["id"].as_str().unwrap_or_default();
        if !resolved.contains(id) {
            continue;
        }
        let name = p["name"].as_str().unwrap_or_default();
        let needs = p["rust_version"].as_str();
        if members.contains(id) {
            assert_eq!(
                needs,
                Some(declared),
                "workspace crate {name} declares another rust-version"
            );
            continue;
        }
        checked += 1;
        let Some(needs) = needs else { continue };
        if version(needs) > version(&newest.0) {
            newest = (needs.to_owned(), name.to_owned());
        }
        if version(needs) > version(declared) {
            too_new.push(format!("{name} {} needs {needs}", p["version"].as_str().unwrap_or("?")));
        }
    }
    assert!(checked > 100, "only {checked} dependencies were checked");
    assert!(
        too_new.is_empty(),
        "declared rust-version {declared}, but locked dependencies need more: {too_new:?}"
    );
    println!(
        "rust-version {declared}; the most demanding dependency is {} ({})",
        newest.1, newest.0
    );
}
