"""eventfleet: the command line and the tools around the product.

``cli`` (the commands), ``ops`` (read-side operator tools: status, state, verify, dead letters,
resharding), ``local`` (a throwaway Redis, cluster and fleet for development and tests),
``chaos`` and ``bench``. The only package that may import every other one."""
