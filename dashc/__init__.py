"""dashc: private CNN inference with arithmetic garbled circuits."""
__version__ = "0.1.0"
