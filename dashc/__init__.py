"""dashc: private CNN inference with arithmetic garbled circuits."""
__version__ = "0.1.0"

from .api import (compile_model, decode, encode, eval_plan, evaluate, garble,  # noqa: E402
                  inspect_plan, simulate)
from .ir import Node, Op, Plan  # noqa: E402
from .planfile import load as load_plan, save as save_plan  # noqa: E402
from .spec import verify  # noqa: E402

__all__ = ["Node", "Op", "Plan", "compile_model", "decode", "encode", "eval_plan", "evaluate",
           "garble", "inspect_plan", "load_plan", "save_plan", "simulate", "verify",
           "__version__"]
