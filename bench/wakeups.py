#!/usr/bin/env python3
"""Finds the supervisor's wake-ups between polls in an `strace -f -tt -yy -p`
log: groups its system calls into bursts (no call for 200 ms ends a burst);
a burst that touches a TCP socket is a poll (or a renewal: the server is
called), any other burst is the process waking for nothing the user asked
for (a timer wheel's cascade, a connection pool's idle sweep, a reaping
tick). Prints JSON: the polls' and the wake-ups' offsets in seconds from
the start of the trace, and for each wake-up the calls it made.

usage: wakeups.py STRACE_LOG
"""
import json
import re
import sys

LINE = re.compile(r"^\d+\s+(\d+):(\d+):(\d+\.\d+)\s+(.*)$")
GAP = 0.2


def main() -> None:
    calls = []
    with open(sys.argv[1], encoding="utf-8", errors="replace") as f:
        for raw in f:
            m = LINE.match(raw.rstrip("\n"))
            if not m:
                continue
            h, mi, s, rest = m.groups()
            t = int(h) * 3600 + int(mi) * 60 + float(s)
            if rest.startswith(("+++", "---")) or "<detached ...>" in rest:
                continue
            calls.append((t, rest))
    calls.sort(key=lambda c: c[0])
    if not calls:
        json.dump({"error": "no system calls in the trace"}, sys.stdout)
        return
    t0 = calls[0][0]
    bursts = []
    for t, rest in calls:
        if bursts and t - bursts[-1][-1][0] <= GAP:
            bursts[-1].append((t, rest))
        else:
            bursts.append([(t, rest)])
    # strace prints the calls each thread is blocked in when it attaches:
    # those are not a wake-up.
    if bursts and all("<unfinished" in r or r.startswith(("epoll_wait", "rt_sigtimedwait", "futex")) for _, r in bursts[0]):
        bursts = bursts[1:]
    polls, wakeups = [], []
    for burst in bursts:
        at = round(burst[0][0] - t0, 3)
        if any("<TCP" in r for _, r in burst):
            polls.append(at)
        else:
            names = sorted({r.split("(", 1)[0].lstrip("<.").strip() for _, r in burst})
            wakeups.append({"at": at, "calls": names})
    json.dump(
        {"span": round(calls[-1][0] - t0, 1), "polls": polls, "wakeups": wakeups},
        sys.stdout,
        indent=1,
    )


if __name__ == "__main__":
    main()
