"""Adopting existing resources: `ecoma:adopt` (resource name -> import id) becomes the `import`
resource option of the resources of those names.

With the option in the program, one `pulumi preview` shows the imports next to the updates and
creates, and the engine refuses to replace a resource whose declaration still carries an import
id ("previously-imported resources that still specify an ID may not be replaced", Pulumi's
step generator): an adopted machine can be updated, never silently rebuilt. An id stays harmless
after the first `up`: the engine imports only when the state holds no resource of that name or
one with another import id (`isImport` in the step generator compares `old.ImportID`).

A stack transformation sees every resource the program constructs, so the names need no
plumbing through the components. Names are unique in this program (a test of the offline
preview keeps it so); a name that no resource takes is an error, not a silent no-op.
"""

from __future__ import annotations

from collections.abc import Mapping

import pulumi


class Adoption:
    """Sets `import_` on the resources named in `ecoma:adopt` and remembers which it set."""

    def __init__(self, import_ids: Mapping[str, str]) -> None:
        self.import_ids = dict(import_ids)
        self.applied: set[str] = set()

    def transformation(
        self, args: pulumi.ResourceTransformationArgs
    ) -> pulumi.ResourceTransformationResult | None:
        import_id = self.import_ids.get(args.name)
        if import_id is None:
            return None
        resource = args.resource
        if not isinstance(resource, pulumi.CustomResource) or isinstance(
            resource, pulumi.ProviderResource
        ):
            raise pulumi.RunError(
                f"ecoma:adopt.{args.name}: {args.type_} is a component or a provider, which "
                "cannot be imported. Fix: remove the entry"
            )
        if args.name in self.applied:
            raise pulumi.RunError(
                f"ecoma:adopt.{args.name}: two resources have this name, so the import id is "
                "ambiguous. Fix: remove the entry and import by hand"
            )
        self.applied.add(args.name)
        return pulumi.ResourceTransformationResult(
            args.props,
            pulumi.ResourceOptions.merge(args.opts, pulumi.ResourceOptions(import_=import_id)),
        )

    def check_all_applied(self) -> None:
        """Every name of `ecoma:adopt` must have met its resource by the end of the program."""
        unused = sorted(set(self.import_ids) - self.applied)
        if unused:
            raise pulumi.RunError(
                "ecoma:adopt names no resource of this stack: "
                + ", ".join(unused)
                + ". Fix: use the names `ecoma-infra preview --offline` shows, or remove them"
            )


def register(import_ids: Mapping[str, str]) -> Adoption:
    """Adopt the named resources of everything constructed from now on in this stack."""
    adoption = Adoption(import_ids)
    if adoption.import_ids:
        pulumi.runtime.register_stack_transformation(adoption.transformation)
    return adoption
