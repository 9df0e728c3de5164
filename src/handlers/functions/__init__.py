"""The Lambda entry points, one module per function in template.yaml (`Handler: handlers.functions.<name>.handler`).
Each builds its handler once per container, from the environment the template sets."""
