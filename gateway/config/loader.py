"""Read gateway.yaml: YAML -> `${VAR}` substitution -> schema -> compile, all problems at once.

Substitution runs on parsed string values, so a secret containing YAML syntax cannot change the
document's structure, and problems name the variable, never its value. Problems carry the line
they point at. `check_config_main` is `spendgate check-config PATH`.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from importlib.resources import files
from pathlib import Path

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from gateway.config.checks import INVALID, Problem, Substituted, Unset, join
from gateway.config.compile import compile_config
from gateway.config.model import Config
from gateway.config.schema import validate
from gateway.errors import ConfigError
from gateway.pricing.table import PriceTable

_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
_MERGE_TAG = "tag:yaml.org,2002:merge"
# `$${` is a literal `${`; `${NAME}` or `${NAME:-default}`; any other `${` is malformed.
_REFERENCE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\{")
_LAST_PART = re.compile(r"(\.[^.\[]*|\[\d+\])$")


class _Loader(yaml.SafeLoader):
    """SafeLoader without YAML 1.1 timestamps: `api_version: 2024-10-21` stays the string."""

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP_TAG]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }


def default_config_path() -> Path:
    """The packaged demo config, gateway/defaults/gateway.yaml."""
    return Path(str(files("gateway").joinpath("defaults", "gateway.yaml")))


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    prices: PriceTable | None = None,
    unset: list[str] | None = None,
) -> Config:
    """Load and compile a config file (None: the packaged default); raise ConfigError."""
    source = os.fspath(path) if path is not None else str(default_config_path())
    return load_text(_read(source), source, env=env, prices=prices, unset=unset)


def load_text(
    text: str,
    source: str,
    *,
    env: Mapping[str, str] | None = None,
    prices: PriceTable | None = None,
    unset: list[str] | None = None,
) -> Config:
    """Compile config text; `env` defaults to os.environ, `prices` to litellm's table.

    `unset`: allow environment variables that are not set (`check-config --allow-missing-env`):
    each stands for a valid value of its field, and its name is appended to the list. The
    config compiled so is for checking only: its placeholders are not the real values."""
    data, lines, problems = _parse(text, source)
    if data is None:
        raise ConfigError(source, [("", "the config is empty")])
    data = _substitute(data, os.environ if env is None else env, "", problems, {}, unset)
    root = validate(data, problems)
    config = None
    if root is not None:
        # Compile even after schema problems, so cross-reference problems come in the same report.
        try:
            config = compile_config(root, source, prices=prices)
        except ConfigError as exc:
            problems.extend(exc.problems)
    if config is None or problems:
        raise ConfigError(source, _in_file_order(problems, lines))
    return config


def check_config_main(path: str, allow_missing_env: bool = False) -> int:
    """`spendgate check-config PATH`: 0 and a summary if PATH is valid, else 1 and why.
    `allow_missing_env`: unset variables stand for valid values (and are listed)."""
    unset: list[str] | None = [] if allow_missing_env else None
    try:
        config = load_config(path, unset=unset)
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        return 1
    counts = f"{len(config.providers)} providers, {len(config.models)} models"
    print(f"OK: {path}: {counts}, {len(config.teams)} teams")
    if unset:
        names = ", ".join(sorted(set(unset)))
        print(f"not set, checked with placeholders (set them where it runs): {names}")
    return 0


def _read(source: str) -> str:
    try:
        return Path(source).read_text(encoding="utf-8")
    except FileNotFoundError:
        reason = "file not found"
    except IsADirectoryError:
        reason = "is a directory, not a config file"
    except PermissionError:
        reason = "permission denied"
    except UnicodeDecodeError as exc:
        reason = f"not UTF-8 text (bad byte at offset {exc.start})"
    except OSError as exc:
        reason = f"cannot be read: {exc.strerror or type(exc).__name__}"
    raise ConfigError(source, [("", reason)])


def _parse(text: str, source: str) -> tuple[object, dict[str, int], list[Problem]]:
    """The document, each key path's line, and its duplicate keys (which YAML would hide)."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}, []
        lines: dict[str, int] = {}
        problems: list[Problem] = []
        _index(node, "", lines, problems, set())
        return loader.construct_document(node), lines, problems
    except yaml.MarkedYAMLError as exc:
        raise ConfigError(source, [("", _syntax_reason(exc))]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(source, [("", f"not valid YAML: {type(exc).__name__}")]) from None
    finally:
        loader.dispose()


def _syntax_reason(exc: yaml.MarkedYAMLError) -> str:
    # Only the parser's own words and the position: the offending line may hold a secret.
    mark = exc.problem_mark or exc.context_mark
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    context = f" ({exc.context})" if exc.context else ""
    return f"YAML syntax error{where}: {exc.problem or 'invalid document'}{context}"


def _index(
    node: Node, path: str, lines: dict[str, int], problems: list[Problem], seen: set[int]
) -> None:
    """Record the line of every key path and report duplicate keys, before construction."""
    if id(node) in seen:
        return  # an alias: indexed where its anchor is (and it may be recursive)
    seen.add(id(node))
    if isinstance(node, MappingNode):
        keys: dict[tuple[str, str], int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag == _MERGE_TAG:
                continue
            line = key_node.start_mark.line + 1
            sub = join(path, key_node.value)
            identity = (key_node.tag, key_node.value)
            if identity in keys:
                reason = f"duplicate key {key_node.value!r} (first at line {keys[identity]})"
                problems.append((sub, f"{reason}; YAML would silently keep only this last one"))
            keys.setdefault(identity, line)
            lines[sub] = line  # the last one wins, as in the constructed document
            _index(value_node, sub, lines, problems, seen)
    elif isinstance(node, SequenceNode):
        for i, item in enumerate(node.value):
            lines.setdefault(f"{path}[{i}]", item.start_mark.line + 1)
            _index(item, f"{path}[{i}]", lines, problems, seen)


def _in_file_order(problems: list[Problem], lines: dict[str, int]) -> list[Problem]:
    """Problems sorted by the line they point at (the path's or its nearest ancestor's),
    which is appended to the reason; problems about the whole file come first."""
    located: list[tuple[int, Problem]] = []
    for path, reason in problems:
        probe, line = path, 0
        while probe and not line:
            line = lines.get(probe, 0)
            parent = _LAST_PART.sub("", probe)
            probe = parent if parent != probe else ""  # a top-level key has no parent
        located.append((line, (path, f"{reason} (line {line})" if line else reason)))
    located.sort(key=lambda item: item[0])
    return [problem for _, problem in located]


def _substitute(
    value: object,
    env: Mapping[str, str],
    path: str,
    problems: list[Problem],
    memo: dict[int, object],
    unset: list[str] | None = None,
) -> object:
    """Replace `${VAR}` in every string value (not keys); unresolvable strings become INVALID.

    `memo` keeps aliased (and recursive) YAML nodes one object, visited once. `unset`: see
    `load_text`.
    """
    if isinstance(value, str):
        return _substitute_text(value, env, path, problems, unset)
    if id(value) in memo:
        return memo[id(value)]
    if isinstance(value, dict):
        mapping: dict[object, object] = {}
        memo[id(value)] = mapping
        for key, item in value.items():
            mapping[key] = _substitute(item, env, join(path, key), problems, memo, unset)
        return mapping
    if isinstance(value, list):
        items: list[object] = []
        memo[id(value)] = items
        items.extend(
            _substitute(item, env, f"{path}[{i}]", problems, memo, unset)
            for i, item in enumerate(value)
        )
        return items
    return value


def _substitute_text(
    text: str,
    env: Mapping[str, str],
    path: str,
    problems: list[Problem],
    unset: list[str] | None,
) -> object:
    if "${" not in text:
        return text
    names: list[str] = []
    missing: list[str] = []
    before = len(problems)

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if match.group(0) == "$${":
            return "${"
        if name is None:
            problems.append(
                (
                    path,
                    "malformed ${...}: write ${NAME} or ${NAME:-default}, and $${ for a literal ${",
                )
            )
            return ""
        names.append(name)
        value = env.get(name)
        if default is not None and not value:  # `:-` as in the shell: unset or empty
            return default
        if value is None and unset is not None:
            missing.append(name)
            return "unset-" + name.lower().replace("_", "-")  # fits a host name, a path, a key
        if value is None:
            problems.append(
                (path, f"environment variable {name} is not set (or write ${{{name}:-default}})")
            )
            return ""
        return value

    result = _REFERENCE.sub(replace, text)
    if len(problems) > before:
        return INVALID
    if missing:
        assert unset is not None
        unset.extend(missing)
        if _REFERENCE.fullmatch(text.strip()):  # the whole value: its field picks a stand-in
            return Unset(result, tuple(names))
    return Substituted(result, tuple(names)) if names else result
