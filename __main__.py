"""The Pulumi program: read and validate the stack config, build the stack, export its outputs."""

from ecoma_infra.program.build import build_stack
from ecoma_infra.stack.pulumi_config import read_stack_config

config, secrets = read_stack_config()
build_stack(config, secrets)
