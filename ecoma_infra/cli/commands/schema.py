"""`ecoma-infra schema`: the JSON Schema of a stack file, generated from the config model."""

from __future__ import annotations

import argparse
import json

from ecoma_infra.stack.model import json_schema


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "schema",
        help="print the JSON Schema of Pulumi.<stack>.yaml (for editors)",
        description="Print the JSON Schema of a stack file, generated from the config model. "
        "Point your editor's YAML language server at it for completion and checks.",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    print(json.dumps(json_schema(), indent=2, sort_keys=True))
    return 0
