"""XEP-0004 data forms built from, and checked against, a bridge's FormField list.

The component does the generic checks (required, XEP-0122 datatype, allowed options,
length and characters) so every bridge gets the same precise error texts; the bridge
then checks meaning (a test login) in `validate_registration`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from slixmpp.plugins.xep_0004 import Form
from slixmpp.xmlstream import ElementBase

from bridges.base import FormField

_TRUE, _FALSE = {"1", "true"}, {"0", "false"}
_CONTROL = re.compile("[\x00-\x1f\x7f]")
MAX_VALUES = 100
"""Most lines or items a multi-value field may hold."""
FORM_TAG = "{jabber:x:data}x"


class FormInvalid(ValueError):
    """A submitted value that fails a generic check; `field` is its var."""

    def __init__(self, field: str, text: str) -> None:
        super().__init__(text)
        self.field = field
        self.text = text


def build_form(
    fields: Sequence[FormField],
    *,
    title: str,
    instructions: str,
    values: Mapping[str, Any] | None = None,
    form_type: str | None = None,
) -> Form:
    """A `form` to fill in; `values` replace defaults, secrets are never filled in."""
    form = Form()
    form["type"] = "form"
    form["title"] = title
    form["instructions"] = instructions
    if form_type:
        form.add_field(var="FORM_TYPE", ftype="hidden", value=form_type)
    for spec in fields:
        value = None if spec.is_secret else (values or {}).get(spec.var, spec.default)
        field = form.add_field(
            var=spec.var,
            ftype=spec.type,
            label=spec.label,
            desc=spec.desc,
            required=spec.required,
            options=[{"label": option, "value": option} for option in spec.options] or None,
        )
        if value is not None and spec.type != "fixed":
            field["value"] = _render(spec, value)
        if spec.datatype != "xs:string":
            # XEP-0122 lets clients validate the field type before submitting.
            field.xml.append(
                field.xml.makeelement(
                    "{http://jabber.org/protocol/xdata-validate}validate",
                    {"datatype": spec.datatype},
                )
            )
    return form


def _render(spec: FormField, value: Any) -> Any:
    if spec.type == "boolean":
        return bool(value)
    if spec.type in ("list-multi", "text-multi"):
        return list(value) if isinstance(value, list | tuple) else str(value).splitlines()
    return str(value)


def check_values(
    fields: Sequence[FormField],
    submitted: Mapping[str, Any],
    *,
    keep_secrets: Iterable[str] = (),
) -> dict[str, Any]:
    """Convert and check submitted values; raise FormInvalid naming the first bad field.

    Secrets listed in `keep_secrets` (already stored) may be left empty on an update.
    """
    kept = set(keep_secrets)
    result: dict[str, Any] = {}
    for spec in fields:
        if spec.type == "fixed":
            continue
        raw = submitted.get(spec.var)
        if _is_empty(raw):
            if spec.required and not (spec.is_secret and spec.var in kept):
                raise FormInvalid(spec.var, f"{spec.label} is required")
            if spec.default is not None and not spec.is_secret:
                result[spec.var] = spec.default
            continue
        result[spec.var] = _convert(spec, raw)
    return result


def _is_empty(raw: Any) -> bool:
    return raw is None or raw == "" or raw == [] or (isinstance(raw, list) and not any(raw))


def _convert(spec: FormField, raw: Any) -> Any:
    if spec.type == "boolean" or spec.datatype == "xs:boolean":
        return _boolean(spec, raw)
    if spec.type in ("list-multi", "text-multi"):
        values = [str(v) for v in (raw if isinstance(raw, list) else str(raw).splitlines())]
        if len(values) > MAX_VALUES:
            raise FormInvalid(spec.var, f"{spec.label}: at most {MAX_VALUES} values")
        for value in values:
            _check_text(spec, value)
        _check_options(spec, values)
        return values if spec.type == "list-multi" else "\n".join(values)
    text = str(raw[0] if isinstance(raw, list) else raw)
    _check_text(spec, text)
    if spec.datatype == "xs:integer":
        try:
            return int(text.strip())
        except ValueError:
            raise FormInvalid(spec.var, f"{spec.label} must be a whole number") from None
    _check_options(spec, [text])
    return text


def _check_text(spec: FormField, text: str) -> None:
    """Bound one value's length and refuse control characters (line breaks included)."""
    if len(text) > spec.max_length:
        raise FormInvalid(
            spec.var, f"{spec.label} is too long: at most {spec.max_length} characters"
        )
    if _CONTROL.search(text):
        raise FormInvalid(spec.var, f"{spec.label} may not contain control characters")


def _boolean(spec: FormField, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in _TRUE | _FALSE:
        return text in _TRUE
    raise FormInvalid(spec.var, f"{spec.label} must be true or false")


def _check_options(spec: FormField, values: Sequence[str]) -> None:
    if spec.type not in ("list-single", "list-multi") or not spec.options:
        return
    for value in values:
        if value not in spec.options:
            allowed = ", ".join(spec.options)
            raise FormInvalid(spec.var, f"{spec.label}: {value!r} is not one of {allowed}")


def submitted_values(payload: ElementBase) -> dict[str, Any] | None:
    """Raw values of the data form inside `payload`, without FORM_TYPE; None if none.

    `payload` is the query that may carry the form (jabber:iq:register, a command);
    asking slixmpp for `payload["form"]` would create an empty one instead.
    """
    if payload.xml.find(FORM_TAG) is None:
        return None
    values = dict(payload["form"].get_values())
    values.pop("FORM_TYPE", None)
    return values
