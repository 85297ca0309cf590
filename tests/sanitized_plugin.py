"""pytest plugin for the suite run against the ASan+UBSan build (see test_sanitized_extension.py): it makes sure
the fasttun under test is the sanitized copy."""

from __future__ import annotations

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    import fasttun._core

    where = os.environ.get("FASTTUN_SANITIZED_PKG", "")
    if not where or not os.path.realpath(fasttun._core.__file__).startswith(os.path.realpath(where)):
        raise pytest.UsageError(f"the sanitized run imported {fasttun._core.__file__}, not the build in {where!r}")
