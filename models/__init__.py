"""dashc.models: the model zoo."""
