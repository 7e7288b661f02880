#!/usr/bin/env bash
# Benchmarks svid-exec side by side with what users would otherwise write, in
# one run, on the loopback stand-ins (tests/testkit): launch time (hyperfine;
# `--no-revoke` beside the default shows what revoking the token costs),
# peak RSS before exec, the supervisor's memory and CPU while polling, the cost
# as the number of secrets grows, and the release binary's size. Writes the raw
# figures and report.md (tables, PASS/MISS per target) to the output directory.
# Targets are reported, never enforced: the exit status only says whether the
# benchmark itself could run.
#
#   bench/run.sh [--quick] [--out DIR] [--no-install] [--before BIN]
#     --quick       a few iterations of everything (CI smoke run, ~2 minutes)
#     --out DIR     where results go (default target/bench)
#     --no-install  only name missing tools, do not install them
#     --debug       use debug builds (to try the script itself: figures meaningless)
#     --before BIN  also run this svid-exec binary (an earlier build) side by
#                   side with the current one, in the same hyperfine runs
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

quick=0
out=target/bench
install=1
profile=release
before=
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --out) out=$2; shift ;;
    --no-install) install=0 ;;
    --debug) profile=debug ;;
    --before) before=$(cd "$(dirname "$2")" && pwd)/$(basename "$2"); shift ;;
    -h | --help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "bench: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
mkdir -p "$out"
out=$(cd "$out" && pwd)

# The supervisor is watched for 160 s in a full run, polling every 75 s: two
# polls, with room between them for any timer shorter than the interval (the
# 60 s reaping tick there was until issue 17, hyper-util's 90 s idle sweep
# before it) to show as a wake-up.
if [ "$quick" = 1 ]; then
  fast_runs=5 fast_warmup=1 alt_runs=3 py_runs=3 scale_runs=3 rss_runs=2 watch_secs=12 poll=5s
else
  fast_runs=200 fast_warmup=10 alt_runs=50 py_runs=20 scale_runs=50 rss_runs=10 watch_secs=160 poll=75s
fi
scales=(10 1000 10000)

# --- tools -------------------------------------------------------------------
missing_tools() {
  local tool missing=()
  for tool in cargo hyperfine jq curl python3 strace; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
  done
  [ -x /usr/bin/time ] || missing+=(/usr/bin/time)
  echo "${missing[@]}"
}
missing=$(missing_tools)
if [ -n "$missing" ] && [ "$install" = 1 ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "== installing: $missing"
  pkgs=$(echo "$missing" | sed 's#/usr/bin/time#time#; s#python3#python3 python3-pip#; s#cargo##')
  # shellcheck disable=SC2086
  apt-get install -y -q $pkgs >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q $pkgs >/dev/null; }
  missing=$(missing_tools)
fi
if [ -n "$missing" ]; then
  echo "bench: missing: $missing" >&2
  echo "bench: on Debian/Ubuntu: apt-get install -y hyperfine jq curl python3 python3-pip time strace; Rust from https://rustup.rs" >&2
  exit 1
fi
if ! python3 -c 'import infisical_sdk' 2>/dev/null; then
  if [ "$install" = 1 ]; then
    echo "== installing the Python SDK (infisicalsdk)"
    python3 -m pip install --quiet --disable-pip-version-check infisicalsdk ||
      python3 -m pip install --quiet --disable-pip-version-check --break-system-packages infisicalsdk
  else
    echo "bench: missing the Python SDK: python3 -m pip install infisicalsdk" >&2
    exit 1
  fi
fi

# The interpreter itself, not a version manager's shim (pyenv's is a shell
# script that would add its own start-up to every Python run).
py=$(python3 -c 'import sys; print(sys.executable)')

# --- build -------------------------------------------------------------------
echo "== cargo build --profile $profile (svid-exec, testkit-stack)"
cargo_profile=$([ "$profile" = debug ] && echo dev || echo release)
cargo build --profile "$cargo_profile" --locked -p svid-exec --bin svid-exec
cargo build --profile "$cargo_profile" --locked -p svid-exec-testkit --bin testkit-stack
bin=$root/target/$profile/svid-exec
stack_bin=$root/target/$profile/testkit-stack
if [ -n "$before" ] && ! [ -x "$before" ]; then
  echo "bench: --before $before is not an executable" >&2
  exit 1
fi

# The svid-exec rows: the current binary with the default trust settings,
# with the variants it knows (other binaries, e.g. --before, lack some flags:
# a variant a binary does not know is skipped, not failed), and --jwt-file.
# Each entry: name|binary|extra arguments ("JWT" stands for --jwt-file FILE).
knows() { "$1" run --help 2>/dev/null | grep -q -- "$2"; }
variants=("svid-exec|$bin|")
for flag in --ca-cert-only --no-revoke; do
  if knows "$bin" "$flag"; then
    variants+=("svid-exec $flag|$bin|$flag")
  else
    echo "== $bin does not know $flag: its row is skipped"
  fi
done
variants+=("svid-exec --jwt-file|$bin|JWT")
if [ -n "$before" ]; then
  variants+=("before|$before|" "before --jwt-file|$before|JWT")
fi
# Sets argv to variant $1's command line at scale $2 (up to the program).
variant_argv() {
  local name bin_ extra
  IFS='|' read -r name bin_ extra <<<"$1"
  argv=("$bin_" run)
  case "$extra" in
    "") ;;
    JWT) argv+=(--jwt-file "$work/jwt-$2") ;;
    *) argv+=("$extra") ;;
  esac
}
variant_name() { echo "${1%%|*}"; }

# --- stand-ins -----------------------------------------------------------------
work=$(mktemp -d)
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# The stand-in agent answers from a JWT-SVID cache, as the SPIRE agent does:
# minting and signing an ES256 token per call is the stand-in's own work, which
# a real agent does not do per launch and which counted as svid-exec's time
# (0.68 ms of the median launch at 10 secrets: BENCHMARKS.md).
for n in "${scales[@]}"; do
  "$stack_bin" --agent-cache --secrets "$n" --env-file "$work/env-$n" --jwt-file "$work/jwt-$n" >"$work/stack-$n.log" 2>&1 &
  pids+=($!)
done
for n in "${scales[@]}"; do
  for _ in $(seq 600); do
    [ -f "$work/env-$n" ] && break
    sleep 0.2
  done
  [ -f "$work/env-$n" ] || { echo "bench: the stand-in stack with $n secrets did not start:" >&2; cat "$work/stack-$n.log" >&2; exit 1; }
done

# The size of one list answer at each scale (what every launcher downloads and parses).
: >"$out/sizes.tsv"
for n in "${scales[@]}"; do
  (
    # shellcheck disable=SC1090
    . "$work/env-$n"
    token=$(printf '{"identityId":"%s","jwt":"%s"}' "$INFISICAL_MACHINE_IDENTITY_ID" "$(cat "$work/jwt-$n")" |
      curl -fsS --cacert "$SVID_EXEC_CA_CERT" -H 'Content-Type: application/json' --data-binary @- \
        "$INFISICAL_API_URL/api/v1/auth/oidc-auth/login" | jq -er .accessToken)
    bytes=$(printf 'Authorization: Bearer %s\n' "$token" |
      curl -fsS --cacert "$SVID_EXEC_CA_CERT" -H @- \
        "$INFISICAL_API_URL/api/v4/secrets?projectId=$INFISICAL_PROJECT_ID&environment=$INFISICAL_ENVIRONMENT&secretPath=/&viewSecretValue=true" | wc -c)
    printf '%s\t%s\n' "$n" "$bytes" >>"$out/sizes.tsv"
    # For the server-floor rows below: the same login body and a live token.
    printf '{"identityId":"%s","jwt":"%s"}' "$INFISICAL_MACHINE_IDENTITY_ID" "$(cat "$work/jwt-$n")" >"$work/login-$n.json"
    printf 'Authorization: Bearer %s\n' "$token" >"$work/auth-$n"
  )
done

# Every launcher must actually deliver the secrets before its time counts.
for n in "${scales[@]}"; do
  (
    # shellcheck disable=SC1090
    . "$work/env-$n"
    check() {
      local got
      got=$("$@" /bin/sh -c 'env | grep -c "^BENCH_SECRET_"' 2>/dev/null) || true
      [ "$got" = "$n" ] || { echo "bench: '$*' delivered ${got:-nothing}, not $n secrets" >&2; exit 1; }
    }
    for v in "${variants[@]}"; do
      variant_argv "$v" "$n"
      check "${argv[@]}" -q --
    done
    SVID_EXEC_JWT_FILE=$work/jwt-$n check sh "$root/bench/diy-entrypoint.sh"
    SVID_EXEC_JWT_FILE=$work/jwt-$n check "$py" "$root/bench/sdk_wrapper.py"
  )
done

hf() { hyperfine -N --style basic "$@"; }

# The server floor: how long the stand-in itself takes to answer one login and
# one listing, measured from curl's own timings as total time minus the time
# until the request could be sent (so neither curl's start-up nor the TCP/TLS
# handshake counts; both are launcher-side costs). Whatever a launcher takes
# beyond login + listing is its own cost.
echo "== server floor"
for n in "${scales[@]}"; do
  (
    # shellcheck disable=SC1090
    . "$work/env-$n"
    : >"$out/server-$n.tsv"
    for _ in $(seq "$((alt_runs < 20 ? alt_runs : 20))"); do
      curl -fsS -o /dev/null -w 'login\t%{time_pretransfer}\t%{time_total}\n' --cacert "$SVID_EXEC_CA_CERT" \
        -H 'Content-Type: application/json' --data-binary "@$work/login-$n.json" \
        "$INFISICAL_API_URL/api/v1/auth/oidc-auth/login" >>"$out/server-$n.tsv"
      curl -fsS -o /dev/null -w 'list\t%{time_pretransfer}\t%{time_total}\n' --cacert "$SVID_EXEC_CA_CERT" -H "@$work/auth-$n" \
        "$INFISICAL_API_URL/api/v4/secrets?projectId=$INFISICAL_PROJECT_ID&environment=$INFISICAL_ENVIRONMENT&secretPath=/&expandSecretReferences=true&includeImports=true&viewSecretValue=true" >>"$out/server-$n.tsv"
    done
  )
done

# --- launch time ---------------------------------------------------------------
for n in "${scales[@]}"; do
  echo "== launch time, $n secrets"
  if [ "$n" = 10 ]; then
    runs=$fast_runs warmup=$fast_warmup aruns=$alt_runs pruns=$py_runs
  else
    runs=$scale_runs warmup=$fast_warmup aruns=$((alt_runs < 10 ? alt_runs : 10)) pruns=$((py_runs < 5 ? py_runs : 5))
  fi
  (
    # shellcheck disable=SC1090
    . "$work/env-$n"
    rows=(-n baseline /bin/true)
    for v in "${variants[@]}"; do
      variant_argv "$v" "$n"
      rows+=(-n "$(variant_name "$v")" "${argv[*]} -- /bin/true")
    done
    hf --warmup "$warmup" --runs "$runs" --export-json "$out/launch-$n-svid.json" "${rows[@]}"
    # The alternatives read the JWT from SVID_EXEC_JWT_FILE; svid-exec above must
    # not see it, or both of its rows would use the file.
    export SVID_EXEC_JWT_FILE=$work/jwt-$n
    hf --warmup 1 --runs "$aruns" --export-json "$out/launch-$n-diy.json" \
      -n "sh+curl+jq" "sh $root/bench/diy-entrypoint.sh /bin/true"
    hf --warmup 1 --runs "$pruns" --export-json "$out/launch-$n-python.json" \
      -n "python sdk" "$py $root/bench/sdk_wrapper.py /bin/true"
  )
done

# --- templates -------------------------------------------------------------------
# 100 templates, each naming 10 of the 1,000 secrets, parsed, rendered and
# written (100 atomic replacements) by one `write`; beside it the same `write`
# to one JSON file, so the difference is what the templates cost. The outputs
# go to /dev/shm when it is memory-backed (as they would in production).
echo "== templates: 100 templates from 1,000 secrets"
(
  # shellcheck disable=SC1090
  . "$work/env-1000"
  tdir=$work/templates
  mkdir -p "$tdir"
  if [ "$(stat -f -c %T /dev/shm 2>/dev/null)" = tmpfs ]; then tout=$(mktemp -d /dev/shm/svid-exec-bench.XXXXXX); else tout=$work/rendered; mkdir -p "$tout"; fi
  flags=""
  for t in $(seq 0 99); do
    for k in $(seq 0 9); do printf 'key%d={{ BENCH_SECRET_%05d }}\n' "$k" "$((t * 10 + k))"; done >"$tdir/t$t.j2"
    flags="$flags --template $tdir/t$t.j2:$tout/t$t"
  done
  # shellcheck disable=SC2086
  "$bin" write -q --allow-non-tmpfs $flags
  [ "$(ls "$tout" | wc -l)" = 100 ] && grep -q '^key9=' "$tout/t99" ||
    { echo "bench: the templates were not rendered" >&2; rm -rf "$tout"; exit 1; }
  hf --warmup 2 --runs "$scale_runs" --export-json "$out/templates.json" \
    -n "write --json-file" "$bin write -q --allow-non-tmpfs --json-file $tout/all.json" \
    -n "write, 100 templates" "$bin write -q --allow-non-tmpfs$flags"
  rm -rf "$tout"
)

# --- peak RSS ------------------------------------------------------------------
# /usr/bin/time reports the largest RSS the process ever had (ru_maxrss). Linux
# keeps that high-water mark across execve (the old image's peak is folded into
# the process's maxrss), so with /bin/true (~1 MiB) as the program the figure is
# the launcher's own peak before exec. For the script and the wrapper it is the
# largest process of the tree (sh, curl, jq or python).
echo "== peak RSS"
printf 'secrets\tlauncher\tkib\n' >"$out/rss.tsv"
measure_rss() {
  local n=$1 label=$2 i kib
  shift 2
  for i in $(seq "$rss_runs"); do
    /usr/bin/time -f %M -o "$work/rss" "$@" >/dev/null 2>&1
    kib=$(tail -1 "$work/rss")
    printf '%s\t%s\t%s\n' "$n" "$label" "$kib" >>"$out/rss.tsv"
  done
}
for n in "${scales[@]}"; do
  (
    # shellcheck disable=SC1090
    . "$work/env-$n"
    measure_rss "$n" baseline /bin/true
    for v in "${variants[@]}"; do
      variant_argv "$v" "$n"
      measure_rss "$n" "$(variant_name "$v")" "${argv[@]}" -- /bin/true
    done
    export SVID_EXEC_JWT_FILE=$work/jwt-$n
    measure_rss "$n" "sh+curl+jq" sh "$root/bench/diy-entrypoint.sh" /bin/true
    measure_rss "$n" "python sdk" "$py" "$root/bench/sdk_wrapper.py" /bin/true
  )
done

# --- supervisor --------------------------------------------------------------------
echo "== supervisor (--watch, poll every $poll) for ${watch_secs}s"
(
  # shellcheck disable=SC1090
  . "$work/env-10"
  "$bin" run --watch --poll-interval "$poll" -- sleep 100000 >/dev/null 2>"$work/watch.log" &
  sup=$!
  sleep 3 # past start-up: login, fetch, fork
  if kill -0 "$sup" 2>/dev/null; then
    # Every system call it makes while watched: bench/wakeups.py tells the
    # polls (they call the server) from wake-ups for nothing.
    tracer=
    if command -v strace >/dev/null 2>&1; then
      timeout "$watch_secs" strace -f -tt -yy -p "$sup" -o "$work/watch.strace" 2>/dev/null &
      tracer=$!
    fi
    python3 "$root/bench/watch_sample.py" "$sup" "$watch_secs" "$poll" >"$out/watch.json"
    if [ -n "$tracer" ]; then
      wait "$tracer" || true
      python3 "$root/bench/wakeups.py" "$work/watch.strace" >"$out/wakeups.json"
    else
      echo '{"error": "strace is not installed"}' >"$out/wakeups.json"
    fi
    kill -TERM "$sup"
    wait "$sup" || true
  else
    wait "$sup" || true
    # Not a benchmark failure: the report says what the supervisor answered.
    python3 -c 'import json, sys; json.dump({"error": sys.stdin.read().strip()}, sys.stdout)' \
      <"$work/watch.log" >"$out/watch.json"
    echo "bench: the supervisor did not stay up: $(cat "$work/watch.log")" >&2
  fi
)

# --- binary size and machine ------------------------------------------------------
stat -c %s "$bin" >"$out/binary-size"
if [ -n "$before" ]; then stat -c %s "$before" >"$out/binary-size-before"; fi
{
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
  echo "nproc: $(nproc)"
  echo "kernel: $(uname -sr)"
  echo "memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
  echo "rustc: $(rustc --version)"
  echo "hyperfine: $(hyperfine --version)"
  echo "curl: $(curl --version | head -1 | cut -d' ' -f1-2)"
  echo "jq: $(jq --version)"
  echo "python: $(python3 --version | cut -d' ' -f2), infisicalsdk $(python3 -m pip show infisicalsdk 2>/dev/null | sed -n 's/^Version: //p')"
  echo "mode: $([ "$quick" = 1 ] && echo quick || echo full), $profile build"
  echo "svid-exec: $(git -C "$root" describe --always --dirty 2>/dev/null || echo unknown)"
  # build.rs lays the release code out by link/symbol-order.txt; its names are
  # those of the toolchain it was made with (bench/symbol-order.py remakes it).
  made_with=$(sed -n 's/^# and Cargo.lock: //p' "$root/link/symbol-order.txt" 2>/dev/null)
  if [ "$profile" != release ]; then
    echo "code layout: none ($profile build)"
  elif [ "$made_with" = "$(rustc --version)" ]; then
    echo "code layout: link/symbol-order.txt, made with this toolchain"
  else
    echo "code layout: link/symbol-order.txt made with ${made_with:-an unknown toolchain}, not this one: run bench/symbol-order.py"
  fi
  if [ -n "$before" ]; then echo "before: $before"; fi
} >"$out/machine.txt"

python3 "$root/bench/report.py" "$out" >"$out/report.md"
cat "$out/report.md"
echo "== results in $out"
