#!/usr/bin/env python3
"""Regenerates link/symbol-order.txt: the functions a launch runs, in the
order they first run, for the linker to put first in the release binary
(build.rs passes the file to LLD as --symbol-ordering-file).

Why: a page fault on a mapped file maps the 64 KiB around it, and a launch
runs ~1.8 MB of the binary's 4.3 MB of code spread all over it, so nearly all
of the code became resident (peak RSS 7.3 MiB at 10 secrets). Grouped, the
code a launch runs is a few dozen faults of contiguous pages (BENCHMARKS.md).

How, against the stand-ins (testkit-stack --agent-cache --secrets 10):
1. link the release binary with a map (-Wl,-Map) and run each scenario below
   under valgrind's lackey (--trace-superblocks): every block of code it
   executes, in order; each address is mapped to its input section through the
   map, and the section to its symbol;
2. link with that order and run the scenarios natively under
   `perf record -e page-faults -d`, twice: code valgrind's CPU never runs
   (CPU-specific paths: ring's ADX/AVX code, xgetbv) faults outside the
   grouped part; each faulting function is appended.

The names carry hashes of the toolchain (rustc -vV) and of Cargo.lock's
crates: regenerate after changing either (a stale list only loses locality;
the build skips names it lacks). Needs valgrind, perf and python3; takes
about three minutes and three release links.

usage: bench/symbol-order.py [--out FILE]
"""
import bisect
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXT_SECTION = re.compile(r"\((\.text[^)]*)\)")
PREFIXES = re.compile(r"^\.text\.(unlikely\.|hot\.|startup\.|exit\.)?")


def sh(*argv, **kw):
    return subprocess.run(argv, check=True, cwd=ROOT, **kw)


def scenarios(work):
    """What a launch does, most common first: the order of first execution
    across them is the layout."""
    jwt = os.path.join(work, "jwt")
    out = os.path.join(work, "out")
    os.makedirs(out, exist_ok=True)
    return [
        ["run", "--", "/bin/true"],
        ["run", "-q", "--jwt-file", jwt, "--", "/bin/true"],
        ["run", "--watch", "--", "/bin/true"],
        ["write", "--dir", out, "--allow-non-tmpfs"],
        ["check"],
    ]


def link(work, tag):
    """Links the release binary with a map; returns (binary copy, map)."""
    map_file = os.path.join(work, f"svid-exec.{tag}.map")
    sh("cargo", "rustc", "--release", "--locked", "-q", "-p", "svid-exec", "--bin", "svid-exec",
       "--", "-C", f"link-arg=-Wl,-Map={map_file}")
    binary = os.path.join(work, f"svid-exec.{tag}")
    shutil.copy(os.path.join(ROOT, "target/release/svid-exec"), binary)
    return binary, map_file


class Layout:
    """The input sections of the binary's code, from the linker's map."""

    def __init__(self, map_file):
        secs = []
        symbol_of = {}
        current = None
        for line in open(map_file, encoding="utf-8", errors="replace"):
            p = line.split(None, 4)
            if len(p) == 5 and "(.text" in p[4]:
                try:
                    vma, size = int(p[0], 16), int(p[2], 16)
                except ValueError:
                    continue
                secs.append((vma, size, TEXT_SECTION.search(p[4]).group(1)))
                current = vma
            elif len(p) == 5 and current is not None and "(" not in p[4] and not p[4].startswith("<"):
                # The first symbol of a plain `.text` (assembly) section.
                symbol_of.setdefault(current, p[4].strip())
        secs.sort()
        self.secs = secs
        self.starts = [s[0] for s in secs]
        self.symbol_of = symbol_of

    def symbol_at(self, vaddr):
        i = bisect.bisect_right(self.starts, vaddr) - 1
        if i < 0 or vaddr >= self.secs[i][0] + self.secs[i][1]:
            return None
        vma, _, name = self.secs[i]
        if name.startswith(".text."):
            # -ffunction-sections: the section is named after its function
            # (mangled, as the linker wants it).
            return PREFIXES.sub("", name)
        return self.symbol_of.get(vma)


def entry_point(binary):
    out = subprocess.run(["readelf", "-h", binary], check=True, capture_output=True, text=True).stdout
    return int(re.search(r"Entry point address:\s+0x([0-9a-f]+)", out).group(1), 16)


def lackey_order(binary, layout, env, work, order, seen):
    entry = entry_point(binary)
    for i, args in enumerate(scenarios(work)):
        log = os.path.join(work, f"lackey.{i}")
        subprocess.run(["valgrind", "--tool=lackey", "--trace-superblocks=yes", f"--log-file={log}",
                        binary, *args], env=env, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        blocks = [int(l[3:], 16) for l in open(log) if l.startswith("SB ")]
        # Where valgrind loaded the (position-independent) binary: of the
        # page-aligned bases that put a block at the entry point, the one
        # that puts the most blocks inside the binary's code.
        lo, hi = layout.starts[0], layout.secs[-1][0] + layout.secs[-1][1]
        bases = {a - entry for a in blocks if (a - entry) % 4096 == 0 and a > entry}
        base = max(bases, key=lambda b: sum(lo <= a - b < hi for a in blocks), default=None)
        if base is None:
            sys.exit(f"symbol-order: no block at the entry point in {log}")
        for a in blocks:
            add(layout.symbol_at(a - base), order, seen)


def fault_order(binary, layout, env, work, order, seen):
    name = os.path.basename(binary)
    added = 0
    for i, args in enumerate(scenarios(work)):
        data = os.path.join(work, f"faults.{name}.{i}.data")
        subprocess.run(["perf", "record", "-q", "-e", "page-faults", "-c", "1", "-d", "-o", data,
                        binary, *args], env=env, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        script = subprocess.run(["perf", "script", "-i", data, "--show-mmap-events", "-F", "ip,addr"],
                                check=True, capture_output=True, text=True).stdout
        base = None
        for line in script.splitlines():
            m = re.search(r"\[0x([0-9a-f]+)\(0x[0-9a-f]+\) @ 0 .*" + re.escape(binary), line)
            if m:
                base = int(m.group(1), 16)
                continue
            fields = line.split()
            if base is None or "PERF_RECORD" in line or len(fields) < 2:
                continue
            # The faulting address (a fetch of code faults with ip == addr).
            try:
                addr = int(fields[0], 16)
            except ValueError:
                continue
            added += add(layout.symbol_at(addr - base), order, seen)
    return added


def add(symbol, order, seen):
    if symbol is None or symbol in seen:
        return 0
    seen.add(symbol)
    order.append(symbol)
    return 1


def write(path, order, rustc):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("# The functions a launch runs, in the order they first run: the release\n")
        f.write("# binary's code layout (build.rs, LLD --symbol-ordering-file). Generated by\n")
        f.write("# bench/symbol-order.py; do not edit. The names are those of this toolchain\n")
        f.write(f"# and Cargo.lock: {rustc}\n")
        f.write("\n".join(order) + "\n")
    os.replace(tmp, path)


def main():
    out = os.path.join(ROOT, "link/symbol-order.txt")
    if sys.argv[1:2] == ["--out"] and len(sys.argv) == 3:
        out = os.path.abspath(sys.argv[2])
    elif sys.argv[1:]:
        sys.exit(__doc__)
    for tool in ("valgrind", "perf", "readelf", "cargo"):
        if shutil.which(tool) is None:
            sys.exit(f"symbol-order: {tool} is needed")
    rustc = subprocess.run(["rustc", "-V"], check=True, capture_output=True, text=True).stdout.strip()
    sh("cargo", "build", "--release", "--locked", "-q", "-p", "svid-exec-testkit", "--bin", "testkit-stack")
    work = tempfile.mkdtemp(prefix="symbol-order-")
    env_file = os.path.join(work, "env")
    stack = subprocess.Popen(
        [os.path.join(ROOT, "target/release/testkit-stack"), "--agent-cache", "--secrets", "10",
         "--env-file", env_file, "--jwt-file", os.path.join(work, "jwt")],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            if os.path.exists(env_file):
                break
            time.sleep(0.1)
        env = dict(os.environ)
        for line in open(env_file):
            m = re.match(r"export (\w+)='(.*)'", line.strip())
            if m:
                env[m.group(1)] = m.group(2)

        order, seen = [], set()
        binary, map_file = link(work, "traced")
        lackey_order(binary, Layout(map_file), env, work, order, seen)
        print(f"symbol-order: {len(order)} functions run under valgrind")
        write(out, order, rustc)
        for tag in ("faults1", "faults2"):
            binary, map_file = link(work, tag)
            added = fault_order(binary, Layout(map_file), env, work, order, seen)
            print(f"symbol-order: {added} more from native page faults ({tag})")
            write(out, order, rustc)
        print(f"symbol-order: wrote {len(order)} names to {os.path.relpath(out, ROOT)}")
    finally:
        stack.send_signal(signal.SIGTERM)
        stack.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)
    # The next plain build links without the map.
    sh("cargo", "build", "--release", "--locked", "-q", "-p", "svid-exec", "--bin", "svid-exec")


if __name__ == "__main__":
    main()
