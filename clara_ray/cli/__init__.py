"""The `clara-ray` command line, verb first like Clara's CLI."""
