#!/usr/bin/env bash
# Runs the pinned buf CLI (npm package @bufbuild/buf, version in tools/buf/package.json) from the
# repository root, installing it into tools/buf/node_modules on first use (needs node + npm only).
# Usage: scripts/buf.sh lint | scripts/buf.sh format -d --exit-code | scripts/buf.sh breaking ...
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tool_dir="$root/tools/buf"
buf_bin="$tool_dir/node_modules/.bin/buf"
installed_lock="$tool_dir/node_modules/.package-lock.json"

# Install when missing, or when the committed lock file changed since the last install (a bump).
if [[ ! -x "$buf_bin" || ! -f "$installed_lock" || "$tool_dir/package-lock.json" -nt "$installed_lock" ]]; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "scripts/buf.sh: npm is required to install buf (@bufbuild/buf); install Node.js + npm" >&2
    exit 127
  fi
  echo "scripts/buf.sh: installing $(grep -o '"@bufbuild/buf": *"[^"]*"' "$tool_dir/package.json")" >&2
  # --ignore-scripts: the package's postinstall only optimises start-up; its bin works without it.
  npm ci --prefix "$tool_dir" --ignore-scripts --no-audit --no-fund --loglevel=error >&2
fi

cd "$root"
exec "$buf_bin" "$@"
