"""`spork check`: exit codes, the three output formats, and no traceback on any input."""

from __future__ import annotations

import json
import os
import random
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from spork_cli.cli import app
from spork_cli.cli.check import github_annotation
from spork_cli.config.diagnostics import Diagnostic
from spork_cli.errors import UsageError
from tests.support import SporkRunner

VALID = """\
[[services]]
name = "users"
endpoints = ["http://127.0.0.1:9000"]

[[routes]]
path = "/api"
service = "users"
"""

INVALID = """\
[[services]]
name = "users"
endpoints = ["http://127.0.0.1:9000"]

[[routes]]
path = "/api"
service = "users"
strip_prefx = true
timeout = 30
"""

WARNING_ONLY = VALID + '\n[state]\nurl = "redis://127.0.0.1:6379/0"\n'

KEYS = ["file", "line", "column", "path", "severity", "code", "message", "hint"]


# Plain output whatever the calling terminal asks for, so markers line up with columns.
PLAIN = {"FORCE_COLOR": None, "NO_COLOR": "1", "TERM": "dumb"}


def invoke(*args: str) -> Result:
    result = CliRunner().invoke(app, list(args), env=PLAIN)
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def write(tmp_path: Path, text: str, name: str = "gateway.toml") -> Path:
    file = tmp_path / name
    file.write_text(text)
    return file


# --- exit codes -------------------------------------------------------------------------------


def test_valid_file_exits_0_and_says_ok(tmp_path: Path) -> None:
    file = write(tmp_path, VALID)
    result = invoke("check", str(file))
    assert result.exit_code == 0
    assert result.stdout == f"ok  {file}: 1 service, 1 route\n"


def test_invalid_file_exits_1(tmp_path: Path) -> None:
    result = invoke("check", str(write(tmp_path, INVALID)))
    assert result.exit_code == 1
    assert "2 errors, 0 warnings in 1 file: failed" in result.stdout


def test_warning_only_file_passes_without_strict(tmp_path: Path) -> None:
    result = invoke("check", str(write(tmp_path, WARNING_ONLY)))
    assert result.exit_code == 0
    assert "0 errors, 1 warning in 1 file: passed" in result.stdout


def test_strict_fails_a_warning_only_file(tmp_path: Path) -> None:
    result = invoke("check", "--strict", str(write(tmp_path, WARNING_ONLY)))
    assert result.exit_code == 1
    assert "0 errors, 1 warning in 1 file: failed" in result.stdout


@pytest.mark.parametrize("fmt", ["json", "github"])
def test_strict_applies_to_every_format(tmp_path: Path, fmt: str) -> None:
    file = str(write(tmp_path, WARNING_ONLY))
    assert invoke("check", "--format", fmt, file).exit_code == 0
    assert invoke("check", "--format", fmt, "--strict", file).exit_code == 1


def test_strict_on_a_clean_file_still_passes(tmp_path: Path) -> None:
    assert invoke("check", "--strict", str(write(tmp_path, VALID))).exit_code == 0


@pytest.mark.parametrize(
    "text",
    ["", "\n  \n", "# nothing yet\n\n   # still nothing"],
    ids=["zero-bytes", "blank", "comments"],
)
def test_empty_file_is_an_error_at_its_first_line(tmp_path: Path, text: str) -> None:
    file = write(tmp_path, text)
    result = invoke("check", str(file))
    assert result.exit_code == 1
    assert "error the file is empty (no settings, at most comments) [empty-file]" in result.stdout
    assert f"--> {file}:1:1" in result.stdout


def test_no_routes_is_a_warning_so_strict_fails(tmp_path: Path) -> None:
    file = write(tmp_path, "[server]\nport = 8080\n")
    result = invoke("check", str(file))
    assert result.exit_code == 0
    assert "warning no routes: every request is answered 404 [no-routes]" in result.stdout
    assert "0 errors, 1 warning in 1 file: passed" in result.stdout
    assert invoke("check", "--strict", str(file)).exit_code == 1


def test_json_flag_prints_what_format_json_prints(tmp_path: Path) -> None:
    file = str(write(tmp_path, INVALID))
    flag, option = invoke("check", "--json", file), invoke("check", "--format", "json", file)
    assert (flag.exit_code, flag.stdout) == (option.exit_code, option.stdout)
    assert flag.exit_code == 1
    assert [d["path"] for d in json.loads(flag.stdout)] == [
        "routes[0].strip_prefx",
        "routes[0].timeout",
    ]


def test_json_flag_with_another_format_is_a_usage_error(tmp_path: Path) -> None:
    args = ["check", "--json", "--format", "github", str(write(tmp_path, VALID))]
    error = CliRunner().invoke(app, args, env=PLAIN).exception
    assert isinstance(error, UsageError) and error.exit_code == 2
    assert str(error) == "--json and --format github ask for two formats; pass one"


def test_missing_file_exits_2(tmp_path: Path) -> None:
    result = invoke("check", str(tmp_path / "absent.toml"))
    assert result.exit_code == 2
    assert result.stderr == f"spork: {tmp_path / 'absent.toml'}: no such file\n"


def test_directory_exits_2(tmp_path: Path) -> None:
    result = invoke("check", str(tmp_path))
    assert result.exit_code == 2
    assert "is a directory" in result.stderr


@pytest.mark.parametrize("fmt", ["text", "json", "github"])
def test_one_missing_file_among_several_exits_2_and_reports_the_others(
    tmp_path: Path, fmt: str
) -> None:
    bad = write(tmp_path, INVALID, "bad.toml")
    good = write(tmp_path, VALID, "good.toml")
    missing = tmp_path / "missing.toml"
    result = invoke("check", "--format", fmt, str(bad), str(missing), str(good))
    assert result.exit_code == 2
    assert f"{missing}: no such file" in result.stderr
    assert "strip_prefx" in result.stdout
    if fmt == "json":
        assert {d["file"] for d in json.loads(result.stdout)} == {str(bad)}
    if fmt == "text":
        assert f"ok  {good}" in result.stdout


def test_several_valid_files_exit_0(tmp_path: Path) -> None:
    one = write(tmp_path, VALID, "one.toml")
    two = write(tmp_path, VALID.replace("users", "orders"), "two.toml")
    result = invoke("check", str(one), str(two))
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        f"ok  {one}: 1 service, 1 route",
        f"ok  {two}: 1 service, 1 route",
    ]


def test_one_invalid_among_several_exits_1(tmp_path: Path) -> None:
    good = write(tmp_path, VALID, "good.toml")
    bad = write(tmp_path, INVALID, "bad.toml")
    result = invoke("check", str(good), str(bad))
    assert result.exit_code == 1
    assert "in 2 files: failed" in result.stdout


def test_config_option_is_the_default_file(tmp_path: Path) -> None:
    file = write(tmp_path, INVALID, "other.toml")
    result = invoke("-c", str(file), "check", "--format", "json")
    assert result.exit_code == 1
    assert {d["file"] for d in json.loads(result.stdout)} == {str(file)}


def test_unknown_format_is_a_usage_error(tmp_path: Path) -> None:
    result = invoke("check", "--format", "xml", str(write(tmp_path, VALID)))
    assert result.exit_code == 2


# --- json ---------------------------------------------------------------------------------------


def test_json_is_a_list_of_objects_with_exactly_the_stable_keys(tmp_path: Path) -> None:
    file = write(tmp_path, INVALID)
    result = invoke("check", "--format", "json", str(file))
    assert result.exit_code == 1
    found = json.loads(result.stdout)
    assert found == [
        {
            "file": str(file),
            "line": 8,
            "column": 1,
            "path": "routes[0].strip_prefx",
            "severity": "error",
            "code": "unknown-key",
            "message": "unknown key 'strip_prefx'",
            "hint": "did you mean 'strip_prefix'?",
        },
        {
            "file": str(file),
            "line": 9,
            "column": 11,
            "path": "routes[0].timeout",
            "severity": "error",
            "code": "invalid-value",
            "message": 'durations are strings with a unit, e.g. "30s"',
            "hint": None,
        },
    ]
    assert all(list(d) == KEYS for d in found)


def test_json_of_a_valid_file_is_an_empty_list(tmp_path: Path) -> None:
    result = invoke("check", "--format", "json", str(write(tmp_path, VALID)))
    assert result.exit_code == 0
    assert json.loads(result.stdout) == []


def test_json_output_is_stable_between_runs(tmp_path: Path) -> None:
    file = str(write(tmp_path, INVALID + '\n[server]\nport = "x"\nhost = 1\n'))
    first = invoke("check", "--format", "json", file).stdout
    second = invoke("check", "--format", "json", file).stdout
    assert first == second
    positions = [(d["line"], d["column"]) for d in json.loads(first)]
    assert positions == sorted(positions)


def test_json_keeps_warnings_and_errors_apart(tmp_path: Path) -> None:
    text = WARNING_ONLY + '[server]\nhost = "0.0.0.0"\nport = 9901\n[admin]\nhost = "0.0.0.0"\n'
    found = json.loads(invoke("check", "--format", "json", str(write(tmp_path, text))).stdout)
    assert {(d["code"], d["severity"]) for d in found} == {
        ("url-ignored", "warning"),
        ("port-clash", "error"),
        ("admin-exposed", "error"),
    }


# --- github -----------------------------------------------------------------------------------

GITHUB_LINE = re.compile(
    r"^::(error|warning) file=([^,:]*),line=(\d+),col=(\d+),title=([^,:]*)::(.*)$"
)


def test_github_annotations(tmp_path: Path) -> None:
    file = write(tmp_path, INVALID)
    result = invoke("check", "--format", "github", str(file))
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines == [
        f"::error file={file},line=8,col=1,title=spork unknown-key::"
        "routes[0].strip_prefx: unknown key 'strip_prefx' (did you mean 'strip_prefix'?)",
        f"::error file={file},line=9,col=11,title=spork invalid-value::"
        'routes[0].timeout: durations are strings with a unit, e.g. "30s"',
    ]
    assert all(GITHUB_LINE.match(line) for line in lines)


def test_github_warning_annotation(tmp_path: Path) -> None:
    result = invoke("check", "--format", "github", str(write(tmp_path, WARNING_ONLY)))
    (line,) = result.stdout.splitlines()
    match = GITHUB_LINE.match(line)
    assert match is not None
    assert match.group(1) == "warning"
    assert (match.group(3), match.group(4)) == ("10", "7")


def test_github_escapes_percent_comma_and_colon_in_properties(tmp_path: Path) -> None:
    file = write(tmp_path, '[server]\nport = "x"\n', "50%,a:b.toml")
    result = invoke("check", "--format", "github", str(file))
    (line,) = result.stdout.splitlines()
    escaped = str(file).replace("%", "%25").replace(":", "%3A").replace(",", "%2C")
    assert line.startswith(f"::error file={escaped},line=2,col=8,title=spork wrong-type::")
    assert GITHUB_LINE.match(line)


def test_github_escapes_newlines_and_percent_in_the_message(tmp_path: Path) -> None:
    file = write(tmp_path, '"odd\\nkey 100%" = 1\n')
    result = invoke("check", "--format", "github", str(file))
    (line,) = result.stdout.splitlines()
    assert line.endswith("::odd%0Akey 100%25: unknown key 'odd%0Akey 100%25'")


def test_github_annotation_unit() -> None:
    d = Diagnostic("a,b:c", 3, 4, "x.y", "warning", "code", "50% off:\r\nnow", "try, this")
    assert github_annotation(d) == (
        "::warning file=a%2Cb%3Ac,line=3,col=4,title=spork code::"
        "x.y: 50%25 off:%0D%0Anow (try, this)"
    )


# --- text -------------------------------------------------------------------------------------


def marker_column(output: str, line_no: int, source: str) -> int:
    """Column (1-based) of the ``^`` drawn under ``line_no`` whose source is ``source``."""
    lines = output.splitlines()
    head = f"    {line_no} | {source}"
    index = lines.index(head)
    under = lines[index + 1]
    prefix = f"    {' ' * len(str(line_no))} | "
    assert under.startswith(prefix)
    return under.index("^") - len(prefix) + 1


def test_text_shows_file_source_line_and_marker(tmp_path: Path) -> None:
    file = write(tmp_path, INVALID)
    out = invoke("check", str(file)).stdout
    assert out.splitlines()[0] == str(file)
    assert f"--> {file}:8:1" in out
    assert f"--> {file}:9:11" in out
    assert "error routes[0].strip_prefx: unknown key 'strip_prefx' [unknown-key]" in out
    assert marker_column(out, 8, "strip_prefx = true") == 1
    assert marker_column(out, 9, "timeout = 30") == 11
    assert "^ did you mean 'strip_prefix'?" in out


def test_text_marker_in_an_inline_table(tmp_path: Path) -> None:
    text = VALID + 'rate_limit = { requests = 10, per = "1s", burst = 0 }\n'
    out = invoke("check", str(write(tmp_path, text))).stdout
    assert marker_column(out, 8, 'rate_limit = { requests = 10, per = "1s", burst = 0 }') == 51


def test_text_marker_with_crlf_line_endings(tmp_path: Path) -> None:
    file = tmp_path / "gateway.toml"
    file.write_bytes(INVALID.replace("\n", "\r\n").encode())
    out = invoke("check", str(file)).stdout
    assert marker_column(out, 9, "timeout = 30") == 11


def test_text_marker_lines_count_only_newlines(tmp_path: Path) -> None:
    # U+2028 and U+0085 are allowed in TOML comments but do not end a TOML line.
    text = "# a\u2028b\x85c\n" + INVALID
    out = invoke("check", str(write(tmp_path, text))).stdout
    assert marker_column(out, 10, "timeout = 30") == 11


def test_text_without_final_newline(tmp_path: Path) -> None:
    out = invoke("check", str(write(tmp_path, INVALID.rstrip("\n")))).stdout
    assert marker_column(out, 9, "timeout = 30") == 11


def test_text_escapes_rich_markup_from_the_file(tmp_path: Path) -> None:
    out = invoke("check", str(write(tmp_path, '"[bold]x[/]" = 1\n'))).stdout
    assert "unknown key '[bold]x[/]'" in out
    assert '    1 | "[bold]x[/]" = 1' in out


# --- bad input classes never give a traceback ------------------------------------------------

_rng = random.Random(1234)
BAD_INPUTS: dict[str, bytes] = {
    "binary-junk": bytes(_rng.randrange(256) for _ in range(4096)),
    "nul-and-invalid-utf8": b"[server]\x00\nhost = \xff\xfe\n\x80",
    "empty": b"",
    "only-comments": b"# nothing\n# here\n",
    "deep-arrays": b"a = " + b"[" * 100_000 + b"]" * 100_000 + b"\n",
    "deep-inline-tables": b"a = " + b"{b=" * 100_000 + b"1" + b"}" * 100_000 + b"\n",
    "deep-dotted-header": b"[server" + b".x" * 2000 + b"]\n",
    "many-routes": (
        VALID + "".join(f'[[routes]]\npath = "/r{i}"\nservice = "users"\n' for i in range(5000))
    ).encode(),
    "wrong-types-everywhere": (
        b'server = "s"\nadmin = 1\nstate = []\nauth = true\ncors = 1.5\nlogging = 1979-05-27\n'
        b"services = {a = 1}\nroutes = [1, [2], {path = 3, service = []}]\ndeny = 0\n"
    ),
    "no-final-newline": b'[server]\nport = "x"',
    "crlf": b'[server]\r\nport = "x"\r\n',
    "lone-cr": b"[server]\rport = 1\r",
    "bom": b"\xef\xbb\xbf" + VALID.encode(),
    "control-characters": b"a = '\x01\x02\x1b[31m'\n\x0c",
    "huge-integer": b"[server]\nport = " + b"9" * 5000 + b"\n",
    "huge-size": b'[server]\nmax_body = "' + b"9" * 400 + b'GiB"\n',
    "huge-duration-number": b"[server.timeouts]\nkeepalive = " + b"9" * 400 + b"\n",
    "rich-markup": b'"[red]x[/]" = "[/]"\n[/bold]\n',
    "unterminated-string": b'[server]\nhost = "abc\n',
}


# What each bad input is reported as; an empty set means the file is valid.
BAD_INPUT_CODES: dict[str, set[str]] = {
    "binary-junk": {"encoding"},
    "nul-and-invalid-utf8": {"encoding"},
    "empty": {"empty-file"},
    "only-comments": {"empty-file"},
    "deep-arrays": {"too-deep"},
    "deep-inline-tables": {"too-deep"},
    "deep-dotted-header": {"unknown-key"},
    "many-routes": set(),
    "wrong-types-everywhere": {"wrong-type"},
    "no-final-newline": {"wrong-type"},
    "crlf": {"wrong-type"},
    "lone-cr": {"toml-syntax"},
    "bom": set(),  # a byte order mark is skipped
    "control-characters": {"toml-syntax"},
    "huge-integer": {"toml-syntax"},
    "huge-size": {"invalid-value"},
    "huge-duration-number": {"invalid-value"},
    "rich-markup": {"toml-syntax"},
    "unterminated-string": {"toml-syntax"},
}


def test_every_bad_input_has_an_expectation() -> None:
    assert set(BAD_INPUT_CODES) == set(BAD_INPUTS)


@pytest.mark.parametrize("fmt", ["text", "json", "github"])
@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_never_gives_a_traceback(tmp_path: Path, name: str, fmt: str) -> None:
    file = tmp_path / "gateway.toml"
    file.write_bytes(BAD_INPUTS[name])
    result = invoke("check", "--format", fmt, str(file))
    codes = BAD_INPUT_CODES[name]
    assert result.exit_code == (1 if codes else 0), result.output
    if fmt == "json":
        assert {d["code"] for d in json.loads(result.stdout)} == codes
    if fmt == "text" and not codes:
        assert result.stdout.startswith(f"ok  {file}: ")


def test_many_routes_are_counted(tmp_path: Path) -> None:
    file = tmp_path / "gateway.toml"
    file.write_bytes(BAD_INPUTS["many-routes"])
    assert invoke("check", str(file)).stdout == f"ok  {file}: 1 service, 5001 routes\n"


def test_too_large_file_is_one_diagnostic(tmp_path: Path) -> None:
    file = tmp_path / "gateway.toml"
    file.write_bytes(b"#" * (16 * 1024 * 1024 + 1))
    result = invoke("check", "--format", "json", str(file))
    assert result.exit_code == 1
    (d,) = json.loads(result.stdout)
    assert (d["code"], d["line"], d["column"]) == ("too-large", 1, 1)


def test_junk_is_reported_as_encoding_error(tmp_path: Path) -> None:
    file = tmp_path / "gateway.toml"
    file.write_bytes(b"ok = 1\nbad = \x00\n")
    (d,) = json.loads(invoke("check", "--format", "json", str(file)).stdout)
    assert (d["code"], d["line"], d["column"]) == ("encoding", 2, 7)


def test_wrong_types_everywhere_lists_every_section(tmp_path: Path) -> None:
    file = tmp_path / "gateway.toml"
    file.write_bytes(BAD_INPUTS["wrong-types-everywhere"])
    found = json.loads(invoke("check", "--format", "json", str(file)).stdout)
    paths = {d["path"] for d in found}
    expected = {"server", "admin", "state", "auth", "cors", "logging", "services", "deny"}
    assert expected <= paths
    assert {"routes[0]", "routes[1]", "routes[2].path", "routes[2].service"} <= paths


# --- as a real process ------------------------------------------------------------------------


def test_process_missing_file_is_one_line_and_exit_2(
    tmp_path: Path, run_spork: SporkRunner
) -> None:
    result = run_spork("check", "absent.toml", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == "spork: absent.toml: no such file\n"
    assert result.stdout == ""


def test_process_default_file_is_gateway_toml(tmp_path: Path, run_spork: SporkRunner) -> None:
    result = run_spork("check", cwd=tmp_path, env={"SPORK_CONFIG": None})
    assert result.returncode == 2
    assert "gateway.toml: no such file" in result.stderr
    write(tmp_path, VALID)
    result = run_spork("check", cwd=tmp_path, env={"SPORK_CONFIG": None})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok  gateway.toml")


def test_process_spork_config_variable(tmp_path: Path, run_spork: SporkRunner) -> None:
    write(tmp_path, INVALID, "from-env.toml")
    result = run_spork("check", "-f", "json", cwd=tmp_path, env={"SPORK_CONFIG": "from-env.toml"})
    assert result.returncode == 1
    assert {d["file"] for d in json.loads(result.stdout)} == {"from-env.toml"}


def test_process_directory_exit_2(tmp_path: Path, run_spork: SporkRunner) -> None:
    result = run_spork("check", str(tmp_path))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_process_unreadable_file_exit_2(tmp_path: Path, run_spork: SporkRunner) -> None:
    file = write(tmp_path, VALID)
    file.chmod(0)
    result = run_spork("check", str(file))
    assert result.returncode == 2
    assert "cannot read" in result.stderr


def test_process_binary_junk_exit_1_without_traceback(
    tmp_path: Path, run_spork: SporkRunner
) -> None:
    file = tmp_path / "gateway.toml"
    file.write_bytes(BAD_INPUTS["binary-junk"])
    result = run_spork("check", str(file))
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    assert "[encoding]" in result.stdout


def test_process_env_missing_names_the_variable(tmp_path: Path, run_spork: SporkRunner) -> None:
    write(tmp_path, '[auth]\nsecret = "${SPORK_TEST_SECRET}"\n')
    result = run_spork("check", "gateway.toml", cwd=tmp_path, env={"SPORK_TEST_SECRET": None})
    assert result.returncode == 1
    assert "environment variable SPORK_TEST_SECRET is not set" in result.stdout
    result = run_spork("check", "gateway.toml", cwd=tmp_path, env={"SPORK_TEST_SECRET": "x" * 32})
    assert result.returncode == 0, result.stdout
