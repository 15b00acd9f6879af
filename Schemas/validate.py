#!/usr/bin/env python3
"""Validate NDJSON against the llmq wire-protocol schemas.

    python3 Schemas/validate.py KIND FILE

KIND is job, event, result or dead; FILE holds one JSON document per line
("-" reads standard input; blank lines are skipped). Prints "N valid", or
every failure as FILE:LINE: PATH: MESSAGE, and exits 1 on any failure
(2 on a usage error).

Needs the `jsonschema` package (4.10 or newer, for Draft 2020-12). The $refs
between the schemas are resolved from the files next to this script, never
over the network: through `referencing` when it is installed (jsonschema >=
4.18), otherwise through jsonschema's RefResolver with a preloaded store.
"""

import json
import os
import sys

try:
    from jsonschema import Draft202012Validator
except ImportError:  # pragma: no cover
    sys.exit("validate.py needs jsonschema >= 4.0 (pip install jsonschema, or apt install python3-jsonschema)")

HERE = os.path.dirname(os.path.abspath(__file__))
KINDS = {
    "job": "job.schema.json",
    "event": "event.schema.json",
    "result": "result.schema.json",
    "dead": "dead.schema.json",
}


def load_schemas():
    """Every *.schema.json under this directory, keyed by its $id."""
    schemas = {}
    for root, _dirs, files in os.walk(HERE):
        for name in sorted(files):
            if not name.endswith(".schema.json"):
                continue
            path = os.path.join(root, name)
            with open(path, encoding="utf-8") as f:
                schema = json.load(f)
            Draft202012Validator.check_schema(schema)
            schemas[schema["$id"]] = (os.path.relpath(path, HERE), schema)
    return schemas


def make_validator(kind):
    schemas = load_schemas()
    by_file = {rel.replace(os.sep, "/"): schema for rel, schema in schemas.values()}
    root = by_file[KINDS[kind]]
    try:
        from referencing import Registry, Resource
        from referencing.jsonschema import DRAFT202012
    except ImportError:
        from jsonschema import RefResolver

        store = {sid: schema for sid, (_rel, schema) in schemas.items()}
        resolver = RefResolver(base_uri=root["$id"], referrer=root, store=store)
        return Draft202012Validator(root, resolver=resolver)
    registry = Registry().with_resources(
        (sid, Resource.from_contents(schema, default_specification=DRAFT202012))
        for sid, (_rel, schema) in schemas.items()
    )
    return Draft202012Validator(root, registry=registry)


def json_path(path):
    out = "$"
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out


def leaf_errors(error, instance):
    """For a oneOf over typed schemas (events), the errors of the branch the
    instance's "type" picks, instead of "not valid under any of the given schemas"."""
    if error.validator != "oneOf" or not error.context:
        return [error]
    branches = {}
    for sub in error.context:
        branches.setdefault(sub.relative_schema_path[0], []).append(sub)
    # A branch that failed only on things other than its "type" const is the one meant.
    meant = [
        errs for errs in branches.values()
        if not any(e.validator == "const" and list(e.relative_path) == ["type"] for e in errs)
    ]
    if len(meant) == 1 and len(branches) == len(error.validator_value):
        out = []
        for e in meant[0]:
            out.extend(leaf_errors(e, instance))
        return out
    # Every branch failed on its "type" const: name the allowed types instead.
    consts = [
        e.validator_value for errs in branches.values() for e in errs
        if e.validator == "const" and list(e.relative_path) == ["type"]
    ]
    if not meant and len(consts) == len(error.validator_value) and isinstance(instance, dict):
        error.message = f"type {instance.get('type')!r} is not one of {', '.join(consts)}"
        error.path.append("type")
    return [error]


def short(message, limit=300):
    return message if len(message) <= limit else message[: limit - 3] + "..."


def main(argv):
    if len(argv) != 3 or argv[1] not in KINDS:
        print(f"usage: {os.path.basename(argv[0])} {'|'.join(KINDS)} FILE", file=sys.stderr)
        return 2
    kind, name = argv[1], argv[2]
    validator = make_validator(kind)
    stream = sys.stdin if name == "-" else open(name, encoding="utf-8")
    valid = failures = 0
    with stream:
        for lineno, line in enumerate(stream, 1):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
            except ValueError as e:
                print(f"{name}:{lineno}: not JSON: {e}")
                failures += 1
                continue
            errors = sorted(validator.iter_errors(doc), key=lambda e: [str(p) for p in e.absolute_path])
            if not errors:
                valid += 1
                continue
            failures += 1
            for err in errors:
                for leaf in leaf_errors(err, doc):
                    print(f"{name}:{lineno}: {json_path(leaf.absolute_path)}: {short(leaf.message)}")
    if failures:
        print(f"{failures} invalid, {valid} valid")
        return 1
    print(f"{valid} valid")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
