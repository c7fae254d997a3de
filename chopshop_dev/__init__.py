"""Development helpers shared by tests/, bench/ and scripts/ (not needed by the node pack itself)."""
