"""Operator tools that read (and, for dead letters, re-publish) a namespace: status,
state, verify, dead letters, resharding."""
