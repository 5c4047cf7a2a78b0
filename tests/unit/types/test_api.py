"""The public surface of rvai_sdk.types: names, docstrings, and no optional imports."""

from __future__ import annotations

import inspect
import subprocess
import sys

import rvai_sdk.types as types_module

PUBLIC = [
    "Value",
    "Integer",
    "Float",
    "String",
    "Boolean",
    "FloatRange",
    "IntegerRange",
    "Enum",
    "Image",
    "BoundingBox",
    "Point",
    "Class",
    "Classes",
    "List",
    "Dict",
    "is_value_type",
    "type_name",
    "coerce",
    "to_json",
    "from_json",
    "json_schema",
    "fake",
]


def test_the_public_names_are_importable_from_the_package() -> None:
    assert set(PUBLIC) <= set(types_module.__all__)
    for name in types_module.__all__:
        assert getattr(types_module, name) is not None


def test_every_public_class_method_and_function_has_a_docstring() -> None:
    missing = []
    for name in types_module.__all__:
        obj = getattr(types_module, name)
        if not inspect.getdoc(obj):
            missing.append(name)
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if attr.startswith("_"):
                    continue
                func = getattr(member, "__func__", getattr(member, "func", member))
                if callable(func) or isinstance(member, property):
                    if not inspect.getdoc(getattr(obj, attr)):
                        missing.append(f"{name}.{attr}")
    assert missing == []


def test_importing_the_types_does_not_import_pillow() -> None:
    code = "import sys, rvai_sdk.types; assert 'PIL' not in sys.modules, 'PIL imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
