"""`selfsup methods`: every registered method, its one-line description and default settings."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("methods", help="list the available methods and their defaults")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def describe() -> list[dict]:
    """One row per method. Reading every method's defaults imports every method module (and
    torch); the rows are cached per version of those files, so later calls import neither."""
    import importlib.util

    from engine import cache
    from engine.registry import method_modules, method_names

    modules = sorted(set(method_modules().values()))
    files = [importlib.util.find_spec(m).origin for m in modules]
    name = f"methods-{cache.files_key(files, method_names())}.json"
    rows = cache.read_json(name)
    if rows is None:
        rows = _describe_all()
        cache.write_json(name, rows)
    return rows


def _describe_all() -> list[dict]:
    from engine.config import dataclass_defaults
    from engine.registry import list_methods

    return [
        {
            "name": m.name,
            "family": m.family,
            "data": m.data,
            "description": m.description,
            "produces": list(m.produces),
            "train_defaults": m.defaults,
            "options": dataclass_defaults(m.config_cls),
        }
        for m in list_methods()
    ]


def run(args) -> int:
    rows = describe()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(r["name"]) for r in rows)
    for family in sorted({r["family"] for r in rows}):
        print(f"\n{family or 'other'}:")
        for r in (r for r in rows if r["family"] == family):
            print(f"  {r['name']:<{width}} {r['description']}")
            train = dict(r["train_defaults"])
            small = dict(train.pop("small_image", {}))
            opts = {**train, **r["options"]}
            pad = "  " + " " * (width + 1)
            print(pad + ", ".join(f"{k}={v}" for k, v in opts.items()))
            if small:  # MethodSpec.recipe: what changes on the small-image backbone
                small |= small.pop("method_args", {})
                print(pad + "at <= 32 px: " + ", ".join(f"{k}={v}" for k, v in small.items()))
    return 0
