#!/usr/bin/env bash
# The whole test suite: `npm test`. Installs missing test prerequisites on Debian/Ubuntu first.
set -euo pipefail
cd "$(dirname "$0")/.."
export CI="${CI:-}"
bash scripts/prereqs.sh
[ -d node_modules ] || npm ci
# `npm ci` already built dist/ (prepare script): build again only when a source is newer than it.
if [ ! -f dist/.build-stamp ] || [ -n "$(find electron renderer bin scripts/build.mjs vite.*.config.ts tsconfig*.json package.json -newer dist/.build-stamp -type f -print -quit)" ]; then
  echo "== build";          npm run -s build
else
  echo "== build (dist/ is up to date)"
fi
echo "== typecheck";        npm run -s typecheck
echo "== lint";             npm run -s lint
echo "== unit";             npx vitest run --project unit
echo "== integration";      bash scripts/with-keyring.sh npx vitest run --project integration
echo "== e2e";              xvfb-run -a npx vitest run --project e2e
echo "== bench (smoke)";    BENCH_SMOKE=1 npm run -s bench
echo "all tests passed"
