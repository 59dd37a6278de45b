"""The HTTP wallet bridge: serves the wallet-command topics of the operators whose wallet is
an HTTP seamless-wallet API (``wallet: {mode: http}`` in the tenants file).

It consumes ``agg.wallet.commands.<operator_id>`` (group ``agg-bridge-<operator_id>``), calls
the operator's wallet in its protocol (``canonical-v1`` or ``hub88-v1``, :mod:`agg_protocols`),
and answers every command on ``agg.wallet.replies.<operator_id>`` with the guarantees of the
reference Kafka wallet (``docs/operators.md``).

Modules: :mod:`agg_bridge.breaker` (the circuit breaker, pure), :mod:`agg_bridge.service`
(the Kafka loop per operator, calls, metrics, logs), :mod:`agg_bridge.__main__` (the command
line, ``python -m agg_bridge``, with ``/metrics`` and ``/healthz``).
"""
