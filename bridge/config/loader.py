"""Load the YAML config: ``${ENV}`` substitution, validation, and every problem reported as
``FILE:LINE: path: message (hint)`` (never a traceback, never a secret value)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import ValidationError

from bridge.config.model import BUILTIN_SINK_SETTINGS, BUILTIN_SINKS, Config, PluginSinkSettings
from bridge.errors import ConfigError
from sinks import registry

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path or '(top)'}: {self.message}"


class ConfigProblems(ConfigError):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


def _lines(node: yaml.Node, path: tuple[Any, ...], out: dict[tuple[Any, ...], int]) -> None:
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = (*path, key.value)
            out[child] = key.start_mark.line + 1
            _lines(value, child, out)
    elif isinstance(node, yaml.SequenceNode):
        for index, value in enumerate(node.value):
            _lines(value, (*path, index), out)


def _dotted(path: tuple[Any, ...]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _substitute(value: Any, path: tuple[Any, ...], env: Mapping[str, str],
                missing: list[tuple[tuple[Any, ...], str]]) -> Any:
    if isinstance(value, dict):
        return {k: _substitute(v, (*path, k), env, missing) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, (*path, i), env, missing) for i, v in enumerate(value)]
    if isinstance(value, str) and "${" in value:
        def repl(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            missing.append((path, name))
            return ""
        return _ENV.sub(repl, value)
    return value


def _data_path(data: Any, loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """pydantic's error location, without the union tags that are not in the YAML."""
    path: list[Any] = []
    node = data
    for part in loc:
        if isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
            path.append(part)
        elif isinstance(node, dict) and part in node:
            node = node[part]
            path.append(part)
        elif isinstance(node, dict) and isinstance(part, str) and part not in (
                *BUILTIN_SINKS, "plugin"):
            path.append(part)  # a missing key: point at its parent's line
            node = None
    return tuple(path)


def _hint(error: Mapping[str, Any], model_keys: list[str]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown key" + (f"; known keys here: {', '.join(model_keys)}"
                                if model_keys else "")
    if kind == "missing":
        return "required key is missing"
    msg = str(error["msg"])
    return msg.removeprefix("Value error, ")


def _known_keys(loc: tuple[Any, ...]) -> list[str]:
    """The keys the model accepts at the parent of ``loc`` (for 'unknown key' hints)."""
    model: Any = Config
    for part in loc[:-1]:
        if part in BUILTIN_SINK_SETTINGS:
            model = BUILTIN_SINK_SETTINGS[part]
            continue
        if isinstance(part, int) or model is None:
            continue
        fields = getattr(model, "model_fields", {})
        if part in fields:
            annotation = fields[part].annotation
            model = annotation if hasattr(annotation, "model_fields") else None
        else:
            model = None
    return sorted(getattr(model, "model_fields", {}))


def load(file: str, env: Mapping[str, str] | None = None) -> Config:
    env = os.environ if env is None else env
    try:
        with open(file, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise ConfigProblems([Problem(file, 0, "", f"cannot read the config file: "
                                      f"{exc.strerror or exc}")]) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 0
        problem = str(getattr(exc, "problem", "") or exc)
        if "\t" in text.splitlines()[line - 1] if 0 < line <= len(text.splitlines()) else False:
            problem += " (a tab character: YAML indents with spaces only)"
        raise ConfigProblems([Problem(file, line, "", f"invalid YAML: {problem}")]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigProblems([Problem(file, 1, "", "the config must be a mapping of keys "
                                      "(cluster:, watch:, sinks:, ...)")])
    lines: dict[tuple[Any, ...], int] = {}
    if node is not None:
        _lines(node, (), lines)
    missing: list[tuple[tuple[Any, ...], str]] = []
    data = _substitute(data, (), env, missing)
    problems = [
        Problem(file, lines.get(path, 0), _dotted(path),
                f"environment variable ${{{name}}} is not set (export it, or write "
                f"${{{name}:-default}})")
        for path, name in missing
    ]

    def line_of(path: tuple[Any, ...]) -> int:
        while path and path not in lines:
            path = path[:-1]
        return lines.get(path, 0)

    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        for error in exc.errors(include_input=False, include_url=False):
            path = _data_path(data, tuple(error["loc"]))
            problems.append(Problem(file, line_of(path), _dotted(path),
                                    _hint(error, _known_keys(tuple(error["loc"])))))
        raise ConfigProblems(problems) from None
    problems.extend(_plugin_problems(config, file, line_of))
    if problems:
        raise ConfigProblems(problems)
    return config


def _plugin_problems(config: Config, file: str,
                     line_of: Callable[[tuple[Any, ...]], int]) -> list[Problem]:
    """Plugin sinks: the type must be registered, and its options valid for the plugin."""
    problems = []
    for index, sink in enumerate(config.sinks):
        if not isinstance(sink, PluginSinkSettings):
            continue
        try:
            registry.plugin_settings(sink)
        except registry.UnknownSinkType as exc:
            path: tuple[Any, ...] = ("sinks", index, "type")
            problems.append(Problem(file, line_of(path), _dotted(path), str(exc)))
        except ValidationError as exc:
            for error in exc.errors(include_input=False, include_url=False):
                path = ("sinks", index, *error["loc"])
                problems.append(Problem(file, line_of(path), _dotted(path), str(error["msg"])))
    return problems
