//! Interoperability with a second client nobody here wrote: grpc-js's proxyless xDS client
//! (`@grpc/grpc-js-xds`, Node.js) balancing RPCs over backends that the `xds-sidecar` binary
//! serves from its registry file.
//!
//! The scenario lives in `tests/interop/node/client.js`, the same steps as the grpcio one
//! (round robin, registry replaced by rename, edited in place, made invalid, health-check
//! failover): grpc-js checks every resource by its own reading of the gRFCs, so what both
//! accept is what gRPC's clients accept rather than one implementation's leniency. A second
//! test has it dial every service of `examples/registry-full.yaml` (every registry setting) and
//! checks that it ACKs all it is sent. They run with the Node.js of `XDS_INTEROP_NODE` (exported
//! by `tests/run-all.sh`, else `node`) and the packages `tests/run-all.sh` installs from
//! `tests/interop/node/package-lock.json`. Without them the tests fail and say to run
//! `tests/run-all.sh`: they never skip.

use std::path::PathBuf;
use std::process::Command;

use xds_tests::interop::{full_example_registry, repo_root, run_scenario, sidecar};

/// The environment variable `tests/run-all.sh` exports: the Node.js that installed the packages.
const NODE_ENV: &str = "XDS_INTEROP_NODE";

/// Node.js, checked to find `@grpc/grpc-js-xds` in `tests/interop/node`.
fn node(dir: &std::path::Path) -> PathBuf {
    let hint = "run tests/run-all.sh (it installs the pinned packages of tests/interop/node/package-lock.json \
                with npm ci and exports XDS_INTEROP_NODE); Node.js 18 or newer and npm are needed";
    let node = std::env::var_os(NODE_ENV).map_or_else(|| PathBuf::from("node"), PathBuf::from);
    let probe = Command::new(&node)
        .current_dir(dir)
        .args(["-e", "require('@grpc/grpc-js'); require('@grpc/grpc-js-xds')"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} ({e}): {hint}", node.display()));
    assert!(
        probe.status.success(),
        "{} cannot load @grpc/grpc-js-xds from {}: {hint}\n{}",
        node.display(),
        dir.display(),
        String::from_utf8_lossy(&probe.stderr)
    );
    node
}

#[test]
fn grpc_js_round_robins_and_follows_registry_edits() {
    let dir = repo_root().join("tests/interop/node");
    let node = node(&dir);
    let sidecar = sidecar();
    let script = dir.join("client.js");
    let mut command = Command::new(&node);
    command.current_dir(&dir).arg(&script).arg("--sidecar").arg(&sidecar);
    run_scenario(command, &script);
}

#[test]
fn grpc_js_accepts_every_setting_of_the_full_example_registry() {
    let dir = repo_root().join("tests/interop/node");
    let node = node(&dir);
    let sidecar = sidecar();
    let (registry, services) = full_example_registry();
    let script = dir.join("client.js");
    let mut command = Command::new(&node);
    command
        .current_dir(&dir)
        .arg(&script)
        .arg("--sidecar")
        .arg(&sidecar)
        .arg("--accept")
        .arg(&registry)
        .args(&services);
    run_scenario(command, &script);
}
