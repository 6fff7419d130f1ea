"""The configuration: one typed model (validation, JSON schema, reference docs) and its
YAML loader with line-accurate errors."""
