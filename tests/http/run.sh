#!/bin/sh
# ctest wrapper for one tests/http/*.test.mjs file: skip (77) with a reason
# when node or the openai package is missing, else run node's test runner.
# A test file that needs a fixture names it on a line `// fixture: <dir>`;
# it is skipped when $PEFTSERVE_FIXTURES/<dir> (or the default) is absent.
here=$(cd "$(dirname "$0")" && pwd)
test_file=$1
if ! command -v node >/dev/null 2>&1; then
  echo "skip: node is not installed"; exit 77
fi
if [ ! -d "$here/node_modules/openai" ]; then
  echo "skip: tests/http/node_modules/openai is missing (run 'npm ci' in tests/http)"; exit 77
fi
fixture=$(sed -n 's|^// fixture: *||p' "$test_file" | head -n 1)
if [ -n "$fixture" ]; then
  root=${PEFTSERVE_FIXTURES:-$PS_FIXTURES_DEFAULT}
  if [ ! -d "$root/$fixture" ]; then
    echo "skip: fixture $root/$fixture is missing (set PEFTSERVE_FIXTURES)"; exit 77
  fi
fi
cd "$here" && exec node --test --test-reporter=spec "$test_file"
