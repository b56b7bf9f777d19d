"""`StackBackend` over the Pulumi Automation API: the real stack, through the Pulumi CLI."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from ecoma_infra.errors import EcomaError
from ecoma_infra.platforms.github_oidc import AWS_AUDIENCE, GitHubOidc
from ecoma_infra.platforms.seams import PreviewSummary, ResourceStep, UpSummary
from ecoma_infra.stack.config_paths import apply_paths

#: Pulumi's step operations (automation.OpType values) as a preview reports them: the three
#: steps of a replacement are one `replace`; same, read and refresh change nothing.
_STEP_OPS = {
    "create": "create",
    "import": "create",
    "update": "update",
    "replace": "replace",
    "create-replacement": "replace",
    "delete-replaced": "replace",
    "import-replacement": "replace",
    "delete": "delete",
}

AWS_TOKEN_KEY = "ecoma:aws_web_identity_token"  # noqa: S105  (a config key's name)
LOCK_WAIT = 900.0  # seconds an update waits at most for another update's stack lock
LOCK_POLL = (10.0, 20.0, 30.0)  # seconds between tries; the last one repeats
_UNREAD = object()  # no outputs() read yet: no plan to hold an update against


def _config_text(value: Any) -> str:
    """How the Automation API takes a structured value: the CLI parses it with `--path`."""
    if isinstance(value, str):
        return value
    return json.dumps(value)


class StaleStackError(EcomaError):
    """The stack changed between the read a plan was made from and the update that applies it."""


class AutomationStack:
    """`StackBackend` over the Pulumi Automation API: needs the Pulumi CLI and a backend login.

    Config is set with `path=True` (`pulumi config set --path`), so `ecoma:burst.aws.count`
    changes one number of the structured `ecoma:burst` object and leaves the rest alone.

    Each `up`:
    - applies nothing if the stack's `burst` output is no longer what the last `outputs()` (or
      `up`) of this object read: the caller planned from that state, and an update made from a
      stale pool size would destroy nodes without a drain (`StaleStackError`: run the command
      again, it plans from the stack as it is now). Checked before every try: another command
      may have run a whole update while this one drained, or while it waited for the lock;
    - in a GitHub Actions job with `id-token: write`, for a stack whose AWS pool assumes a role,
      first sets `ecoma:aws_web_identity_token` to a fresh OIDC token from the runner's endpoint:
      the token lives minutes, and a job runs several updates (a drill's teardown, a reap of
      several pools, an update after a long drain);
    - waits up to `lock_wait` seconds while another update holds the stack's lock
      (`ConcurrentUpdateError`), then fails naming `pulumi cancel`.

    The keyword-only options are for tests: a stand-in for `automation.Stack`, the environment,
    the token endpoint, the clock."""

    def __init__(
        self,
        name: str,
        work_dir: Path,
        *,
        stack: Any | None = None,
        environ: Mapping[str, str] | None = None,
        oidc: GitHubOidc | None = None,
        lock_wait: float = LOCK_WAIT,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        from pulumi import automation  # noqa: PLC0415  (0.3 s import; only when used)

        self.name = name
        self._work_dir = work_dir
        self._automation = automation
        self._environ: Mapping[str, str] = os.environ if environ is None else environ
        self._oidc = oidc or GitHubOidc.from_environment(self._environ)
        self._lock_wait = lock_wait
        self._sleep = sleep
        self._monotonic = monotonic
        self._planned_burst: Any = _UNREAD
        if stack is not None:  # a stand-in for `automation.Stack` (tests)
            self._stack = stack
            return
        try:
            self._stack = automation.select_stack(stack_name=name, work_dir=str(work_dir))
        except FileNotFoundError:
            raise EcomaError(
                f"--stack {name}: the Pulumi CLI was not found on PATH: install it "
                "(https://www.pulumi.com/docs/install/)"
            ) from None
        except automation.CommandError as error:
            raise EcomaError(f"--stack {name} in {work_dir}: pulumi failed: {error}") from None

    def config(self) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in self._stack.get_all_config().items():
            if value.secret:
                result[key] = {"secure": "[secret]"}
                continue
            try:
                result[key] = json.loads(value.value)
            except json.JSONDecodeError:
                result[key] = value.value
        return result

    def set_config(self, values: Mapping[str, Any]) -> None:
        config = {
            key: self._automation.ConfigValue(_config_text(value)) for key, value in values.items()
        }
        self._run(lambda: self._stack.set_all_config(config, path=True))

    def set_secret(self, key: str, value: str) -> None:
        secret = self._automation.ConfigValue(value, secret=True)
        self._run(lambda: self._stack.set_config(key, secret))

    def remove_config(self, paths: list[str]) -> None:
        if paths:
            self._run(lambda: self._stack.remove_all_config(paths, path=True))

    def preview(
        self,
        values: Mapping[str, Any],
        removals: list[str],
        on_output: Callable[[str], None],
        *,
        policy_packs: tuple[str, ...] = (),
        policy_pack_configs: tuple[str, ...] = (),
    ) -> PreviewSummary:
        """`pulumi preview` with `--config-file`: a copy of the stack file with the changes, in a
        private temporary directory, so the stack file itself is not written. Secure values
        stay as the stack file holds them (encrypted), and so does its secrets provider."""
        steps: dict[str, ResourceStep] = {}

        def on_event(event: Any) -> None:
            pre = getattr(event, "resource_pre_event", None)
            metadata = getattr(pre, "metadata", None)
            if metadata is None:
                return
            op = _STEP_OPS.get(str(getattr(metadata.op, "value", metadata.op)))
            if op is None:
                return
            earlier = steps.get(metadata.urn)
            if earlier is None or earlier.op != "replace":
                steps[metadata.urn] = ResourceStep(
                    op, metadata.urn, metadata.type, tuple(metadata.diffs or ())
                )

        with tempfile.TemporaryDirectory(prefix="ecoma-preview-") as directory:
            config_file = Path(directory) / self._stack_file.name
            document = self._stack_document()
            document["config"] = apply_paths(document.get("config") or {}, values, removals)
            config_file.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
            result = self._run(
                lambda: self._stack.preview(
                    on_output=on_output,
                    on_event=on_event,
                    color="never",
                    config_file=str(config_file),
                    policy_packs=list(policy_packs) or None,
                    policy_pack_configs=list(policy_pack_configs) or None,
                )
            )
        changes = {
            str(getattr(op, "value", op)): count
            for op, count in (result.change_summary or {}).items()
        }
        return PreviewSummary(changes, list(steps.values()))

    @property
    def _stack_file(self) -> Path:
        return self._work_dir / f"Pulumi.{self.name.rsplit('/', 1)[-1]}.yaml"

    def _stack_document(self) -> dict[str, Any]:
        try:
            document = yaml.safe_load(self._stack_file.read_text(encoding="utf-8")) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
            raise EcomaError(f"{self._stack_file}: cannot be read: {error}") from None
        if not isinstance(document, dict):
            raise EcomaError(f"{self._stack_file}: not a mapping of settings")
        return document

    def up(
        self,
        on_output: Callable[[str], None],
        *,
        replace: Sequence[str] = (),
        target: Sequence[str] = (),
    ) -> UpSummary:
        deadline = self._monotonic() + self._lock_wait
        tries = 0
        while True:
            self._check_not_stale()
            self._fresh_credentials()
            try:
                # `target` with `target_dependents`: what depends on a targeted resource (a
                # subnet route on a router's VM, the next VM of the clone chain) goes with it.
                result = self._stack.up(
                    on_output=on_output,
                    color="never",
                    replace=list(replace) or None,
                    target=list(target) or None,
                    target_dependents=True if target else None,
                )
                break
            except self._automation.ConcurrentUpdateError:
                left = deadline - self._monotonic()
                if left <= 0:
                    raise EcomaError(
                        f"stack {self.name}: another update held the stack's lock for more than "
                        f"{self._lock_wait:.0f} s; nothing was applied. Run the command again "
                        "once it is done. If no update is running (its job or process ended), a "
                        f"dead one left the lock: `pulumi cancel --stack {self.name}` releases "
                        f"it, then `pulumi refresh --stack {self.name}`"
                    ) from None
                pause = min(LOCK_POLL[min(tries, len(LOCK_POLL) - 1)], left)
                tries += 1
                on_output(
                    f"stack {self.name} is locked by another update: trying again in {pause:.0f} s"
                )
                self._sleep(pause)
            except self._automation.CommandError as error:
                raise EcomaError(f"stack {self.name}: pulumi failed: {error}") from None
        changes = dict(result.summary.resource_changes or {})
        outputs = {k: v.value for k, v in result.outputs.items()}
        self._planned_burst = outputs.get("burst")  # this update's own result: what comes next
        return UpSummary(changes, outputs)

    def outputs(self) -> dict[str, Any]:
        outputs = self._read_outputs()
        self._planned_burst = outputs.get("burst")
        return outputs

    def _read_outputs(self) -> dict[str, Any]:
        return {k: v.value for k, v in self._run(self._stack.outputs).items()}

    def _check_not_stale(self) -> None:
        """Is the stack's burst state still the one the caller planned from?"""
        if self._planned_burst is _UNREAD:
            return
        if self._read_outputs().get("burst") != self._planned_burst:
            raise StaleStackError(
                f"stack {self.name} changed since this run read it (another update ran): "
                "nothing was applied. Run the command again: it plans from the stack as it is now"
            )

    def _fresh_credentials(self) -> None:
        """A new AWS web-identity token for this update, when the runner's endpoint gives one."""
        if self._oidc is None:
            return
        burst = self.config().get("ecoma:burst")
        aws = burst.get("aws") if isinstance(burst, dict) else None
        if not isinstance(aws, dict) or not aws.get("role_arn"):
            return
        token = self._oidc.token(AWS_AUDIENCE)
        if self._environ.get("GITHUB_ACTIONS") == "true":
            # The runner hides this line and every later occurrence of the value in the job's
            # log (a workflow command), as the setup action does for its own token.
            print(f"::add-mask::{token}", file=sys.stdout, flush=True)
        self.set_secret(AWS_TOKEN_KEY, token)

    def _run(self, action: Callable[[], Any]) -> Any:
        try:
            return action()
        except self._automation.CommandError as error:
            raise EcomaError(f"stack {self.name}: pulumi failed: {error}") from None
