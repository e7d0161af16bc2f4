#!/usr/bin/env bash
# Installs the S3-compatible server the tests run against: the Versity S3 Gateway
# (github.com/versity/versitygw, Apache-2.0) with its POSIX backend, built from its
# Go module with this machine's Go into .tools/bin/versitygw.
#
# Idempotent: when .tools/bin/versitygw and its version stamp match, it exits at once
# and prints nothing. Otherwise it builds (about 2-3 minutes on 2 cores) with every Go
# cache inside .tools/, and removes those caches afterwards (set
# SLEARN_KEEP_GO_CACHE=1 to keep them for a faster rebuild).
set -euo pipefail

VERSITYGW_VERSION=v1.8.0
PKG=github.com/versity/versitygw/cmd/versitygw

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="$root/.tools"
bin="$tools/bin/versitygw"
stamp="$tools/bin/versitygw.version"
want="$PKG@$VERSITYGW_VERSION"

# Warm path: no subprocesses, no output.
if [[ -x "$bin" && -f "$stamp" && "$(<"$stamp")" == "$want" ]]; then exit 0; fi

command -v go >/dev/null || { echo "install-s3-server: 'go' not found on PATH (Go >= 1.25 needed to build versitygw)" >&2; exit 1; }

mkdir -p "$tools/bin"
# One build at a time (parallel make / test runners); re-check once we hold the lock.
exec 9>"$tools/.install-s3-server.lock"
flock 9
if [[ -x "$bin" && -f "$stamp" && "$(<"$stamp")" == "$want" ]]; then exit 0; fi

echo "install-s3-server: building versitygw $VERSITYGW_VERSION into .tools/bin (first time only, a few minutes)..." >&2
start=$SECONDS

# Keep the user's own go env settings (GOPROXY etc.) but write nothing outside the project:
# module cache, build cache and the telemetry counters (under the config dir) go to .tools.
GOENV="$(go env GOENV)"
export GOENV
export XDG_CONFIG_HOME="$tools/xdg"
export GOMODCACHE="$tools/gomodcache"
export GOCACHE="$tools/gocache"
export GOPATH="$tools/gopath"
# -modcacherw: the module cache is deletable with a plain rm -rf (Go makes it read-only otherwise).
export GOFLAGS="-modcacherw -buildvcs=false"
export GOWORK=off GO111MODULE=on CGO_ENABLED=0
# versitygw needs Go >= 1.25: a newer local Go is used as is, an older one fetches that
# toolchain from the module proxy (into .tools/gomodcache) instead of failing.
export GOTOOLCHAIN="${GOTOOLCHAIN:-auto}"

tmpbin="$(mktemp -d "$tools/bin.tmp.XXXXXX")"
trap 'rm -rf "$tmpbin"' EXIT
# Static (CGO_ENABLED=0), stripped, no local paths: 45 MB instead of 61 MB, and no C toolchain needed.
GOBIN="$tmpbin" go install -trimpath -ldflags='-s -w' "$want"
"$tmpbin/versitygw" --version >/dev/null
mv -f "$tmpbin/versitygw" "$bin"
printf '%s\n' "$want" >"$stamp"

if [[ "${SLEARN_KEEP_GO_CACHE:-}" != 1 ]]; then
  # About 750 MB of caches that the stamped binary no longer needs.
  rm -rf "$GOCACHE" "$GOMODCACHE" "$GOPATH" "$XDG_CONFIG_HOME"
fi
echo "install-s3-server: versitygw $VERSITYGW_VERSION ready at .tools/bin/versitygw ($((SECONDS - start)) s)" >&2
