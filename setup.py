"""What pyproject.toml cannot say: where the data folders go, and a .pth file at the top of site-packages.

The top-level folders licenses/, manifests/ and pipelines/ stay where people edit them; each is mapped to a
package under ``curate.data`` so that a wheel installs it beside the code and an editable install reads the
checkout's folder in place (``curate.data`` finds them through importlib.resources).
"""

import os

from setuptools import find_namespace_packages, setup
from setuptools.command.build_py import build_py

DATA_FOLDERS = {f"curate.data.{folder}": folder for folder in ("licenses", "manifests", "pipelines")}

# Runs curate/_torchvision_cpu.py's hook at interpreter start, for tools that import torchvision before any of
# our code (the accelerate CLI imports timm). A .pth only works at the top of site-packages.
PTH_NAME = "cleanroom_torchvision_cpu.pth"
PTH_TEXT = "import curate._torchvision_cpu\n"


class BuildPyWithPth(build_py):
    """build_py that also writes the .pth at the top level of what gets installed."""

    def run(self):
        super().run()
        # A regular wheel is packed from build_lib; an editable one from the install folder (build_lib unused).
        top = self.get_finalized_command("install").install_lib if self.editable_mode else self.build_lib
        os.makedirs(top, exist_ok=True)
        with open(os.path.join(top, PTH_NAME), "w") as pth:
            pth.write(PTH_TEXT)

    def get_outputs(self, include_bytecode=True):
        outputs = super().get_outputs(include_bytecode)
        return outputs if self.editable_mode else [*outputs, os.path.join(self.build_lib, PTH_NAME)]


setup(
    packages=[*find_namespace_packages(include=["curate*", "train*", "audit*"]), *DATA_FOLDERS],
    package_dir=DATA_FOLDERS,
    cmdclass={"build_py": BuildPyWithPth},
)
