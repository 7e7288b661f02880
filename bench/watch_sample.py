#!/usr/bin/env python3
"""Samples a running process (the `--watch` supervisor) once a second from
/proc for a given number of seconds and prints JSON: resident memory (VmRSS,
and the high-water mark VmHWM), CPU time (utime+stime, in clock ticks), and
the context switches summed over all its threads. A second in which no thread
switched context is a second in which the process never ran; the seconds in
which it did run should be the polls (and a renewal), nothing in between.

usage: watch_sample.py PID SECONDS POLL_INTERVAL
"""
import glob
import json
import os
import sys
import time


def status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        # The command name may hold spaces: fields start after the last ')'.
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of stat(5); fields[0] is field 3.
    return int(fields[11]) + int(fields[12])


def context_switches(pid: int) -> tuple[int, int]:
    total = 0
    threads = 0
    for path in glob.glob(f"/proc/{pid}/task/*/status"):
        try:
            with open(path, encoding="ascii") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                        total += int(line.split()[1])
            threads += 1
        except FileNotFoundError:
            continue  # a thread that ended between glob and open
    return total, threads


def main() -> None:
    pid, seconds, poll = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    samples = []
    start = time.monotonic()
    prev_switches, threads = context_switches(pid)
    prev_ticks = cpu_ticks(pid)
    first_ticks = prev_ticks
    for second in range(1, seconds + 1):
        time.sleep(max(0.0, start + second - time.monotonic()))
        switches, threads = context_switches(pid)
        ticks = cpu_ticks(pid)
        samples.append(
            {
                "t": second,
                "rss_kib": status_kib(pid, "VmRSS"),
                "hwm_kib": status_kib(pid, "VmHWM"),
                "switches": switches - prev_switches,
                "ticks": ticks - prev_ticks,
                "threads": threads,
            }
        )
        prev_switches, prev_ticks = switches, ticks
    json.dump(
        {
            "pid": pid,
            "seconds": seconds,
            "poll_interval": poll,
            "clock_ticks_per_second": os.sysconf("SC_CLK_TCK"),
            "cpu_ticks_total": prev_ticks - first_ticks,
            "active_seconds": [s["t"] for s in samples if s["switches"] > 0],
            "samples": samples,
        },
        sys.stdout,
        indent=1,
    )


if __name__ == "__main__":
    main()
