"""The Pulumi program: read and validate the stack config, build the stack, export its outputs."""

from ecoma_infra.program import build_stack
from ecoma_infra.pulumi_config import read_stack_config

config, secrets = read_stack_config()
build_stack(config, secrets)
