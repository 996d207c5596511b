"""dashc.calibration: calibration data, range collection, scaling-point choice."""
