#!/usr/bin/env python3
"""Server instructions per request, counted by callgrind: the figure that
follows the code when the machine's rates do not (docs/BENCHMARKS.md).

Starts `tmpvault dev` (the real server: mTLS, routing, store, audit line)
under `valgrind --tool=callgrind`, sends WARM requests on one keep-alive
HTTP/1.1 connection, zeroes the counters, sends COUNT more, dumps, and
prints the server's user-space instructions per request.

    cargo build --release --workspace --bins
    python3 bench/callgrind.py target/release/tmpvault put     # or get
    RUST_LOG=warn python3 bench/callgrind.py ... put           # no audit line
    python3 bench/callgrind.py target/release/tmpvault-bench put

Given `tmpvault-bench`, it counts the baseline (`tmpvault-bench baseline`,
the bare hyper + rustls stack) instead, with the certificates of a
`tmpvault dev` run beside it (not under valgrind), so the two counts show
how many instructions per request tmpvault adds to its stack.

CALLGRIND_KEEP=FILE keeps the dump, for `callgrind_annotate FILE`.
Only the standard library and valgrind (Debian's `valgrind`) are needed.
The count is the same from run to run for the same binary and inputs,
whatever else the machine is doing.
"""

import http.client
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

WARM = 500
COUNT = 5000
BODY = b"v" * 1024


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port):
    """Until something accepts on `port` (valgrind starts slowly)."""
    for _ in range(600):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"nothing listened on 127.0.0.1:{port} within 60 s")


def main():
    if len(sys.argv) != 3 or sys.argv[2] not in ("get", "put"):
        sys.exit("usage: callgrind.py PATH/TO/tmpvault[-bench] get|put")
    binary, operation = sys.argv[1], sys.argv[2]
    baseline = os.path.basename(binary) == "tmpvault-bench"
    port = free_port()
    work = tempfile.mkdtemp(prefix="tmpvault-callgrind-", dir="/dev/shm")
    out = os.path.join(work, "callgrind.out")
    valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
    dev_port = free_port() if baseline else port
    dev_command = [os.path.join(os.path.dirname(binary), "tmpvault"), "dev"] if baseline \
        else valgrind + [binary, "dev"]
    dev = subprocess.Popen(
        dev_command + ["--listen", f"127.0.0.1:{dev_port}", "--scratch-dir", work],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    server = dev
    try:
        exports = {}
        while "TMPVAULT_CLIENT_KEY" not in exports:
            line = dev.stdout.readline()
            if not line:
                sys.exit("tmpvault dev ended before printing its exports")
            found = re.match(r"export (TMPVAULT_\w+)=(\S+)", line)
            if found:
                exports[found[1]] = found[2]
        if baseline:
            pki = os.path.dirname(exports["TMPVAULT_CACERT"])
            server = subprocess.Popen(
                valgrind + [binary, "baseline", "--listen", f"127.0.0.1:{port}",
                            "--tls-cert", os.path.join(pki, "server.pem"),
                            "--tls-key", os.path.join(pki, "server-key.pem"),
                            "--client-ca", exports["TMPVAULT_CACERT"]],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_for_port(port)
        context = ssl.create_default_context(cafile=exports["TMPVAULT_CACERT"])
        context.load_cert_chain(exports["TMPVAULT_CLIENT_CERT"], exports["TMPVAULT_CLIENT_KEY"])
        connection = http.client.HTTPSConnection("localhost", port, context=context, timeout=120)

        def request(index):
            if operation == "put":
                connection.request("PUT", f"/v1/secrets/bench/k{index % 100}?ttl=10m", body=BODY)
                expected = (200, 201)
            else:
                connection.request("GET", "/" if baseline else "/v1/secrets/bench/k0")
                expected = (200,)
            response = connection.getresponse()
            response.read()
            if baseline:
                expected = (200, 204)
            if response.status not in expected:
                sys.exit(f"{operation} answered {response.status}")

        connection.request("PUT", "/v1/secrets/bench/k0?ttl=10m", body=BODY)
        connection.getresponse().read()
        for index in range(WARM):
            request(index)
        subprocess.run(["callgrind_control", "-z", str(server.pid)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for index in range(COUNT):
            request(index)
        subprocess.run(["callgrind_control", "-d", str(server.pid)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        connection.close()
        server.send_signal(signal.SIGINT)
        server.wait(timeout=60)
        if baseline:
            dev.send_signal(signal.SIGINT)
            dev.wait(timeout=60)
        # `callgrind.out.1` is the dump asked for after the counters were
        # zeroed: the COUNT requests and nothing else.
        with open(out + ".1") as dump:
            total = next(int(line.split()[1]) for line in dump if line.startswith("summary:"))
        keep = os.environ.get("CALLGRIND_KEEP")
        if keep:
            shutil.copy(out + ".1", keep)
    finally:
        for process in {server, dev}:
            if process.poll() is None:
                process.kill()
                process.wait()
        shutil.rmtree(work, ignore_errors=True)
    who = "baseline" if baseline else f"RUST_LOG={os.environ.get('RUST_LOG', 'default')}"
    print(f"{operation}: {total / COUNT:,.0f} instructions per request "
          f"({COUNT} requests, {who})")


if __name__ == "__main__":
    main()
