"""What a build writes: the versioned manifest, report.md (and the live table's rows), the artifact."""
