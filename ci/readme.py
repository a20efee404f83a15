#!/usr/bin/env python3
"""Runs the README's shell blocks as written, and checks what they print.

A block is run when the line before its ```sh fence is a marker comment:

  <!-- ci: serve until "TEXT" ... -->
      The block's first command is started in the background, as a reader
      would in a terminal of its own, and the next blocks run once it has
      printed TEXT. `export NAME=...` lines it prints are run in the shell
      that runs the next blocks ("in another terminal, after the exports").
      It is stopped (SIGTERM) when the next server starts, and at the end.
      Any other command in that block must be a command .ci/run runs
      (`cargo test`: CI's own test step, not run twice).
  <!-- ci: run and check each line[, with curl's default, --http1.1 and --http2] -->
      Each command runs in one bash session (variables carry over from
      block to block), with stdin from /dev/null, and its output is checked
      against the comment beside it. With curl options named, the block
      runs once per option (set in a curlrc, so the lines stay as written).
  <!-- ci: output of "COMMAND" -->
      Before a ```console block: a sample of what COMMAND (served, or run
      in a block above) printed. Each line of it but `...` must be a line of the real output,
      where numbers may differ (counts, the random directory name).

What a comment beside a command checks:

  # 201 ..., # 404 not_found    curl: the HTTP status (curl's --write-out,
                                from the curlrc), and a snake_case word after
                                it is the problem document's `code`.
                                tmpvault: exit 1, nothing on stdout, and
                                stderr is `tmpvault: not_found: ... (HTTP 404)`.
  # s3cr3t                      one word: the output is exactly that.
  # ... metadata ...            the output is a JSON object with a `key` or
                                `items` member.
  # ... the value in FILE ...   the output contains FILE's content (not
                                printed: it is a secret).
  anything else, or nothing     exit 0 (curl: and a 2xx status).

Why a script and not a Rust test: the commands are shell lines that need
the real Docker engine, root (group 65532 on the keys), a release build and
minutes; under `cargo test` every test run would need all of that.
.ci/run runs it after the container checks, which install what it needs.

Usage: python3 ci/readme.py [README.md]   (from anywhere; runs in the repo)
"""

import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARKER = re.compile(r"^<!-- ci: (.*) -->$")
COMMENT = re.compile(r"^(.*?\S)\s{2,}#\s*(.*)$")
STATUS = re.compile(r"^(\d{3})\b(?:\s+([a-z]+(?:_[a-z]+)+))?")
CURL_VARIANTS = re.compile(r"--http[0-9.]+")
BUILDS = ("cargo ", "scripts/static-build", "docker build")
MARK = "@@readme-test-done"
STATUS_MARK = "\n@@curl-status "

failures = []
started = time.monotonic()


def log(text):
    print(text, flush=True)


def fail(where, text):
    failures.append(f"{where}: {text}")
    log(f"FAIL  {where}: {text}")


class Block:
    def __init__(self, marker, fence, lines, section, line_number):
        self.marker, self.fence, self.lines = marker, fence, lines
        self.section, self.line_number = section, line_number

    def commands(self):
        """(text, comment) per command: continuation lines joined as the
        shell reads them, blank and comment-only lines left out."""
        commands, current = [], []
        for line in self.lines:
            if not current and (not line.strip() or line.lstrip().startswith("#")):
                continue
            current.append(line)
            if not line.endswith("\\"):
                text = "\n".join(current)
                match = COMMENT.match(current[-1])
                commands.append((text, match.group(2) if match else ""))
                current = []
        return commands


def parse(path):
    blocks, section, marker = [], "", None
    lines = open(path, encoding="utf-8").read().split("\n")
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("#"):
            section = line.lstrip("# ")
        match = MARKER.match(line)
        if match:
            marker = (match.group(1), index + 1)
        elif line.startswith("```"):
            fence = line[3:].strip()
            body = []
            index += 1
            while not lines[index].startswith("```"):
                body.append(lines[index])
                index += 1
            if marker and marker[1] == index - len(body) - 1:
                blocks.append(Block(marker[0], fence, body, section, marker[1]))
            marker = None
        index += 1
    return blocks


class Shell:
    """One bash session, as a reader's terminal: each command is sourced
    from a file, so that it runs exactly as written and its variables stay."""

    def __init__(self, env, work):
        self.work = work
        self.process = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=REPO,
            env=env,
            text=True,
            start_new_session=True,
        )
        self.count = 0

    def run(self, text, timeout):
        self.count += 1
        base = os.path.join(self.work, f"command-{self.count}")
        with open(base + ".sh", "w") as file:
            file.write(text + "\n")
        self.process.stdin.write(
            f'source {base}.sh </dev/null >{base}.out 2>{base}.err; '
            f'echo $? >{base}.rc; echo {MARK}\n'
        )
        self.process.stdin.flush()
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no end within {timeout} s")
            ready, _, _ = select.select([self.process.stdout], [], [], left)
            if ready:
                line = self.process.stdout.readline()
                if not line:
                    raise RuntimeError("the shell exited")
                if line.strip() == MARK:
                    break
        read = lambda suffix: open(base + suffix, encoding="utf-8", errors="replace").read()
        return int(read(".rc")), read(".out"), read(".err")

    def close(self):
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class Server:
    """A served command in the background, its output collected."""

    def __init__(self, text, env):
        self.text = text
        self.command = without_comment(text)
        self.output = []
        self.process = subprocess.Popen(
            ["bash", "-c", text],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env=env,
            text=True,
            errors="replace",
            start_new_session=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stdout:
            self.output.append(line.rstrip("\n"))

    def wait_for(self, text, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.output):
                return True
            if self.process.poll() is not None:
                time.sleep(0.2)  # the reader's last lines
                return any(text in line for line in self.output)
            time.sleep(0.1)
        return False

    def stop(self):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode


def without_comment(text):
    """A command line without the comment beside it."""
    match = COMMENT.match(text)
    return match.group(1) if match else text


def program(text):
    """The program a command line runs: that of its last pipeline stage."""
    words = text.split("|")[-1].split()
    return words[0] if words else ""


def is_json_metadata(text):
    try:
        value = json.loads(text)
    except ValueError:
        return False
    return isinstance(value, dict) and ("key" in value or "items" in value)


def check(where, text, comment, result, variant):
    rc, out, err = result
    status = STATUS.match(comment)
    word = re.fullmatch(r"[^\s\d][^\s]*", comment)
    value_file = re.search(r"the value in (\S+?)[,.;]?(?:\s|$)", comment)
    brief = lambda s: (s[:300] + "...") if len(s) > 300 else s
    if program(text) == "curl":
        if STATUS_MARK not in out:
            return fail(where, f"curl exit {rc}, no status line; stderr: {brief(err)}")
        body, trailer = out.rsplit(STATUS_MARK, 1)
        code, version = trailer.split()
        if rc != 0:
            return fail(where, f"curl exit {rc}: {brief(err)}")
        if variant and variant.lstrip("-").replace("http", "") != version:
            return fail(where, f"asked {variant}, curl spoke HTTP/{version}")
        if status:
            if code != status.group(1):
                return fail(where, f"HTTP {code}, the README says {status.group(1)}: {brief(body)}")
            if status.group(2):
                problem = json.loads(body) if body.startswith("{") else {}
                if problem.get("code") != status.group(2):
                    return fail(where, f"code {problem.get('code')!r}, the README says {status.group(2)}")
        elif not code.startswith("2"):
            return fail(where, f"HTTP {code}: {brief(body)}")
        out = body
    elif program(text) == "tmpvault" and status:
        expected = rf"tmpvault: {status.group(2) or '[a-z_]+'}: .+ \(HTTP {status.group(1)}\)\n"
        if rc != 1 or out or not re.fullmatch(expected, err):
            return fail(where, f"exit {rc}, stdout {len(out)} bytes, stderr {err!r}; the README says {comment!r}")
        return True
    elif rc != 0:
        return fail(where, f"exit {rc}: {brief(err or out)}")
    if word and not status and out != word.group(0):
        return fail(where, f"printed {brief(out)!r}, the README says {word.group(0)!r}")
    if "metadata" in comment and not is_json_metadata(out):
        return fail(where, f"not JSON metadata: {brief(out)}")
    if value_file:
        path = os.path.join(REPO, value_file.group(1))
        value = open(path).read()
        if not value or value not in out:
            return fail(where, f"the output ({len(out)} bytes) does not hold the value in {value_file.group(1)}")
    return True


def curlrc(work, variant):
    home = os.path.join(work, f"curl{variant or '-default'}")
    os.makedirs(home, exist_ok=True)
    with open(os.path.join(home, ".curlrc"), "w") as file:
        file.write('write-out = "\\n@@curl-status %{http_code} %{http_version}\\n"\n')
        if variant:
            file.write(variant.lstrip("-") + "\n")
    return home


def port_in_use(port):
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def main():
    readme = sys.argv[1] if len(sys.argv) > 1 else os.path.join(REPO, "README.md")
    blocks = parse(readme)
    if not blocks:
        sys.exit("readme: no marked block in the README")
    for leftover in ["certs"]:
        if os.path.exists(os.path.join(REPO, leftover)):
            sys.exit(f"readme: {leftover}/ exists; the README's commands make it: move it away first")
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        sys.exit("readme: docker info fails; the README's Containers section needs a Docker engine")
    if port_in_use(8443):
        sys.exit("readme: 127.0.0.1:8443 is in use; the README's servers listen there")
    had_image = subprocess.run(["docker", "image", "inspect", "tmpvault"],
                               capture_output=True).returncode == 0
    work = tempfile.mkdtemp(prefix="tmpvault-readme-")
    install_root = os.path.join(work, "cargo-install")
    env = dict(os.environ)
    env["CARGO_INSTALL_ROOT"] = install_root
    env["PATH"] = os.path.join(install_root, "bin") + os.pathsep + env["PATH"]
    env["CURL_HOME"] = curlrc(work, "")
    shell = Shell(env, work)
    # `docker compose` where the plugin exists, else docker-compose: the
    # README's lines stay as written.
    shell.run('docker compose version >/dev/null 2>&1 || docker() { if [ "$1" = compose ]; '
              'then shift; command docker-compose "$@"; else command docker "$@"; fi; }', 10)
    ci_run = open(os.path.join(REPO, ".ci", "run")).read().split("\n")
    servers = []
    printed = {}  # command -> lines it printed, for the samples
    try:
        for block in blocks:
            where = f"README.md:{block.line_number} ({block.section})"
            block_start = time.monotonic()
            serve = re.match(r'serve until "([^"]+)"', block.marker)
            sample = re.match(r'output of "([^"]+)"', block.marker)
            if serve:
                commands = block.commands()
                text = commands[0][0]
                for server in servers:
                    server.stop()
                servers = []
                log(f"== {where}: serve {text.splitlines()[0]} ...")
                server = Server(text, env)
                servers.append(server)
                if not server.wait_for(serve.group(1), 900):
                    fail(where, f"never printed {serve.group(1)!r}: " + " | ".join(server.output[-15:]))
                    break
                for line in server.output:
                    if line.startswith("export "):
                        shell.run(line, 10)
                for other, _ in commands[1:]:
                    other = without_comment(other)
                    if other not in ci_run:
                        fail(where, f"{other!r} is neither served here nor a line of .ci/run")
                    else:
                        log(f"PASS  {other!r}: a step of .ci/run")
                log(f"PASS  {where}: serving after {time.monotonic() - block_start:.0f} s")
            elif sample:
                served = [s.output for s in servers if s.command == sample.group(1)]
                output = served[0] if served else printed.get(sample.group(1))
                if output is None:
                    fail(where, f"no output of {sample.group(1)!r} above to compare the sample with")
                    continue
                for line in block.lines:
                    if line in ("...", f"$ {sample.group(1)}"):
                        continue
                    pattern = re.sub(r"\d+", r"\\d+", re.escape(line))
                    if not any(re.fullmatch(pattern, real) for real in output):
                        fail(where, f"the sample line {line!r} is not in what it printed")
                log(f"PASS  {where}: the sample output matches (numbers aside)")
            elif block.marker.startswith("run and check each line"):
                variants = CURL_VARIANTS.findall(block.marker)
                passes = [""] + variants if "default" in block.marker else (variants or [""])
                for variant in passes:
                    shell.run(f"export CURL_HOME={curlrc(work, variant)}", 10)
                    for text, comment in block.commands():
                        first = text.splitlines()[0]
                        label = f"{where} {variant}".rstrip()
                        timeout = 1200 if any(build in first for build in BUILDS) else 120
                        line_start = time.monotonic()
                        try:
                            result = shell.run(text, timeout)
                        except (TimeoutError, RuntimeError) as error:
                            fail(label, f"{first}: {error}")
                            raise SystemExit(1)
                        printed[without_comment(text)] = (result[1] + result[2]).split("\n")
                        if check(f"{label}: {first[:70]}", text, comment, result, variant):
                            shown = without_comment(first)[:90]
                            log(f"PASS  {shown}{'  # ' + comment if comment else ''}"
                                f" ({time.monotonic() - line_start:.1f} s{', ' + variant if variant else ''})")
                    shell.run(f"export CURL_HOME={curlrc(work, '')}", 10)
                # The dev banner's own CLI hints, as printed and with
                # `cargo run --release --` in place of tmpvault, once the
                # CLI is installed.
                if "cargo install" in "\n".join(block.lines):
                    check_banner_hints(servers, shell)
            else:
                fail(where, f"unknown marker {block.marker!r}")
            log(f"      ({time.monotonic() - block_start:.0f} s)")
    finally:
        for server in servers:
            server.stop()
        shell.close()
        subprocess.run(["docker", "rm", "--force", "tmpvault"], capture_output=True)
        if not had_image:
            subprocess.run(["docker", "image", "rm", "tmpvault"], capture_output=True)
        shutil.rmtree(os.path.join(REPO, "certs"), ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    log(f"readme: {len(failures)} failure(s), {time.monotonic() - started:.0f} s")
    sys.exit(1 if failures else 0)


def check_banner_hints(servers, shell):
    dev = [s for s in servers if s.command.endswith(" dev")]
    if not dev:
        return
    hints = [line[4:] for line in dev[0].output if line.startswith("#   ")]
    if not hints:
        fail("dev banner", "no CLI hint lines")
    for spelling in ["tmpvault", "cargo run --release --"]:
        for hint in hints:
            text = hint.replace("tmpvault ", spelling + " ")
            rc, out, err = shell.run(text, 600)
            expected = "s3cr3t" if " get " in f" {text} " else None
            if rc != 0 or (expected and out != expected):
                fail("dev banner", f"{text}: exit {rc}, {len(out)} bytes out, {err[-300:]!r}")
            else:
                log(f"PASS  dev banner hint: {text}")


if __name__ == "__main__":
    main()
