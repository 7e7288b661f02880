#!/usr/bin/env python3
"""Turns the raw figures bench/run.sh wrote into Markdown: launch time (median,
p95, ratios to the baseline and between launchers), peak RSS, scale, the
supervisor's idle cost, the binary size, and PASS/MISS for each target.

usage: report.py RESULTS_DIR
"""
import json
import math
import os
import statistics
import sys

MIB = 1024 * 1024
LAUNCHERS = ["baseline", "svid-exec", "svid-exec --no-revoke", "svid-exec --jwt-file", "sh+curl+jq", "python sdk"]
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
    """name -> {median, p95, mean, stddev, runs} in milliseconds."""
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


def supervisor_table(watch: dict) -> dict:
    """Prints the supervisor's table; returns what the targets need."""
    p = print
    samples = watch["samples"]
    rss_now = samples[-1]["rss_kib"]
    rss_max = max(s["rss_kib"] for s in samples)
    cpu_ms = watch["cpu_ticks_total"] * 1000 / watch["clock_ticks_per_second"]
    active = watch["active_seconds"]
    interval_s = float(watch["poll_interval"].rstrip("s"))
    expected_polls = watch["seconds"] / interval_s
    p(f"### Supervisor (`run --watch --poll-interval {watch['poll_interval']}`), sampled every second for {watch['seconds']} s\n")
    p("| RSS now | RSS max while sampled | VmHWM | threads | CPU time | seconds in which it ran |")
    p("|---:|---:|---:|---:|---:|---|")
    p(
        f"| {rss_now / 1024:.1f} MiB | {rss_max / 1024:.1f} MiB | {samples[-1]['hwm_kib'] / 1024:.1f} MiB "
        f"| {samples[-1]['threads']} | {cpu_ms:.0f} ms | {len(active)} of {watch['seconds']}: {active} |"
    )
    p(f"\nPolls expected in the window: about {expected_polls:.0f} (interval jittered).\n")
    return {"rss_max": rss_max, "active": active, "expected_polls": expected_polls, "seconds": watch["seconds"]}


def verdict(ok: bool) -> str:
    return "**PASS**" if ok else "**MISS**"


def main() -> None:
    out = sys.argv[1]
    with open(os.path.join(out, "sizes.tsv"), encoding="utf-8") as f:
        sizes = {int(n): int(b) for n, b in (line.split() for line in f if line.strip())}
    scales = sorted(sizes)
    launch = {n: load_launch(out, n) for n in scales}
    rss = load_rss(out)
    with open(os.path.join(out, "watch.json"), encoding="utf-8") as f:
        watch = json.load(f)
    with open(os.path.join(out, "binary-size"), encoding="utf-8") as f:
        binary = int(f.read())
    with open(os.path.join(out, "machine.txt"), encoding="utf-8") as f:
        machine = f.read().strip()

    p = print
    p("### Machine\n")
    p("```\n" + machine + "\n```\n")

    main_n = scales[0]
    rows = launch[main_n]
    base = rows["baseline"]["median"]
    svid = rows["svid-exec"]["median"]
    p(f"### Launch time, {main_n} secrets (HTTPS, loopback)\n")
    p("| launcher | runs | median ms | p95 ms | mean ± σ ms | CPU ms (user+sys) | median − baseline ms | × baseline | × svid-exec |")
    p("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in LAUNCHERS:
        r = rows.get(name)
        if r is None:
            continue
        p(
            f"| {name} | {r['runs']} | {r['median']:.2f} | {r['p95']:.2f} | {r['mean']:.2f} ± {r['stddev']:.2f} "
            f"| {r['cpu']:.2f} | {r['median'] - base:.2f} | {r['median'] / base:.1f} | {r['median'] / svid:.2f} |"
        )
    p("\n× svid-exec > 1 means slower than `svid-exec run`. CPU is the mean user+system time of the")
    p("launcher and its children (curl, jq, the target): its own work, apart from waiting on the server.")
    f = load_floor(out, main_n)
    if f is not None:
        p(f"The stand-in's own time for the login and the listing (the server floor) is {f:.2f} ms of that.")
    kept = rows.get("svid-exec --no-revoke")
    if kept is not None:
        p(f"Revoking the access token before exec (the default) costs {svid - kept['median']:.2f} ms median "
          f"over `--no-revoke` ({rows['svid-exec']['cpu'] - kept['cpu']:.2f} ms CPU).")
    p("")

    p("### Peak RSS (max over runs, MiB)\n")
    measured = [name for name in LAUNCHERS if any((n, name) in rss for n in scales)]
    p("| secrets | " + " | ".join(measured) + " |")
    p("|---:|" + "---:|" * len(measured))
    for n in scales:
        cells = [f"{max(rss[(n, name)]) / 1024:.1f}" if (n, name) in rss else "–" for name in measured]
        p(f"| {n} | " + " | ".join(cells) + " |")
    p("")

    p("### Scale: launch time median (p95) ms by number of secrets\n")
    p("| secrets | list JSON | server floor | " + " | ".join(LAUNCHERS[1:]) + " | svid-exec − floor | svid-exec CPU |")
    p("|---:|---:|---:|" + "---:|" * (len(LAUNCHERS) - 1) + "---:|---:|")
    for n in scales:
        cells = []
        for name in LAUNCHERS[1:]:
            r = launch[n].get(name)
            cells.append(f"{r['median']:.1f} ({r['p95']:.1f})" if r else "–")
        f = load_floor(out, n)
        own = f"{launch[n]['svid-exec']['median'] - f:.1f}" if f is not None else "–"
        p(
            f"| {n} | {sizes[n] / 1024:.0f} KiB | {f'{f:.1f}' if f is not None else '–'} | " + " | ".join(cells)
            + f" | {own} | {launch[n]['svid-exec']['cpu']:.1f} |"
        )
    lo, hi = scales[0], scales[-1]
    per_secret = {}
    for name in LAUNCHERS[1:]:
        if name in launch[lo] and name in launch[hi]:
            per_secret[name] = (launch[hi][name]["median"] - launch[lo][name]["median"]) / (hi - lo) * 1000
    p("\nMarginal cost per secret between the smallest and the largest set (µs/secret): " + ", ".join(
        f"{name} {cost:.1f}" for name, cost in per_secret.items()) + ".\n")

    sup = None
    if "error" in watch:
        p("### Supervisor\n")
        p(f"Not measured: `run --watch` exited at once: `{watch['error']}`\n")
    else:
        sup = supervisor_table(watch)

    p("### Binary\n")
    p(f"`svid-exec` as built ({'release: LTO, one codegen unit, stripped' if 'release' in machine else 'debug'}): {binary} bytes = {binary / MIB:.2f} MiB\n")

    diy = rows.get("sh+curl+jq", {}).get("median")
    py = rows.get("python sdk", {}).get("median")
    big = launch[hi].get("svid-exec", {}).get("median")
    peak = max(rss[(main_n, "svid-exec")] + rss[(main_n, "svid-exec --jwt-file")]) / 1024
    peak_all = max(max(v) for (n, name), v in rss.items() if name.startswith("svid-exec")) / 1024
    p("### Targets\n")
    p("| target | measured | verdict |")
    p("|---|---|---|")
    cpu_over = rows["svid-exec"]["cpu"] - rows["baseline"]["cpu"]
    p(f"| overhead over baseline ≤ 3 ms median (wall, includes the stand-in's login work) | {svid - base:.2f} ms | {verdict(svid - base <= 3)} |")
    f = load_floor(out, main_n)
    if f is not None:
        own = svid - base - f
        p(f"| overhead over baseline less the server floor ({f:.2f} ms) ≤ 3 ms | {own:.2f} ms | {verdict(own <= 3)} |")
    p(f"| (the launcher's own CPU over baseline, for reference) | {cpu_over:.2f} ms | – |")
    if diy:
        p(f"| ≥ 10× faster than sh+curl+jq | {diy / svid:.1f}× | {verdict(diy / svid >= 10)} |")
    if py:
        p(f"| ≥ 50× faster than the Python SDK wrapper | {py / svid:.1f}× | {verdict(py / svid >= 50)} |")
    p(f"| peak RSS before exec ≤ 10 MiB ({main_n} secrets) | {peak:.1f} MiB ({peak_all:.1f} MiB at {hi}) | {verdict(peak <= 10)} |")
    if sup is None:
        p("| supervisor idle RSS ≤ 10 MiB | not measured | – |")
        p("| supervisor: no CPU between polls | not measured | – |")
    else:
        # No CPU between polls: it ran in no more seconds than the polls explain,
        # one second each (the interval is jittered by up to 10%, so a few more may
        # fit in the window), plus one for a renewal and one for a poll straddling
        # a second boundary. Two seconds per poll would hide a wake-up before each.
        ran, polls = len(sup["active"]), sup["expected_polls"]
        quiet = ran <= math.ceil(polls * 1.1) + 2
        p(f"| supervisor idle RSS ≤ 10 MiB | {sup['rss_max'] / 1024:.1f} MiB | {verdict(sup['rss_max'] <= 10 * 1024)} |")
        p(f"| supervisor: no CPU between polls | ran in {ran} of {sup['seconds']} s, ~{polls:.0f} polls | {verdict(quiet)} |")
    if big is not None:
        p(f"| {hi} secrets: fetch + parse + exec ≤ 50 ms (wall, includes the stand-in building {sizes[hi] / MIB:.1f} MiB) | {big:.1f} ms median | {verdict(big <= 50)} |")
        f = load_floor(out, hi)
        if f is not None:
            own = big - f
            p(f"| {hi} secrets: the launcher's share (wall − server floor) ≤ 50 ms | {own:.1f} ms (CPU {launch[hi]['svid-exec']['cpu']:.1f} ms) | {verdict(own <= 50)} |")
    if "release build" in machine:
        p(f"| release binary ≤ 8 MiB | {binary / MIB:.2f} MiB | {verdict(binary <= 8 * MIB)} |")
    else:
        p(f"| release binary ≤ 8 MiB | debug build ({binary / MIB:.2f} MiB): not comparable | – |")


if __name__ == "__main__":
    main()
