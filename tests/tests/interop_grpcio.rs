//! Interoperability with a client nobody here wrote: grpcio's proxyless xDS client (Python)
//! balancing RPCs over backends that the `xds-sidecar` binary serves from its registry file.
//!
//! The scenarios live in `tests/interop/grpcio_client.py`: round robin over two backends,
//! registry replaced by rename, edited in place, made invalid, health-check failover and every
//! load-balancing policy; the first step again over mutual TLS with certificates generated
//! here, the certificate bound to the node id; and every service of
//! `examples/registry-full.yaml` dialed, each resource to be ACKed. These tests run it with the
//! interpreter of the virtualenv `tests/run-all.sh` prepares (`XDS_INTEROP_PYTHON`, else
//! `.venv/bin/python`) and fail with the script's output and the sidecar's log if it fails.
//! Without that virtualenv they fail and say to run `tests/run-all.sh`: they never skip.

use std::path::PathBuf;
use std::process::Command;

use xds_tests::interop::{full_example_registry, repo_root, run_scenario, sidecar};
use xds_tests::pki::{server_sans, Pki};

/// The environment variable `tests/run-all.sh` exports: the virtualenv's Python.
const PYTHON_ENV: &str = "XDS_INTEROP_PYTHON";

/// The Python of the interop virtualenv, checked to import grpcio.
fn python() -> PathBuf {
    let hint = "run tests/run-all.sh (it creates .venv with the pinned packages of \
                tests/interop/requirements.txt and exports XDS_INTEROP_PYTHON)";
    let python = match std::env::var_os(PYTHON_ENV) {
        Some(path) => PathBuf::from(path),
        None => {
            let venv = repo_root().join(".venv/bin/python");
            assert!(venv.exists(), "{PYTHON_ENV} is not set and {} does not exist: {hint}", venv.display());
            venv
        }
    };
    let probe = Command::new(&python)
        .args(["-c", "import grpc, grpc_health.v1.health_pb2_grpc"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} ({e}): {hint}", python.display()));
    assert!(
        probe.status.success(),
        "{} cannot import grpcio and grpcio-health-checking: {hint}\n{}",
        python.display(),
        String::from_utf8_lossy(&probe.stderr)
    );
    python
}

#[test]
fn grpcio_round_robins_and_follows_registry_edits() {
    let python = python();
    let sidecar = sidecar();
    let script = repo_root().join("tests/interop/grpcio_client.py");
    let mut command = Command::new(&python);
    command.arg(&script).arg("--sidecar").arg(&sidecar).env("PYTHONUNBUFFERED", "1");
    run_scenario(command, &script);
}

#[test]
fn grpcio_over_mutual_tls_with_its_certificate_bound_to_its_node() {
    let python = python();
    let sidecar = sidecar();
    let pki = Pki::new();
    let dir = tempfile::tempdir().expect("temporary directory");
    let (server, server_key) = pki.leaf(server_sans());
    let identity = "spiffe://interop.test/grpcio".try_into().expect("a URI");
    let (client, client_key) = pki.leaf(vec![rcgen::SanType::URI(identity)]);
    for (name, pem) in [
        ("ca.pem", &pki.ca_pem),
        ("server.pem", &server),
        ("server-key.pem", &server_key),
        ("client.pem", &client),
        ("client-key.pem", &client_key),
    ] {
        std::fs::write(dir.path().join(name), pem).expect("write a certificate");
    }
    let script = repo_root().join("tests/interop/grpcio_client.py");
    let mut command = Command::new(&python);
    command.arg(&script).arg("--sidecar").arg(&sidecar).arg("--mtls").arg(dir.path()).env("PYTHONUNBUFFERED", "1");
    run_scenario(command, &script);
}

#[test]
fn grpcio_accepts_every_setting_of_the_full_example_registry() {
    let python = python();
    let sidecar = sidecar();
    let (registry, services) = full_example_registry();
    let script = repo_root().join("tests/interop/grpcio_client.py");
    let mut command = Command::new(&python);
    command.arg(&script).arg("--sidecar").arg(&sidecar).arg("--accept").arg(&registry).args(&services);
    command.env("PYTHONUNBUFFERED", "1");
    run_scenario(command, &script);
}
