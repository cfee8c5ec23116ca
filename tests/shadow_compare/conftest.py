"""Fixtures for the shadow_compare tests; the backends themselves live in replay_backends.py
(a uniquely named module, so test modules can import its constants without importing a
``conftest`` that another test folder may have registered first)."""

from replay_backends import two_backends

__all__ = ["two_backends"]
