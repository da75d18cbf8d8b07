"""``eventfleet exporter``: namespace-wide gauges read from Redis alone (lag, lag in seconds,
pending, owner and epoch of every shard whether or not anyone owns it, the shard count, the
live workers, dead letters), served to Prometheus at most one pass per interval."""
