"""The app's routes, one module per audience: people (app), programs (api), operators (health)."""
