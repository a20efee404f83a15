#!/usr/bin/env python3
"""Server instructions per request, counted by callgrind: the figure that
follows the code when the machine's rates do not (docs/BENCHMARKS.md).

Starts `tmpvault dev` (the real server: mTLS, routing, store, audit line)
under `valgrind --tool=callgrind`, sends WARM requests on one keep-alive
connection, zeroes the counters, sends COUNT more, dumps, and prints the
server's user-space instructions per request.

    cargo build --release --workspace --bins
    python3 bench/callgrind.py target/release/tmpvault put     # or get
    RUST_LOG=warn python3 bench/callgrind.py ... put           # no audit line
    python3 bench/callgrind.py target/release/tmpvault-bench put
    python3 bench/callgrind.py target/release/tmpvault get h2  # HTTP/2

Given `tmpvault-bench`, it counts the baseline (`tmpvault-bench baseline`,
the bare hyper + rustls stack) instead, with the certificates of a
`tmpvault dev` run beside it (not under valgrind), so the two counts show
how many instructions per request tmpvault adds to its stack.

With `h2`, the requests go over one HTTP/2 connection with STREAMS of them
in flight, like the bench's HTTP/2 runs; that needs the `h2` package
(`pip install h2`). Otherwise only the standard library and valgrind
(Debian's `valgrind`) are needed.

CALLGRIND_KEEP=FILE keeps the dump, for `callgrind_annotate FILE`.
The count is the same from run to run for the same binary and inputs,
whatever else the machine is doing (under valgrind the secret arena falls
back to the heap: valgrind knows neither memfd_secret nor MLOCK_ONFAULT).
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
STREAMS = 16
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


class Requests:
    """What each request is, and which statuses it may get."""

    def __init__(self, operation, baseline):
        self.operation, self.baseline = operation, baseline

    def get(self, index):
        """Method, path, body and the statuses allowed for request `index`."""
        if self.operation == "put":
            expected = (204,) if self.baseline else (200, 201)
            return "PUT", f"/v1/secrets/bench/k{index % 100}?ttl=10m", BODY, expected
        return "GET", "/" if self.baseline else "/v1/secrets/bench/k0", b"", (200,)


class Http1:
    """Requests one after another on one keep-alive HTTP/1.1 connection."""

    def __init__(self, port, context, requests):
        self.connection = http.client.HTTPSConnection("localhost", port, context=context,
                                                      timeout=120)
        self.requests = requests

    def run(self, first, count):
        for index in range(first, first + count):
            method, path, body, expected = self.requests.get(index)
            self.connection.request(method, path, body=body or None)
            response = self.connection.getresponse()
            response.read()
            if response.status not in expected:
                sys.exit(f"{method} {path} answered {response.status}")

    def close(self):
        self.connection.close()


class Http2:
    """Requests on one HTTP/2 connection, STREAMS of them in flight."""

    def __init__(self, port, context, requests):
        try:
            import h2.config
            import h2.connection
            import h2.events
        except ImportError:
            sys.exit("the h2 mode needs the h2 package: pip install h2")
        self.events = h2.events
        context.set_alpn_protocols(["h2"])
        self.socket = context.wrap_socket(socket.create_connection(("127.0.0.1", port)),
                                          server_hostname="localhost")
        if self.socket.selected_alpn_protocol() != "h2":
            sys.exit(f"ALPN chose {self.socket.selected_alpn_protocol()!r}, not h2")
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.h2.initiate_connection()
        self.socket.sendall(self.h2.data_to_send())
        self.requests = requests

    def run(self, first, count):
        sent, done, open_streams = first, first, {}
        while done < first + count:
            while sent < first + count and len(open_streams) < STREAMS:
                method, path, body, expected = self.requests.get(sent)
                stream = self.h2.get_next_available_stream_id()
                self.h2.send_headers(stream, [
                    (":method", method), (":scheme", "https"),
                    (":authority", "localhost"), (":path", path),
                ] + ([("content-length", str(len(body)))] if body else []),
                    end_stream=not body)
                if body:
                    self.h2.send_data(stream, body, end_stream=True)
                open_streams[stream] = (method, path, expected, None)
                sent += 1
            self.socket.sendall(self.h2.data_to_send())
            data = self.socket.recv(65536)
            if not data:
                sys.exit("the server closed the HTTP/2 connection")
            for event in self.h2.receive_data(data):
                if isinstance(event, self.events.ResponseReceived):
                    method, path, expected, _ = open_streams[event.stream_id]
                    status = int(dict(event.headers)[b":status"])
                    open_streams[event.stream_id] = (method, path, expected, status)
                elif isinstance(event, self.events.DataReceived):
                    self.h2.acknowledge_received_data(event.flow_controlled_length,
                                                      event.stream_id)
                elif isinstance(event, self.events.StreamEnded):
                    method, path, expected, status = open_streams.pop(event.stream_id)
                    if status not in expected:
                        sys.exit(f"{method} {path} answered {status}")
                    done += 1
                elif isinstance(event, (self.events.StreamReset,
                                        self.events.ConnectionTerminated)):
                    sys.exit(f"HTTP/2: {event}")
            self.socket.sendall(self.h2.data_to_send())

    def close(self):
        self.h2.close_connection()
        self.socket.sendall(self.h2.data_to_send())
        self.socket.close()


def main():
    arguments = sys.argv[1:]
    if len(arguments) not in (2, 3) or arguments[1] not in ("get", "put") \
            or arguments[2:] not in ([], ["h2"]):
        sys.exit("usage: callgrind.py PATH/TO/tmpvault[-bench] get|put [h2]")
    binary, operation = arguments[0], arguments[1]
    protocol = Http2 if arguments[2:] == ["h2"] else Http1
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
        # One PUT first: the key every GET reads (`bench/k0`).
        client = protocol(port, context, Requests("put", baseline))
        client.run(0, 1)
        client.requests = Requests(operation, baseline)
        client.run(0, WARM)
        subprocess.run(["callgrind_control", "-z", str(server.pid)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client.run(WARM, COUNT)
        subprocess.run(["callgrind_control", "-d", str(server.pid)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client.close()
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
          f"({COUNT} requests, {'HTTP/2' if protocol is Http2 else 'HTTP/1.1'}, {who})")


if __name__ == "__main__":
    main()
