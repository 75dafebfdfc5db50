"""Reference pipelines of clara-ray: YAML definitions and the operators only they use."""
