"""The composition roots: where settings become adapters, a cache and handlers. `local` for `pullthrough serve` and
the other local commands (files + SQLite), `aws` for the Lambda functions (S3, DynamoDB, Lambda, Powertools)."""
