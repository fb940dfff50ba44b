"""Every public method of the four channel types has a signature inspect can read and a
docstring (both generated from the stub into src/reqrep/_reqrep/docstrings.h by
tools/gen_docstrings.py), and they match the stub (src/reqrep/_reqrep.pyi)."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import reqrep

ROOT = Path(__file__).resolve().parent.parent
STUB = ROOT / "src" / "reqrep" / "_reqrep.pyi"
CLASSES = [reqrep.Server, reqrep.IntServer, reqrep.Client, reqrep.IntClient]


def _public(cls: type) -> list[str]:
    names = []
    for name in dir(cls):
        if name.startswith("_") and name not in ("__enter__", "__exit__"):
            continue
        attr = getattr(cls, name)
        if callable(attr) and not isinstance(attr, type) and not isinstance(
                inspect.getattr_static(cls, name), property):
            names.append(name)
    return names


def _stub_params(cls_name: str, method: str) -> list[tuple[str, str]]:
    tree = ast.parse(STUB.read_text())
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == cls_name:
            for fn in node.body:
                if isinstance(fn, ast.FunctionDef) and fn.name == method:
                    a = fn.args
                    out = [(x.arg, "POSITIONAL_ONLY") for x in a.posonlyargs]
                    out += [(x.arg, "POSITIONAL_OR_KEYWORD") for x in a.args]
                    if a.vararg:
                        out.append((a.vararg.arg, "VAR_POSITIONAL"))
                    out += [(x.arg, "KEYWORD_ONLY") for x in a.kwonlyargs]
                    if a.kwarg:
                        out.append((a.kwarg.arg, "VAR_KEYWORD"))
                    return out[1:]  # without self / cls
    raise AssertionError(f"{cls_name}.{method} is not in the stub")


CASES = [(cls, name) for cls in CLASSES for name in _public(cls)]


@pytest.mark.parametrize(("cls", "name"), CASES, ids=[f"{c.__name__}.{n}" for c, n in CASES])
def test_signature_and_docstring(cls: Any, name: str) -> None:
    method = getattr(cls, name)
    sig = inspect.signature(method)
    params = [(p.name, p.kind.name) for p in sig.parameters.values()]
    if params and params[0][0] == "self":
        params = params[1:]
    assert params == _stub_params(cls.__name__, name)
    doc = inspect.getdoc(method) or ""
    assert len(doc.split()) >= 8, f"{cls.__name__}.{name} has no real docstring: {doc!r}"


def test_the_types_have_signatures() -> None:
    for cls in CLASSES:
        inspect.signature(cls)


def test_generated_docstrings_are_up_to_date() -> None:
    res = subprocess.run([sys.executable, str(ROOT / "tools" / "gen_docstrings.py"), "--check"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout
