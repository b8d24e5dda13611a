"""webstack-app: the sample bottle app of the webstack reference deployment."""

__version__ = "1.1.0"
