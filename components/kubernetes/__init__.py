"""Cluster add-ons and the platform's system namespace, on any backend's cluster."""
