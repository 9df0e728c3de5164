"""Development tools: the deployed code paths, run on a developer's machine."""
