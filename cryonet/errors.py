"""The one base class of the errors the library raises.

Every error that :mod:`cryonet` raises on bad input or state derives from :class:`CryonetError`, so that a caller
(the ``cryonet`` command, a notebook) can catch them all with one ``except`` clause. Each concrete error also keeps
the built-in type it had before (``ValueError``, ``KeyError``, ``OSError``, ``RuntimeError``), so that code written
against those still catches it.
"""

from __future__ import annotations


class CryonetError(Exception):
    """Every error the library raises on bad input or state.

    The message names the file or key concerned, what was expected, what was found, and what to do about it (the
    command or call that fixes it).
    """
