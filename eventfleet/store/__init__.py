"""store: the Redis side shared by the worker, the producer and the tools.

Settings from the environment, connecting (URL, ACL user, TLS, cluster detection), telling
transient from fatal errors, retries, the key layout, stream ids, the namespace meta, replica
acknowledgement, reading a shard back (snapshot, poison set, lease owner, the one fold), the
one hand-written wire path (``wire``) and the HTTP server of ``/metrics`` and the probes
(``httpserver``).
Imports nothing of ours but ``ledger``."""
