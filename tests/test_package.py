"""The installed distribution: one import name, one door to C, the error
numbers agree with the C library, typing marker and version."""

from __future__ import annotations

import doctest
import importlib
import importlib.metadata
import re
from pathlib import Path

import fedcodec
from fedcodec import _binding, errors

PACKAGE_DIR = Path(fedcodec.__file__).resolve().parent
REPO_ROOT = Path(__file__).resolve().parent.parent


def test_the_compiled_module_sits_in_the_imported_package():
    compiled = list(PACKAGE_DIR.glob("_fedcodec_cffi*.so")) + list(
        PACKAGE_DIR.glob("_fedcodec_cffi*.pyd")
    )
    assert compiled, f"no compiled module in {PACKAGE_DIR}"
    assert importlib.import_module("fedcodec._fedcodec_cffi").__file__ is not None


def test_server_and_client_install_under_fedcodec():
    for name, folder in (("fedcodec.server", "server"), ("fedcodec.client", "client")):
        module = importlib.import_module(name)
        assert module.__doc__
        assert folder in module.__doc__
        assert Path(module.__file__).resolve().parent.name == folder or (
            Path(module.__file__).resolve().parent == PACKAGE_DIR / folder
        )
    site = PACKAGE_DIR.parent
    if site != REPO_ROOT:  # an installed copy: no top-level server/client packages beside it
        assert not (site / "server" / "__init__.py").exists()
        assert not (site / "client" / "__init__.py").exists()


def test_only_the_binding_imports_the_compiled_module():
    importers = []
    pattern = re.compile(
        r"^\s*(from|import)\s+fedcodec\._fedcodec_cffi\b|\b_fedcodec_cffi\s+import", re.M
    )
    for path in PACKAGE_DIR.rglob("*.py"):
        if pattern.search(path.read_text(encoding="utf-8")):
            importers.append(path.relative_to(PACKAGE_DIR).as_posix())
    assert importers == ["_binding.py"]


def test_error_numbers_and_names_agree_with_the_c_library():
    codes = {name: value for name, value in vars(errors).items() if name.startswith("FC_")}
    assert len(codes) == 13
    assert sorted(codes.values()) == list(range(13))
    for name, value in codes.items():
        assert _binding.result_name(value) == name
    assert _binding.result_name(99) == "FC_ERR_UNKNOWN"


def test_error_classes_are_ours_and_builtin():
    expected = {
        errors.FC_ERR_INVALID_ARGUMENT: (fedcodec.InvalidParameterError, ValueError),
        errors.FC_ERR_NONFINITE: (fedcodec.InvalidParameterError, ValueError),
        errors.FC_ERR_LEVEL_OVERFLOW: (fedcodec.InvalidParameterError, ValueError),
        errors.FC_ERR_MISMATCH: (fedcodec.InvalidParameterError, ValueError),
        errors.FC_ERR_TRUNCATED: (fedcodec.CorruptStreamError, ValueError),
        errors.FC_ERR_CORRUPT: (fedcodec.CorruptStreamError, ValueError),
        errors.FC_ERR_CHECKSUM: (fedcodec.CorruptStreamError, ValueError),
        errors.FC_ERR_VERSION: (fedcodec.CorruptStreamError, ValueError),
        errors.FC_ERR_LIMIT: (fedcodec.CorruptStreamError, ValueError),
        errors.FC_ERR_NOMEM: (fedcodec.OutOfMemoryError, MemoryError),
        errors.FC_ERR_THREAD: (fedcodec.WorkerThreadError, RuntimeError),
        errors.FC_ERR_BUFFER_TOO_SMALL: (fedcodec.FedCodecError, Exception),
    }
    for code, (ours, builtin) in expected.items():
        cls = errors.error_class_for(code)
        assert cls is ours
        assert issubclass(cls, builtin)
        assert issubclass(cls, fedcodec.FedCodecError)
        error = cls("what went wrong", code=code, result_name=_binding.result_name(code))
        assert error.code == code
        assert str(error) == f"{_binding.result_name(code)}: what went wrong"
    assert not issubclass(fedcodec.CorruptStreamError, fedcodec.InvalidParameterError)


def test_constants_come_from_the_header():
    assert (_binding.MAX_DIMS, _binding.MAX_GTX, _binding.MAX_LEVEL) == (8, 8, 2**30 - 1)
    assert _binding.FORMAT_VERSION == 1


def test_version_and_typing_marker():
    assert fedcodec.__version__ == importlib.metadata.version("fedcodec")
    assert re.fullmatch(r"\d+\.\d+\.\d+", fedcodec.library_version())
    assert (PACKAGE_DIR / "py.typed").is_file()


def test_public_api_is_reexported():
    for name in fedcodec.__all__:
        assert hasattr(fedcodec, name), name
    assert fedcodec.encode is fedcodec.codec.encode


def test_documentation_examples_run():
    results = doctest.testmod(fedcodec.codec)
    assert results.failed == 0
    assert results.attempted >= 3  # the module example really ran
