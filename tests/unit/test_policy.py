"""Unit tests of the policies package: loading, validation and the checks on a Policy."""

from __future__ import annotations

import os
import dataclasses
import logging
import pathlib
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies import (
    DANGEROUS_ENV, CommandNotAllowed, CommandRules, EnvironmentRules, EnvNotAllowed,
    LimitExceeded, Limits, PathNotAllowed, Policy, PolicyError, PolicyFileError, RateLimits,
    TaskType, TaskTypeNotAllowed, default_policy, is_dangerous_env, load_policy, parse_policy,
)
from policies.source import PolicySource

REPO = pathlib.Path(__file__).resolve().parents[2]
SHIPPED = REPO / "policies" / "allowed.yaml"


def write(tmp_path: pathlib.Path, text: str, name: str = "policy.yaml") -> pathlib.Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def parse(tmp_path: pathlib.Path, **keys) -> Policy:
    return parse_policy({"version": 1, **keys}, base_dir=tmp_path)


def file_error(tmp_path: pathlib.Path, **keys) -> PolicyFileError:
    with pytest.raises(PolicyFileError) as info:
        parse(tmp_path, **keys)
    return info.value


# --- loading -----------------------------------------------------------------------------

def test_shipped_policy_is_exactly_the_defaults():
    policy = load_policy(SHIPPED, base_dir=REPO)
    workspace = pathlib.Path(os.path.realpath(REPO)) / "workspace"
    assert policy == dataclasses.replace(default_policy(base_dir=REPO),
                                         allowed_directories=(workspace,))
    assert policy.source == SHIPPED
    assert policy.version == 1
    assert policy.allowed_directories == (workspace,)
    assert policy.task_types == frozenset(TaskType)
    assert policy.commands == CommandRules(shell=True, allow=(), deny=())
    assert policy.limits == Limits(300, 512, 300, 64, 1024, 1024, 256)
    assert policy.rate_limits == RateLimits(600, 120, 1, 1000)
    assert policy.network is True
    assert policy.environment.passthrough == ("PATH", "HOME", "LANG", "LC_ALL", "TZ")
    assert policy.environment.set == ()


def test_full_policy_file(tmp_path):
    (tmp_path / "proj").mkdir()
    (tmp_path / "data").mkdir()
    path = write(tmp_path, """
version: 1
allowed_directories: [proj, data, proj]
task_types: [test, script]
commands: {shell: false, allow: [pytest, /usr/bin/python3], deny: ['rm\\s+-rf']}
limits: {timeout_seconds: 60, memory_mb: 256, cpu_seconds: 30, max_processes: 8, max_output_kb: 64}
rate_limits: {requests_per_minute: 10, runs_per_minute: 5, min_interval_seconds: 60, max_tasks: 3}
network: false
environment: {pass: [PATH], set: {APP_MODE: "ci", EMPTY: ""}}
""")
    policy = load_policy(path, base_dir=tmp_path)
    assert policy.allowed_directories == (tmp_path.resolve() / "proj", tmp_path.resolve() / "data")
    assert policy.task_types == {TaskType.TEST, TaskType.SCRIPT}
    assert policy.commands.shell is False
    assert policy.commands.allow == ("pytest", "/usr/bin/python3")
    assert [p.pattern for p in policy.commands.deny] == [r"rm\s+-rf"]
    assert policy.limits == Limits(60, 256, 30, 8, 64)
    assert policy.rate_limits == RateLimits(10, 5, 60, 3)
    assert policy.network is False
    assert policy.environment == EnvironmentRules(("PATH",), (("APP_MODE", "ci"), ("EMPTY", "")))


def test_policy_is_frozen_and_hashable(tmp_path):
    policy = parse(tmp_path)
    with pytest.raises(AttributeError):
        policy.network = False  # type: ignore[misc]
    assert hash(policy) == hash(parse(tmp_path))


def test_relative_base_dir_defaults_to_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert default_policy().allowed_directories == (tmp_path.resolve(),)
    assert load_policy(write(tmp_path, "version: 1\n")).allowed_directories == (tmp_path.resolve(),)


@pytest.mark.parametrize("text, fragment", [
    ("", "empty"),
    ("# only a comment\n", "empty"),
    ("- version\n- 1\n", "mapping"),
    ("just text\n", "mapping"),
    ("version: [1\n", "not valid YAML at line"),
    ("version: 1\n  limits: {\n", "not valid YAML"),
    ("version: 1\nlimits: {a: 1}\nlimits: {}\n", "duplicate key 'limits'"),
    ("version: 1\nx: 2001-13-01\n", "cannot be parsed"),
    ("version: !!python/object/apply:os.system ['true']\n", "not valid YAML"),
])
def test_unparsable_or_empty_files(tmp_path, text, fragment):
    with pytest.raises(PolicyFileError) as info:
        load_policy(write(tmp_path, text), base_dir=tmp_path)
    assert fragment in info.value.message
    assert info.value.code == "invalid_policy"


def test_unreadable_files(tmp_path):
    for path in (tmp_path / "missing.yaml", tmp_path):
        with pytest.raises(PolicyFileError, match="cannot read"):
            load_policy(path)
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"version: 1\n\xff\xfe")
    with pytest.raises(PolicyFileError, match="UTF-8"):
        load_policy(binary)


@pytest.mark.parametrize("data, field", [
    ({}, "version"),
    ({"version": 2}, "version"),
    ({"version": "1"}, "version"),
    ({"version": True}, "version"),
    ({"version": 1.0}, "version"),
])
def test_version_is_required_and_must_be_1(tmp_path, data, field):
    with pytest.raises(PolicyFileError) as info:
        parse_policy(data, base_dir=tmp_path)
    assert info.value.field == field
    assert "version" in info.value.message


@pytest.mark.parametrize("data, field", [
    ({"version": 1, "colour": "red"}, "colour"),
    ({"version": 1, 5: "x"}, "5"),
    ({"version": 1, "limits": {"timeout": 5}}, "limits.timeout"),
    ({"version": 1, "rate_limits": {"rpm": 5}}, "rate_limits.rpm"),
    ({"version": 1, "commands": {"shel": True}}, "commands.shel"),
    ({"version": 1, "environment": {"passthrough": []}}, "environment.passthrough"),
])
def test_unknown_keys_are_errors_at_every_level(tmp_path, data, field):
    with pytest.raises(PolicyFileError) as info:
        parse_policy(data, base_dir=tmp_path)
    assert info.value.field == field
    assert "unknown key" in info.value.message and field in info.value.message


LIMIT_KEYS = [f"limits.{k}" for k in
              ("timeout_seconds", "memory_mb", "cpu_seconds", "max_processes", "max_output_kb")]
RATE_KEYS = [f"rate_limits.{k}" for k in
             ("requests_per_minute", "runs_per_minute", "min_interval_seconds", "max_tasks")]


@pytest.mark.parametrize("key", LIMIT_KEYS + RATE_KEYS)
@pytest.mark.parametrize("bad", ["abc", True, False, 0, -5, 1.5, 300.0, None, [1], 10**12])
def test_integer_settings_type_and_range(tmp_path, key, bad):
    section, name = key.split(".")
    error = file_error(tmp_path, **{section: {name: bad}})
    assert error.field == key
    assert error.message.startswith(key)
    if bad == 10**12:
        assert "at most" in error.message
    else:
        assert error.message == f"{key} must be a positive integer, got {bad!r}"


def test_integer_settings_bounds_are_inclusive(tmp_path):
    policy = parse(tmp_path, limits={"timeout_seconds": 7 * 86400, "memory_mb": 1},
                   rate_limits={"min_interval_seconds": 1})
    assert policy.limits.timeout_seconds == 7 * 86400 and policy.limits.memory_mb == 1
    assert file_error(tmp_path, limits={"timeout_seconds": 7 * 86400 + 1}).field == \
        "limits.timeout_seconds"


def test_partial_sections_keep_the_other_defaults(tmp_path):
    policy = parse(tmp_path, limits={"memory_mb": 100}, commands={"deny": ["sudo"]})
    assert policy.limits == Limits(memory_mb=100)
    assert policy.commands.shell is True and policy.commands.allow == ()


@pytest.mark.parametrize("keys, field", [
    ({"allowed_directories": "."}, "allowed_directories"),
    ({"allowed_directories": []}, "allowed_directories"),
    ({"allowed_directories": None}, "allowed_directories"),
    ({"allowed_directories": [".", 3]}, "allowed_directories[1]"),
    ({"allowed_directories": [""]}, "allowed_directories[0]"),
    ({"allowed_directories": ["a\x00b"]}, "allowed_directories[0]"),
    ({"allowed_directories": ["does-not-exist"]}, "allowed_directories[0]"),
    ({"allowed_directories": ["policy-file"]}, "allowed_directories[0]"),
    ({"task_types": []}, "task_types"),
    ({"task_types": "command"}, "task_types"),
    ({"task_types": ["command", "shell"]}, "task_types[1]"),
    ({"task_types": [["command"]]}, "task_types[0]"),
    ({"commands": []}, "commands"),
    ({"commands": {"shell": "yes"}}, "commands.shell"),
    ({"commands": {"shell": 1}}, "commands.shell"),
    ({"commands": {"allow": "ls"}}, "commands.allow"),
    ({"commands": {"allow": ["ls -l"]}}, "commands.allow[0]"),
    ({"commands": {"allow": ["bin/ls"]}}, "commands.allow[0]"),
    ({"commands": {"allow": [7]}}, "commands.allow[0]"),
    ({"commands": {"deny": "rm"}}, "commands.deny"),
    ({"commands": {"deny": ["ok", None]}}, "commands.deny[1]"),
    ({"limits": [1]}, "limits"),
    ({"rate_limits": None}, "rate_limits"),
    ({"network": "false"}, "network"),
    ({"network": 0}, "network"),
    ({"environment": []}, "environment"),
    ({"environment": {"pass": "PATH"}}, "environment.pass"),
    ({"environment": {"pass": ["PATH", "1BAD"]}}, "environment.pass[1]"),
    ({"environment": {"pass": ["A-B"]}}, "environment.pass[0]"),
    ({"environment": {"pass": [3]}}, "environment.pass[0]"),
    ({"environment": {"set": ["A"]}}, "environment.set"),
    ({"environment": {"set": {"A": 1}}}, "environment.set.A"),
    ({"environment": {"set": {"A": None}}}, "environment.set.A"),
    ({"environment": {"set": {"A": "x\x00y"}}}, "environment.set.A"),
    ({"environment": {"set": {"A": "x" * 5000}}}, "environment.set.A"),
    ({"environment": {"set": {"BAD NAME": "x"}}}, "environment.set.BAD NAME"),
])
def test_type_and_value_errors_name_the_key(tmp_path, keys, field):
    (tmp_path / "policy-file").write_text("")
    error = file_error(tmp_path, **keys)
    assert error.field == field
    assert field in error.message


@pytest.mark.parametrize("name", ["LD_PRELOAD", "LD_LIBRARY_PATH", "DYLD_INSERT_LIBRARIES",
                                  "PYTHONPATH", "PYTHONSTARTUP", "BASH_ENV", "ENV", "SHELLOPTS",
                                  "BASHOPTS", "PS4", "IFS", "GCONV_PATH", "LOCPATH", "NLSPATH",
                                  "MALLOC_CHECK_", "BASH_FUNC_x", "ld_preload"])
def test_dangerous_names_refused_in_pass_and_set(tmp_path, name):
    assert is_dangerous_env(name) and DANGEROUS_ENV.fullmatch(name)
    error = file_error(tmp_path, environment={"pass": ["PATH", name]})
    assert error.field == "environment.pass[1]" and "may not be set" in error.message
    error = file_error(tmp_path, environment={"set": {name: "x"}})
    assert error.field == f"environment.set.{name}"


@pytest.mark.parametrize("name", ["PATH", "HOME", "LANG", "MY_ENV", "ENVIRONMENT", "XLD_PRELOAD",
                                  "PS1", "IFS2", "TZ"])
def test_ordinary_names_are_not_dangerous(name):
    assert not is_dangerous_env(name)


def test_bad_regex_is_named(tmp_path):
    error = file_error(tmp_path, commands={"deny": ["fine", "a(b"]})
    assert error.field == "commands.deny[1]"
    assert "'a(b'" in error.message and "regular expression" in error.message
    assert file_error(tmp_path, commands={"deny": ["a{4294967296}"]}).field == "commands.deny[0]"


def test_missing_allowed_directory_is_named(tmp_path):
    error = file_error(tmp_path, allowed_directories=["nope"])
    assert "'nope'" in error.message and "does not exist" in error.message


def test_error_from_a_file_reports_key_path(tmp_path):
    path = write(tmp_path, "version: 1\nlimits:\n  memory_mb: abc\n")
    with pytest.raises(PolicyFileError) as info:
        load_policy(path, base_dir=tmp_path)
    assert info.value.field == "limits.memory_mb"
    assert info.value.message == "limits.memory_mb must be a positive integer, got 'abc'"


# --- paths -------------------------------------------------------------------------------

@pytest.fixture
def tree(tmp_path):
    """tmp/allowed (the policy's directory) with a file, a subdirectory and symlinks, next
    to tmp/allowed-evil and tmp/outside."""
    allowed, evil, outside = tmp_path / "allowed", tmp_path / "allowed-evil", tmp_path / "outside"
    for d in (allowed / "sub", evil, outside):
        d.mkdir(parents=True)
    (allowed / "file.py").write_text("print(1)\n")
    (allowed / "sub" / "inner.txt").write_text("x")
    (evil / "secret.txt").write_text("s")
    (outside / "secret.txt").write_text("s")
    (allowed / "out-link").symlink_to(outside)
    (allowed / "out-file-link").symlink_to(outside / "secret.txt")
    (allowed / "in-link").symlink_to(allowed / "sub")
    (outside / "back-link").symlink_to(allowed / "file.py")
    policy = parse_policy({"version": 1, "allowed_directories": ["allowed"]}, base_dir=tmp_path)
    return policy, allowed.resolve(), tmp_path.resolve()


def test_is_allowed(tree):
    policy, allowed, root = tree
    assert policy.is_allowed(allowed)
    assert policy.is_allowed(str(allowed / "file.py"))
    assert policy.is_allowed(allowed / "sub" / "inner.txt")
    assert policy.is_allowed(allowed / "in-link" / "inner.txt")
    assert policy.is_allowed(root / "outside" / "back-link")  # resolves inward
    assert not policy.is_allowed(root)
    assert not policy.is_allowed(root / "outside" / "secret.txt")
    assert not policy.is_allowed(root / "allowed-evil" / "secret.txt")
    assert not policy.is_allowed(f"{allowed}-evil")
    assert not policy.is_allowed(f"{allowed}/../outside/secret.txt")
    assert not policy.is_allowed(allowed / "out-link")
    assert not policy.is_allowed(allowed / "out-link" / "secret.txt")
    assert not policy.is_allowed(allowed / "out-file-link")
    assert not policy.is_allowed(allowed / "missing.txt")
    for junk in ("", f"{allowed}/file.py\x00", None, 3, b"/", "\ud800", "a" * 100_000):
        assert policy.is_allowed(junk) is False


def test_is_allowed_relative_paths_use_the_process_cwd(tree, monkeypatch):
    policy, allowed, root = tree
    monkeypatch.chdir(allowed / "sub")
    assert policy.is_allowed("inner.txt") and policy.is_allowed("../file.py")
    assert not policy.is_allowed("../../outside/secret.txt")


def test_resolve_working_dir(tree):
    policy, allowed, root = tree
    assert policy.resolve_working_dir(None) == allowed
    assert policy.resolve_working_dir("sub") == allowed / "sub"
    assert policy.resolve_working_dir(str(allowed / "sub")) == allowed / "sub"
    assert policy.resolve_working_dir("in-link") == allowed / "sub"
    assert policy.resolve_working_dir("sub/..") == allowed
    assert policy.resolve_working_dir(".") == allowed


@pytest.mark.parametrize("working_dir, fragment", [
    ("..", "outside the allowed directories"),
    ("../outside", "outside the allowed directories"),
    ("sub/../../outside", "outside the allowed directories"),
    ("../allowed-evil", "outside the allowed directories"),
    ("/", "outside the allowed directories"),
    ("out-link", "outside the allowed directories"),
    ("missing", "does not exist"),
    ("file.py", "not a directory"),
    ("sub\x00", "NUL"),
    ("", "empty"),
    ("x" * 5000, "longer than"),
    (["sub"], "must be a string"),
    (7, "must be a string"),
])
def test_resolve_working_dir_refusals(tree, working_dir, fragment):
    policy, allowed, root = tree
    with pytest.raises(PathNotAllowed) as info:
        policy.resolve_working_dir(working_dir)
    assert info.value.field == "working_dir" and info.value.code == "path_not_allowed"
    assert fragment in info.value.message
    if "outside" in fragment:
        assert str(allowed) in info.value.message  # names the allowed directories


def test_outside_refusal_does_not_reveal_existence(tree):
    policy, allowed, root = tree
    messages = []
    for name in ("/outside-nonexistent-xyz", str(root / "outside")):
        with pytest.raises(PathNotAllowed) as info:
            policy.resolve_working_dir(name)
        messages.append(info.value.message.replace(name, "P"))
    assert messages[0] == messages[1]


def test_resolve_file(tree):
    policy, allowed, root = tree
    sub = allowed / "sub"
    assert policy.resolve_file("inner.txt", sub) == sub / "inner.txt"
    assert policy.resolve_file("../file.py", sub, must_be_file=True) == allowed / "file.py"
    assert policy.resolve_file(str(allowed / "file.py"), root) == allowed / "file.py"
    assert policy.resolve_file("sub", allowed) == sub  # a directory is fine without must_be_file
    assert policy.resolve_file("in-link/inner.txt", allowed, must_be_file=True) == sub / "inner.txt"
    assert policy.resolve_file("outside/back-link", root) == allowed / "file.py"


@pytest.mark.parametrize("file_path, kwargs, fragment", [
    ("../outside/secret.txt", {}, "outside"),
    ("out-file-link", {}, "outside"),
    ("out-link/secret.txt", {}, "outside"),
    ("../allowed-evil/secret.txt", {}, "outside"),
    ("/etc/passwd", {}, "outside"),
    ("nope.py", {}, "does not exist"),
    ("sub", {"must_be_file": True}, "not a regular file"),
    ("file.py\x00.txt", {}, "NUL"),
    (None, {}, "must be a string"),
    ("x", {"field": "script_path"}, "does not exist"),
])
def test_resolve_file_refusals(tree, file_path, kwargs, fragment):
    policy, allowed, root = tree
    with pytest.raises(PathNotAllowed) as info:
        policy.resolve_file(file_path, allowed, **kwargs)
    assert info.value.field == kwargs.get("field", "file_path")
    assert fragment in info.value.message


def test_several_allowed_directories(tree):
    policy, allowed, root = tree
    two = parse_policy({"version": 1, "allowed_directories": ["allowed", "outside"]},
                       base_dir=root)
    assert two.resolve_working_dir(None) == allowed
    assert two.resolve_working_dir("../outside") == root / "outside"
    assert not two.is_allowed(root / "allowed-evil")


def test_root_directory_allows_everything(tmp_path):
    policy = parse_policy({"version": 1, "allowed_directories": ["/"]})
    assert policy.is_allowed("/") and policy.is_allowed(tmp_path)


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(st.text(), st.text(alphabet="./\x00-_~ab"),
                      st.binary().map(lambda b: b.decode("utf-8", "surrogateescape"))))
def test_random_paths_only_raise_path_not_allowed(text):
    policy = default_policy(base_dir=REPO / "policies")
    assert policy.is_allowed(text) in (True, False)
    for call in (lambda: policy.resolve_working_dir(text),
                 lambda: policy.resolve_file(text, REPO / "policies"),
                 lambda: policy.resolve_file(text, REPO, must_be_file=True)):
        try:
            result = call()
        except PathNotAllowed:
            continue
        assert policy.is_allowed(result)


# --- task types, commands, limits --------------------------------------------------------

def test_check_task_type(tmp_path):
    policy = parse(tmp_path, task_types=["test"])
    policy.check_task_type(TaskType.TEST)
    policy.check_task_type("test")  # type: ignore[arg-type]
    for bad in (TaskType.COMMAND, "custom", "bogus", None):
        with pytest.raises(TaskTypeNotAllowed) as info:
            policy.check_task_type(bad)  # type: ignore[arg-type]
        assert info.value.field == "type" and info.value.code == "task_type_not_allowed"


def rules(**keys) -> CommandRules:
    return parse_policy({"version": 1, "commands": keys}).commands


def refused(rule: CommandRules, command: object) -> str:
    with pytest.raises(CommandNotAllowed) as info:
        rule.check(command)  # type: ignore[arg-type]
    assert info.value.field == "command" and info.value.code == "command_not_allowed"
    return info.value.message


def test_default_command_rules_allow_any_shell_command():
    for command in ("echo hi", "ls | wc -l; echo $(date)", "echo 'unbalanced"):
        CommandRules().check(command)
    for bad in ("", "   ", "echo \x00", None, ["ls"]):
        refused(CommandRules(), bad)


def test_allow_list_by_name_and_by_absolute_path():
    rule = rules(allow=["pytest", "/usr/bin/python3"])
    for ok in ("pytest -q tests", "/opt/venv/bin/pytest -x", "/usr/bin/python3 x.py",
               "/usr/bin/../bin/python3 -V", "'pytest' -q", "pytest -k 'a or (b)'"):
        rule.check(ok)
    assert "'python3' is not on the policy's allow list" in refused(rule, "python3 x.py")
    assert "allow list: pytest, /usr/bin/python3" in refused(rule, "rm -rf /")
    refused(rule, "/usr/local/bin/python3 x.py")
    refused(rule, "FOO=1 pytest")
    refused(rule, "pytest 'unbalanced")  # shlex cannot split it
    refused(rule, "pytestx")


@pytest.mark.parametrize("command", [
    "pytest; rm -rf /", "pytest && curl x", "pytest | sh", "pytest & sleep 1",
    "pytest\nrm x", "pytest $(rm x)", "pytest `rm x`", 'pytest "$(rm x)"', 'pytest "`rm x`"',
    "pytest <(rm x)", "(pytest)",
])
def test_allow_list_with_shell_refuses_shell_operators(command):
    assert "allow list" in refused(rules(allow=["pytest"]), command)


@pytest.mark.parametrize("command", [
    "pytest 'a; b'", "pytest -k 'a and (b or c)'", r"pytest a\;b", "pytest '$(x)'",
    'pytest "a|b"', "pytest > out.txt",
])
def test_allow_list_with_shell_accepts_quoted_operators(command):
    rules(allow=["pytest"]).check(command)


def test_allow_list_without_shell_does_not_care_about_operators():
    rules(shell=False, allow=["pytest"]).check("pytest ; rm -rf /")  # ";" is only an argument


def test_deny_regex_searches_the_whole_command():
    rule = rules(deny=[r"\brm\s+-rf\b", "(?i)sudo"])
    rule.check("echo firm -rfx")
    assert r"deny rule '\\brm\\s+-rf\\b'" in refused(rule, "cd /tmp && rm  -rf x")
    assert "(?i)sudo" in refused(rule, "echo SUDO")
    refused(rules(shell=False, allow=["echo"], deny=["secret"]), "echo secret")


def test_shell_false_only_refuses_unsplittable_commands():
    rule = rules(shell=False)
    rule.check("echo a; rm b | c")
    assert "cannot be split" in refused(rule, "echo 'unbalanced")
    refused(rule, "echo trailing\\")


def test_check_limits(tmp_path):
    policy = parse(tmp_path, limits={"timeout_seconds": 60})
    for ok in (None, 1, 0.5, 60, 60.0):
        policy.check_limits(timeout=ok)
    with pytest.raises(LimitExceeded) as info:
        policy.check_limits(timeout=61)
    assert info.value.field == "timeout" and "60" in info.value.message
    assert info.value.code == "limit_exceeded"
    for bad in (0, -1, float("nan"), float("inf"), True, "30", 10**400):
        with pytest.raises(LimitExceeded):
            policy.check_limits(timeout=bad)  # type: ignore[arg-type]


# --- environment -------------------------------------------------------------------------

def test_check_task_env_accepts_plain_variables():
    env = EnvironmentRules()
    assert env.check_task_env(None) == {}
    assert env.check_task_env({}) == {}
    result = env.check_task_env({"MY_VAR": "1", "_x": "", "PATH": "/bin"})
    assert result == {"MY_VAR": "1", "_x": "", "PATH": "/bin"} and type(result) is dict
    assert len(env.check_task_env({f"V{i}": "x" for i in range(64)})) == 64


@pytest.mark.parametrize("task_env, field", [
    ({"LD_PRELOAD": "/tmp/evil.so"}, "env.LD_PRELOAD"),
    ({"PYTHONPATH": "/tmp"}, "env.PYTHONPATH"),
    ({"BASH_ENV": "/tmp/x"}, "env.BASH_ENV"),
    ({"IFS": " "}, "env.IFS"),
    ({"MALLOC_ARENA_MAX": "1"}, "env.MALLOC_ARENA_MAX"),
    ({"1ABC": "x"}, "env.1ABC"),
    ({"A-B": "x"}, "env.A-B"),
    ({"": "x"}, "env."),
    ({"A": 1}, "env.A"),
    ({"A": None}, "env.A"),
    ({"A": "x\x00"}, "env.A"),
    ({"A": "x" * 4097}, "env.A"),
    ({1: "x"}, "env"),
    (["A=1"], "env"),
    ("A=1", "env"),
    ({f"V{i}": "x" for i in range(65)}, "env"),
])
def test_check_task_env_refusals(task_env, field):
    with pytest.raises(EnvNotAllowed) as info:
        EnvironmentRules().check_task_env(task_env)
    assert info.value.field == field and info.value.code == "env_not_allowed"
    if field != "env":
        assert field[4:] in info.value.message


def test_ld_preload_refusal_is_a_policy_violation():
    with pytest.raises(PolicyError) as info:
        default_policy(base_dir=REPO).environment.check_task_env({"LD_PRELOAD": "x.so"})
    assert (info.value.code, info.value.field) == ("env_not_allowed", "env.LD_PRELOAD")
    assert "LD_PRELOAD" in info.value.message


def test_build_copies_only_named_variables(tmp_path):
    env = parse(tmp_path, environment={"pass": ["PATH", "HOME", "TZ"],
                                       "set": {"MODE": "ci", "HOME": "/srv"}}).environment
    source = {"PATH": "/usr/bin", "HOME": "/root", "AWS_SECRET_ACCESS_KEY": "s3cr3t",
              "LD_PRELOAD": "/evil.so", "API_TOKEN": "t"}
    assert env.build(source, {}) == {"PATH": "/usr/bin", "HOME": "/srv", "MODE": "ci"}
    assert env.build(source, {"MODE": "dev", "EXTRA": "1"}) == {
        "PATH": "/usr/bin", "HOME": "/srv", "MODE": "dev", "EXTRA": "1"}
    assert env.build({}, {}) == {"HOME": "/srv", "MODE": "ci"}
    with pytest.raises(EnvNotAllowed):
        env.build(source, {"LD_PRELOAD": "/evil.so"})
    assert EnvironmentRules(passthrough=(), set=()).build(dict(os.environ), {}) == {}


def test_secrets_in_source_never_reach_the_run_by_default():
    env = default_policy(base_dir=REPO).environment
    built = env.build({"PATH": "/bin", "SECRET": "x", "DATABASE_URL": "y"}, {"A": "b"})
    assert built == {"PATH": "/bin", "A": "b"}


def test_hand_built_policy_is_normalised(tmp_path):
    link = tmp_path / "link"
    link.symlink_to(tmp_path)
    policy = Policy(version=1, allowed_directories=(str(link),),  # type: ignore[arg-type]
                    task_types=frozenset({"test"}), commands=CommandRules(), limits=Limits(),
                    rate_limits=RateLimits(), network=True, environment=EnvironmentRules())
    assert policy.allowed_directories == (tmp_path.resolve(),)
    assert policy.task_types == {TaskType.TEST}


@pytest.mark.parametrize("path", ["/hooks/../admin", "/hooks/%2e%2e/admin", "/hooks/..%2Fadmin",
                                  "/hooks/./x", "/hooks\\..\\admin", "/hooks/%5c"])
def test_notification_urls_that_could_resolve_outside_their_prefix_are_refused(path):
    from policies.model import NotificationRules, url_problem
    url = "http://127.0.0.1:9/" + path.lstrip("/")
    assert url_problem(url) is not None
    assert not NotificationRules(allowed_urls=("http://127.0.0.1:9/hooks",)).allows(url)
    assert NotificationRules(allowed_urls=("http://127.0.0.1:9/hooks",)).allows(
        "http://127.0.0.1:9/hooks/a.b/c..d")


# --- rate_limits.max_concurrent_runs ---------------------------------------------------------

@pytest.mark.parametrize("cpus, expected", [(2, 32), (3, 48), (None, 16), (1000, 10_000)])
def test_max_concurrent_runs_is_auto_by_default_sixteen_per_cpu(tmp_path, monkeypatch, cpus,
                                                                expected):
    monkeypatch.setattr(os, "cpu_count", lambda: cpus)
    limits = parse(tmp_path).rate_limits
    assert limits.max_concurrent_runs == "auto"
    assert limits.concurrent_runs == expected  # capped at the ceiling, at least one CPU's worth
    assert parse(tmp_path, rate_limits={"max_concurrent_runs": "auto"}).rate_limits == limits


@pytest.mark.parametrize("value", [1, 64, 10_000])
def test_max_concurrent_runs_takes_a_number(tmp_path, value):
    limits = parse(tmp_path, rate_limits={"max_concurrent_runs": value}).rate_limits
    assert limits.max_concurrent_runs == limits.concurrent_runs == value
    assert limits.runs_per_minute == 120  # the other keys keep their defaults


@pytest.mark.parametrize("bad", [0, -1, 10_001, "Auto", "AUTO", "16", "", True, False, 2.5,
                                 None, [1], {"auto": 1}])
def test_max_concurrent_runs_refusals_name_the_key(tmp_path, bad):
    error = file_error(tmp_path, rate_limits={"max_concurrent_runs": bad})
    assert error.field == "rate_limits.max_concurrent_runs"
    assert error.message == ("rate_limits.max_concurrent_runs must be an integer from 1 to "
                             f"10000 or 'auto', got {bad!r}")


def test_max_concurrent_runs_from_a_file(tmp_path):
    path = write(tmp_path, "version: 1\nrate_limits:\n  max_concurrent_runs: 12\n")
    assert load_policy(path, base_dir=tmp_path).rate_limits.concurrent_runs == 12
    path = write(tmp_path, "version: 1\nrate_limits: {max_concurrent_runs: many}\n")
    with pytest.raises(PolicyFileError) as info:
        load_policy(path, base_dir=tmp_path)
    assert info.value.field == "rate_limits.max_concurrent_runs"


def test_the_shipped_policy_documents_max_concurrent_runs():
    assert "max_concurrent_runs: auto" in SHIPPED.read_text()


# --- revisions and listeners of the policy file --------------------------------------------

class Edits:
    """A policy file and a source over it on a clock that moves only when told."""

    def __init__(self, base: pathlib.Path):
        self.base = base
        self.path = base / "allowed.yaml"
        self.now = 0.0
        self.edits = 0
        self.edit()
        self.source = PolicySource(self.path, base_dir=base, check_interval=1.0,
                                   clock=lambda: self.now)

    def edit(self, extra: str = "") -> None:
        """A new valid file (each a different size, so that its identity changes)."""
        self.edits += 1
        self.path.write_text(f"version: 1\nrate_limits: {{max_tasks: {10 ** self.edits}}}\n"
                             + extra)


@pytest.fixture
def edits(tmp_path) -> Edits:
    return Edits(tmp_path)


def test_each_policy_applied_gets_the_next_revision(edits):
    assert edits.source.current().revision == 1
    assert edits.source.refresh() is False  # unchanged: the same policy
    edits.edit()
    assert edits.source.refresh() is True
    assert edits.source.current().revision == 2
    edits.edit("bogus: 1\n")
    assert edits.source.refresh() is False and edits.source.error
    assert edits.source.current().revision == 2  # a bad file is not a revision
    edits.edit()
    assert edits.source.refresh() is True
    policy = edits.source.current()
    assert policy.revision == 3 and policy.rate_limits.max_tasks == 10 ** 4
    # The revision tells loads apart; it does not make equal policies different.
    assert policy == dataclasses.replace(policy, revision=7)


def test_listeners_hear_of_each_policy_applied_on_the_thread_that_reloaded(edits):
    heard: list[tuple[int, int, str]] = []
    edits.source.add_listener(
        lambda p: heard.append((p.revision, p.rate_limits.max_tasks,
                                threading.current_thread().name)))
    edits.edit()
    edits.now = 1.0
    assert edits.source.current().revision == 2  # the check on use applies it
    edits.edit("bogus: 1\n")
    assert edits.source.refresh() is False  # not applied: nobody is told
    edits.edit()

    def reload() -> None:
        edits.source.refresh()

    other = threading.Thread(target=reload, name="reloader")
    other.start()
    other.join(5)
    here = threading.current_thread().name
    assert heard == [(2, 100, here), (3, 10_000, "reloader")]


def test_a_failing_listener_is_logged_and_the_others_are_told(edits, caplog):
    heard = []

    def broken(policy):
        raise RuntimeError("listener bug")

    edits.source.add_listener(broken)
    edits.source.add_listener(lambda p: heard.append(p.revision))
    edits.edit()
    with caplog.at_level(logging.ERROR, logger="policies.source"):
        assert edits.source.refresh() is True
    assert heard == [2] and edits.source.current().revision == 2
    assert any(r.exc_info and "listener bug" in str(r.exc_info[1]) for r in caplog.records)


def test_a_listener_may_ask_for_the_policy(edits):
    seen = []
    edits.source.add_listener(lambda p: seen.append(edits.source.current() is p))
    edits.edit()
    edits.now = 5.0  # the listener's own look is due for a check too: it must not deadlock
    reloader = threading.Thread(target=edits.source.refresh, args=(0.0,), daemon=True)
    reloader.start()
    reloader.join(5)
    assert not reloader.is_alive(), "a listener asking for the policy deadlocked the reload"
    assert seen == [True]


def test_listeners_are_never_told_an_older_revision_after_a_newer_one(edits):
    heard = []
    edits.source.add_listener(lambda p: heard.append(p.revision))
    base = edits.source.current()
    edits.source._tell(dataclasses.replace(base, revision=3))  # two reloads told out of order
    edits.source._tell(dataclasses.replace(base, revision=2))
    edits.source._tell(dataclasses.replace(base, revision=3))
    assert heard == [3]
