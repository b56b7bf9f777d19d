"""The offline preview: the real program under the real Pulumi SDK, with a mock engine.

No Pulumi CLI, plugin or credential is needed. The stack file is validated exactly as
`pulumi up` would, the program's `__main__.py` runs unchanged, and a recording monitor keeps
every resource registration: type, name, parent, options and inputs. Secrets are placeholders
marked secret, and every secret value is shown as `[secret]`. Mock ids and computed values are
derived from resource names, so the same stack always gives the same output.
"""

from __future__ import annotations

import gc
import hashlib
import json
import runpy
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pulumi
from google.protobuf import json_format
from pulumi.runtime import mocks, rpc, settings
from pulumi.runtime.mocks import _resolve_callbacks
from pulumi.runtime.proto import resource_pb2
from pulumi.runtime.stack import wait_for_rpcs
from pulumi.runtime.sync_await import _ensure_event_loop, _sync_await

from ecoma_infra.errors import EcomaError
from ecoma_infra.paths import project_root
from ecoma_infra.stack.load import LoadedStack, load_stack_file
from ecoma_infra.stack.model import NAMESPACE, required_secrets

REDACTED = "[secret]"
PROJECT = "ecoma"


def _digest(*parts: str, length: int = 17) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:length]


def _secret(value: Any) -> dict[str, Any]:
    """A value the SDK deserializes as a secret Output."""
    return {rpc._special_sig_key: rpc._special_secret_sig, "value": value}


def _is_secret(value: Any) -> bool:
    return isinstance(value, dict) and value.get(rpc._special_sig_key) == rpc._special_secret_sig


def redact(value: Any) -> Any:
    """Replace every secret (and every value derived from one) with `[secret]`."""
    if _is_secret(value):
        return REDACTED
    if isinstance(value, Mapping):
        return {str(k): redact(v) for k, v in sorted(value.items())}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)  # the engine's numbers are floats
    return value


def _tailscale_device(args: dict[str, Any]) -> dict[str, Any]:
    hostname = str(args.get("hostname") or args.get("name"))
    node_id = f"offline-{_digest(hostname, length=10)}"
    return {"id": node_id, "nodeId": node_id, "hostname": hostname, "name": hostname}


def _oci_availability_domains(args: dict[str, Any]) -> dict[str, Any]:
    return {"availabilityDomains": [{"name": f"Offline:EU-OFFLINE-1-AD-{n}"} for n in (1, 2, 3)]}


def _aws_ami(args: dict[str, Any]) -> dict[str, Any]:
    """The one AMI a pinned name finds: an id derived from the owner and the name."""
    names = [v for f in args.get("filters") or [] if f.get("name") == "name" for v in f["values"]]
    owners = args.get("owners") or []
    ami = f"ami-{_digest(*owners, *names)}"
    return {"id": ami, "imageId": ami, "name": names[0] if names else "", "ownerId": owners[0]}


_INVOKES = {
    "aws:ec2/getAmi:getAmi": _aws_ami,
    "tailscale:index/getDevice:getDevice": _tailscale_device,
    "oci:Identity/getAvailabilityDomains:getAvailabilityDomains": _oci_availability_domains,
}


class OfflineMocks(pulumi.runtime.Mocks):
    """Deterministic ids and the computed outputs the program reads."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        outputs = dict(args.inputs)
        resource_id = f"{args.name}-{_digest(args.typ, args.name, length=8)}"
        if args.typ == "tailscale:index/tailnetKey:TailnetKey":
            outputs["key"] = _secret(f"offline-auth-key-{_digest(args.name, length=12)}")
        elif args.typ == "aws:ebs/volume:Volume":
            resource_id = f"vol-{_digest(args.name)}"
        elif args.typ == "aws:ec2/instance:Instance":
            resource_id = f"i-{_digest(args.name)}"
            root = dict(outputs.get("rootBlockDevice") or {})
            root["volumeId"] = f"vol-{_digest(args.name, 'root')}"
            outputs["rootBlockDevice"] = root
        elif args.typ == "oci:Core/volumeAttachment:VolumeAttachment":
            # What OCI computes for an iSCSI attachment: the one target of this volume.
            outputs["ipv4"] = f"169.254.2.{int(_digest(args.name, length=4), 16) % 250 + 2}"
            outputs["port"] = 3260
            outputs["iqn"] = f"iqn.2015-12.com.oracleiaas:offline-{_digest(args.name)}"
        elif args.typ == "proxmoxve:index/fileLegacy:FileLegacy":
            raw = outputs.get("sourceRaw") or {}
            raw = raw["value"] if _is_secret(raw) else raw
            file_name = raw.get("fileName", args.name) if isinstance(raw, dict) else args.name
            resource_id = f"{outputs.get('datastoreId', 'local')}:snippets/{file_name}"
        elif args.typ == "proxmoxve:download/file:File":
            # The volume id PVE gives a downloaded file: <datastore>:<content type>/<file name>.
            resource_id = (
                f"{outputs.get('datastoreId')}:{outputs.get('contentType')}/"
                f"{outputs.get('fileName')}"
            )
        return resource_id, outputs

    def call(
        self, args: pulumi.runtime.MockCallArgs
    ) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        answer = _INVOKES.get(args.token)
        return (answer(args.args) if answer else {}), []


@dataclass
class Recorded:
    urn: str
    type: str
    name: str
    parent: str
    custom: bool
    provider: str
    protect: bool
    retain_on_delete: bool
    ignore_changes: list[str]
    depends_on: list[str]
    inputs: dict[str, Any]
    secret_outputs: list[str] = field(default_factory=list)
    replacement_trigger: Any = None
    import_id: str = ""  # the `import` option: an existing resource this run adopts
    delete_before_replace: bool = False


class RecordingMonitor(mocks.MockMonitor):
    """Keeps every registration request (with its options, which plain mocks never see).

    It registers a resource as `MockMonitor.RegisterResource` does, decoding the request's
    inputs once for both the mocks and the record (the base class decodes them for the mocks
    only, and a record of them took a second decoding: ~10% of a large preview).
    """

    def __init__(self, offline_mocks: pulumi.runtime.Mocks) -> None:
        super().__init__(offline_mocks)
        self.records: list[Recorded] = []

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 - the gRPC method's name
        if request.type == "pulumi:pulumi:Stack":
            return super().RegisterResource(request)
        urn = self.make_urn(request.parent, request.type, request.name)
        # Resource references decode through the event loop of this (the SDK's RPC) thread.
        _ensure_event_loop()
        # A preview that is not a dry run (`preview=False` below) has no unknowns to keep.
        inputs = rpc.deserialize_properties(request.object, keep_unknowns=True)
        resource_id, state = self.mocks.new_resource(
            pulumi.runtime.MockResourceArgs(
                typ=request.type,
                name=request.name,
                inputs=inputs,
                provider=request.provider,
                resource_id=request.importId,
                custom=request.custom or False,
                transforms=_resolve_callbacks(request.transforms),
            )
        )
        resource_id = resource_id or ""  # proto3: an id that is not set reads as ""
        state_proto = _sync_await(rpc.serialize_properties(state, {}))
        self.resources[urn] = mocks.MockMonitor.ResourceRegistration(urn, resource_id, state)
        self.records.append(
            Recorded(
                urn=urn,
                type=request.type,
                name=request.name,
                parent=request.parent,
                custom=request.custom,
                provider=request.provider,
                protect=request.protect,
                retain_on_delete=request.retainOnDelete,
                ignore_changes=list(request.ignoreChanges),
                depends_on=sorted(request.dependencies),
                inputs=inputs,
                secret_outputs=list(request.additionalSecretOutputs),
                replacement_trigger=(
                    json_format.MessageToDict(request.replacement_trigger)
                    if request.HasField("replacement_trigger")
                    else None
                ),
                import_id=request.importId,
                delete_before_replace=request.deleteBeforeReplace,
            )
        )
        return resource_pb2.RegisterResourceResponse(urn=urn, id=resource_id, object=state_proto)


@dataclass
class PreviewResult:
    stack: str
    records: list[Recorded]
    outputs: dict[str, Any]
    secret_outputs: list[str]

    def resources(self) -> list[dict[str, Any]]:
        by_urn = {r.urn: r for r in self.records}
        found = []
        for r in self.records:
            resource = {
                "type": r.type,
                "name": r.name,
                "parent": by_urn[r.parent].name if r.parent in by_urn else None,
                "inputs": redact(r.inputs),
            }
            if r.import_id:
                resource["import"] = r.import_id
            found.append(resource)
        return found

    def document(self) -> dict[str, Any]:
        return {"stack": self.stack, "resources": self.resources(), "outputs": self.outputs}


def stack_config_for_engine(
    path: Path, loaded: LoadedStack | None = None
) -> tuple[str, dict[str, str], list[str]]:
    """The config the engine would hand the program: JSON-encoded values, secret placeholders.
    `loaded` is the file at `path` when the caller has validated it already."""
    loaded = loaded or load_stack_file(path)
    stack = path.name.split(".")[1] if path.name.startswith("Pulumi.") else path.stem
    values: dict[str, str] = {}
    for key, value in loaded.config.model_dump(mode="json", exclude_unset=False).items():
        values[f"{PROJECT}:{key}"] = json.dumps(value)
    secret_keys = [f"{NAMESPACE}:{key}" for key in required_secrets(loaded.config)]
    for key in secret_keys:
        values[key] = f"offline-placeholder-for-{key.split(':', 1)[1]}"
    return stack, values, secret_keys


def run_offline(
    path: Path, *, program: Path | None = None, loaded: LoadedStack | None = None
) -> PreviewResult:
    """Run the program against the stack file at `path` under mocks, and collect everything.
    `loaded` is that file, when the caller has read and validated it already."""
    stack, config, secret_keys = stack_config_for_engine(path, loaded)
    program = program or project_root() / "__main__.py"
    with collector_paused():
        settings.reset_options()
        pulumi.runtime.set_all_config(config, secret_keys)
        monitor = RecordingMonitor(OfflineMocks())
        pulumi.runtime.set_mocks(
            monitor.mocks, project=PROJECT, stack=stack, preview=False, monitor=monitor
        )
        try:
            try:
                runpy.run_path(str(program), run_name="__pulumi_program__")
            except pulumi.RunError as error:  # the program's own clean failure (no traceback)
                raise EcomaError(f"{path}: {error}") from None
            _sync_await(wait_for_rpcs())
            root = cast(Any, settings.get_root_resource())
            outputs: dict[str, Any] = {}
            secret_outputs: list[str] = []
            for key, value in sorted(root.outputs.items()):
                # An Output is awaited as it is: lifting it again (`from_input`) would rebuild
                # its whole value as nested Outputs (the inventory: ~1 s at 1000 nodes).
                output = (
                    value if isinstance(value, pulumi.Output) else pulumi.Output.from_input(value)
                )
                if _sync_await(output.is_secret()):
                    secret_outputs.append(key)
                    outputs[key] = REDACTED
                else:
                    outputs[key] = redact(_sync_await(output.future()))
        finally:
            settings.reset_options()
    records = sorted(monitor.records, key=lambda r: r.urn)
    return PreviewResult(stack, records, outputs, secret_outputs)


@contextmanager
def collector_paused() -> Iterator[None]:
    """The garbage collector off while the program runs, as it was afterwards.

    The SDK's objects (~600k once the providers are loaded) are walked again by every full
    collection, which frees little here: at 1000 nodes the collector was 43% of a preview.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
