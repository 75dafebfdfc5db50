"""Ray Serve applications of clara-ray (REST API; inference comes as its own app)."""
