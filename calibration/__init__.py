"""dashc.calibration: calibration data, range collection, scaling-point choice."""
from .collect import METHODS, collect_ranges
from .ranges import Ranges
from .readers import ArrayReader, check_input, load_data

__all__ = ["ArrayReader", "METHODS", "Ranges", "check_input", "collect_ranges", "load_data"]
