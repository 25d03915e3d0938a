#!/usr/bin/env bash
# Runs every test of the workspace: unit, integration, interoperability and doc tests.
#
#   tests/run-all.sh [CARGO TEST OPTIONS] [-- TEST BINARY ARGS]
#
# Examples:
#   tests/run-all.sh                              # everything
#   tests/run-all.sh -p xds-tests -- interop      # tests of xds-tests whose name has "interop"
#   tests/run-all.sh -p xds-tests --test interop_grpcio -- --nocapture
#
# Works on a fresh clone with only cargo, python3 and Node.js (18 or newer, with npm) installed:
#   1. creates (or repairs) the Python virtualenv `.venv` at the repository root and installs
#      the pinned packages of tests/interop/requirements.txt into it, wheels only; skipped
#      when they are already installed;
#   2. installs the pinned Node.js packages of tests/interop/node/package-lock.json into
#      tests/interop/node/node_modules (`npm ci`, no install scripts); skipped when they are
#      already installed;
#   3. builds the workspace binaries (the interop tests run `xds-sidecar` as a process);
#   4. runs `cargo test --workspace --all-targets` and `cargo test --workspace --doc`.
#
# Options before `--` go to cargo (both test runs); options after `--` go to the test
# binaries. `-p/--package` replaces `--workspace`. Options that select targets (`--lib`,
# `--test NAME`, `--doc`, ...) replace the default `--all-targets` + `--doc` pair with exactly
# what was asked for. `--release`, `--profile`, `--target-dir` and friends also apply to the
# build of the binaries.
#
# Environment: PYTHON picks the interpreter that creates the venv (default python3), NODE the
# Node.js (default node; npm is found beside it or on PATH). The interop tests find the venv's
# interpreter in XDS_INTEROP_PYTHON and Node.js in XDS_INTEROP_NODE, exported here.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VENV="$ROOT/.venv"
VENV_PY="$VENV/bin/python"
REQUIREMENTS="$ROOT/tests/interop/requirements.txt"
STAMP="$VENV/.xds-interop-requirements.txt"
BASE_PY="${PYTHON:-python3}"

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'run-all.sh: error: %s\n' "$*" >&2; exit 1; }

# --- 1. Python virtualenv ----------------------------------------------------------------

venv_usable() {
  [[ -x "$VENV_PY" ]] && "$VENV_PY" -c 'import sys; sys.exit(0)' >/dev/null 2>&1
}

venv_satisfied() {
  [[ -f "$STAMP" ]] && [[ "$(<"$STAMP")" == "$(<"$REQUIREMENTS")" ]] &&
    "$VENV_PY" -c 'import grpc, grpc_health.v1.health_pb2_grpc' >/dev/null 2>&1
}

# How pip is run for the venv: its own pip, or (venv made without pip) the base interpreter's
# pip pointed at it with --python.
PIP=()

create_venv() {
  command -v "$BASE_PY" >/dev/null 2>&1 || die "$BASE_PY not found: install Python 3 (3.9 or newer)"
  rm -rf "$VENV"
  say "creating Python virtualenv $VENV"
  if "$BASE_PY" -m venv "$VENV" >/dev/null 2>&1 && "$VENV_PY" -m pip --version >/dev/null 2>&1; then
    PIP=("$VENV_PY" -m pip)
    return
  fi
  # Debian/Ubuntu without python3-venv has no ensurepip: make the venv without pip and use the
  # system pip (>= 22.3 understands --python) to install into it.
  rm -rf "$VENV"
  if "$BASE_PY" -m venv --without-pip "$VENV" >/dev/null 2>&1 &&
    "$BASE_PY" -m pip --python "$VENV_PY" --version >/dev/null 2>&1; then
    PIP=("$BASE_PY" -m pip --python "$VENV_PY")
    return
  fi
  rm -rf "$VENV"
  die "cannot create a Python virtualenv with pip at $VENV using $BASE_PY (on Debian/Ubuntu: apt-get install python3-venv)"
}

pip_install() {
  say "installing $(grep -cvE '^\s*(#|$)' "$REQUIREMENTS") pinned Python packages from ${REQUIREMENTS#"$ROOT"/}"
  "${PIP[@]}" install --disable-pip-version-check --quiet --only-binary=:all: -r "$REQUIREMENTS" &&
    venv_satisfied_imports
}

venv_satisfied_imports() {
  "$VENV_PY" -c 'import grpc, grpc_health.v1.health_pb2_grpc'
}

ensure_venv() {
  if ! venv_usable; then
    create_venv
  elif venv_satisfied; then
    say "Python virtualenv $VENV is up to date"
    return
  elif "$VENV_PY" -m pip --version >/dev/null 2>&1; then
    PIP=("$VENV_PY" -m pip)
  else
    PIP=("$BASE_PY" -m pip --python "$VENV_PY")
  fi
  rm -f "$STAMP"
  if ! pip_install; then
    say "installing into the existing virtualenv failed: recreating it once"
    create_venv
    pip_install || die "pip could not install ${REQUIREMENTS#"$ROOT"/} (wheels only) into $VENV"
  fi
  cp "$REQUIREMENTS" "$STAMP"
}

ensure_venv
export XDS_INTEROP_PYTHON="$VENV_PY"

# --- 2. Node.js packages -------------------------------------------------------------------

NODE_DIR="$ROOT/tests/interop/node"
NODE_LOCK="$NODE_DIR/package-lock.json"
# Inside node_modules, so `npm ci` (which empties it first) removes it until it succeeds.
NODE_STAMP="$NODE_DIR/node_modules/.xds-interop-package-lock.json"
NODE_BIN="${NODE:-node}"

node_loads_packages() {
  (cd "$NODE_DIR" && "$NODE_BIN" -e "require('@grpc/grpc-js'); require('@grpc/grpc-js-xds')") >/dev/null 2>&1
}

ensure_node_modules() {
  command -v "$NODE_BIN" >/dev/null 2>&1 ||
    die "$NODE_BIN not found: install Node.js 18 or newer with npm (the grpc-js interop test runs on it)"
  NODE_BIN="$(command -v "$NODE_BIN")"
  "$NODE_BIN" -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 18 ? 0 : 1)' ||
    die "$NODE_BIN is Node.js $("$NODE_BIN" --version): 18 or newer is needed"
  if [[ -f "$NODE_STAMP" ]] && cmp -s "$NODE_STAMP" "$NODE_LOCK" && node_loads_packages; then
    say "Node.js packages in ${NODE_DIR#"$ROOT"/}/node_modules are up to date"
    return
  fi
  local npm
  npm="$(dirname "$NODE_BIN")/npm"
  [[ -x "$npm" ]] || npm="$(command -v npm)" || die "npm not found beside $NODE_BIN or on PATH: install npm"
  say "installing the pinned Node.js packages of ${NODE_LOCK#"$ROOT"/} (npm ci)"
  (cd "$NODE_DIR" && "$npm" ci --no-audit --no-fund --ignore-scripts --loglevel=error) ||
    die "npm ci could not install ${NODE_LOCK#"$ROOT"/} into ${NODE_DIR#"$ROOT"/}/node_modules"
  node_loads_packages || die "$NODE_BIN cannot load @grpc/grpc-js-xds after npm ci in ${NODE_DIR#"$ROOT"/}"
  cp "$NODE_LOCK" "$NODE_STAMP"
}

ensure_node_modules
export XDS_INTEROP_NODE="$NODE_BIN"

# --- arguments -----------------------------------------------------------------------------

cargo_args=()
test_args=()
after_dashes=0
for arg in "$@"; do
  if ((after_dashes)); then
    test_args+=("$arg")
  elif [[ "$arg" == "--" ]]; then
    after_dashes=1
  else
    cargo_args+=("$arg")
  fi
done

scope=(--workspace)
selects_targets=0
build_args=()
prev=""
for arg in "${cargo_args[@]+"${cargo_args[@]}"}"; do
  case "$arg" in
    -p | --package | -p?* | --package=*) scope=() ;;
    --lib | --bins | --bin | --bin=* | --examples | --example | --example=* | --tests | --test | --test=* | \
      --benches | --bench | --bench=* | --all-targets | --doc) selects_targets=1 ;;
    -r | --release | --locked | --offline | --frozen | --profile=* | --target-dir=* | --jobs=* | -j?*)
      build_args+=("$arg") ;;
  esac
  case "$prev" in
    --profile | --target-dir | --jobs | -j) build_args+=("$prev" "$arg") ;;
  esac
  prev="$arg"
done

# --- 3. binaries ---------------------------------------------------------------------------

say "cargo build --workspace --bins${build_args[*]+" ${build_args[*]}"}"
cargo build --workspace --bins "${build_args[@]+"${build_args[@]}"}"

# --- 4. tests ------------------------------------------------------------------------------

run_tests() {
  say "cargo test $*${test_args[*]+" -- ${test_args[*]}"}"
  cargo test "$@" -- "${test_args[@]+"${test_args[@]}"}"
}

if ((selects_targets)); then
  run_tests "${scope[@]+"${scope[@]}"}" "${cargo_args[@]}"
else
  run_tests "${scope[@]+"${scope[@]}"}" --all-targets "${cargo_args[@]+"${cargo_args[@]}"}"
  run_tests "${scope[@]+"${scope[@]}"}" --doc "${cargo_args[@]+"${cargo_args[@]}"}"
fi
say "all tests passed"
