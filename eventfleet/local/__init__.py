"""Local development: a throwaway redis-server or cluster, a fleet of worker processes,
the `up` stack with its live view, and the demo. Not installed in the production image."""
