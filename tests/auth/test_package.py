"""The auth package root: its errors import nothing heavy, and they fit the SporkError tree."""

from __future__ import annotations

import sys

from spork_cli.auth import KeyLoadError, TokenRejected, UnknownKeyId
from spork_cli.errors import ConfigError, SporkError
from tests.support import Processes


def test_catching_auth_errors_imports_neither_pyjwt_nor_cryptography(
    processes: Processes,
) -> None:
    code = (
        "import sys\n"
        "from spork_cli.auth import TokenRejected, KeyLoadError\n"
        "heavy = {'jwt', 'cryptography', 'aiohttp', 'pydantic'}\n"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))\n"
    )
    result = processes.run(sys.executable, "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_error_tree() -> None:
    assert issubclass(KeyLoadError, ConfigError)
    assert issubclass(UnknownKeyId, TokenRejected) and issubclass(TokenRejected, SporkError)
    error = UnknownKeyId("k9", "no key has kid 'k9'")
    assert (error.code, error.kid, str(error), error.exit_code) == (
        "unknown_kid",
        "k9",
        "no key has kid 'k9'",
        1,
    )
    assert repr(TokenRejected("gone", "revoked")) == "TokenRejected('gone', 'revoked')"
