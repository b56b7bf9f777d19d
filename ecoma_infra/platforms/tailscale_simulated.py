"""Stand-in for the Tailscale API (`tailscale.TailscaleApi`): devices in memory."""

from __future__ import annotations

from dataclasses import dataclass, field

from ecoma_infra.platforms.seams import Device, Journal


@dataclass
class SimulatedTailnet:
    journal: Journal
    known: dict[str, Device] = field(default_factory=dict)

    def add(self, hostname: str) -> None:
        self.known[hostname] = Device(f"n{len(self.known) + 1:04d}CNTRL", hostname)

    def devices(self) -> list[Device]:
        return list(self.known.values())

    def delete_device(self, device_id: str) -> None:
        self.journal.append(("delete_device", device_id))
        self.known = {k: d for k, d in self.known.items() if d.id != device_id}
