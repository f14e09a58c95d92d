#!/usr/bin/env bash
# Install what is missing, build Ember under ASan + UBSan with warnings as
# errors, and run every test suite. The last line is "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."

bash scripts/deps.sh || { echo "deps: installation failed"; exit 1; }

builddir=${BUILDDIR:-build-test}
if [ ! -f "$builddir/build.ninja" ]; then
  meson setup "$builddir" -Dbuildtype=debugoptimized -Dwerror=true \
    -Db_sanitize=address,undefined -Db_lundef=false >/tmp/ember-setup.$$.log 2>&1 \
    || { cat /tmp/ember-setup.$$.log; echo "0 passed, 1 failed"; exit 1; }
fi
if ! ninja -C "$builddir"; then
  echo "build failed"
  echo "0 passed, 1 failed"
  exit 1
fi

export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
meson test -C "$builddir" --print-errorlogs --num-processes "$(nproc)" "$@"
status=$?

# One closing line that any CI reads, counted from meson's machine log.
log="$builddir/meson-logs/testlog.json"
if [ -f "$log" ]; then
  passed=$(grep -c '"result": "OK"' "$log")
  failed=$(grep -Ec '"result": "(FAIL|TIMEOUT|ERROR|UNEXPECTEDPASS)"' "$log")
  skipped=$(grep -c '"result": "SKIP"' "$log")
  echo "($skipped skipped; reasons above and in $builddir/meson-logs/testlog.txt)"
  echo "$passed passed, $failed failed"
  [ "$failed" -eq 0 ] && [ "$passed" -gt 0 ] && exit 0
  exit 1
fi
echo "0 passed, 1 failed"
exit "${status:-1}"
