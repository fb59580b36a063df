#!/bin/sh
# SPDX-License-Identifier: LGPL-2.1-or-later
# Runs the libFuzzer qcow2 target (what `make fuzz` calls):
#   run-fuzz.sh BUILD_DIR SECONDS [extra libFuzzer flags...]
# New inputs go to BUILD_DIR/fuzz-corpus (the committed seed corpus in
# tests/fuzz/corpus is read, never written); crashes, timeouts and OOMs to
# BUILD_DIR/fuzz-artifacts/.  The log is BUILD_DIR/fuzz.log; the end of the
# run prints executions per second, coverage and the artifacts found.
set -e

build=$1
seconds=$2
shift 2
here=$(cd "$(dirname "$0")" && pwd)
bin=$build/tests/fuzz/fuzz-qcow2
[ -x "$bin" ] || { echo "run-fuzz: $bin not built" >&2; exit 1; }
mkdir -p "$build/fuzz-corpus" "$build/fuzz-artifacts"

# A small ASan quarantine: the default (256 MiB) alone would break the
# 100 MiB RSS limit that the target must hold.
ASAN_OPTIONS=${ASAN_OPTIONS:-quarantine_size_mb=8:malloc_context_size=20}
UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export ASAN_OPTIONS UBSAN_OPTIONS

status=0
nice "$bin" -rss_limit_mb=100 -timeout=10 -max_total_time="$seconds" \
    -print_final_stats=1 -artifact_prefix="$build/fuzz-artifacts/" \
    -dict="$here/qcow2.dict" \
    "$@" "$build/fuzz-corpus" "$here/corpus" >"$build/fuzz.log" 2>&1 ||
    status=$?

echo "run-fuzz: libFuzzer exited with $status after at most ${seconds}s" \
     "(log: $build/fuzz.log)"
# the last status line has cov: (edges) and ft: (features)
grep -E '^#[0-9]+' "$build/fuzz.log" | tail -n 1
grep -E '^stat::|SUMMARY|ORACLE|ERROR: libFuzzer' "$build/fuzz.log" || true
echo "run-fuzz: corpus $(ls "$build/fuzz-corpus" | wc -l) new inputs;" \
     "artifacts: $(ls "$build/fuzz-artifacts" | wc -l)"
ls "$build/fuzz-artifacts"
exit $status
