"""`eventfleet bench`: the benchmark scenarios, the reference loops and the machine
report. Not installed in the production image."""
