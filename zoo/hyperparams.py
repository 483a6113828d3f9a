"""Hyperparameter files of the zoo (``zoo/hyperparams/<algo>.yml``), in rl-baselines3-zoo's format.

One entry per environment id, or a ``default:`` entry used for ids that have none::

    CartPole-v1:              # chosen by hand: ...   (say how the entry was obtained)
      n_envs: 8
      n_timesteps: !!float 1e5
      policy: MlpPolicy
      learning_rate: lin_3e-3             # a linear schedule from 3e-3 to 0
      policy_kwargs: "dict(net_arch=[64, 64], activation_fn=nn.Tanh)"   # or a mapping
      normalize: true                     # VecNormalize; or a mapping of its keyword arguments
      env_kwargs: {horizon: 500}          # keyword arguments of gymnasium.make / the env class

Every other key is a keyword argument of the algorithm's constructor; an unknown key is an error. Numbers may
be written ``1e-3`` (plain YAML would read that as a string). ``-params key:value`` on the command line
overrides a key (the value is read as YAML).
"""

from __future__ import annotations

import ast
import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from stable_baselines3.common.utils import LinearSchedule

from .algos import ZOO_KEYS, AlgoSpec
from .errors import ZooError
from .search_spaces import ACTIVATIONS

__all__ = [
    "DEFAULT_ENTRY",
    "SCHEDULE_KEYS",
    "Hyperparams",
    "build_hyperparams",
    "check_keys",
    "dump_yaml",
    "entry_for",
    "load_entry",
    "load_yaml",
    "parse_literal",
    "parse_overrides",
    "resolve_policy_kwargs",
]

DEFAULT_ENTRY = "default"
"""The entry used for environment ids that have none of their own."""

SCHEDULE_KEYS = frozenset({"learning_rate", "critic_learning_rate", "clip_range", "clip_range_vf"})
"""Keys that accept ``lin_<x>``: a linear schedule from ``x`` at the start to 0 at the end of training."""

_TORCH_ROOTS: dict[str, Any] = {"nn": torch.nn, "th": torch, "torch": torch, "optim": torch.optim}


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, also reading ``1e-3`` and ``1E5`` as floats (YAML 1.1 wants ``1.0e-3``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a hyperparameter file.

    :param path: the YAML file
    :return: its top-level mapping (an empty file gives ``{}``)
    :raises ZooError: if the file is missing, is not valid YAML or is not a mapping
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ZooError(f"Cannot read hyperparameter file {path}: {err.strerror or err}") from err
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ZooError(f"Malformed YAML in {path}{where}: {problem}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ZooError(f"Malformed hyperparameter file {path}: the top level must map env ids to entries")
    return data


def load_entry(path: str | Path, env_id: str) -> tuple[str, dict[str, Any]]:
    """The entry of ``env_id`` in a hyperparameter file, or its ``default`` entry.

    :param path: the YAML file
    :param env_id: the environment id
    :return: ``(name of the entry used, a copy of the entry)``
    :raises ZooError: if there is neither, or the entry is not a mapping
    """
    data = load_yaml(path)
    name = env_id if env_id in data else DEFAULT_ENTRY
    if name not in data:
        known = ", ".join(sorted(map(str, data))) or "none"
        raise ZooError(f"No hyperparameters for {env_id!r} in {path} and no {DEFAULT_ENTRY!r} entry (entries: {known})")
    entry = data[name]
    if entry is None:
        entry = {}
    if not isinstance(entry, dict):
        raise ZooError(f"Malformed entry {name!r} in {path}: expected a mapping of hyperparameters")
    return name, dict(entry)


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """Parse ``-params key:value`` items; each value is read as YAML (``0.001``, ``true``, ``[64, 64]``...).

    :param items: ``["learning_rate:1e-3", "policy_kwargs:dict(net_arch=[32])"]``
    :return: the overrides
    :raises ZooError: if an item has no ``:``
    """
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition(":")
        if not sep or not key.strip():
            raise ZooError(f"-params expects key:value items, got {item!r}")
        try:
            overrides[key.strip()] = yaml.load(value, Loader=_Loader)
        except yaml.YAMLError:
            overrides[key.strip()] = value
    return overrides


def check_keys(entry: Mapping[str, Any], spec: AlgoSpec, source: str) -> None:
    """Refuse keys that are neither constructor arguments of the algorithm nor zoo keys.

    :param entry: the hyperparameters
    :param spec: the algorithm
    :param source: where they come from, for the message
    :raises ZooError: naming the first unknown key and close matches
    """
    allowed = spec.allowed_keys()
    foreign = getattr(spec.cls, "ppo_only_keywords", {})
    for key in entry:
        if key in foreign and key not in allowed:
            raise ZooError(f"Unknown hyperparameter {key!r} for {spec.name} in {source}: {foreign[key]}")
        if key not in allowed:
            close = difflib.get_close_matches(str(key), sorted(allowed), n=3)
            hint = f"did you mean {', '.join(close)}?" if close else f"valid: {', '.join(sorted(allowed))}"
            raise ZooError(f"Unknown hyperparameter {key!r} for {spec.name} in {source}; {hint}")


def _resolve_torch_name(text: str) -> type:
    """``nn.Tanh``, ``th.nn.ReLU``, ``torch.optim.Adam``... -> the class (only torch.nn and torch.optim)."""
    parts = text.split(".")
    obj = _TORCH_ROOTS.get(parts[0])
    if obj is None:
        raise ZooError(f"Cannot resolve {text!r}: names must start with nn., th., torch. or optim.")
    for part in parts[1:]:
        obj = getattr(obj, part, None)
        if obj is None:
            raise ZooError(f"Cannot resolve {text!r}: torch has no {part!r} there")
    module = getattr(obj, "__module__", "")
    if not isinstance(obj, type) or not module.startswith(("torch.nn", "torch.optim")):
        raise ZooError(f"Cannot resolve {text!r}: only classes of torch.nn and torch.optim are allowed")
    return obj


def _dotted_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted_name(node.value)
        return None if base is None else f"{base}.{node.attr}"
    return None


def _eval_node(node: ast.AST, text: str) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _eval_node(node.operand, text)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.List):
        return [_eval_node(item, text) for item in node.elts]
    if isinstance(node, ast.Tuple):
        return tuple(_eval_node(item, text) for item in node.elts)
    if isinstance(node, ast.Dict):
        if any(key is None for key in node.keys):
            raise ZooError(f"Cannot read {text!r}: ** is not allowed")
        keys = [k for k in node.keys if k is not None]
        return {_eval_node(k, text): _eval_node(v, text) for k, v in zip(keys, node.values, strict=True)}
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args:
        if any(kw.arg is None for kw in node.keywords):
            raise ZooError(f"Cannot read {text!r}: ** is not allowed")
        return {kw.arg: _eval_node(kw.value, text) for kw in node.keywords}
    if isinstance(node, ast.Attribute):
        name = _dotted_name(node)
        if name is not None:
            return _resolve_torch_name(name)
    raise ZooError(
        f"Cannot read {text!r}: only literals, dict(...), lists, tuples and torch names like nn.Tanh are allowed"
    )


def parse_literal(text: str) -> Any:
    """Evaluate a Python literal safely: numbers, strings, lists, tuples, ``{...}``, ``dict(a=...)``, and torch
    classes such as ``nn.Tanh`` or ``th.optim.Adam`` (nothing is executed).

    :param text: e.g. ``"dict(net_arch=[64, 64], activation_fn=nn.Tanh)"``
    :return: the value
    :raises ZooError: for anything else
    """
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as err:
        raise ZooError(f"Cannot read {text!r}: {err.msg}") from err
    return _eval_node(tree.body, text)


def resolve_policy_kwargs(value: Any) -> dict[str, Any]:
    """``policy_kwargs`` as a string or a mapping -> keyword arguments of the policy.

    String values of ``activation_fn``, ``optimizer_class`` and ``features_extractor_class`` are resolved
    (``"nn.Tanh"``; also the short names ``"tanh"``, ``"relu"``).

    :param value: a string evaluated with :func:`parse_literal`, a mapping, or ``None``
    :return: the keyword arguments
    :raises ZooError: if it is neither or names an unknown class
    """
    if value is None:
        return {}
    if isinstance(value, str):
        value = parse_literal(value)
    if not isinstance(value, dict):
        raise ZooError(f"policy_kwargs must be a mapping or a string like 'dict(net_arch=[64, 64])', got {value!r}")
    kwargs = dict(value)
    for key in ("activation_fn", "optimizer_class", "features_extractor_class"):
        if isinstance(kwargs.get(key), str):
            name = kwargs[key]
            kwargs[key] = _resolve_torch_name(ACTIVATIONS.get(name.lower(), name))
    return kwargs


def _resolve_normalize(value: Any) -> dict[str, Any] | None:
    if value is None or value is False:
        return None
    if value is True:
        return {}
    if isinstance(value, str):
        if value.strip().lower() in ("true", "false"):
            return {} if value.strip().lower() == "true" else None
        value = parse_literal(value)
    if not isinstance(value, dict):
        raise ZooError(f"normalize must be true, false or a mapping of VecNormalize arguments, got {value!r}")
    return dict(value)


def _to_schedule(key: str, value: Any) -> Any:
    if isinstance(value, str) and value.startswith("lin_"):
        if key not in SCHEDULE_KEYS:
            raise ZooError(f"{key}: lin_ schedules are only for {', '.join(sorted(SCHEDULE_KEYS))}")
        try:
            start = float(value[len("lin_") :])
        except ValueError as err:
            raise ZooError(f"{key}: cannot read the schedule {value!r} (expected lin_<number>)") from err
        return LinearSchedule(start, 0.0, 1.0)
    return value


@dataclass
class Hyperparams:
    """An entry made ready for training.

    :param raw: the entry as written in YAML (after ``-params``), what ``config.yml`` saves
    :param policy: the policy name
    :param n_timesteps: the training budget (``None`` if the entry has none)
    :param n_envs: environments stepped in parallel
    :param normalize: ``VecNormalize`` keyword arguments, or ``None`` for no normalisation
    :param env_kwargs: keyword arguments of every env
    :param algo_kwargs: keyword arguments of the algorithm (schedules and ``policy_kwargs`` resolved)
    """

    raw: dict[str, Any]
    policy: str
    n_timesteps: int | None
    n_envs: int
    normalize: dict[str, Any] | None
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    algo_kwargs: dict[str, Any] = field(default_factory=dict)


def build_hyperparams(raw: Mapping[str, Any], spec: AlgoSpec, source: str) -> Hyperparams:
    """Check an entry and resolve it: schedules, ``policy_kwargs``, ``normalize``, numbers.

    :param raw: the entry (YAML values)
    :param spec: the algorithm
    :param source: where it comes from, for messages
    :return: the resolved hyperparameters
    :raises ZooError: naming the problem (unknown key, bad value)
    """
    check_keys(raw, spec, source)
    algo_kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key in ZOO_KEYS:
            continue
        if key == "policy_kwargs":
            algo_kwargs[key] = resolve_policy_kwargs(value)
        else:
            algo_kwargs[key] = _to_schedule(key, value)
    n_timesteps = raw.get("n_timesteps")
    n_envs = raw.get("n_envs", 1)
    try:
        n_timesteps = None if n_timesteps is None else int(float(n_timesteps))
        n_envs = int(n_envs)
    except (TypeError, ValueError) as err:
        raise ZooError(f"{source}: n_timesteps and n_envs must be numbers ({err})") from err
    if n_envs < 1:
        raise ZooError(f"{source}: n_envs must be at least 1, got {n_envs}")
    normalize = _resolve_normalize(raw.get("normalize"))
    if normalize is not None and "gamma" in algo_kwargs and "gamma" not in normalize:
        normalize["gamma"] = algo_kwargs["gamma"]
    env_kwargs = raw.get("env_kwargs") or {}
    if isinstance(env_kwargs, str):
        env_kwargs = parse_literal(env_kwargs)
    if not isinstance(env_kwargs, dict):
        raise ZooError(f"{source}: env_kwargs must be a mapping, got {env_kwargs!r}")
    return Hyperparams(
        raw=dict(raw),
        policy=str(raw.get("policy", spec.default_policy)),
        n_timesteps=n_timesteps,
        n_envs=n_envs,
        normalize=normalize,
        env_kwargs=dict(env_kwargs),
        algo_kwargs=algo_kwargs,
    )


def _plain(value: Any) -> Any:
    """Values YAML can write with the safe dumper (tuples as lists, NumPy scalars as numbers)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    return value


def dump_yaml(data: Mapping[str, Any], path: str | Path, comment: str | None = None) -> None:
    """Write a mapping as YAML (keys in the given order), optionally under ``# comment`` lines.

    :param data: what to write
    :param path: the file
    :param comment: text written as YAML comments at the top (one ``#`` line per line of text)
    """
    text = yaml.safe_dump(_plain(dict(data)), sort_keys=False, default_flow_style=False)
    if comment:
        text = "".join(f"# {line}\n" if line else "#\n" for line in comment.splitlines()) + text
    Path(path).write_text(text)


def entry_for(
    spec: AlgoSpec, env_id: str, conf_file: str | Path | None = None, overrides: Mapping[str, Any] | None = None
) -> tuple[dict[str, Any], str]:
    """The raw hyperparameters of a run: the entry of ``env_id`` (or ``default``) in ``conf_file`` (or the
    algorithm's own file), with ``overrides`` (``-params``) on top.

    :param spec: the algorithm
    :param env_id: the environment id
    :param conf_file: ``-conf``; ``None`` for ``zoo/hyperparams/<algo>.yml``
    :param overrides: ``-params`` values
    :return: ``(entry, description of its source such as "zoo/hyperparams/sppo.yml [CartPole-v1]")``
    :raises ZooError: if the file or the entry cannot be read, or a key is unknown
    """
    path = Path(conf_file) if conf_file is not None else spec.hyperparams_file
    name, entry = load_entry(path, env_id)
    source = f"{path} [{name}]"
    check_keys(entry, spec, source)
    if overrides:
        check_keys(overrides, spec, "-params")
        entry.update(overrides)
    return entry, source
