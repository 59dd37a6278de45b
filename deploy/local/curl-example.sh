#!/usr/bin/env bash
# A signed session and bet against `make up`, with nothing but bash, openssl and curl:
# the canonical provider protocol v1 signature is HMAC-SHA256 over
# "{timestamp}.{METHOD}.{path}.{raw body}" with the provider's (or operator's) secret.
set -euo pipefail
sign() { # secret, method, path, body -> headers
  local ts sig
  ts=$(date +%s)
  sig=$(printf '%s' "$ts.$2.$3.$4" | openssl dgst -sha256 -hmac "$1" -hex | sed 's/^.* //')
  printf -- '-H\nX-Agg-Timestamp: %s\n-H\nX-Agg-Signature: %s\n' "$ts" "$sig"
}
call() { # secret, path, body
  local IFS=$'\n'
  curl -sS -X POST "http://127.0.0.1:8080$2" $(sign "$1" POST "$2" "$3") \
       -H 'Content-Type: application/json' --data-binary "$3"
  echo
}
body='{"player_id":"demo-1","currency":"EUR","country":"MT","game_id":"nova-starfall","mode":"real"}'
session=$(call dev-secret-op-alpha-0001 /v1/operators/op-alpha/sessions "$body")
echo "$session"
token=$(printf '%s' "$session" | python3 -c 'import json,sys; print(json.load(sys.stdin)["session_token"])')
tx="tx-$(date +%s%N)"
body="{\"request_id\":\"req-1\",\"session_token\":\"$token\",\"player_id\":\"demo-1\",\"transaction_id\":\"$tx\",\"round_id\":\"round-1\",\"game_id\":\"nova-starfall\",\"amount\":250,\"currency\":\"EUR\"}"
call dev-secret-prov-nova-001 /v1/providers/prov-nova/wallet/bet "$body"
call dev-secret-prov-nova-001 /v1/providers/prov-nova/wallet/bet "$body"
