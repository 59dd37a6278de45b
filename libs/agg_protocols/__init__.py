"""Wire protocols as pure translators (no I/O), shared by the services that speak them.

- :mod:`agg_protocols.signatures`: the request signatures (HMAC-SHA256 of the canonical
  protocols, RSA PKCS#1 v1.5 SHA-256 of the Hub88-shaped ones);
- :mod:`agg_protocols.operator_wallet`: what every operator-wallet protocol is (a wallet
  command in, a signed HTTP call out; an HTTP answer in, a wallet reply status out);
- :mod:`agg_protocols.wallet_canonical`, :mod:`agg_protocols.wallet_hub88`: the two
  operator-wallet protocols the HTTP wallet bridge speaks, each with both sides (the bridge's
  call and the operator's parser and answer), so the reference HTTP wallet and the bridge
  can never disagree on a field.
"""
