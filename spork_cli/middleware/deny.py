"""``[[deny]]`` rules: a tripwire for known-bad requests, refused with 403 before routing.

A rule matches when every condition it sets matches: ``path`` is searched in the canonical
path (the one routes match and the upstream is sent: ``/%2Egit`` and ``/x/../.git`` are
``/.git``), ``query`` in the raw query string (without ``?``), ``value`` in each value of
``header`` (a request without that header does not match). The 403 problem names the rule.
This is not a web application firewall: queries and headers are seen as sent, and whatever no
rule names goes through.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from spork_cli.problems import HTTPProblem

if TYPE_CHECKING:
    from aiohttp import web

    from spork_cli.config.model import DenyRule

log = structlog.get_logger("spork.deny")


@dataclass(frozen=True, slots=True)
class _Rule:
    name: str
    path: re.Pattern[str] | None
    query: re.Pattern[str] | None
    header: str | None
    value: re.Pattern[str] | None

    def matches(self, path: str, query: str, request: web.Request) -> bool:
        if self.path is None and self.query is None and self.header is None:
            return False  # `spork check` refuses such a rule; it must not refuse everything
        if self.path is not None and self.path.search(path) is None:
            return False
        if self.query is not None and self.query.search(query) is None:
            return False
        if self.header is not None:
            values = request.headers.getall(self.header, ())
            if not values:
                return False
            if self.value is not None and not any(self.value.search(v) for v in values):
                return False
        return True


class DenyRules:
    """The ``[[deny]]`` list of one config, regexes compiled."""

    def __init__(self, rules: Sequence[DenyRule]) -> None:
        self.rules = tuple(
            _Rule(
                rule.name,
                _compile(rule.path),
                _compile(rule.query),
                rule.header,
                _compile(rule.value),
            )
            for rule in rules
        )

    def check(self, request: web.Request) -> None:
        """Raise the 403 problem when a rule matches ``request``."""
        path, _, query = request.raw_path.partition("?")
        for rule in self.rules:
            if rule.matches(path, query, request):
                log.warning("request denied", rule=rule.name, method=request.method, path=path)
                raise HTTPProblem(
                    403,
                    "denied",
                    f"the request matches the deny rule '{rule.name}'",
                    extra={"rule": rule.name},
                )


def _compile(pattern: str | None) -> re.Pattern[str] | None:
    return re.compile(pattern) if pattern is not None else None


def deny_rules(rules: Sequence[DenyRule]) -> DenyRules | None:
    """None when there are no rules, so requests pay nothing for the feature."""
    return DenyRules(rules) if rules else None
