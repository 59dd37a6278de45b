"""Simulated providers and players driving realistic traffic through the ingress."""
