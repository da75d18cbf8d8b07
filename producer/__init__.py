"""producer: publishing external events (``topup``, ``add_item``, ``order``) to their
shards idempotently; parsing event files; synthetic workloads. Imports ``ledger`` and ``store``."""
