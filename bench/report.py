#!/usr/bin/env python3
"""Turns the raw figures bench/run.sh wrote into Markdown: launch time (median,
p95, own share, ratios), the previous build side by side when run with
--before, peak RSS, scale, the supervisor's idle cost and wake-ups, the binary
size, the cost of 100 templates, and PASS/MISS for each target of issue 17
and for the templates figure docs/performance.md states.

usage: report.py RESULTS_DIR
"""
import json
import os
import statistics
import sys

MIB = 1024 * 1024
# Rows in this order when present; any other row a run produced follows them.
KNOWN = [
    "baseline",
    "svid-exec",
    "svid-exec --ca-cert-only",
    "svid-exec --no-revoke",
    "svid-exec --jwt-file",
    "before",
    "before --jwt-file",
    "sh+curl+jq",
    "python sdk",
]
ALTERNATIVES = ("baseline", "sh+curl+jq", "python sdk")

# Issue 17's targets.
OWN_SHARE_MS = 1.5
FASTER_THAN_SCRIPT = 12
FASTER_THAN_PYTHON = 35
OWN_SHARE_BIG_MS = 10
RSS_BIG_MIB = 12
RSS_MIB = 6
BINARY_MIB = 6
# docs/performance.md: 100 templates from 1,000 secrets cost about 8 ms of CPU
# per `write` beyond the same write to one JSON file (release build).
TEMPLATES_CPU_MS = 10
# The templates step's two hyperfine commands (bench/run.sh).
TEMPLATES_BASE, TEMPLATES_RUN = "write --json-file", "write, 100 templates"


def load_floor(out: str, n: int) -> float | None:
    """The stand-in's own time for one login plus one listing: medians of
    curl's total time minus its pre-transfer time (start-up and handshakes excluded)."""
    path = os.path.join(out, f"server-{n}.tsv")
    if not os.path.exists(path):
        return None
    times: dict[str, list[float]] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            what, pre, total = line.split()
            times.setdefault(what, []).append((float(total) - float(pre)) * 1000)
    if set(times) != {"login", "list"}:
        return None
    return statistics.median(times["login"]) + statistics.median(times["list"])


def p95(times: list[float]) -> float:
    ordered = sorted(times)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def load_launch(out: str, n: int) -> dict[str, dict]:
    """name -> {median, p95, mean, stddev, runs, cpu} in milliseconds."""
    rows = {}
    for part in ("svid", "diy", "python"):
        path = os.path.join(out, f"launch-{n}-{part}.json")
        if not os.path.exists(path):
            continue
        with open(path, encoding="utf-8") as f:
            for r in json.load(f)["results"]:
                times = [t * 1000 for t in r["times"]]
                rows[r["command"]] = {
                    "median": statistics.median(times),
                    "p95": p95(times),
                    "mean": statistics.fmean(times),
                    "stddev": statistics.pstdev(times),
                    "runs": len(times),
                    # hyperfine's mean user+system time of the process tree:
                    # the launcher's own work, without waiting on the server.
                    "cpu": (r["user"] + r["system"]) * 1000,
                }
    return rows


def load_rss(out: str) -> dict[tuple[int, str], list[int]]:
    rss: dict[tuple[int, str], list[int]] = {}
    with open(os.path.join(out, "rss.tsv"), encoding="utf-8") as f:
        next(f)
        for line in f:
            n, label, kib = line.rstrip("\n").split("\t")
            rss.setdefault((int(n), label), []).append(int(kib))
    return rss


def read_json(out: str, name: str) -> dict | None:
    path = os.path.join(out, name)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_int(out: str, name: str) -> int | None:
    path = os.path.join(out, name)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return int(f.read())


def ordered(names) -> list[str]:
    names = list(names)
    return [n for n in KNOWN if n in names] + [n for n in names if n not in KNOWN]


def verdict(ok: bool) -> str:
    return "**PASS**" if ok else "**MISS**"


class Report:
    def __init__(self, out: str) -> None:
        self.out = out
        with open(os.path.join(out, "sizes.tsv"), encoding="utf-8") as f:
            self.sizes = {int(n): int(b) for n, b in (line.split() for line in f if line.strip())}
        self.scales = sorted(self.sizes)
        self.launch = {n: load_launch(out, n) for n in self.scales}
        self.floor = {n: load_floor(out, n) for n in self.scales}
        self.rss = load_rss(out)
        self.watch = read_json(out, "watch.json")
        self.wakeups = read_json(out, "wakeups.json")
        self.templates = read_json(out, "templates.json")
        self.binary = read_int(out, "binary-size")
        self.binary_before = read_int(out, "binary-size-before")
        with open(os.path.join(out, "machine.txt"), encoding="utf-8") as f:
            self.machine = f.read().strip()
        self.release = "release build" in self.machine
        self.small, self.big = self.scales[0], self.scales[-1]

    def median(self, n: int, name: str) -> float | None:
        r = self.launch[n].get(name)
        return r["median"] if r else None

    def own(self, n: int, name: str) -> float | None:
        """Median - baseline median - server floor: what the launcher itself adds."""
        m, base, f = self.median(n, name), self.median(n, "baseline"), self.floor[n]
        if m is None or base is None or f is None or name in ALTERNATIVES:
            return None
        return m - base - f

    def peak(self, n: int, name: str) -> float | None:
        kib = self.rss.get((n, name))
        return max(kib) / 1024 if kib else None

    def launch_table(self) -> None:
        n = self.small
        rows = self.launch[n]
        base, svid = rows["baseline"]["median"], rows["svid-exec"]["median"]
        f = self.floor[n]
        print(f"### Launch time, {n} secrets (HTTPS, loopback)\n")
        print("| launcher | runs | median ms | p95 ms | mean ± σ ms | CPU ms (user+sys) | median − baseline ms | own share ms | × svid-exec |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for name in ordered(rows):
            r = rows[name]
            own = self.own(n, name)
            print(
                f"| {name} | {r['runs']} | {r['median']:.2f} | {r['p95']:.2f} | {r['mean']:.2f} ± {r['stddev']:.2f} "
                f"| {r['cpu']:.2f} | {r['median'] - base:.2f} | {'–' if own is None else f'{own:.2f}'} | {r['median'] / svid:.2f} |"
            )
        print("\nOwn share = median − baseline median − server floor (the stand-in's own time for the login")
        print(f"and the listing{f', {f:.2f} ms' if f is not None else ''}): what the launcher itself adds. × svid-exec > 1 means slower")
        print("than `svid-exec run`. CPU is the mean user+system time of the launcher and its children")
        print("(curl, jq, the program).")
        kept = rows.get("svid-exec --no-revoke")
        if kept is not None:
            print(f"Revoking the access token before exec (the default) costs {svid - kept['median']:.2f} ms median "
                  f"over `--no-revoke` ({rows['svid-exec']['cpu'] - kept['cpu']:.2f} ms CPU).")
        print()

    def before_table(self) -> None:
        if "before" not in self.launch[self.small]:
            return
        print("### Before and after, side by side (same run)\n")
        print("| figure | before | svid-exec | change |")
        print("|---|---:|---:|---:|")

        def row(label: str, a: float | None, b: float | None, unit: str, digits: int = 2) -> None:
            if a is None or b is None:
                return
            change = f"{(b - a) / a * 100:+.0f}%" if a else "–"
            print(f"| {label} | {a:.{digits}f} {unit} | {b:.{digits}f} {unit} | {change} |")

        for n in self.scales:
            row(f"median, {n} secrets", self.median(n, "before"), self.median(n, "svid-exec"), "ms")
            row(f"own share, {n} secrets", self.own(n, "before"), self.own(n, "svid-exec"), "ms")
            b, a = self.launch[n].get("before"), self.launch[n].get("svid-exec")
            row(f"CPU, {n} secrets", b and b["cpu"], a and a["cpu"], "ms")
            row(f"peak RSS, {n} secrets", self.peak(n, "before"), self.peak(n, "svid-exec"), "MiB", 1)
        row("median, --jwt-file, 10 secrets", self.median(self.small, "before --jwt-file"), self.median(self.small, "svid-exec --jwt-file"), "ms")
        if self.binary_before and self.binary:
            row("binary", self.binary_before / MIB, self.binary / MIB, "MiB")
        print()

    def rss_table(self) -> None:
        names = ordered({name for (_, name) in self.rss})
        print("### Peak RSS (max over runs, MiB)\n")
        print("| secrets | " + " | ".join(names) + " |")
        print("|---:|" + "---:|" * len(names))
        for n in self.scales:
            cells = [f"{self.peak(n, name):.1f}" if (n, name) in self.rss else "–" for name in names]
            print(f"| {n} | " + " | ".join(cells) + " |")
        print()

    def scale_table(self) -> None:
        names = [x for x in ordered(self.launch[self.small]) if x != "baseline"]
        svids = [x for x in names if x not in ALTERNATIVES]
        print("### Scale: launch time median (p95) ms by number of secrets\n")
        print("| secrets | list JSON | server floor | " + " | ".join(names) + " | " + " | ".join(f"own share {x}" for x in svids) + " |")
        print("|---:|---:|---:|" + "---:|" * (len(names) + len(svids)))
        for n in self.scales:
            cells = []
            for name in names:
                r = self.launch[n].get(name)
                cells.append(f"{r['median']:.1f} ({r['p95']:.1f})" if r else "–")
            for name in svids:
                own = self.own(n, name)
                cells.append("–" if own is None else f"{own:.1f}")
            f = self.floor[n]
            print(f"| {n} | {self.sizes[n] / 1024:.0f} KiB | {'–' if f is None else f'{f:.1f}'} | " + " | ".join(cells) + " |")
        lo, hi = self.small, self.big
        per_secret = {}
        for name in names:
            if name in self.launch[lo] and name in self.launch[hi]:
                per_secret[name] = (self.launch[hi][name]["median"] - self.launch[lo][name]["median"]) / (hi - lo) * 1000
        print("\nMarginal cost per secret between the smallest and the largest set (µs/secret): " + ", ".join(
            f"{name} {cost:.1f}" for name, cost in per_secret.items()) + ".\n")

    def templates_table(self) -> float | None:
        """`write` with 100 templates (10 secrets each) against `write --json-file`,
        both fetching the same 1,000 secrets. Returns the templates' extra CPU
        (ms per `write`): CPU time is the steadier figure on a shared machine; the
        wall-clock difference includes the noise of two separate series."""
        if self.templates is None:
            return None
        print("### Templates: 100 templates from 1,000 secrets\n")
        print("| command | runs | median ms | p95 ms | CPU ms (user+sys) |")
        print("|---|---:|---:|---:|---:|")
        medians, cpu = {}, {}
        for r in self.templates["results"]:
            name = r["command"]
            times = [t * 1000 for t in r["times"]]
            medians[name] = statistics.median(times)
            cpu[name] = (r["user"] + r["system"]) * 1000
            print(f"| {name} | {len(times)} | {medians[name]:.2f} | {p95(times):.2f} | {cpu[name]:.2f} |")
        if TEMPLATES_BASE not in cpu or TEMPLATES_RUN not in cpu:
            print()
            return None
        extra = cpu[TEMPLATES_RUN] - cpu[TEMPLATES_BASE]
        print(f"\nParsing, rendering and atomically writing 100 templates costs {extra:.2f} ms of CPU "
              f"({extra * 10:.0f} µs per template) on top of the same fetch; median wall-clock "
              f"difference {medians[TEMPLATES_RUN] - medians[TEMPLATES_BASE]:+.2f} ms.\n")
        return extra

    def supervisor_table(self) -> dict | None:
        watch = self.watch
        if watch is None or "error" in watch:
            print("### Supervisor\n")
            print(f"Not measured: `run --watch` exited at once: `{watch['error'] if watch else 'no data'}`\n")
            return None
        samples = watch["samples"]
        rss_now = samples[-1]["rss_kib"]
        rss_max = max(s["rss_kib"] for s in samples)
        cpu_ms = watch["cpu_ticks_total"] * 1000 / watch["clock_ticks_per_second"]
        active = watch["active_seconds"]
        interval_s = float(watch["poll_interval"].rstrip("s"))
        print(f"### Supervisor (`run --watch --poll-interval {watch['poll_interval']}`), watched for {watch['seconds']} s\n")
        print("| RSS now | RSS max while sampled | VmHWM | threads | CPU time | seconds in which it ran | polls seen | wake-ups between polls |")
        print("|---:|---:|---:|---:|---:|---|---:|---|")
        wake = self.wakeups
        if wake is None or "error" in wake:
            polls, wakeups = "–", f"not measured ({wake['error'] if wake else 'no trace'})"
        else:
            polls = str(len(wake["polls"]))
            wakeups = str(len(wake["wakeups"]))
            if wake["wakeups"]:
                wakeups += ": " + ", ".join(f"{w['at']:.1f} s ({'/'.join(w['calls'])})" for w in wake["wakeups"])
        print(
            f"| {rss_now / 1024:.1f} MiB | {rss_max / 1024:.1f} MiB | {samples[-1]['hwm_kib'] / 1024:.1f} MiB "
            f"| {samples[-1]['threads']} | {cpu_ms:.0f} ms | {len(active)} of {watch['seconds']}: {active} | {polls} | {wakeups} |"
        )
        print(f"\nPolls expected in the window: about {watch['seconds'] / interval_s:.0f} (interval jittered). A wake-up is a burst")
        print("of system calls (`strace -f -p`) that does not call the server: bench/wakeups.py.\n")
        return {"rss_max": rss_max, "wakeups": None if wake is None or "error" in wake else wake["wakeups"], "seconds": watch["seconds"]}

    def targets(self, sup: dict | None, templates_cpu: float | None) -> None:
        n, big = self.small, self.big
        rows = self.launch[n]
        svid = rows["svid-exec"]["median"]
        print("### Targets (issue 17, and the templates figure; checked here, never asserted)\n")
        print("| target | measured | verdict |")
        print("|---|---|---|")
        for name in ("svid-exec", "svid-exec --ca-cert-only", "svid-exec --no-revoke"):
            own = self.own(n, name)
            if own is not None:
                trust = "default trust settings" if name == "svid-exec" else f"`{name.split(' ', 1)[1]}`"
                print(f"| own share ≤ {OWN_SHARE_MS} ms at {n} secrets, {trust} | {own:.2f} ms | {verdict(own <= OWN_SHARE_MS)} |")
        diy, py = self.median(n, "sh+curl+jq"), self.median(n, "python sdk")
        if diy:
            print(f"| ≥ {FASTER_THAN_SCRIPT}× faster than sh+curl+jq (medians) | {diy / svid:.1f}× | {verdict(diy / svid >= FASTER_THAN_SCRIPT)} |")
        if py:
            print(f"| ≥ {FASTER_THAN_PYTHON}× faster than the Python SDK wrapper (medians) | {py / svid:.1f}× | {verdict(py / svid >= FASTER_THAN_PYTHON)} |")
        own_big = self.own(big, "svid-exec")
        if own_big is not None:
            print(f"| {big} secrets: own share ≤ {OWN_SHARE_BIG_MS} ms | {own_big:.1f} ms | {verdict(own_big <= OWN_SHARE_BIG_MS)} |")
        peak_big, peak = self.peak(big, "svid-exec"), self.peak(n, "svid-exec")
        if peak_big is not None:
            print(f"| {big} secrets: peak RSS ≤ {RSS_BIG_MIB} MiB | {peak_big:.1f} MiB | {verdict(peak_big <= RSS_BIG_MIB)} |")
        if peak is not None:
            print(f"| peak RSS ≤ {RSS_MIB} MiB at {n} secrets | {peak:.1f} MiB | {verdict(peak <= RSS_MIB)} |")
        if self.binary is not None:
            size = self.binary / MIB
            if self.release:
                print(f"| binary ≤ {BINARY_MIB} MiB | {size:.2f} MiB | {verdict(size <= BINARY_MIB)} |")
            else:
                print(f"| binary ≤ {BINARY_MIB} MiB | debug build ({size:.2f} MiB): not comparable | – |")
        if templates_cpu is not None:
            label = f"100 templates from 1,000 secrets: ≤ {TEMPLATES_CPU_MS} ms of CPU per `write` (docs/performance.md)"
            if self.release:
                print(f"| {label} | {templates_cpu:.2f} ms | {verdict(templates_cpu <= TEMPLATES_CPU_MS)} |")
            else:
                print(f"| {label} | debug build ({templates_cpu:.2f} ms): not comparable | – |")
        if sup is None or sup["wakeups"] is None:
            print("| supervisor: no wake-up between polls | not measured | – |")
        else:
            count = len(sup["wakeups"])
            print(f"| supervisor: no wake-up between polls (watched {sup['seconds']} s) | {count} | {verdict(count == 0)} |")
        print()

    def print(self) -> None:
        print("### Machine\n")
        print("```\n" + self.machine + "\n```\n")
        self.launch_table()
        self.before_table()
        self.rss_table()
        self.scale_table()
        templates_cpu = self.templates_table()
        sup = self.supervisor_table()
        print("### Binary\n")
        kind = "release: LTO, one codegen unit, stripped" if self.release else "debug"
        if self.binary is not None:
            print(f"`svid-exec` as built ({kind}): {self.binary} bytes = {self.binary / MIB:.2f} MiB")
        if self.binary_before is not None:
            print(f"before: {self.binary_before} bytes = {self.binary_before / MIB:.2f} MiB")
        print()
        self.targets(sup, templates_cpu)
        if not self.release:
            print("Debug builds (`--debug`): the figures only show that the benchmark runs.\n")


def main() -> None:
    Report(sys.argv[1]).print()


if __name__ == "__main__":
    main()
