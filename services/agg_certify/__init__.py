"""The operator certification kit: ``aggregator certify operator --operator ID``.

It plays the saga against one operator's wallet: sends the wallet commands the aggregator
sends, in the situations it meets them (duplicates, cancels before and after their debit,
credits owed long after the bet, ...), checks every reply and the balance it leaves, and
writes a report (terminal summary, JSON, a self-contained HTML file) that says, for each
check that fails, what the operator must fix. docs/certification.md is the operator's guide.

Modules, from the inside out:

- :mod:`agg_certify.port`: :class:`~agg_certify.port.WalletUnderTest`, the one thing the
  battery needs from a wallet (send a command, await its reply with a timeout), and the
  command and reply values;
- :mod:`agg_certify.kafka`: that port on the operator's Kafka topics;
- :mod:`agg_certify.stats`: latency percentiles;
- :mod:`agg_certify.checks`: the battery;
- :mod:`agg_certify.report`: JSON, HTML and terminal renderings of a run;
- :mod:`agg_certify.cli`: the command line.
"""
