#!/usr/bin/env bash
# Runs the tap suite against a Fastify 6 prerelease on Node 24 (Fastify 6 needs Node >= 24):
#
#   scripts/test-fastify6.sh                      # the whole tap suite
#   scripts/test-fastify6.sh test/route.test.ts
#   FASTIFY6=6.0.0-alpha.4 scripts/test-fastify6.sh
#
# The package's peer range stays ^5: Fastify loads a plugin declared for 5.x during its 6.x
# prereleases. The suite runs in a copy of the repository (in a temporary directory, removed
# afterwards) whose node_modules has the prerelease installed over the lock file's Fastify 5,
# so this checkout is left as it is. Only the npm registry is needed; the Node binary comes
# from scripts/test-node.sh (shared .cache/).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
fastify="${FASTIFY6:-6.0.0-alpha.4}"

work="$(mktemp -d "${TMPDIR:-/tmp}/fastify-async-route-fastify6-XXXXXX")"
trap 'rm -rf "$work"' EXIT
tar -c --exclude=./node_modules --exclude=./.git --exclude=./.cache --exclude=./dist . | tar -x -C "$work"
mkdir -p "$root/.cache"
ln -s "$root/.cache" "$work/.cache"

cd "$work"
npm ci --prefer-offline --no-audit --no-fund --loglevel=error
npm install --no-save --legacy-peer-deps --prefer-offline --no-audit --no-fund --loglevel=error "fastify@$fastify"
installed="$(node -p "require('fastify/package.json').version")"
if [ "$installed" != "$fastify" ]; then
  echo "scripts/test-fastify6.sh: fastify $installed installed, expected $fastify" >&2
  exit 1
fi
npm run build --silent
echo "tap against fastify $installed"
TEST_NODE_NO_BUILD=1 scripts/test-node.sh 24 "$@"
