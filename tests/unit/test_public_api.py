"""The public names: lazy at run time, real for type checkers, all covered by the typed user script."""

import ast
import subprocess
import sys

import lightning_synflow
from tests.helpers import REPO_ROOT

ROOT = REPO_ROOT
USER_SCRIPT = ROOT / "tests" / "typing" / "public_api.py"


def _type_checking_imports() -> dict[str, str | None]:
    """Each name the ``if TYPE_CHECKING:`` block of ``__init__`` imports, with the module it comes from."""
    tree = ast.parse((ROOT / "lightning_synflow" / "__init__.py").read_text())
    block = next(node for node in tree.body if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING")
    imports = [node for node in block.body if isinstance(node, ast.ImportFrom)]
    return {alias.asname or alias.name: node.module for node in imports for alias in node.names}


def test_type_checkers_see_every_lazy_name_from_the_module_it_is_loaded_from():
    assert _type_checking_imports() == lightning_synflow._LAZY


def test_the_typed_user_script_uses_every_public_name():
    tree = ast.parse(USER_SCRIPT.read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for alias in node.names}
    attributes = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    assert set(lightning_synflow.__all__) <= imported | attributes


def test_importing_the_package_loads_neither_lightning_nor_safetensors():
    code = "import sys, lightning_synflow; print('lightning' in sys.modules, 'safetensors' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.split() == ["False", "False"]
