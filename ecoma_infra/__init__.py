"""ecoma-infra: Ecoma hybrid k3s infrastructure."""
