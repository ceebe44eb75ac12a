#!/usr/bin/env python3
"""Import cycles between the modules of a crate.

    scripts/modcycles.py CRATE_SRC_DIR [...]     e.g. scripts/modcycles.py control-plane/src

A module is a file under the source directory (`a/mod.rs` and `a.rs` are module `a`, `lib.rs`
and `main.rs` the crate root). Module X depends on module Y when X's code names a path into Y:
`crate::y::...`, `super::...` resolved from X, or a `use` of either, including grouped
`use crate::{y, z::w}` trees. Names in comments, strings and `#[cfg(test)]` modules do not
count. Prints each cycle (a
strongly connected set of two or more modules) and exits 1 when there is one, 0 otherwise.
"""

import re
import sys
from pathlib import Path


def module_of(src: Path, file: Path) -> tuple[str, ...]:
    parts = list(file.relative_to(src).with_suffix("").parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return tuple(parts)


def strip_comments_and_strings(text: str) -> str:
    # Line comments (doc comments included), block comments, then string and char literals.
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    text = re.sub(r'r(#*)".*?"\1', '""', text, flags=re.S)
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text, flags=re.S)
    # Character literals, so a '{' cannot unbalance the braces (lifetimes have no closing quote).
    text = re.sub(r"'(?:\\.|[^'\\])'", "' '", text)
    return text


def strip_test_modules(text: str) -> str:
    """Drops `#[cfg(test)] mod name { ... }`: what tests name is not part of the layering."""
    out, pos = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+\w+\s*\{", text):
        if m.start() < pos:
            continue
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        out.append(text[pos : m.start()])
        pos = i
    out.append(text[pos:])
    return "".join(out)


def expand_use(tree: str) -> list[str]:
    """`crate::{a, b::{c, d}}` -> ["crate::a", "crate::b::c", "crate::b::d"]."""
    tree = re.sub(r"\s+", "", tree)
    depth, start = 0, None
    for i, ch in enumerate(tree):
        if ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0 and start is not None:
                prefix, inner, rest = tree[:start], tree[start + 1 : i], tree[i + 1 :]
                items, d, cur = [], 0, ""
                for c in inner:
                    if c == "," and d == 0:
                        items.append(cur)
                        cur = ""
                        continue
                    d += c == "{"
                    d -= c == "}"
                    cur += c
                items.append(cur)
                out = []
                for item in filter(None, items):
                    out += expand_use(prefix + item + rest)
                return out
    return [tree]


def resolve(parts: list[str], here: tuple[str, ...]) -> tuple[str, ...] | None:
    """The module path named by a `crate::`/`super::`/`self::` path, or None for other paths."""
    if not parts:
        return None
    if parts[0] == "crate":
        base, rest = [], parts[1:]
    elif parts[0] in ("self", "super"):
        # Module a::b's `super` is a (whether it lives in a/b.rs or a/b/mod.rs).
        base, i = list(here), 0
        while i < len(parts) and parts[i] in ("self", "super"):
            if parts[i] == "super":
                if not base:
                    return None
                base.pop()
            i += 1
        rest = parts[i:]
    else:
        return None
    return tuple(base + [r for r in rest if r != "*"])


def main(dirs: list[str]) -> int:
    found = False
    for d in dirs:
        src = Path(d)
        files = sorted(src.rglob("*.rs"))
        modules = {module_of(src, f) for f in files}
        edges: dict[tuple[str, ...], set[tuple[str, ...]]] = {m: set() for m in modules}
        for f in files:
            here = module_of(src, f)
            text = strip_test_modules(strip_comments_and_strings(f.read_text(encoding="utf-8")))
            paths = []
            for m in re.finditer(r"\buse\s+([^;]+);", text):
                paths += expand_use(m.group(1))
            paths += re.findall(r"\b(?:crate|super|self)(?:::\w+)+", text)
            for p in paths:
                target = resolve(p.split(" as ")[0].split("::"), here)
                if target is None:
                    continue
                # The longest module that the path names.
                while target and target not in modules:
                    target = target[:-1]
                # A module naming its own ancestors is how Rust nests; it is not a cycle.
                if target and here[: len(target)] != target:
                    edges[here].add(target)
        for scc in strongly_connected(edges):
            if len(scc) > 1:
                found = True
                print(f"{d}: cycle: " + ", ".join(sorted("::".join(m) for m in scc)))
        print(f"{d}: {len(modules)} modules")
    return 1 if found else 0


def strongly_connected(edges):
    """Tarjan's algorithm, iteratively."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            node, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter[0]
                    counter[0] += 1
                    stack.append(nxt)
                    on.add(nxt)
                    work.append((nxt, iter(sorted(edges.get(nxt, ())))))
                elif nxt in on:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                scc = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    scc.append(w)
                    if w == node:
                        break
                out.append(scc)
    return out


if __name__ == "__main__":
    if len(sys.argv) < 2:
        print(__doc__.strip(), file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1:]))
