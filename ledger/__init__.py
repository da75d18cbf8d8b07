"""Pure domain of eventfleet: events, rules, shard state. Imports nothing from the runtime."""
