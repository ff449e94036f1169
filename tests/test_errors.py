"""One error base: every exception class the library defines derives from cryonet.errors.CryonetError."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import cryonet
from cryonet import cli
from cryonet.errors import CryonetError


def _library_exceptions() -> dict[str, type[BaseException]]:
    """``module.Class`` -> class, for every exception class defined (not imported) in a cryonet module.

    Warnings are left out (they are not raised as errors), and so are private classes (``_StopTraining``: a
    control-flow signal inside a module, never seen by a caller).
    """
    found = {}
    modules = [cryonet.__name__] + [m.name for m in pkgutil.walk_packages(cryonet.__path__, prefix="cryonet.")]
    for name in modules:
        module = importlib.import_module(name)
        for cls_name, cls in inspect.getmembers(module, inspect.isclass):
            if (
                cls.__module__ == module.__name__
                and issubclass(cls, BaseException)
                and not issubclass(cls, Warning)
                and not cls_name.startswith("_")
            ):
                found[f"{name}.{cls_name}"] = cls
    return found


EXCEPTIONS = _library_exceptions()


def test_the_walk_finds_the_library_errors():
    names = {qual.rsplit(".", 1)[1] for qual in EXCEPTIONS}
    assert {"RasterError", "SceneError", "VectorError", "DatasetError", "StackError", "FetchError"} <= names
    assert "CheckpointError" in names


@pytest.mark.parametrize("qualname", sorted(EXCEPTIONS))
def test_every_library_error_is_a_cryonet_error(qualname):
    cls = EXCEPTIONS[qualname]
    assert issubclass(cls, CryonetError), f"{qualname} does not derive from cryonet.errors.CryonetError"
    assert cls.__doc__, f"{qualname} has no docstring saying when it is raised"


@pytest.mark.parametrize(
    ("module", "name", "builtin"),
    [
        ("cryonet.raster", "RasterError", ValueError),
        ("cryonet.manifest", "UnknownEntryError", KeyError),
        ("cryonet.manifest", "FetchError", OSError),
        ("cryonet.manifest", "ChecksumError", ValueError),
        ("cryonet.vector", "VectorError", ValueError),
    ],
)
def test_errors_keep_their_builtin_base(module, name, builtin):
    cls = getattr(importlib.import_module(module), name)
    assert issubclass(cls, builtin)
    with pytest.raises(builtin, match="the message"):
        raise cls("the message")


def test_unknown_entry_message_is_not_quoted():
    from cryonet.manifest import UnknownEntryError

    assert str(UnknownEntryError("'x' is not in the registry")) == "'x' is not in the registry"


def test_cli_shows_a_cryonet_error_as_one_line(monkeypatch, capsys):
    def fail(args):
        raise CryonetError("data/x.tif: expected 1 band, found 3. Rebuild it with `cryonet align`.")

    monkeypatch.setattr(cli, "COMMANDS", [("boom", "always fails", lambda p: None, fail)])
    assert cli.main(["boom"]) == 1
    err = capsys.readouterr().err
    assert err == "cryonet boom: error: data/x.tif: expected 1 band, found 3. Rebuild it with `cryonet align`.\n"
