#!/usr/bin/env python3
"""The layering rule of src/lib.rs's `# Layout`, checked.

Every `crate::...` path in code (comments and doc comments are skipped) is
an arrow from its file to the file that defines the module it names. Two
rules, as STYLE.md states them:

- no circle of files (two files importing each other, or longer);
- arrows point down the layers, in the order `# Layout` lists the folders:
  a file may use its own folder and any folder listed below it.

Prints each offending arrow and exits 1, or prints the graph's size.
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
# Top to bottom, as src/lib.rs lists them; main.rs and lib.rs sit above all.
LAYERS = ["cmd", "app", "ops", "http", "posture", "access", "persist",
          "store", "config", "tls", "sys", "text"]


def module_of(path):
    rel = os.path.relpath(path, ROOT)[:-3].split(os.sep)
    if rel[-1] == "mod":
        rel = rel[:-1]
    return tuple(rel)


def main():
    files = {}
    for top, _, names in os.walk(ROOT):
        for name in names:
            if name.endswith(".rs"):
                path = os.path.join(top, name)
                files[module_of(path)] = path
    edges = {}
    for module, path in files.items():
        targets = set()
        for line in open(path, encoding="utf-8"):
            code = line.split("//", 1)[0]
            for match in re.finditer(r"\bcrate::((?:[a-z_0-9]+::)*[a-z_0-9]+)", code):
                parts = tuple(match.group(1).split("::"))
                # The longest prefix that is a file is the module used.
                for cut in range(len(parts), 0, -1):
                    if parts[:cut] in files:
                        if parts[:cut] != module:
                            targets.add(parts[:cut])
                        break
            # `super::x` names a sibling file of the same folder (in a
            # `mod tests` it names this file itself, and is skipped so).
            for match in re.finditer(r"\bsuper::([a-z_0-9]+)", code):
                sibling = module[:-1] + (match.group(1),)
                if sibling in files and sibling != module:
                    targets.add(sibling)
        edges[module] = targets

    problems = []
    # Circles: Tarjan's strongly connected components.
    index, low, stack, on, count, sccs = {}, {}, [], set(), [0], []

    def visit(v):
        index[v] = low[v] = count[0]
        count[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop()
                on.discard(w)
                scc.append(w)
                if w == v:
                    break
            if len(scc) > 1:
                sccs.append(scc)

    sys.setrecursionlimit(10000)
    for v in edges:
        if v not in index:
            visit(v)
    for scc in sccs:
        problems.append("circle: " + " -> ".join("::".join(m) for m in sorted(scc)))

    def layer(module):
        return LAYERS.index(module[0]) if module and module[0] in LAYERS else -1

    for source, targets in sorted(edges.items()):
        for target in sorted(targets):
            if layer(source) == -1 or source[0] == target[0]:
                continue
            if layer(target) < layer(source):
                problems.append(
                    f"upward: {'::'.join(source)} ({source[0]}) uses "
                    f"{'::'.join(target)} ({target[0]}), a layer above it")
    for problem in problems:
        print(problem)
    arrows = sum(len(t) for t in edges.values())
    if problems:
        print(f"ci/layers.py: {len(problems)} problem(s) in {len(files)} files, {arrows} arrows")
        return 1
    print(f"ci/layers.py: {len(files)} files, {arrows} arrows, no circle, every arrow points down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
