"""The saga worker: the thin shell around :func:`agg_domain.saga.decide`."""
