"""Ask one DNS resolver one question, directly (dnspython; /etc/resolv.conf is not read): does it
answer, and what?"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import dns.exception
import dns.resolver

DNS_PORT = 53

Outcome = Literal["answer", "nxdomain", "no-answer", "refused", "timeout"]


@dataclass(frozen=True)
class ResolverAnswer:
    """What `server` said about `name`: `answer` (addresses), `nxdomain` (the name does not
    exist), `no-answer` (it exists without an A record), `refused` (SERVFAIL or REFUSED from
    the server), `timeout` (nothing came back within the lifetime)."""

    server: str
    name: str
    outcome: Outcome
    addresses: tuple[str, ...] = ()
    detail: str = ""


def ask(
    server: str, name: str, *, port: int = DNS_PORT, timeout: float = 2.0, lifetime: float = 4.0
) -> ResolverAnswer:
    """One A query for `name` at `server` (UDP, TCP when truncated), no resolver of this machine
    involved."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [server]
    resolver.port = port
    resolver.timeout = timeout
    resolver.lifetime = lifetime
    try:
        answer = resolver.resolve(name, "A", lifetime=lifetime, search=False)
    except dns.resolver.NXDOMAIN:
        return ResolverAnswer(server, name, "nxdomain")
    except dns.resolver.NoAnswer:
        return ResolverAnswer(server, name, "no-answer")
    except dns.resolver.NoNameservers as error:
        return ResolverAnswer(server, name, "refused", detail=str(error))
    except dns.exception.Timeout:
        return ResolverAnswer(server, name, "timeout", detail=f"no answer within {lifetime:g} s")
    except OSError as error:  # e.g. no route to the server from this machine
        return ResolverAnswer(server, name, "timeout", detail=str(error))
    return ResolverAnswer(server, name, "answer", tuple(str(record) for record in answer))
