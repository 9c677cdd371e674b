"""accel.manager."""
