"""Properties of the package source as a whole."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "optpipe"


def test_torch_load_never_unpickles_arbitrary_objects():
    """torch < 2.6 defaults to weights_only=False (pickle runs code); pyproject allows torch >= 2.4."""
    unsafe = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.load":
                kw = {k.arg: k.value for k in node.keywords}
                if not (isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True):
                    unsafe.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert not unsafe, f"torch.load without weights_only=True: {unsafe}"
