"""worker: the process that owns shards and applies their streams exactly once.

``main`` starts it, ``loop`` reads, applies and writes (through a ``shardio.ShardIO``: one Redis
or per master on Redis Cluster), ``ownership`` holds heartbeats, leases, takeovers and
snapshots. Imports ``ledger`` and ``store`` only."""
