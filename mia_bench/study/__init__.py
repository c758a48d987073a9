"""Studies over groups: fleets that train them, sweeps over recipes, comparisons of
audited groups, and re-recording layers from checkpoints."""
