"""The projector: folds the journal (``agg.events``) into PostgreSQL projections."""
