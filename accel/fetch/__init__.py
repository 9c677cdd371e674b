"""accel.fetch."""
