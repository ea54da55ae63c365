"""A Streamlit form generated from a model's hyper-parameter dataclass (`Model.Config`).

Each field becomes the widget its type calls for: a toggle for bool, a number input for int
and float, a select box for a string whose allowed values its doc comment names, a text box
otherwise (tuples as "64, 32"). The help text of each widget is the field's `#:` doc comment
in the dataclass source, so the form documents itself as the models do, and the Config's own
validation (`__post_init__`) judges the values.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import re
import sys
from typing import Any, Mapping

import streamlit as st

from recengine.models.base import config_field_docs

_ONE_OF = re.compile(r"\b[Oo]ne of (?P<name>[A-Za-z_][\w.]*[A-Za-z_])")
_QUOTED = re.compile(r'"([^"\s]+)"')


def field_docs(config_cls: type) -> dict[str, str]:
    """{field name: text of its `#:` doc comment} of the dataclass and its dataclass bases (a
    subclass's comment wins); the library's parser (`config_field_docs`), shared with the CLI."""
    return config_field_docs(config_cls)


def field_choices(config_cls: type, doc: str | None, default: object) -> tuple[str, ...] | None:
    """The allowed values of a string field, read from its doc comment, or None when unknown.

    "One of LOSSES" / "One of recengine.training.OPTIMIZERS" names a tuple of strings (looked
    up in the Config's module, or imported by its dotted path); otherwise two or more quoted
    words that include the default ('"cg" (fast) or "cholesky"') are the choices.
    """
    if not doc:
        return None
    named = _ONE_OF.search(doc)
    if named:
        module_name, _, attribute = named.group("name").rpartition(".")
        if module_name:
            try:
                modules = [importlib.import_module(module_name)]
            except ImportError:
                modules = []
        else:  # a name in the module of the Config or of one of its bases
            modules = [sys.modules.get(cls.__module__) for cls in config_cls.__mro__]
        for module in modules:
            values = getattr(module, attribute, None)
            if isinstance(values, (tuple, list)) and values and all(isinstance(value, str) for value in values):
                return tuple(values)
    quoted = tuple(dict.fromkeys(_QUOTED.findall(doc)))
    return quoted if len(quoted) >= 2 and default in quoted else None


def _kind(field: dataclasses.Field) -> str:
    kind = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", str(field.type))
    return kind.split("[")[0].strip()


def _float_step(value: float) -> float:
    """A step one decade below the value's magnitude (0.01 -> 0.001, 0.5 -> 0.01), 0.01 for 0."""
    if value == 0 or not math.isfinite(value):
        return 0.01
    return 10.0 ** (math.floor(math.log10(abs(value))) - 1)


def config_inputs(config_cls: type, defaults: Mapping[str, Any], *, key_prefix: str) -> dict[str, Any]:
    """Draw one input per field of `config_cls` (start values from `defaults`, else the field
    default) and return {field name: value as entered}; validation is the Config's own job."""
    docs = field_docs(config_cls)
    values: dict[str, Any] = {}
    fields = [field for field in dataclasses.fields(config_cls) if field.init]
    fields.sort(key=lambda field: _kind(field) == "bool")  # toggles last, so the grid of boxes stays aligned
    columns = st.columns(3)
    for position, field in enumerate(fields):
        default = defaults.get(field.name, field.default if field.default is not dataclasses.MISSING else None)
        if default is None and field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = field.default_factory()  # type: ignore[misc]
        label = field.name.replace("_", " ")
        key = f"{key_prefix}-{field.name}"
        help_text = docs.get(field.name)
        kind = _kind(field)
        with columns[position % 3]:
            if kind == "bool":
                values[field.name] = st.toggle(label, value=bool(default), key=key, help=help_text)
            elif kind == "int":
                values[field.name] = st.number_input(label, value=int(default), step=1, key=key, help=help_text)
            elif kind == "float":
                values[field.name] = st.number_input(
                    label, value=float(default), step=_float_step(float(default)), format="%g", key=key, help=help_text
                )
            elif kind == "str" and (choices := field_choices(config_cls, help_text, default)):
                options = list(choices)
                values[field.name] = st.selectbox(
                    label, options, index=options.index(default) if default in options else 0, key=key, help=help_text
                )
            elif kind == "tuple":
                text = st.text_input(label, value=", ".join(str(part) for part in (default or ())), key=key, help=help_text)
                values[field.name] = text
            else:
                values[field.name] = st.text_input(label, value="" if default is None else str(default), key=key, help=help_text)
    return values


def changed_values(config: Any) -> dict[str, Any]:
    """The fields of a config instance that differ from the dataclass defaults."""
    defaults = type(config)()
    return {
        field.name: getattr(config, field.name)
        for field in dataclasses.fields(config)
        if getattr(config, field.name) != getattr(defaults, field.name)
    }
