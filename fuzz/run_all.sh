#!/usr/bin/env bash
# Every fuzz target for a fixed time each, one after the other (not part of CI):
#
#   fuzz/run_all.sh [--minutes N | --seconds S] [--only T1,T2,...] [--jobs J] [--report FILE]
#
# Campaigns may run side by side (each with its own --only and --report), e.g. one per
# core: with --jobs 1 nothing is written to the working directory.
#
# Builds all targets once (RUSTC_BOOTSTRAP=1 cargo fuzz build, release with debug
# assertions), then runs each for N minutes (default 10) on a scratch copy of its seed
# corpus (corpus/<target>/ is only read, never grown), with -jobs=J workers (default 1;
# the machine's cores are otherwise idle). A crash, timeout or leak stops that target
# and leaves the input in artifacts/<target>/; keep it as a seed in corpus/<target>/
# (named after the bug) once fixed, so the normal test suite replays it. Prints, and
# writes to --report (default fuzz/last-run.md), one line per target: runs, seconds,
# new coverage units and the outcome. Exit status 1 if any target found something.
set -euo pipefail
cd "$(dirname "$0")"

MINUTES=10
SECS_ARG=
ONLY=
JOBS=1
REPORT=last-run.md
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) MINUTES=$2; shift ;;
    --seconds) SECS_ARG=$2; shift ;;
    --only) ONLY=$2; shift ;;
    --jobs) JOBS=$2; shift ;;
    --report) REPORT=$2; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null || { echo "cargo install cargo-fuzz" >&2; exit 2; }
if [ -n "$ONLY" ]; then
  TARGETS=$(tr ',' '\n' <<<"$ONLY")
else
  TARGETS=$(cargo fuzz list)
fi
echo "== building $(wc -l <<<"$TARGETS") targets" >&2
cargo fuzz build >/dev/null
# The targets run from these binaries, built once: editing the tree meanwhile changes
# nothing (`cargo fuzz run` would rebuild, and a tree that does not build at that
# moment would end the campaign).
BIN=$(pwd)/target/$(rustc -vV | sed -n 's/^host: //p')/release
SECS=${SECS_ARG:-$((MINUTES * 60))}
SCRATCH=$(mktemp -d /tmp/correio-fuzz.XXXXXX)
trap 'rm -rf "$SCRATCH"' EXIT
{
  echo "# Fuzz run $(date -u '+%Y-%m-%d %H:%M UTC'), ${SECS} s per target, -jobs=$JOBS"
  echo
  echo "| target | runs | seconds | coverage | outcome |"
  echo "|---|---|---|---|---|"
} > "$REPORT"
found=0
for t in $TARGETS; do
  mkdir -p "$SCRATCH/$t" "artifacts/$t"
  cp -r "corpus/$t/." "$SCRATCH/$t/" 2>/dev/null || true
  log="$SCRATCH/$t.log"
  start=$SECONDS
  set +e
  # One worker runs in this process (-jobs=1 would fork one that logs to fuzz-0.log in
  # the working directory, which two campaigns run side by side would share).
  par=()
  [ "$JOBS" -gt 1 ] && par=(-jobs="$JOBS" -workers="$JOBS")
  "$BIN/$t" "$SCRATCH/$t" -artifact_prefix="artifacts/$t/" -max_total_time="$SECS" \
    "${par[@]}" -print_final_stats=1 >"$log" 2>&1
  rc=$?
  set -e
  took=$((SECONDS - start))
  # With -jobs, each worker logs to fuzz-N.log in the working directory.
  if [ "$JOBS" -gt 1 ]; then
    cat fuzz-*.log >>"$log" 2>/dev/null || true
    rm -f fuzz-*.log
  fi
  # (grep finds nothing in the log of a run that did not start: not an error here)
  runs=$( (grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" || true) | awk '{s+=$2} END {print s+0}')
  cov=$( (grep -Eo 'cov: [0-9]+' "$log" || true) | tail -1 | awk '{print $2}')
  if [ "$rc" = 0 ]; then outcome="no finding"; else
    outcome="FOUND (exit $rc; see artifacts/$t/)"; found=1
  fi
  printf '| `%s` | %s | %s | %s | %s |\n' "$t" "$runs" "$took" "${cov:-?}" "$outcome" | tee -a "$REPORT"
done
echo "report: $(pwd)/$REPORT" >&2
exit "$found"
