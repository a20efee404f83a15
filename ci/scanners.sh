#!/usr/bin/env bash
# schemathesis and sslyze against a real `tmpvault dev` server (generated
# certificates, mTLS). Installs both into a venv under /tmp.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=/tmp/tmpvault-scanners
[ -x "$venv/bin/schemathesis" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q schemathesis sslyze; }

cargo build --quiet
port=$((20000 + RANDOM % 20000))
out=$(mktemp) err=$(mktemp)
./target/debug/tmpvault dev --listen "127.0.0.1:$port" >"$out" 2>"$err" &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -f "$out" "$err"' EXIT
for _ in $(seq 100); do grep -q TMPVAULT_CLIENT_KEY "$out" && break; sleep 0.1; done
if ! grep -q TMPVAULT_CLIENT_KEY "$out"; then
  echo "scanners: tmpvault dev did not print its exports within 10 s:" >&2
  cat "$err" >&2
  exit 1
fi
eval "$(grep '^export ' "$out")"

echo "== schemathesis"
# The coverage phase is left out for now: its negative tests send header
# bytes hyper refuses with 400 + close, and the client may then reuse the
# closed keep-alive connection (an intermittent "network error"); see the
# open note in README's decisions.
"$venv/bin/schemathesis" run "$TMPVAULT_ADDR/v1/openapi.json" \
  --request-cert "$TMPVAULT_CLIENT_CERT" --request-cert-key "$TMPVAULT_CLIENT_KEY" \
  --tls-verify "$TMPVAULT_CACERT" --checks all --phases examples,fuzzing,stateful \
  --max-time "${SCHEMATHESIS_SECONDS:-45}" --seed 1 --workers 1

echo "== sslyze"
report=$(mktemp -d)
(cd "$report" && "$venv/bin/python" -m sslyze "127.0.0.1:$port" --json_out nocert.json >/dev/null) || true
(cd "$report" && "$venv/bin/python" -m sslyze "127.0.0.1:$port" --cert "$TMPVAULT_CLIENT_CERT" \
  --key "$TMPVAULT_CLIENT_KEY" --mozilla_config modern --json_out modern.json >modern.txt) || true
python3 - "$report" <<'PY'
import json, sys, pathlib
report = pathlib.Path(sys.argv[1])
nocert = json.loads((report / "nocert.json").read_text())["server_scan_results"][0]
auth = nocert["connectivity_result"]["client_auth_requirement"]
assert auth == "REQUIRED", f"client authentication is {auth}, expected REQUIRED"
scan = json.loads((report / "modern.json").read_text())["server_scan_results"][0]["scan_result"]
accepted = {p: len(scan[f"{p}_cipher_suites"]["result"]["accepted_cipher_suites"])
            for p in ["ssl_2_0", "ssl_3_0", "tls_1_0", "tls_1_1", "tls_1_2", "tls_1_3"]}
assert all(n == 0 for p, n in accepted.items() if p != "tls_1_3"), accepted
assert accepted["tls_1_3"] > 0, accepted
# Mozilla "modern": the one finding allowed is the private CA, which is not
# (and must not be) in a public trust store.
text = (report / "modern.txt").read_text().split("COMPLIANCE AGAINST TLS CONFIGURATION")[-1]
findings = [line.strip() for line in text.splitlines() if line.strip().startswith("* ")]
assert all(f.startswith("* certificate_path_validation") for f in findings), findings
print(f"sslyze: client auth REQUIRED; suites accepted {accepted}; modern profile findings: {findings}")
PY
