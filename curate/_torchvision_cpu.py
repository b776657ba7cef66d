"""Let ``import torchvision`` (and so ``import open_clip``) work with the CPU build of torch.

PyPI serves torchvision only as a CUDA build. Next to the CPU torch its compiled library
cannot load (it needs libc10_cuda.so); torchvision then still registers fake kernels for
``torchvision::nms`` / ``torchvision::qnms`` and the import dies with
``operator torchvision::nms does not exist``. Defining those two operator schemas first
lets the import through; the pure-Python parts we use (transforms) work as usual.

The hook acts only when that failure is coming: it loads torchvision's compiled library
the way torchvision itself does (``torch.ops.load_library``) and defines the schemas only
if that load fails. Where the library loads (a CUDA install, or a matching CPU build) the
real operators are registered and nothing else changes. It is installed by importing
``curate`` (or ``train``), which every process that runs our stages does (driver, Ray
workers, spawned processes), and by a one-line ``.pth`` file that every install of the
package puts at the top of site-packages (see setup.py), for tools that import torchvision
before any of our code (the ``accelerate`` CLI imports timm). It does nothing until
torchvision is first imported.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from pathlib import Path

_SCHEMA = "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"
_OPS = ("torchvision::nms", "torchvision::qnms")


def _compiled_ops_load(package_dir: Path) -> bool:
    import torch

    for library in sorted(package_dir.glob("_C.*")):
        if library.suffix in (".so", ".pyd"):
            try:
                torch.ops.load_library(str(library))
                return True
            except OSError:
                return False
    return False


def _define_missing_ops() -> None:
    import torch

    for op in _OPS:
        try:
            torch.library.define(op, _SCHEMA)
        except RuntimeError:
            pass  # already defined in this process


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname != "torchvision":
            return None
        sys.meta_path.remove(self)  # one look is enough; later imports go straight through
        spec = importlib.util.find_spec("torchvision")
        if spec is not None and spec.origin and not _compiled_ops_load(Path(spec.origin).parent):
            _define_missing_ops()
        return None  # let the normal finders import torchvision


def install() -> None:
    if "torchvision" in sys.modules or any(isinstance(f, _Finder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _Finder())
