"""Benchmarks of the SiteGW pipeline, each reported as a ratio to a bare-library baseline measured in the same run."""
