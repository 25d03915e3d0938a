//! Running the interoperability scenarios: the client programs nobody here wrote (Python
//! grpcio, Node grpc-js) drive `xds-sidecar` from scripts in `tests/interop/`; these helpers
//! build the sidecar, run a script with a bound on its time, and report its output.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A whole interop scenario; each of its steps is bounded more tightly.
pub const SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);
/// Building `xds-sidecar` when it is missing (a cold build on two cores is slow).
const BUILD_TIMEOUT: Duration = Duration::from_secs(900);
/// Variables cargo sets for a test process (besides `CARGO_PKG_*`) that must not leak into a
/// nested `cargo build`.
const CARGO_TEST_ENV: &[&str] = &[
    "CARGO_MANIFEST_DIR",
    "CARGO_MANIFEST_PATH",
    "CARGO_CRATE_NAME",
    "CARGO_BIN_NAME",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_TARGET_TMPDIR",
    "CARGO_RUSTC_CURRENT_DIR",
    "OUT_DIR",
];
/// How long a timed-out child gets to clean up after SIGTERM before it is killed.
const TERMINATE_GRACE: Duration = Duration::from_secs(15);

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is inside the repository").to_path_buf()
}

/// The `xds-sidecar` binary of the profile this test was built with, brought up to date.
///
/// `CARGO_BIN_EXE_*` only names binaries of this package, so the binary is found beside this
/// test's own executable (`target/PROFILE/deps/..` -> `target/PROFILE/xds-sidecar`). It is
/// (re)built first, so a plain `cargo test` never runs a stale sidecar; after
/// `tests/run-all.sh` built the binaries this is a no-op.
pub fn sidecar() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/PROFILE/deps/TEST");
    let binary = profile_dir.join(format!("xds-sidecar{}", std::env::consts::EXE_SUFFIX));
    let mut build = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    // `--workspace`, like tests/run-all.sh: with `-p xds-examples` cargo would unify features
    // differently, rebuild dependencies and relink the binary each time one follows the other.
    build.current_dir(repo_root()).args(["build", "--quiet", "--workspace", "--bin", "xds-sidecar"]);
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => {}
        Some("release") => {
            build.arg("--release");
        }
        Some(profile) => {
            build.args(["--profile", profile]);
        }
    }
    if let Some(target_dir) = profile_dir.parent() {
        build.arg("--target-dir").arg(target_dir);
    }
    // Drop what cargo set for this test process: build scripts that watch these variables
    // (ring's watches CARGO_MANIFEST_DIR) would otherwise rerun and rebuild half the tree.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_PKG_") || CARGO_TEST_ENV.contains(&&*name) {
            build.env_remove(&*name);
        }
    }
    let (status, _, stderr) = run_bounded(build, BUILD_TIMEOUT);
    assert!(
        status.is_some_and(|s| s.success()) && binary.exists(),
        "could not build xds-sidecar ({status:?}); build it with `cargo build --workspace --bins` \
         or run tests/run-all.sh\n{stderr}"
    );
    binary
}

fn read_all(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Asks a child to stop (SIGTERM, so the script stops the sidecar it started), then kills it
/// if it is still running after a grace period.
fn terminate(child: &mut Child) {
    #[cfg(unix)]
    {
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let deadline = Instant::now() + TERMINATE_GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs a command with its output captured; stops it after `timeout` (status `None`).
pub fn run_bounded(mut command: Command, timeout: Duration) -> (Option<ExitStatus>, String, String) {
    let mut child: Child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    let stdout = read_all(child.stdout.take().expect("piped stdout"));
    let stderr = read_all(child.stderr.take().expect("piped stderr"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait().expect("wait for child") {
            Some(status) => break Some(status),
            None if Instant::now() >= deadline => {
                terminate(&mut child);
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    (status, stdout, stderr)
}

/// Runs an interop scenario (`command` runs `script`) with [`SCRIPT_TIMEOUT`], printing its
/// progress lines on success (shown with `--nocapture`) and failing with its whole output.
pub fn run_scenario(command: Command, script: &Path) {
    let (status, stdout, stderr) = run_bounded(command, SCRIPT_TIMEOUT);
    match status {
        Some(status) if status.success() => println!("{stdout}{stderr}"),
        Some(status) => panic!(
            "{} failed ({status}):\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
            script.display()
        ),
        None => panic!(
            "{} did not finish within {SCRIPT_TIMEOUT:?} and was killed:\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
            script.display()
        ),
    }
}

/// `examples/registry-full.yaml` (every registry setting) and the names of its services, which
/// a proxyless gRPC client dials as `xds:///NAME`.
pub fn full_example_registry() -> (PathBuf, Vec<String>) {
    let registry = repo_root().join("examples/registry-full.yaml");
    let services: Vec<String> = xds_examples::registry::Registry::load(&registry)
        .expect("examples/registry-full.yaml is valid")
        .services
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert!(services.len() >= 3, "{services:?}");
    (registry, services)
}
