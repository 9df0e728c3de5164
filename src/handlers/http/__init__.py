"""The HTTP surface: the registry app (OCI pull API), the rules admin app, and what guards them (request limits,
ranges, slow clients, lanes for upstream work). It speaks to the core only; the composition roots give it a cache."""
