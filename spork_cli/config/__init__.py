"""gateway.toml: the model, the loader with located errors, and the semantic checks."""
