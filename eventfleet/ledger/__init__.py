"""ledger: the pure domain. Events, the rules that fold them into shard state, the codec
and the shard routing. Imports nothing of ours and does no I/O."""
