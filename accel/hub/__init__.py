"""accel.hub."""
