#!/usr/bin/env python3
"""Records coremltools' view of every fixture package into fixtures/coremltools_view.json.

For each `.mlpackage` under fixtures/anemll/*/ and fixtures/mil/, the spec is loaded with coremltools
(`MLModel(path, skip_model_load=True)`, which works on Linux, or `ct.utils.load_spec` on the root item) and the script writes, per function:
- the op histogram (all ops, nested blocks included) of the function's active block
  (`block_specializations[opset]`) as decoded by coremltools' protobuf classes (its pymil loader is not used because
  it rewrites the program, e.g. fusing `write_state` + `read_state` and turning inline values into `const` ops), and
- the inputs, outputs and states of the model description (name, array dtype, default shape,
  enumerated shapes or ranges, optional flag),
plus the specification version and default function. The Rust tests compare the crate's reader against this file.

Usage (from the repository root):
    python3 -m venv tools/.venv && tools/.venv/bin/pip install -r tools/requirements.txt
    tools/.venv/bin/python tools/record_coremltools_view.py
"""

import collections
import json
import pathlib
import sys

import coremltools as ct
from coremltools.proto import FeatureTypes_pb2

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"

ARRAY_DTYPES = {
    FeatureTypes_pb2.ArrayFeatureType.FLOAT16: "fp16",
    FeatureTypes_pb2.ArrayFeatureType.FLOAT32: "fp32",
    FeatureTypes_pb2.ArrayFeatureType.DOUBLE: "fp64",
    FeatureTypes_pb2.ArrayFeatureType.INT32: "int32",
    FeatureTypes_pb2.ArrayFeatureType.INT8: "int8",
}


def array_view(array):
    view = {
        "dtype": ARRAY_DTYPES.get(array.dataType),
        "shape": [int(d) for d in array.shape],
        "enumerated_shapes": None,
        "ranges": None,
    }
    which = array.WhichOneof("ShapeFlexibility")
    if which == "enumeratedShapes":
        view["enumerated_shapes"] = [[int(d) for d in s.shape] for s in array.enumeratedShapes.shapes]
    elif which == "shapeRange":
        view["ranges"] = [
            [int(r.lowerBound), None if r.upperBound < 0 else int(r.upperBound)]
            for r in array.shapeRange.sizeRanges
        ]
    return view


def feature_view(feature):
    kind = feature.type.WhichOneof("Type")
    view = {"name": feature.name, "kind": kind, "optional": bool(feature.type.isOptional)}
    if kind == "multiArrayType":
        view.update(array_view(feature.type.multiArrayType))
    elif kind == "stateType":
        view.update(array_view(feature.type.stateType.arrayType))
    return view


def count_ops(block, counter):
    for op in block.operations:
        counter[op.type] += 1
        for inner in op.blocks:
            count_ops(inner, counter)


def package_view(path):
    spec = load_package_spec(path)
    assert spec.WhichOneof("Type") == "mlProgram", path
    description = spec.description
    if len(description.functions) > 0:
        described = {
            f.name: (f.input, f.output, f.state) for f in description.functions
        }
        default = description.defaultFunctionName
    else:
        (name,) = list(spec.mlProgram.functions.keys())
        described = {name: (description.input, description.output, description.state)}
        default = name
    functions = {}
    for name, (inputs, outputs, states) in sorted(described.items()):
        function = spec.mlProgram.functions[name]
        counter = collections.Counter()
        count_ops(function.block_specializations[function.opset], counter)
        functions[name] = {
            "opset": function.opset,
            "ops": dict(sorted(counter.items())),
            "inputs": [feature_view(f) for f in inputs],
            "outputs": [feature_view(f) for f in outputs],
            "states": [feature_view(f) for f in states],
        }
    return {
        "spec_version": spec.specificationVersion,
        "default_function": default,
        "functions": functions,
    }


def load_package_spec(path):
    """The package's root spec, via `MLModel(skip_model_load=True)`; when coremltools' package library rejects the
    package (it requires every manifest item, even an empty `weights` directory that git does not keep), the root
    item named in Manifest.json is loaded with `ct.utils.load_spec` instead."""
    try:
        return ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    except RuntimeError:
        manifest = json.loads((path / "Manifest.json").read_text())
        item = manifest["itemInfoEntries"][manifest["rootModelIdentifier"]]["path"]
        return ct.utils.load_spec(str(path / "Data" / item))


def main():
    packages = sorted(FIXTURES.glob("anemll/*/*.mlpackage")) + sorted(FIXTURES.glob("mil/*.mlpackage"))
    out = {
        "format": "coremltools-view/1",
        "coremltools_version": ct.__version__,
        "packages": {
            str(p.relative_to(FIXTURES)): package_view(p) for p in packages
        },
    }
    target = FIXTURES / "coremltools_view.json"
    target.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(f"wrote {target} ({len(packages)} packages)", file=sys.stderr)


if __name__ == "__main__":
    main()
