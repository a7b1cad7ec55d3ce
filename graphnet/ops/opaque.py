"""`Opaque`: an imported ONNX node graphnet has no mapping for, kept as it is."""

from __future__ import annotations

from graphnet.ops.spec import OpSpec, register


def _unknown(inputs, attrs):
    # The importer fills output shapes from ONNX's shape inference where it knows them.
    return [(None, "float32")] * 64


register(
    OpSpec(
        "Opaque",
        "An ONNX node kept verbatim (attrs: serialized `node`, `op_type`, `domain`, and the "
        "positions of omitted optional outputs, `omitted`); no kernel.",
        ("*inputs?",),
        _unknown,
        outputs=("*outputs",),
        attrs={"node": b"", "op_type": "", "domain": "", "omitted": ()},
        family="opaque",
    )
)
