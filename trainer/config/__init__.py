"""The option table, and how flags, environment variables and YAML become a checked configuration."""
