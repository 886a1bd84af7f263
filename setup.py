"""setuptools entry for what pyproject.toml cannot say.

* ``cffi_modules`` (a setup() keyword registered by cffi) builds the C library
  and its cffi wrapper into ``fedcodec._fedcodec_cffi``.
* ``packages`` is discovered under the three folders that pyproject.toml maps
  with ``package-dir`` (fedcodec/, server/ -> fedcodec.server,
  client/ -> fedcodec.client), so a new subpackage needs no edit.
"""

from pathlib import Path

from setuptools import setup

_PACKAGE_DIRS = {"fedcodec": "fedcodec", "fedcodec.server": "server", "fedcodec.client": "client"}


def _packages() -> list[str]:
    here = Path(__file__).resolve().parent
    packages = []
    for package, folder in _PACKAGE_DIRS.items():
        root = here / folder
        for init in sorted(root.rglob("__init__.py")):
            parts = init.parent.relative_to(root).parts
            if "__pycache__" not in parts:
                packages.append(".".join((package, *parts)))
    return packages


setup(
    packages=_packages(),
    cffi_modules=["fedcodec/_ffi_build.py:ffi"],
)
