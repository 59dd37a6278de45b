"""The reference HTTP operator wallet: ``canonical-v1`` and ``hub88-v1`` over HTTP, on the
reference wallet's rules and PostgreSQL ledger (:mod:`agg_httpwallet.app`; run it with
``python -m agg_httpwallet``). The HTTP wallet bridge calls it in the dev stack and in the
tests; operators building an HTTP wallet can read it as an example (``docs/operators.md``).
"""
