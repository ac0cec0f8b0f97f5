"""The model spec reference (docs/spec-reference.md), rendered from the JSON schema.

Generated, never written by hand, so the reference cannot drift from what the code
enforces: ``mlops-pack schema --markdown`` prints it and a test compares it with the
committed file. One table per section; nested sections get their own table. Examples
come from the schema's ``examples``, else from the example specs given (real values in
context beat invented ones), else from the default or the first allowed value.
"""

from __future__ import annotations

import json
from typing import Any

HEADER = """# Model spec reference

Generated from the JSON schema by `mlops-pack schema --markdown --examples include/models
--output docs/spec-reference.md`; do not edit by hand (a test fails when this page and the
schema differ). Examples are taken from the shipped specs where they set the key.

One YAML file per model in `include/models/<name>.yaml`; unknown keys are errors.
`mlops-pack check-spec FILE` checks a spec, including that its estimator exists, suits
the task and takes the params. A worked example: [bring your own model](bring-your-own-model.md).
"""

_BOUNDS = (
    ("minimum", ">= {}"),
    ("exclusiveMinimum", "> {}"),
    ("maximum", "<= {}"),
    ("exclusiveMaximum", "< {}"),
    ("minLength", "at least {} characters"),
    ("maxLength", "at most {} characters"),
    ("minItems", "at least {} items"),
    ("pattern", "matches `{}`"),
)


def spec_reference_markdown(
    schema: dict[str, Any], examples: list[dict[str, Any]] | None = None
) -> str:
    """:param examples: parsed example spec files, searched in order for each key."""
    defs = schema.get("$defs", {})
    sections: list[tuple[str, dict[str, Any]]] = []
    _collect("(top level)", schema, defs, sections)
    out = [HEADER]
    for path, node in sections:
        out.append(_section(path, node, defs, examples or []))
    out.append(_metrics())
    return "\n".join(out)


def _metrics() -> str:
    from mlops_pack.metric_catalog import CUSTOM_IMPLEMENTATIONS, known_metrics, metric_info

    lines = [
        "## Metric names",
        "",
        "What `metrics`, `gate.primary.metric`, `gate.guardrails[].metric`, `gate.floors` "
        "and `gate.slices.metric` accept (extensions may add more: "
        "[extending](extending.md)).",
        "",
        "| metric | task | better | description |",
        "|---|---|---|---|",
    ]
    # The pack's own metrics only: extensions loaded in this process are a deployment's.
    for name in (n for n in known_metrics() if n not in CUSTOM_IMPLEMENTATIONS):
        info = metric_info(name)
        better = "higher" if info.higher_is_better else "lower"
        lines.append(f"| `{name}` | {info.task} | {better} | {_cell(info.description)} |")
    return "\n".join(lines) + "\n"


def _found_in(raw: Any, parts: list[str]) -> tuple[bool, Any]:
    """The value at ``parts`` (``name[]`` steps into the first list item having the rest)."""
    if not parts:
        return True, raw
    head, rest = parts[0], parts[1:]
    if not isinstance(raw, dict) or head.removesuffix("[]") not in raw:
        return False, None
    value = raw[head.removesuffix("[]")]
    if not head.endswith("[]"):
        return _found_in(value, rest)
    for item in value if isinstance(value, list) else []:
        found, inner = _found_in(item, rest)
        if found:
            return True, inner
    return False, None


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    return defs[ref.rsplit("/", 1)[-1]] if ref else node


def _child_object(node: dict[str, Any], defs: dict[str, Any]) -> tuple[str, dict] | None:
    """The nested section a property opens, as (path suffix, object schema), if any."""
    options = [_resolve(n, defs) for n in node.get("anyOf", [node])]
    for option in options:
        if "properties" in option:
            return "", option
        items = _resolve(option.get("items", {}), defs)
        if option.get("type") == "array" and "properties" in items:
            return "[]", items
    return None


def _collect(path: str, node: dict, defs: dict, sections: list) -> None:
    sections.append((path, node))
    for key, prop in node.get("properties", {}).items():
        child = _child_object(prop, defs)
        if child is not None:
            suffix, obj = child
            name = key if path == "(top level)" else f"{path}.{key}"
            _collect(name + suffix, obj, defs, sections)


def _section(path: str, node: dict, defs: dict, examples: list[dict]) -> str:
    title = "Top level" if path == "(top level)" else f"`{path}`"
    lines = [f"## {title}", ""]
    description = node.get("description")
    if description and path != "(top level)":
        lines += [" ".join(description.split()), ""]
    lines += [
        "| key | type | required | default | example | description |",
        "|---|---|---|---|---|---|",
    ]
    required = set(node.get("required", []))
    for key, prop in node.get("properties", {}).items():
        full = key if path == "(top level)" else f"{path}.{key}"
        child = _child_object(prop, defs)
        if child is not None:
            kind = "list of mappings" if child[0] else "mapping"
            link = f"see [`{full + child[0]}`](#{_anchor(full + child[0])})"
            text = _cell(f"{prop.get('description', '')} {link}")
            lines.append(f"| `{key}` | {kind} | {_yes(key in required)} | | | {text} |")
            continue
        example = _example(prop, defs, [_found_in(e, full.split(".")) for e in examples])
        lines.append(
            f"| `{key}` | {_type(prop, defs)} | {_yes(key in required)} | "
            f"{_default(prop, defs, key in required)} | {example} | "
            f"{_cell(prop.get('description', ''))} |"
        )
    return "\n".join(lines) + "\n"


def _anchor(path: str) -> str:
    return "".join(c for c in path.lower() if c.isalnum() or c in "-_")


def _yes(flag: bool) -> str:
    return "yes" if flag else ""


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _code(value: Any) -> str:
    return f"`{json.dumps(value)}`".replace("|", "\\|")


def _default(prop: dict, defs: dict, required: bool) -> str:
    if "default" in prop:
        return _code(prop["default"])
    if required:
        return ""
    # pydantic leaves out defaults made by a factory: an empty list or mapping here.
    return "`[]`" if _resolve(prop, defs).get("type") == "array" else "`{}`"


def _example(prop: dict, defs: dict, found: list[tuple[bool, Any]]) -> str:
    if prop.get("examples"):
        return _code(prop["examples"][0])
    for present, value in found:
        if present and value not in (None, "", [], {}):
            return _code(value)
    if prop.get("default") not in (None, "", [], {}):
        return _code(prop["default"])
    for option in [_resolve(n, defs) for n in prop.get("anyOf", [prop])]:
        if option.get("enum"):
            return _code(option["enum"][0])
    return ""


def _type(prop: dict, defs: dict) -> str:
    options = [_resolve(n, defs) for n in prop.get("anyOf", [prop])]
    names = [_one_type(o, defs) for o in options if o.get("type") != "null"]
    text = " or ".join(names)
    if any(o.get("type") == "null" for o in options):
        text += " or null"
    return text


def _one_type(node: dict, defs: dict) -> str:
    if "enum" in node:
        return "one of " + ", ".join(_code(v) for v in node["enum"])
    kind = node.get("type", "any")
    if kind == "array" and "prefixItems" in node:
        text = (
            "[" + ", ".join(_one_type(_resolve(i, defs), defs) for i in node["prefixItems"]) + "]"
        )
    elif kind == "array":
        items = _resolve(node.get("items", {}), defs)
        text = "list of " + " or ".join(
            _one_type(_resolve(i, defs), defs) for i in items.get("anyOf", [items])
        )
    elif kind == "object":
        keys = node.get("propertyNames", {}).get("enum")
        values = node.get("additionalProperties", {})
        value_type = _one_type(values, defs) if isinstance(values, dict) and values else "any"
        key_text = "one of " + ", ".join(_code(k) for k in keys) if keys else "string"
        text = f"mapping of ({key_text}) to ({value_type})"
    else:
        text = {"number": "number", "integer": "integer", "string": "string"}.get(kind, kind)
    bounds = [fmt.format(node[key]) for key, fmt in _BOUNDS if key in node]
    return f"{text} ({', '.join(bounds)})" if bounds else text
