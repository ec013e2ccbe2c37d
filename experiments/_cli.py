"""One way to turn an experiment's configuration (a frozen dataclass) into a command line.

Every ``python -m experiments.<name>`` describes its configuration as a frozen dataclass whose
``__post_init__`` validates it (raising ``ValueError`` that names the flag), and its named
presets as instances of it (``{"full": Config(), "quick": Config(epochs=1, ...)}``, ``full``
being the published set-up). This module derives the flags from the fields:

* a field ``grid_size: int`` becomes ``--grid-size`` (type from the annotation: ``int``,
  ``float``, ``str``, ``Path``, ``Optional[...]``, ``tuple[T, ...]`` as ``nargs="+"``,
  ``bool`` as a switch, ``Optional[bool]`` as ``--name``/``--no-name`` with ``None`` meaning
  "decide automatically");
* a field whose type is itself a dataclass is a group: its fields get the prefix
  ``<name>-`` (``adamw: HP`` gives ``--adamw-lr``), or the prefix in the metadata
  (``prefix=""`` flattens it);
* :func:`option` sets per field what differs: ``flag`` (another name, e.g. ``--no-vmap``
  for a ``vmap: bool = True``), ``help``, ``choices``, ``separator`` (a tuple given as one
  argument, e.g. ``--width 5,3`` with ``separator=","``), ``cli=False`` (no flag);
* ``--preset NAME`` picks a preset and every preset but ``full`` also gets a switch
  (``--quick``); a flag given on the command line wins over the preset, a flag left out takes
  the preset's value; ``--help`` shows both.

Argument errors (a bad type, a value ``__post_init__`` rejects) go through
``parser.error``: usage, the message, exit status 2, so they are tested in-process with
``pytest.raises(SystemExit)`` on ``main([...])``.

Example, a complete experiment entry point::

    @dataclasses.dataclass(frozen=True)
    class Config:
        steps: int = option(1000, help="training steps")
        lr: float = 1e-2
        out_dir: Path = Path("runs/hello")

        def __post_init__(self):
            if self.steps < 1:
                raise ValueError(f"--steps must be >= 1, got {self.steps}")

    PRESETS = {"full": Config(), "quick": Config(steps=50)}

    def main(argv=None) -> int:
        config = parse(Config, PRESETS, argv, prog="python -m experiments.hello")
        ...
        return 0
"""
from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, TypeVar

__all__ = ["option", "build_parser", "config_from_args", "parse", "subset"]

C = TypeVar("C")
_MISSING = dataclasses.MISSING


def option(
    default: Any = _MISSING,
    *,
    help: str = "",  # noqa: A002 - argparse's name
    flag: Optional[str] = None,
    choices: Optional[Sequence[Any]] = None,
    prefix: Optional[str] = None,
    separator: Optional[str] = None,
    cli: bool = True,
    default_factory: Any = _MISSING,
) -> Any:
    """A dataclass field with command-line metadata.

    Args:
        default: the field's default.
        help: the flag's help text.
        flag: the flag's name when it is not ``--<field-name>``.
        choices: the values allowed (each element, for a tuple).
        prefix: for a dataclass field, the prefix of its fields' flags (``""``: none).
        separator: for a tuple field, take one argument split at ``separator`` instead of
            several arguments.
        cli: ``False``: no flag (the field keeps its preset value).
        default_factory: a factory for a mutable or nested default.

    Returns:
        A :func:`dataclasses.field`.
    """
    metadata = {"help": help, "flag": flag, "choices": choices, "prefix": prefix, "separator": separator, "cli": cli}
    if default_factory is not _MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _unwrap(tp: Any) -> tuple[Any, bool, bool]:
    """(scalar type, optional?, tuple?) of an annotation."""
    optional = False
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is getattr(types, "UnionType", typing.Union):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        tp = args[0]
        origin = typing.get_origin(tp)
    if origin in (tuple, list):
        return typing.get_args(tp)[0], optional, True
    return tp, optional, False


def _fields(cls: type) -> list[tuple[dataclasses.Field, Any]]:
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls)]


def _dest(path: tuple[str, ...]) -> str:
    return "cfg__" + "__".join(path)


def _show(value: Any, separator: str = " ") -> str:
    if isinstance(value, tuple):
        return separator.join(str(v) for v in value)
    return str(value)


def _add(parser: argparse.ArgumentParser, cls: type, presets: Mapping[str, Any], path: tuple[str, ...], prefix: str) -> None:
    for f, tp in _fields(cls):
        meta = f.metadata
        if not meta.get("cli", True):
            continue
        values = {name: getattr(p, f.name) for name, p in presets.items()}
        if dataclasses.is_dataclass(tp):
            sub_prefix = meta.get("prefix")
            sub_prefix = f"{prefix}{f.name.replace('_', '-')}-" if sub_prefix is None else prefix + sub_prefix
            group = parser.add_argument_group(meta.get("help") or None) if meta.get("help") else parser
            _add(group, tp, values, path + (f.name,), sub_prefix)
            continue
        flag = meta.get("flag") or f"--{prefix}{f.name.replace('_', '-')}"
        scalar, _, is_tuple = _unwrap(tp)
        default = values.get("full", next(iter(values.values())))
        sep = meta.get("separator") or " "
        shown = "" if default is None else f"default {_show(default, sep)}"
        for name, v in values.items():
            if name != "full" and v != default:
                shown += f"{'; ' if shown else ''}--{name}: {_show(v, sep)}"
        text = f"{meta.get('help', '')} ({shown})" if shown else meta.get("help", "")
        kwargs: dict[str, Any] = dict(dest=_dest(path + (f.name,)), default=None, help=text)
        if scalar is bool and _unwrap(tp)[1]:  # Optional[bool]: --name / --no-name, None = automatic
            kwargs["action"] = argparse.BooleanOptionalAction
            kwargs["help"] = meta.get("help") or None
        elif scalar is bool:
            kwargs["action"] = "store_false" if flag.startswith("--no-") else "store_true"
            kwargs["help"] = meta.get("help") or None
        elif is_tuple and meta.get("separator"):
            kwargs["type"] = _split(flag, scalar if scalar in (int, float, str, Path) else str, meta["separator"])
            kwargs["metavar"] = flag.lstrip("-").replace("-", "_").upper()
        else:
            kwargs["type"] = scalar if scalar in (int, float, str, Path) else str
            if is_tuple:
                kwargs["nargs"] = "+"
            kwargs["metavar"] = (f.name.rstrip("s") if is_tuple else f.name).upper()
            if meta.get("choices") is not None:
                kwargs["choices"] = list(meta["choices"])
        parser.add_argument(flag, **kwargs)


_WORDS = {int: "integers", float: "numbers"}


def _split(flag: str, scalar: type, separator: str) -> Any:
    """An argparse ``type`` turning ``"a,b,c"`` into a tuple of ``scalar``."""

    def convert(text: str) -> tuple:
        try:
            return tuple(scalar(t) for t in text.split(separator))
        except ValueError:
            sep = "comma" if separator == "," else repr(separator)
            raise argparse.ArgumentTypeError(
                f"{flag} must be {sep}-separated {_WORDS.get(scalar, 'values')}, got {text!r}") from None

    return convert


def build_parser(cls: type, presets: Mapping[str, Any], **parser_kwargs: Any) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` with one flag per field of ``cls`` and the preset choices.

    Args:
        cls: the configuration dataclass.
        presets: named instances of ``cls``; ``"full"`` is the default.
        **parser_kwargs: passed to :class:`argparse.ArgumentParser` (``prog``, ``description``).

    Returns:
        The parser: ``--preset NAME``, one switch per preset but ``full``, one flag per field.

    Raises:
        ValueError: ``presets`` has no ``"full"``.
    """
    if "full" not in presets:
        raise ValueError(f"presets must contain 'full', got {sorted(presets)}")
    parser = argparse.ArgumentParser(**parser_kwargs)
    _add(parser, cls, presets, (), "")
    parser.add_argument("--preset", dest="cfg__preset", choices=sorted(presets), default="full",
                        help="configuration preset (default full)")
    for name, preset in presets.items():
        if name != "full":
            parser.add_argument(f"--{name}", dest="cfg__preset", action="store_const", const=name, default="full",
                                help=f"start from the '{name}' preset (flags given explicitly still win)")
    return parser


def _build(cls: type, args: argparse.Namespace, base: Any, path: tuple[str, ...]) -> Any:
    changes = {}
    for f, tp in _fields(cls):
        if not f.metadata.get("cli", True):
            continue
        if dataclasses.is_dataclass(tp):
            changes[f.name] = _build(tp, args, getattr(base, f.name), path + (f.name,))
            continue
        value = getattr(args, _dest(path + (f.name,)), None)
        if value is None:
            continue
        changes[f.name] = tuple(value) if isinstance(value, list) else value
    return dataclasses.replace(base, **changes) if changes else base


def config_from_args(cls: type[C], presets: Mapping[str, C], args: argparse.Namespace) -> C:
    """The configuration: the chosen preset with every flag given on the command line applied.

    Args:
        cls: the configuration dataclass.
        presets: its named instances.
        args: what :func:`build_parser`'s parser returned.

    Returns:
        An instance of ``cls``.

    Raises:
        ValueError: from the dataclasses' ``__post_init__``, for invalid values.
    """
    return _build(cls, args, presets[getattr(args, "cfg__preset", "full")], ())


def parse(cls: type[C], presets: Mapping[str, C], argv: Optional[Sequence[str]] = None,
          **parser_kwargs: Any) -> C:
    """Parse ``argv`` into a configuration; invalid values are usage errors (exit status 2).

    Args:
        cls: the configuration dataclass.
        presets: its named instances (``"full"`` is the default).
        argv: the arguments (default ``sys.argv[1:]``).
        **parser_kwargs: passed to :class:`argparse.ArgumentParser`.

    Returns:
        An instance of ``cls``.
    """
    parser = build_parser(cls, presets, **parser_kwargs)
    args = parser.parse_args(argv)
    try:
        return config_from_args(cls, presets, args)
    except ValueError as err:
        parser.error(str(err))
        raise  # unreachable: parser.error exits


def subset(name: str, items: Sequence[str], allowed: Sequence[str]) -> tuple[str, ...]:
    """The distinct ``items`` in their order, each one of ``allowed`` (for a ``separator=","`` field).

    Args:
        name: the flag without its dashes, for the message.
        items: the values given (blanks are dropped).
        allowed: the values allowed.

    Returns:
        The kept values, duplicates removed.

    Raises:
        ValueError: ``items`` is empty or holds a value not in ``allowed`` (the message names
            the flag, what is allowed and what came).
    """
    kept = [s.strip() for s in items if s.strip()]
    if not kept or any(s not in allowed for s in kept):
        raise ValueError(f"--{name} must be a comma-separated subset of {', '.join(allowed)}; got {','.join(items)!r}")
    return tuple(dict.fromkeys(kept))
