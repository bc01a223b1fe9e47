#!/usr/bin/env python3
"""Fails when two modules of one crate import each other, directly or in a ring.

Each file under crates/*/src is a module. A module uses another when its code
(comments and `#[cfg(test)]` blocks left out) names a path that starts with
`crate::`, `super::` or `self::` and resolves to that module, or to an item
inside it. For every ring of modules found, prints the modules and the edges
that close it, so the reader sees which `use` to move.

Usage: .ci/module-cycles.py [REPO_ROOT]    exit 0: no rings; exit 1: rings.
       .ci/module-cycles.py --self-test    checks this checker on made-up crates.
"""
import os
import re
import sys

PATH_RE = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
GROUP_RE = re.compile(
    r"\buse\s+(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)*)::\{([^;]*)\};", re.S
)
TEST_BLOCK_RE = re.compile(r"#\[cfg\(test\)\]\s*(?:pub(?:\([a-z]+\))?\s+)?mod\s+\w+\s*\{")


def without_tests_and_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    out, pos = [], 0
    for m in TEST_BLOCK_RE.finditer(text):
        if m.start() < pos:
            continue
        out.append(text[pos : m.start()])
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        pos = i
    out.append(text[pos:])
    return "".join(out)


def module_path(src, file):
    parts = os.path.relpath(file, src)[: -len(".rs")].split(os.sep)
    if parts[-1] in ("lib", "main", "mod"):
        parts = parts[:-1]
    return tuple(parts)


def named_paths(module, text):
    """(head, [segments]) for every crate/super/self path, groups expanded."""
    found = [(h, t.split("::")[1:]) for h, t in PATH_RE.findall(text)]
    for head, base, group in GROUP_RE.findall(text):
        prefix = [s for s in base.split("::") if s]
        for item in re.split(r",", group):
            first = item.strip().strip("{}").split(" as ")[0].split("::")[0].strip()
            if first and first != "self":
                found.append((head, prefix + [first]))
    return found


def resolve(module, head, segments, modules):
    if head == "crate":
        base = ()
    elif head == "self":
        base = module
    else:
        # `super` from foo.rs and from foo/mod.rs both name foo's parent.
        base = module[:-1]
        while segments and segments[0] == "super":
            segments, base = segments[1:], base[:-1]
    full = base + tuple(segments)
    for k in range(len(full), -1, -1):
        if full[:k] in modules:
            return full[:k]
    return None


def rings(edges):
    """Strongly connected groups of more than one module (iterative Tarjan)."""
    index, low, on_stack, stack, groups, counter = {}, {}, set(), [], [], 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            advanced = False
            for w in children:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                    advanced = True
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                group = set()
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    group.add(w)
                    if w == v:
                        break
                if len(group) > 1:
                    groups.append(group)
    return groups


def self_test():
    """A ring through `super::`, a group import and a test-only use must be
    found; a layered crate, and edges only inside `#[cfg(test)]`, must not."""
    import subprocess
    import tempfile

    cases = {
        "ring": {
            "lib.rs": "mod a;\nmod b;\n",
            "a.rs": "use crate::b::{Thing, other};\npub struct A;\n",
            "b/mod.rs": "mod c;\npub use self::c::Helper;\npub struct Thing;\npub fn other() {}\n",
            "b/c.rs": "use super::super::a::A;\npub struct Helper;\n",
        },
        "layered": {
            "lib.rs": "mod a;\nmod b;\n",
            "a.rs": "use crate::b::Thing;\n// crate::a is named in a comment\n",
            "b.rs": "pub struct Thing;\n#[cfg(test)]\nmod tests {\n    use crate::a::*;\n}\n",
        },
    }
    expected = {"ring": 1, "layered": 0}
    for name, files in cases.items():
        with tempfile.TemporaryDirectory() as root:
            for path, text in files.items():
                full = os.path.join(root, "crates", name, "src", path)
                os.makedirs(os.path.dirname(full), exist_ok=True)
                with open(full, "w") as fh:
                    fh.write(text)
            run = subprocess.run([sys.executable, __file__, root], capture_output=True, text=True)
            if run.returncode != expected[name]:
                print(f"self-test {name}: exit {run.returncode}, expected {expected[name]}\n{run.stdout}")
                return 1
    print("self-test passed: a ring is found, a layered crate passes")
    return 0


def main():
    if sys.argv[1:] == ["--self-test"]:
        return self_test()
    root = sys.argv[1] if len(sys.argv) > 1 else "."
    crates_dir = os.path.join(root, "crates")
    found = 0
    for crate in sorted(os.listdir(crates_dir)):
        src = os.path.join(crates_dir, crate, "src")
        if not os.path.isdir(src):
            continue
        files = {}
        for d, _, names in os.walk(src):
            for n in names:
                if n.endswith(".rs"):
                    files[module_path(src, os.path.join(d, n))] = os.path.join(d, n)
        modules = set(files)
        edges = {m: set() for m in modules}
        for m, f in files.items():
            with open(f, encoding="utf-8", errors="replace") as fh:
                text = without_tests_and_comments(fh.read())
            for head, segments in named_paths(m, text):
                target = resolve(m, head, list(segments), modules)
                if target is not None and target != m:
                    edges[m].add(target)
        for group in rings(edges):
            found += 1
            name = lambda m: "::".join(m) or "(root)"
            print(f"{crate}: modules in a ring: " + ", ".join(sorted(name(m) for m in group)))
            for a in sorted(group):
                for b in sorted(edges[a] & group):
                    print(f"    {name(a)} -> {name(b)}")
    print(f"{found} import rings")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
