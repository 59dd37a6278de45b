"""The ingress: canonical provider callbacks and the operator API over HTTP, request-reply
with the saga over Kafka. Entry point: ``python -m agg_ingress`` (``aggregator ingress``)."""
