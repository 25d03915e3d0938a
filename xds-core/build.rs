//! With the `json` feature: finds the protobuf descriptor set that `envoy-types` ships
//! (`src/generated/types.bin` in its package) and copies it to `OUT_DIR`, so the proto3 JSON
//! mapping can resolve every Envoy type without protoc and without copying .proto files.
//!
//! The package is looked up where cargo unpacked it (`$CARGO_HOME/registry/src/*/envoy-types-V`,
//! V from the workspace's Cargo.lock), else through `cargo metadata`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_JSON").is_none() {
        return;
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo")).join("envoy_types.bin");
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let package = from_registry(&manifest_dir).or_else(|| from_metadata(&manifest_dir)).expect(
        "cannot find the envoy-types package (needed for its descriptor set by the `json` feature of xds-core)",
    );
    let bin = package.join("src").join("generated").join("types.bin");
    println!("cargo:rerun-if-changed={}", bin.display());
    std::fs::copy(&bin, &out).unwrap_or_else(|e| panic!("copy {}: {e}", bin.display()));
}

/// The locked version of envoy-types, from the nearest Cargo.lock above the manifest.
fn locked_version(manifest_dir: &Path) -> Option<String> {
    let lock = manifest_dir.ancestors().map(|d| d.join("Cargo.lock")).find(|p| p.exists())?;
    println!("cargo:rerun-if-changed={}", lock.display());
    let text = std::fs::read_to_string(lock).ok()?;
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "name = \"envoy-types\"" {
            let version = lines.next()?.trim().strip_prefix("version = \"")?.strip_suffix('"')?;
            return Some(version.to_string());
        }
    }
    None
}

fn from_registry(manifest_dir: &Path) -> Option<PathBuf> {
    let version = locked_version(manifest_dir)?;
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    std::fs::read_dir(home.join("registry").join("src"))
        .ok()?
        .filter_map(Result::ok)
        .map(|index| index.path().join(format!("envoy-types-{version}")))
        .find(|p| p.join("src/generated/types.bin").exists())
}

fn from_metadata(manifest_dir: &Path) -> Option<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--manifest-path"])
        .arg(manifest_dir.join("Cargo.toml"))
        .output()
        .ok()?;
    let meta: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
    let manifest_path = meta["packages"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == "envoy-types")
        .and_then(|p| p["manifest_path"].as_str())?;
    Some(PathBuf::from(manifest_path).parent()?.to_path_buf())
}
