"""Shape changes: Flatten and Reshape (the batch axis stays first)."""
from __future__ import annotations

import math

from .graph import FloatNode
from .registry import NotSupported, converter


def _target(shape: tuple[int, ...], spec: list[int], allowzero: int) -> tuple[int, ...]:
    """Resolve an ONNX reshape spec that includes the batch axis."""
    if not spec:
        raise NotSupported("empty shape")
    head, rest = spec[0], list(spec[1:])
    if head not in (0, 1, -1):
        raise NotSupported(f"shape {spec} changes the batch axis")
    full = (1,) + tuple(shape)
    for i, d in enumerate(rest):
        if d == 0 and not allowzero:
            if i + 1 >= len(full):
                raise NotSupported(f"shape {spec} copies a missing axis")
            rest[i] = full[i + 1]
    size = math.prod(shape)
    if rest.count(-1) > 1:
        raise NotSupported(f"shape {spec} has two -1 entries")
    if -1 in rest:
        known = math.prod(d for d in rest if d != -1)
        if head == -1 or known == 0 or size % known:
            raise NotSupported(f"shape {spec} does not keep the batch axis")
        rest[rest.index(-1)] = size // known
    if head == -1 and -1 not in spec[1:]:
        pass  # batch axis inferred
    if math.prod(rest) != size:
        raise NotSupported(f"shape {spec} does not match {size} elements per sample")
    return tuple(int(d) for d in rest)


@converter("Flatten")
def flatten(ctx, node, axis=1):
    if int(axis) != 1:
        raise NotSupported(f"axis={axis} (only 1 keeps the batch axis)")
    shape = ctx.shape(node.input[0])
    return [FloatNode(node.output[0], "reshape", [node.input[0]], (math.prod(shape),),
                      attrs={"shape": (math.prod(shape),)})]


@converter("Reshape", since=5)
def reshape(ctx, node, allowzero=0):
    spec = ctx.const(node.input[1])
    if spec is None:
        raise NotSupported("non-constant target shape")
    shape = ctx.shape(node.input[0])
    target = _target(shape, [int(d) for d in spec.reshape(-1)], int(allowzero))
    return [FloatNode(node.output[0], "reshape", [node.input[0]], target,
                      attrs={"shape": target})]


@converter("Reshape")
def reshape_v1(ctx, node, shape=None, consumed_inputs=None):
    if shape is None:
        raise NotSupported("missing shape attribute")
    target = _target(ctx.shape(node.input[0]), [int(d) for d in shape], 0)
    return [FloatNode(node.output[0], "reshape", [node.input[0]], target,
                      attrs={"shape": target})]
