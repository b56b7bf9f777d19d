"""The ecoma-security policy pack: `pulumi preview --policy-pack policy`.

Constructing the pack starts CrossGuard's gRPC server and blocks forever: never import this
module; the rules live in `ecoma_policies` and are tested there.
"""

from ecoma_policies import POLICIES
from pulumi_policy import EnforcementLevel, PolicyPack

PolicyPack(name="ecoma-security", enforcement_level=EnforcementLevel.MANDATORY, policies=POLICIES)
