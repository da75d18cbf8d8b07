"""eventfleet runtime package."""
