#!/usr/bin/env python3
"""Times commands interleaved: one run of each in turn, N rounds (after 5
warm-up rounds), each command with the exports of its own env file (as
`testkit-stack --env-file` writes them), and prints the median, quartiles
and p95 of the wall time from spawn to exit, in ms. A drift of the host's
speed then falls on every command alike, where hyperfine's rows (all runs
of one command, then the next) each see a different stretch of it.

usage: interleave.py N NAME=ENVFILE::COMMAND [NAME=ENVFILE::COMMAND ...]
  e.g. interleave.py 300 'true=env-10::/bin/true' \\
         'svid=env-10::target/release/svid-exec run -- /bin/true'
"""
import os
import re
import shlex
import statistics
import sys
import time


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    rounds = int(sys.argv[1])
    commands = []
    for spec in sys.argv[2:]:
        name, rest = spec.split("=", 1)
        env_file, command = rest.split("::", 1)
        env = dict(os.environ)
        with open(env_file, encoding="utf-8") as f:
            for line in f:
                m = re.match(r"export (\w+)='(.*)'", line.strip())
                if m:
                    env[m.group(1)] = m.group(2)
        commands.append((name, shlex.split(command), env))
    times = {name: [] for name, _, _ in commands}
    devnull = os.open(os.devnull, os.O_WRONLY)
    quiet = [(os.POSIX_SPAWN_DUP2, devnull, 1), (os.POSIX_SPAWN_DUP2, devnull, 2)]
    for i in range(rounds + 5):
        for name, argv, env in commands:
            t = time.perf_counter_ns()
            pid = os.posix_spawn(argv[0], argv, env, file_actions=quiet)
            _, status = os.waitpid(pid, 0)
            ms = (time.perf_counter_ns() - t) / 1e6
            if status != 0:
                sys.exit(f"{name} failed (wait status {status})")
            if i >= 5:
                times[name].append(ms)
    for name, _, _ in commands:
        v = sorted(times[name])
        q = statistics.quantiles(v, n=4)
        print(f"{name:<20} median {statistics.median(v):7.3f}  p25 {q[0]:7.3f}  p75 {q[2]:7.3f}  p95 {v[int(len(v) * 0.95)]:7.3f}")


if __name__ == "__main__":
    main()
