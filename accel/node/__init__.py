"""accel.node."""
