#!/usr/bin/env bash
# Installs the system packages the local stack and the tests need, only where missing:
# PostgreSQL server binaries, kcat (the independent Kafka client of the interop test),
# Java 17 and Maven (the Kafka broker), Go (the benchmark's load generator). Debian/Ubuntu with apt-get; elsewhere it says what
# is missing and stops.
set -euo pipefail

missing=()
have_initdb() {
  [ -n "${AGG_PG_BINDIR:-}" ] && [ -x "${AGG_PG_BINDIR}/initdb" ] && return 0
  if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; then return 0; fi
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}
have_initdb || missing+=(postgresql)
command -v kcat >/dev/null 2>&1 || missing+=(kcat)
command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || missing+=(maven)
command -v go >/dev/null 2>&1 || [ -x /usr/local/go/bin/go ] || missing+=(golang-go)

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "[deps] installing system packages: ${missing[*]}" >&2
if ! command -v apt-get >/dev/null 2>&1; then
  echo "[deps] no apt-get here; install these yourself: ${missing[*]}" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "[deps] installed: ${missing[*]}" >&2
