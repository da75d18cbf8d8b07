"""`eventfleet chaos`: a real fleet under injected faults, checked record by record.
Not installed in the production image."""
