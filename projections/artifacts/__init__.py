"""The ForgeArtifact view: one row per run, built only from run events."""
